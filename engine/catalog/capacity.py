"""Azure capacity and quota as planning data: which GPU sizes of the catalog a subscription can get in a region, and
for how many nodes, as last checked. Like prices, the planner reads it from a cache and never from the network.

Three things decide whether ``n`` nodes of a size can run in a region:

- **The size is offered**: Azure's resource-SKU listing names every VM size of the region with its quota family
  (e.g. ``standardNCADSA100v4Family``), its vCPUs and its restrictions. A size restricted in the whole region, or in
  every zone of it, or not listed at all, is not offered there. ``LowPriorityCapable = False`` rules out low-priority
  nodes only.
- **Azure ML quota**: Azure ML clusters draw on Azure ML's own vCPU quota per VM family and per region ("Standard
  NCADSA100v4 Family Cluster Dedicated vCPUs", "Total Cluster Dedicated Regional vCPUs", the low-priority total),
  separate from the subscription's VM quota; a workspace can be given a smaller share of a family. When that listing
  answered, it is what the checks use.
- **The subscription's VM quota** (the family's vCPUs, ``cores``, ``lowPriorityCores``): what the checks use when the
  Azure ML listing did not answer, and what stands in for a row Azure ML does not list.

Dedicated nodes need ``nodes × vCPUs`` free in the family quota and in the regional dedicated total; low-priority
nodes need them free in the regional low-priority total. A quota row that neither listing has is *unknown*, never
unlimited: the checks cannot refuse on it, and everything shown to the user says "unknown".

The table is filled by ``engine/azure/capacity.py`` (the only code that asks Azure) and written here with
:func:`save_capacity` to ``data_dir()/azure/capacity-<region>.json``; :func:`load_capacity` reads it back. An
unreadable cache is ignored with a note, so planning works signed out and offline, only without this filter.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AzureError
from .hardware import load_skus
from .prices import data_dir

CACHE_VERSION = 1
PRIORITIES = ("dedicated", "low-priority")
REFRESH_COMMAND = "distill azure capacity --refresh"
STALE_DAYS = 7  # quota use changes as others start and stop clusters; older checks say so
MAX_NODES = 16  # the planner sweeps 1-16 nodes; describe() reports how many of those fit

_REGION_RE = re.compile(r"^[a-z0-9]+$")
# the canonical names of the regional totals, as the VM quota calls them (Azure ML's are mapped onto these)
DEDICATED_TOTAL = "cores"
LOW_PRIORITY_TOTAL = "lowPriorityCores"
# how a row is called when Azure listed none (no label to show)
_ROW_NAMES = {DEDICATED_TOTAL: "the regional dedicated total", LOW_PRIORITY_TOTAL: "the regional low-priority total"}

_AML_HINT = " in Azure ML's quota (Azure ML studio › Quotas, or a support request)"
_VM_HINT = " (Azure portal › Quotas › Compute)"


# --------------------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class SkuOffer:
    """One catalog size as the region's resource-SKU listing describes it for this subscription."""

    sku: str                      # ARM name, as the catalog spells it
    offered: bool
    reason: str = ""              # why not offered: Azure's restriction reason code, e.g. NotAvailableForSubscription
    scope: str = ""               # "location" (the whole region) or "zone" (every zone of it) when not offered
    family: str = ""              # quota family, e.g. standardNCADSA100v4Family
    vcpus: int = 0                # per node (capability "vCPUs")
    low_priority: bool = True     # capability LowPriorityCapable
    zones: tuple[str, ...] = ()
    restricted_zones: tuple[str, ...] = ()


@dataclass(frozen=True)
class Quota:
    """One quota row: ``used`` of ``limit`` vCPUs.

    ``source`` is ``"vm"`` (the subscription's VM quota), ``"aml"`` (Azure ML's quota for the subscription) or
    ``"aml-workspace"`` (the workspace's share of it). ``name`` is Azure's id of the quota: a family
    (``standardNCADSA100v4Family``), ``cores`` (regional dedicated total) or ``lowPriorityCores``; ``label`` is
    Azure's display name ("Standard NCADSA100v4 Family vCPUs").
    """

    name: str
    label: str
    used: int
    limit: int
    source: str = "vm"

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def short_label(self) -> str:
        """The display name without its trailing "vCPUs": "Standard NCADSA100v4 Family"."""
        label = (self.label or self.name).strip()
        return re.sub(r"\s*vCPUs?$", "", label, flags=re.IGNORECASE) or label


