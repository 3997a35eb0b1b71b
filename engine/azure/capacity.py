"""Azure capacity and quota: which GPU sizes of the catalog the subscription can actually get in a region, and for
how many nodes, so the planner never recommends a size that would sit in a queue or fail to scale up.

Three things decide whether ``n`` nodes of a size can run in a region:

- **The size is offered**: Azure's resource-SKU listing (azure-mgmt-compute ``resource_skus.list``) names every VM
  size of the region with its quota family (e.g. ``standardNCADSA100v4Family``), its vCPUs and its restrictions. A
  ``Location`` restriction (reason ``NotAvailableForSubscription``, ``QuotaId``) means the subscription cannot have
  the size there at all; ``Zone`` restrictions that cover every zone of the region mean the same. A size the listing
  does not name is not offered there. ``LowPriorityCapable = False`` rules out low-priority nodes only.
- **Azure ML quota**: Azure ML clusters draw on Azure ML's own vCPU quota per VM family and per region (``az ml
  compute list-usage``: "Standard NCADSA100v4 Family Cluster Dedicated vCPUs", "Total Cluster Dedicated Regional
  vCPUs", the low-priority total), separate from the subscription's VM quota; a workspace can be given a smaller
  share of a family. When that listing answers, it is what the checks use.
- **The subscription's VM quota** (``usage.list(region)``: the family's vCPUs, ``cores``, ``lowPriorityCores``):
  what the checks use when the Azure ML listing did not answer (a note says so), and shown beside it otherwise.

Dedicated nodes need ``nodes × vCPUs`` free in the family quota and in the regional dedicated total; low-priority
nodes need them free in the regional low-priority total.

:func:`refresh_capacity` is the only function here that goes online (it needs a signed-in :class:`Azure`). It
writes ``data_dir()/azure/capacity-<region>.json`` atomically, with the date and the subscription. The planner
reads that cache with :func:`load_capacity`, never the network; an unreadable cache is ignored with a note, and a
region never checked is a note too, so planning works signed out and offline, only without this filter.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.hardware import load_skus
from ..catalog.prices import data_dir
from ..errors import AzureError
from .client import SETTINGS_HINT, Azure, explain

CACHE_VERSION = 1
PRIORITIES = ("dedicated", "low-priority")
REFRESH_COMMAND = "distill azure capacity --refresh"
STALE_DAYS = 7  # quota use changes as others start and stop clusters; older checks say so
MAX_NODES = 16  # the planner sweeps 1-16 nodes; describe() reports how many of those fit

_REGION_RE = re.compile(r"^[a-z0-9]+$")
# the canonical names of the regional totals, as the VM quota calls them (Azure ML's are mapped onto these)
DEDICATED_TOTAL = "cores"
LOW_PRIORITY_TOTAL = "lowPriorityCores"


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

    ``origin`` is ``"live"`` just after :func:`refresh_capacity`, ``"cache"`` when read back. ``aml_quota_read``
    says whether Azure ML's quota listing answered (then it governs; otherwise the VM quota stands in).
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

    def _limits(self, offer: SkuOffer, priority: str) -> list[tuple[Quota, str]]:
        """The quota rows ``priority`` nodes of ``offer`` draw on, each with what to ask for when short."""
        aml_hint = " in Azure ML's quota (Azure ML studio › Quotas, or a support request)"
        vm_hint = " (Azure portal › Quotas › Compute)"
        ws_hint = f" in workspace {self.workspace}'s share of Azure ML's quota (Azure ML studio › Quotas)"
        out: list[tuple[Quota, str]] = []
        names = [offer.family, DEDICATED_TOTAL] if priority == "dedicated" else [LOW_PRIORITY_TOTAL]
        for name in filter(None, names):
            found = []
            if self.aml_quota_read:  # Azure ML's quota governs its clusters; the VM quota stands in for a missing row
                found = [(q, aml_hint if source == "aml" else ws_hint) for source in ("aml", "aml-workspace")
                         if (q := self.quota(name, source)) is not None]
            if not found and (q := self.quota(name, "vm")) is not None:
                found = [(q, vm_hint)]
            out += found
        return out

    def problem(self, sku: str, nodes: int, priority: str) -> str:
        """Why ``nodes`` nodes of ``sku`` at ``priority`` cannot run in this region ("" when they can).

        A sentence for the user: the size is not offered, or which quota is short, by how much, and what to ask for.
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
                aml = q.source.startswith("aml")
                # a family is asked for by its id; Azure ML's regional totals by the name its quota page shows
                target = f"'{q.label}'" if aml and q.name != offer.family else q.name
                return (f"no quota: {'Azure ML quota ' if aml else ''}{q.short_label} has {q.free:,} of {q.limit:,} "
                        f"vCPUs free in {self.region}; {nodes} node{'s need' if nodes != 1 else ' needs'} {need:,}; "
                        f"request {need - q.free:,} more vCPUs for {target}{hint}")
        return ""

    def max_nodes(self, sku: str, priority: str, upto: int = MAX_NODES) -> int:
        """The most nodes (0..``upto``) of ``sku`` at ``priority`` that the checks allow."""
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

    def rows(self) -> list[dict[str, Any]]:
        """One dict per catalog size: offered, family, vCPUs, the governing family quota, nodes that fit."""
        out = []
        for sku in load_skus().values():
            offer = self.offer(sku.id)
            row: dict[str, Any] = {"sku": sku.id, "offered": bool(offer and offer.offered), "why_not": "",
                                   "family": offer.family if offer else "", "vcpus": offer.vcpus if offer else 0,
                                   "quota": None, "max_nodes": {}}
            if offer is None or not offer.offered:
                row["why_not"] = self.problem(sku.id, 1, "dedicated")
            if offer is not None:
                family = [q for q, _ in self._limits(offer, "dedicated") if _squash(q.name) == _squash(offer.family)]
                if family:
                    q = min(family, key=lambda q: q.free)
                    row["quota"] = {"name": q.name, "source": q.source, "free": q.free, "limit": q.limit}
            for p in PRIORITIES:
                row["max_nodes"][p] = self.max_nodes(sku.id, p) if row["offered"] else 0
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
        for r in self.rows():
            q = r["quota"]
            offer = self.offer(r["sku"])
            cells.append((
                r["sku"],
                "yes" if r["offered"] else f"no ({offer.reason or 'restricted'})" if offer else "no (not listed)",
                r["family"] or "-",
                str(r["vcpus"] or "-"),
                f"{q['free']:,}/{q['limit']:,}{tags[q['source']]}" if q else ("?" if r["offered"] else "-"),
                _nodes_text(r["max_nodes"]["dedicated"]) if r["offered"] else "-",
                _nodes_text(r["max_nodes"]["low-priority"]) if r["offered"] else "-",
            ))
        widths = [max(len(h), *(len(c[k]) for c in cells)) if cells else len(h) for k, h in enumerate(head)]
        lines.append("  " + "  ".join(f"{h:<{w}}" for h, w in zip(head, widths)).rstrip())
        for c in cells:
            lines.append("  " + "  ".join(f"{v:<{w}}" for v, w in zip(c, widths)).rstrip())
        totals = []
        for name, what in ((DEDICATED_TOTAL, "dedicated"), (LOW_PRIORITY_TOTAL, "low-priority")):
            for source in (("aml", "aml-workspace", "vm") if self.aml_quota_read else ("vm",)):
                q = self.quota(name, source)
                if q is not None:
                    src = {"aml": "Azure ML", "aml-workspace": f"workspace {self.workspace}", "vm": "VM"}[source]
                    totals.append(f"{what} {q.free:,} of {q.limit:,} vCPUs free ({src})")
        if totals:
            lines.append("")
            lines.append("  regional totals: " + "; ".join(totals))
        lines.append("")
        lines.append(f"  nodes: how many of 1-{MAX_NODES} nodes the quota allows now; "
                     f"refresh with `{REFRESH_COMMAND} --region {self.region}`")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _nodes_text(n: int) -> str:
    return "none" if n == 0 else (f"{n}+" if n >= MAX_NODES else str(n))


