"""Asking Azure for capacity and quota: which GPU sizes of the catalog the subscription can get in a region, and
how much vCPU quota is free, read into the planner's :class:`~distill_studio.engine.catalog.capacity.CapacityTable`.

- **The sizes**: Azure's resource-SKU listing (azure-mgmt-compute ``resource_skus.list``) names every VM size of the
  region with its quota family (e.g. ``standardNCADSA100v4Family``), its vCPUs and its restrictions. A ``Location``
  restriction (reason ``NotAvailableForSubscription``, ``QuotaId``) means the subscription cannot have the size there
  at all; ``Zone`` restrictions that cover every zone of the region mean the same.
- **Azure ML quota** (azure-ai-ml ``compute.list_usage``, as ``az ml compute list-usage``): "Standard NCADSA100v4
  Family Cluster Dedicated vCPUs", "Total Cluster Dedicated Regional vCPUs", the low-priority total, and a
  workspace's share of a family.
- **The subscription's VM quota** (``usage.list(region)``: the family's vCPUs, ``cores``, ``lowPriorityCores``).

:func:`refresh_capacity` is the only function that goes online (it needs a signed-in :class:`Azure`); it saves the
table to the region's cache (engine/catalog/capacity.py), which the planner reads without the network or this
package. ``distill azure capacity`` (:func:`cmd_capacity`) shows the cache or refreshes it.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable
from typing import Any

from ..catalog.capacity import (DEDICATED_TOTAL, LOW_PRIORITY_TOTAL, MAX_NODES, PRIORITIES, REFRESH_COMMAND,
                                STALE_DAYS, CapacityTable, Quota, SkuOffer, cache_path, load_capacity, save_capacity,
                                to_doc)
from ..catalog.capacity import _squash
from ..catalog.capacity import region_key as _region
from ..catalog.hardware import load_skus
from ..errors import AzureError
from .client import SETTINGS_HINT, Azure, explain

# the table, its cache and its sentences are planning data (engine/catalog/capacity.py); this module fills them
__all__ = ["CapacityTable", "Quota", "SkuOffer", "DEDICATED_TOTAL", "LOW_PRIORITY_TOTAL", "MAX_NODES", "PRIORITIES",
           "REFRESH_COMMAND", "STALE_DAYS", "cache_path", "load_capacity", "save_capacity", "offer_from_sku",
           "vm_quotas", "aml_quotas", "refresh_capacity", "cmd_capacity"]


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
        save_capacity(table)
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
        doc = to_doc(table)
        doc["sizes"] = table.rows()
        print(json.dumps(doc, indent=1))
        return 0
    print(table.describe())
    return 0