@dataclass
class CapacityTable:
    """What one region offers this subscription, and its quota, as checked on ``checked_on`` (ISO date).

    ``origin`` is ``"live"`` just after a check, ``"cache"`` when read back. ``aml_quota_read`` says whether Azure
    ML's quota listing answered (then it governs; otherwise the VM quota stands in).
    """

    region: str
    subscription_id: str
    checked_on: str
    checked_at: str = ""
    workspace: str = ""
    skus: dict[str, SkuOffer] = field(default_factory=dict)   # by lower-case ARM name
    quotas: list[Quota] = field(default_factory=list)
    aml_quota_read: bool = False
    origin: str = "cache"
    notes: list[str] = field(default_factory=list)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    # ----------------------------------------------------------------------------------------------------
    # Look-ups

    def offer(self, sku: str) -> SkuOffer | None:
        return self.skus.get(_sku_key(sku))

    def quota(self, name: str, source: str = "vm") -> Quota | None:
        key = _squash(name)
        for q in self.quotas:
            if q.source == source and _squash(q.name) == key:
                return q
        return None

    @staticmethod
    def _row_names(offer: SkuOffer, priority: str) -> list[str]:
        """The quota rows ``priority`` nodes of ``offer`` draw on ("" for a family Azure did not name)."""
        return [offer.family, DEDICATED_TOTAL] if priority == "dedicated" else [LOW_PRIORITY_TOTAL]

    def _rows(self, name: str) -> list[tuple[Quota, str]]:
        """The rows that govern quota ``name``, each with where to ask for more; [] when no listing has it."""
        ws_hint = f" in workspace {self.workspace}'s share of Azure ML's quota (Azure ML studio › Quotas)"
        found: list[tuple[Quota, str]] = []
        if self.aml_quota_read:  # Azure ML's quota governs its clusters; the VM quota stands in for a missing row
            found = [(q, _AML_HINT if source == "aml" else ws_hint) for source in ("aml", "aml-workspace")
                     if (q := self.quota(name, source)) is not None]
        if not found and (q := self.quota(name, "vm")) is not None:
            found = [(q, _VM_HINT)]
        return found

    def _limits(self, offer: SkuOffer, priority: str) -> list[tuple[Quota, str]]:
        """The quota rows ``priority`` nodes of ``offer`` draw on, each with what to ask for when short."""
        return [row for name in self._row_names(offer, priority) if name for row in self._rows(name)]

    def missing_quota(self, sku: str, priority: str) -> list[str]:
        """The quota rows ``priority`` nodes of ``sku`` draw on that no listing had (their nodes are unknown).

        Names as Azure spells them (``lowPriorityCores``, a family id), or "the size's quota family" when the
        resource-SKU listing named none. [] for a size that is not offered (nothing to count).
        """
        offer = self.offer(sku)
        if offer is None or not offer.offered:
            return []
        if priority == "low-priority" and not offer.low_priority:
            return []
        return [name or "the size's quota family" for name in self._row_names(offer, priority)
                if not name or not self._rows(name)]

    def problem(self, sku: str, nodes: int, priority: str) -> str:
        """Why ``nodes`` nodes of ``sku`` at ``priority`` cannot run in this region ("" when they can).

        A sentence for the user: the size is not offered, or which quota is short (the family, its vCPUs in use of
        its limit, the vCPUs the nodes need) and how many vCPUs to request where. A quota row no listing had cannot
        refuse: see :meth:`missing_quota`.
        """
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}")
        memo_key = (_sku_key(sku), int(nodes), priority)
        if memo_key in self._memo:
            return self._memo[memo_key]
        text = self._problem(sku, int(nodes), priority)
        self._memo[memo_key] = text
        return text

    def _problem(self, sku: str, nodes: int, priority: str) -> str:
        offer = self.offer(sku)
        if offer is None:
            return f"not offered in {self.region} (Azure lists no such size there for this subscription)"
        if not offer.offered:
            where = f"any zone of {self.region}" if offer.scope == "zone" else self.region
            return f"not offered in {where} for this subscription ({offer.reason or 'restricted'})"
        if priority == "low-priority" and not offer.low_priority:
            return f"low-priority nodes of this size are not offered in {self.region}; use dedicated"
        need = nodes * offer.vcpus
        for q, hint in self._limits(offer, priority):
            if need > q.free:
                return self._shortage(offer, nodes, priority, q, hint)
        return ""

    def _shortage(self, offer: SkuOffer, nodes: int, priority: str, q: Quota, hint: str) -> str:
        """"no dedicated quota for family F in R: <row> has U of L vCPUs in use; N nodes × V vCPUs of S need X;
        request Y more vCPUs for <row> (a dedicated limit of Z) <where>"."""
        aml = q.source.startswith("aml")
        family_row = bool(offer.family) and _squash(q.name) == _squash(offer.family)
        # a family is asked for by its id; Azure ML's regional totals by the name its quota page shows
        target = f"'{q.label}'" if aml and not family_row else q.name
        size = offer.sku.removeprefix("Standard_")
        subject = (f"family {offer.family}" if family_row else
                   f"{size} (family {offer.family or 'unknown'})")
        row = f"{'Azure ML quota ' if aml else 'VM quota '}'{q.label or q.name}'"
        if not family_row:
            row += f", which the {priority} nodes of every family share,"
        need = nodes * offer.vcpus
        more = max(need - q.free, q.used + need - q.limit)
        return (f"no {priority} quota for {subject} in {self.region}: {row} has {q.used:,} of {q.limit:,} vCPUs "
                f"in use; {nodes} node{'s' if nodes != 1 else ''} × {offer.vcpus} vCPUs of {size} need {need:,}; "
                f"request {more:,} more vCPUs for {target} (a {priority} limit of {q.limit + more:,}){hint}")

    def max_nodes(self, sku: str, priority: str, upto: int = MAX_NODES) -> int:
        """The most nodes (0..``upto``) of ``sku`` at ``priority`` that the known quota rows allow (an upper bound
        when :meth:`missing_quota` names a row)."""
        n = 0
        while n < upto and not self.problem(sku, n + 1, priority):
            n += 1
        return n

    def unavailable_sizes(self, skus: Iterable[str] | None = None) -> list[str]:
        """Catalog sizes that cannot run even one node, dedicated or low-priority."""
        names = list(skus) if skus is not None else list(load_skus())
        return [s for s in names if all(self.problem(s, 1, p) for p in PRIORITIES)]

    def age_days(self, today: _dt.date | None = None) -> int | None:
        try:
            return ((today or _dt.date.today()) - _dt.date.fromisoformat(self.checked_on)).days
        except ValueError:
            return None

    # ----------------------------------------------------------------------------------------------------
    # For people

    def unknown_note(self, skus: Iterable[str], priorities: Iterable[str] = PRIORITIES) -> str:
        """A sentence naming the quota rows Azure listed none of for these sizes and priorities ("" when none):
        the planner cannot tell how many nodes they allow, so it does not rule out those options."""
        missing: dict[str, set[str]] = {}
        for sku in skus:
            for p in priorities:
                for name in self.missing_quota(sku, p):
                    missing.setdefault(name, set()).add(p)
        if not missing:
            return ""
        parts = [f"{_ROW_NAMES.get(n, n)} ({', '.join(sorted(ps))})" for n, ps in sorted(missing.items())]
        return (f"quota unknown in {self.region}: Azure listed no row for {', '.join(parts)}, so the nodes those "
                f"options may use are unknown, not unlimited; they are not ruled out, but Azure may refuse them (see "
                f"Azure ML studio › Quotas, then `{REFRESH_COMMAND}`)")

    def rows(self) -> list[dict[str, Any]]:
        """One dict per catalog size: offered, family, vCPUs, the governing family quota, nodes that fit.

        ``max_nodes[priority]`` is None where a quota row it depends on is missing (unknown, see
        ``missing_quota[priority]``) unless a known row already rules out every node (then 0); ``at_most`` holds the
        bound the known rows give.
        """
        out = []
        for sku in load_skus().values():
            offer = self.offer(sku.id)
            row: dict[str, Any] = {"sku": sku.id, "offered": bool(offer and offer.offered), "why_not": "",
                                   "family": offer.family if offer else "", "vcpus": offer.vcpus if offer else 0,
                                   "quota": None, "max_nodes": {}, "at_most": {}, "missing_quota": {}}
            if offer is None or not offer.offered:
                row["why_not"] = self.problem(sku.id, 1, "dedicated")
            if offer is not None and offer.family:
                family = [q for q, _ in self._rows(offer.family)]
                if family:
                    q = min(family, key=lambda q: q.free)
                    row["quota"] = {"name": q.name, "source": q.source, "used": q.used, "free": q.free,
                                    "limit": q.limit}
            for p in PRIORITIES:
                n = self.max_nodes(sku.id, p) if row["offered"] else 0
                missing = self.missing_quota(sku.id, p) if row["offered"] else []
                row["at_most"][p] = n
                row["max_nodes"][p] = None if missing and n > 0 else n
                row["missing_quota"][p] = missing
            out.append(row)
        return out

    def describe(self) -> str:
        """A table for the terminal: when it was checked, then each catalog size."""
        age = self.age_days()
        when = self.checked_on + (f" ({age} days ago)" if age and age > 0 else "")
        lines = [f"Azure capacity and quota in {self.region}, checked {when}",
                 f"  subscription {self.subscription_id}" + (f", workspace {self.workspace}" if self.workspace else ""),
                 "  quota from " + ("Azure ML (the quota its clusters draw on)" if self.aml_quota_read
                                    else "the subscription's VM quota (Azure ML's quota could not be read)"),
                 ""]
        head = ("size", "offered", "family", "vCPUs", "family free/limit", "nodes dedicated", "low-priority")
        # under Azure ML's quota, a family figure from elsewhere is tagged: the workspace's share, or the VM quota
        # standing in for a family Azure ML lists no row for
        tags = {"aml": "", "aml-workspace": " (workspace)", "vm": " (VM)" if self.aml_quota_read else ""}
        cells = []
        rows = self.rows()
        for r in rows:
            q = r["quota"]
            offer = self.offer(r["sku"])
            cells.append((
                r["sku"],
                "yes" if r["offered"] else f"no ({offer.reason or 'restricted'})" if offer else "no (not listed)",
                r["family"] or "-",
                str(r["vcpus"] or "-"),
                f"{q['free']:,}/{q['limit']:,}{tags[q['source']]}" if q else ("unknown" if r["offered"] else "-"),
                _nodes_text(r, "dedicated") if r["offered"] else "-",
                _nodes_text(r, "low-priority") if r["offered"] else "-",
            ))
        widths = [max(len(h), *(len(c[k]) for c in cells)) if cells else len(h) for k, h in enumerate(head)]
        lines.append("  " + "  ".join(f"{h:<{w}}" for h, w in zip(head, widths)).rstrip())
        for c in cells:
            lines.append("  " + "  ".join(f"{v:<{w}}" for v, w in zip(c, widths)).rstrip())
        totals = []
        for name, what in ((DEDICATED_TOTAL, "dedicated"), (LOW_PRIORITY_TOTAL, "low-priority")):
            shown = False
            for source in (("aml", "aml-workspace", "vm") if self.aml_quota_read else ("vm",)):
                q = self.quota(name, source)
                if q is not None:
                    src = {"aml": "Azure ML", "aml-workspace": f"workspace {self.workspace}", "vm": "VM"}[source]
                    totals.append(f"{what} {q.free:,} of {q.limit:,} vCPUs free ({src})")
                    shown = True
            if not shown:
                totals.append(f"{what} unknown (no quota row listed)")
        lines.append("")
        lines.append("  regional totals: " + "; ".join(totals))
        lines.append("")
        lines.append(f"  nodes: how many of 1-{MAX_NODES} nodes the quota allows now (unknown: a quota row it draws "
                     f"on was not listed; ≤N: at most N by the rows that were); refresh with "
                     f"`{REFRESH_COMMAND} --region {self.region}`")
        unknown = self.unknown_note(r["sku"] for r in rows if r["offered"])
        for note in self.notes + ([unknown] if unknown else []):
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _nodes_text(row: dict[str, Any], priority: str) -> str:
    n, known = row["at_most"][priority], row["max_nodes"][priority] is not None
    if n == 0:
        return "none"
    if not known:
        return "unknown" if n >= MAX_NODES else f"≤{n}"
    return f"{n}+" if n >= MAX_NODES else str(n)