def _squash(text: str) -> str:
    """Lower-case letters and digits only: "Standard NCADSA100v4 Family" matches standardNCADSA100v4Family."""
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def _sku_key(sku: str) -> str:
    key = sku.strip().lower()
    return key if key.startswith("standard_") else "standard_" + key


def _region(region: str) -> str:
    key = str(region or "").strip().lower().replace(" ", "")
    if not _REGION_RE.match(key):
        raise AzureError(f"region {region!r} is not an Azure region name; give the ARM name, e.g. --region eastus, "
                         f"or set the region in {SETTINGS_HINT}")
    return key


# --------------------------------------------------------------------------------------------------------
# The cache


def cache_path(region: str) -> Path:
    """``data_dir()/azure/capacity-<region>.json``."""
    return data_dir() / "azure" / f"capacity-{_region(region)}.json"


def _to_doc(table: CapacityTable) -> dict[str, Any]:
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


def _from_doc(doc: Any, region: str) -> CapacityTable:
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


def _write_cache(table: CapacityTable) -> Path:
    """Write the table atomically (a crash never leaves half a cache)."""
    from ..files import write_json_atomic

    return write_json_atomic(cache_path(table.region), _to_doc(table))


def load_capacity(region: str, notes: list[str] | None = None) -> CapacityTable | None:
    """The cached capacity of ``region``, or None when it was never checked or the cache is unreadable.

    Never goes online. An unreadable cache is ignored and, when ``notes`` is given, a sentence saying so (and how to
    check again) is appended to it.
    """
    region = _region(region)
    path = cache_path(region)
    if not path.exists():
        return None
    try:
        return _from_doc(json.loads(path.read_text(encoding="utf-8")), region)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if notes is not None:
            notes.append(f"ignored the unreadable Azure capacity cache {path} ({exc}); run "
                         f"`{REFRESH_COMMAND} --region {region}` to check again")
        return None