def _squash(text: str) -> str:
    """Lower-case letters and digits only: "Standard NCADSA100v4 Family" matches standardNCADSA100v4Family."""
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def _sku_key(sku: str) -> str:
    key = sku.strip().lower()
    return key if key.startswith("standard_") else "standard_" + key


def region_key(region: str) -> str:
    """An ARM region name as the cache files are named ("East US" -> "eastus"); AzureError for anything else."""
    key = str(region or "").strip().lower().replace(" ", "")
    if not _REGION_RE.match(key):
        raise AzureError(f"region {region!r} is not an Azure region name; give the ARM name, e.g. --region eastus, "
                         f"or set the region in Settings › Azure")
    return key


# --------------------------------------------------------------------------------------------------------
# The cache


def cache_path(region: str) -> Path:
    """``data_dir()/azure/capacity-<region>.json``."""
    return data_dir() / "azure" / f"capacity-{region_key(region)}.json"


def to_doc(table: CapacityTable) -> dict[str, Any]:
    """The table as its cache file (and `distill azure capacity --json`) holds it."""
    return {
        "version": CACHE_VERSION,
        "region": table.region,
        "subscription_id": table.subscription_id,
        "workspace": table.workspace,
        "checked_on": table.checked_on,
        "checked_at": table.checked_at,
        "aml_quota_read": table.aml_quota_read,
        "skus": [{**asdict(o), "zones": list(o.zones), "restricted_zones": list(o.restricted_zones)}
                 for o in table.skus.values()],
        "quotas": [asdict(q) for q in table.quotas],
        "notes": list(table.notes),
    }