# --------------------------------------------------------------------------------------------------------
# Reading Azure's answers


def _text(value: Any) -> str:
    """An SDK enum or string as its plain value ("NotAvailableForSubscription")."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _get(obj: Any, *names: str) -> Any:
    """A field of an SDK model, entity or plain dict under any of its spellings (snake_case or the REST name)."""
    for name in names:
        if isinstance(obj, dict):
            if obj.get(name) is not None:
                return obj[name]
        else:
            value = getattr(obj, name, None)
            if value is not None:
                return value
            value = getattr(obj, "__dict__", {}).get(name)
            if value is not None:
                return value
    return None


def offer_from_sku(sku: Any, region: str, catalog_id: str, catalog_vcpus: int) -> SkuOffer:
    """A resource-SKU listing entry (azure.mgmt.compute ResourceSku) as a :class:`SkuOffer`."""
    caps = {str(_get(c, "name") or ""): str(_get(c, "value") or "") for c in (_get(sku, "capabilities") or [])}
    try:
        vcpus = int(caps.get("vCPUs") or 0)
    except ValueError:
        vcpus = 0
    zones: set[str] = set()
    for info in _get(sku, "location_info", "locationInfo") or []:
        if _text(_get(info, "location")).lower() == region:
            zones |= {str(z) for z in (_get(info, "zones") or [])}
    offered, reason, scope = True, "", ""
    restricted_zones: set[str] = set()
    zone_reason = ""
    for r in _get(sku, "restrictions") or []:
        kind = _text(_get(r, "type")).lower()
        code = _text(_get(r, "reason_code", "reasonCode"))
        info = _get(r, "restriction_info", "restrictionInfo")
        if kind == "location":
            locations = [str(x).lower() for x in (_get(info, "locations") if info is not None else None)
                         or _get(r, "values_property", "values") or []]
            if not locations or region in locations:
                offered, reason, scope = False, code, "location"
        elif kind == "zone":
            restricted_zones |= {str(z) for z in ((_get(info, "zones") if info is not None else None) or [])}
            zone_reason = zone_reason or code
    if offered and zones and restricted_zones >= zones:
        offered, reason, scope = False, zone_reason, "zone"
    return SkuOffer(sku=catalog_id, offered=offered, reason=reason, scope=scope,
                    family=str(_get(sku, "family") or ""), vcpus=vcpus if vcpus > 0 else catalog_vcpus,
                    low_priority=caps.get("LowPriorityCapable", "True").strip().lower() != "false",
                    zones=tuple(sorted(zones)), restricted_zones=tuple(sorted(restricted_zones)))


def _usage_numbers(u: Any) -> tuple[str, str, int, int]:
    """(name, label, used, limit) of a VM or Azure ML usage row."""
    name = _get(u, "name")
    value = str(_get(name, "value") or "") if name is not None else ""
    label = str(_get(name, "localized_value", "localizedValue") or value) if name is not None else ""
    used = int(_get(u, "current_value", "currentValue") or 0)
    limit = int(_get(u, "limit") or 0)
    return value, label, used, limit


def vm_quotas(usages: Iterable[Any], families: set[str]) -> list[Quota]:
    """The subscription's VM quota rows that matter: our families and the regional totals."""
    wanted = {_squash(f): f for f in families} | {_squash(DEDICATED_TOTAL): DEDICATED_TOTAL,
                                                   _squash(LOW_PRIORITY_TOTAL): LOW_PRIORITY_TOTAL}
    out = []
    for u in usages:
        value, label, used, limit = _usage_numbers(u)
        if _squash(value) in wanted:
            out.append(Quota(name=value, label=label, used=used, limit=limit, source="vm"))
    return out


def aml_quotas(usages: Iterable[Any], families: set[str], workspace: str) -> list[Quota]:
    """Azure ML's quota rows that matter, named as the VM quota names them (family, cores, lowPriorityCores).

    Azure ML names a family's row "Standard NCADSA100v4 Family Cluster Dedicated vCPUs" and the totals "Total
    Cluster Dedicated Regional vCPUs" and "Total Cluster Low Priority Regional vCPUs"; rows under
    ``/workspaces/<name>/`` are a workspace's share (only this workspace's are kept).
    """
    by_key = {_squash(f): f for f in families}
    out = []
    for u in usages:
        value, label, used, limit = _usage_numbers(u)
        rid = str(_get(u, "id") or "")
        rtype = str(_get(u, "type") or "")
        source = "aml"
        m = re.search(r"/workspaces/([^/]+)", rid, flags=re.IGNORECASE)
        if m or "/workspaces/" in rtype.lower():
            if not m or m.group(1).lower() != workspace.lower():
                continue
            source = "aml-workspace"
        key = _squash(value or label)
        if "lowpriority" in key and "family" not in key:
            name = LOW_PRIORITY_TOTAL
        elif "totalclusterdedicated" in key or (
                rtype.lower().endswith("/dedicatedcores/usages") and "family" not in key):
            name = DEDICATED_TOTAL
        else:
            family = re.sub(r"(clusterdedicatedvcpus|dedicatedvcpus|vcpus)$", "", key)
            if family not in by_key:
                continue
            name = by_key[family]
        out.append(Quota(name=name, label=label or value, used=used, limit=limit, source=source))
    return out


# --------------------------------------------------------------------------------------------------------
# Going online


def _sdk_errors() -> tuple[type[BaseException], ...]:
    from azure.core.exceptions import AzureError as CoreAzureError

    errors: tuple[type[BaseException], ...] = (CoreAzureError, AzureError)
    try:
        from azure.ai.ml.exceptions import MlException
    except ImportError:  # pragma: no cover - azure-ai-ml is part of the azure extra
        return errors
    return errors + (MlException,)