def from_doc(doc: Any, region: str) -> CapacityTable:
    """Raises ValueError/KeyError/TypeError when the document is not a capacity cache for ``region``."""
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
        raise ValueError("unrecognised format")
    if doc.get("region") != region:
        raise ValueError(f"it is for region {doc.get('region')!r}")
    checked_on = str(doc["checked_on"])
    _dt.date.fromisoformat(checked_on)
    skus = {}
    for row in doc["skus"]:
        offer = SkuOffer(sku=str(row["sku"]), offered=bool(row["offered"]), reason=str(row.get("reason", "")),
                         scope=str(row.get("scope", "")), family=str(row.get("family", "")),
                         vcpus=int(row["vcpus"]), low_priority=bool(row.get("low_priority", True)),
                         zones=tuple(str(z) for z in row.get("zones", [])),
                         restricted_zones=tuple(str(z) for z in row.get("restricted_zones", [])))
        if offer.vcpus < 1:
            raise ValueError(f"{offer.sku} has {offer.vcpus} vCPUs")
        skus[_sku_key(offer.sku)] = offer
    quotas = [Quota(name=str(q["name"]), label=str(q.get("label", "")), used=int(q["used"]), limit=int(q["limit"]),
                    source=str(q.get("source", "vm"))) for q in doc["quotas"]]
    return CapacityTable(region=region, subscription_id=str(doc.get("subscription_id", "")), checked_on=checked_on,
                         checked_at=str(doc.get("checked_at", "")), workspace=str(doc.get("workspace", "")),
                         skus=skus, quotas=quotas, aml_quota_read=bool(doc.get("aml_quota_read", False)),
                         origin="cache", notes=[str(n) for n in doc.get("notes", [])])


def save_capacity(table: CapacityTable) -> Path:
    """Write the table to its region's cache atomically (a crash never leaves half a cache)."""
    from ..files import write_json_atomic

    return write_json_atomic(cache_path(table.region), to_doc(table))


def load_capacity(region: str, notes: list[str] | None = None) -> CapacityTable | None:
    """The cached capacity of ``region``, or None when it was never checked or the cache is unreadable.

    Never goes online. An unreadable cache is ignored and, when ``notes`` is given, a sentence saying so (and how to
    check again) is appended to it.
    """
    region = region_key(region)
    path = cache_path(region)
    if not path.exists():
        return None
    try:
        return from_doc(json.loads(path.read_text(encoding="utf-8")), region)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if notes is not None:
            notes.append(f"ignored the unreadable Azure capacity cache {path} ({exc}); run "
                         f"`{REFRESH_COMMAND} --region {region}` to check again")
        return None