def refresh_capacity(az: Azure, region: str) -> CapacityTable:
    """Ask Azure what ``region`` offers this subscription and how much quota is free; cache and return it.

    Reads the resource-SKU listing and the VM quota (azure-mgmt-compute) and Azure ML's quota (azure-ai-ml). A
    failure of the first two is an :class:`AzureError` saying what to do (nothing is cached then); Azure ML's quota
    not answering is a note, and the VM quota stands in for it.
    """
    region = _region(region)
    doing = f"checking capacity and quota in {region}"
    catalog = {s.id.lower(): s for s in load_skus().values()}
    errors = _sdk_errors()
    offers: dict[str, SkuOffer] = {}
    try:
        for sku in az.compute_mgmt.resource_skus.list(filter=f"location eq '{region}'"):
            if _text(_get(sku, "resource_type", "resourceType")) != "virtualMachines":
                continue
            entry = catalog.get(str(_get(sku, "name") or "").lower())
            if entry is None or entry.id.lower() in offers:
                continue
            offers[entry.id.lower()] = offer_from_sku(sku, region, entry.id, entry.vcpus)
        usages = list(az.compute_mgmt.usage.list(region))
    except errors as exc:
        raise explain(exc, doing, az.ws) from exc
    families = {o.family for o in offers.values() if o.family}
    quotas = vm_quotas(usages, families)
    notes: list[str] = []
    aml_read = False
    try:
        quotas += aml_quotas(az.ml.compute.list_usage(location=region), families, az.ws.workspace)
        aml_read = True
    except errors as exc:
        why = str(explain(exc, f"reading Azure ML's quota in {region}", az.ws))
        notes.append(f"{why}. Azure ML's quota could not be read, so the subscription's VM quota stands in for it; "
                     "Azure ML clusters draw on Azure ML's own quota, which can be lower")
    missing = sorted(s.id for s in catalog.values() if s.id.lower() not in offers)
    if missing:
        notes.append(f"{len(missing)} catalog size{'s are' if len(missing) != 1 else ' is'} not listed in {region} "
                     f"for this subscription: {', '.join(missing)}")
    now = _dt.datetime.now(_dt.UTC)
    table = CapacityTable(region=region, subscription_id=az.ws.subscription_id, workspace=az.ws.workspace,
                          checked_on=_dt.date.today().isoformat(), checked_at=now.isoformat(timespec="seconds"),
                          skus=offers, quotas=quotas, aml_quota_read=aml_read, origin="live", notes=notes)
    try:
        _write_cache(table)
    except OSError as exc:
        table.notes.append(f"could not save the check to {cache_path(region)} ({exc}); the planner will not see it")
    return table


# --------------------------------------------------------------------------------------------------------
# `distill azure capacity [--region R] [--refresh]`


def _settings_region() -> str:
    from ..settings import load_settings

    settings, _ = load_settings()
    return settings.azure.region.strip()


def cmd_capacity(args) -> int:
    """Show the cached capacity and quota of a region, or (``--refresh``) sign in and check them now."""
    region = getattr(args, "region", None)
    if getattr(args, "refresh", False):
        from .client import workspace_from_settings

        ws = workspace_from_settings()
        region = region or ws.region
        if not region:
            raise AzureError(f"no region given: pass --region (e.g. eastus) or set the region in {SETTINGS_HINT}")
        table = refresh_capacity(Azure(ws), region)
    else:
        region = region or _settings_region()
        if not region:
            raise AzureError(f"no region given: pass --region (e.g. eastus) or set the region in {SETTINGS_HINT}")
        notes: list[str] = []
        table = load_capacity(region, notes)
        for note in notes:
            print(note)
        if table is None:
            print(f"Azure capacity and quota in {_region(region)} have never been checked. Run "
                  f"`{REFRESH_COMMAND} --region {_region(region)}` to check them (it signs in to Azure with the "
                  f"workspace in {SETTINGS_HINT}); until then the planner considers every size")
            return 0
    if getattr(args, "json", False):
        doc = _to_doc(table)
        doc["sizes"] = table.rows()
        print(json.dumps(doc, indent=1))
        return 0
    print(table.describe())
    return 0
