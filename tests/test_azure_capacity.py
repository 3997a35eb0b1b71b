"""Azure capacity and quota: the real azure-mgmt-compute and azure-ai-ml clients, answered by a fake azure-core
transport with Azure's own response shapes (resource SKUs over two pages, VM usages, Azure ML usages), then the
cache, the user's sentences, and the planner skipping what the region cannot give."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("azure.ai.ml")

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure_fake import CannedTransport  # noqa: E402  (tests/: the transport the fakes share)

from distill_studio.engine.azure import capacity as C
from distill_studio.engine.catalog import capacity as K
from distill_studio.engine.azure import client as client_mod
from distill_studio.engine.azure.client import Azure, Workspace
from distill_studio.engine.errors import AzureError, RunError
from distill_studio.engine.plan import load_plan
from distill_studio.engine.planner import analyse, resolve_run
from distill_studio.engine.report import summary_dict

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "resources" / "plans" / "gemma3-27b-to-4b-3h.toml"
SUB = "00000000-0000-0000-0000-0000000000a1"
WS = Workspace(subscription_id=SUB, resource_group="rg-distill", workspace="ws-distill", region="eastus")
ARM = "https://management.azure.com"
TODAY = dt.date.today().isoformat()


# --------------------------------------------------------------------------------------------------------
# Azure's answers, in the shapes ARM returns them

FAMILIES = {
    "Standard_ND96isr_H100_v5": "standardNDSH100v5Family",
    "Standard_ND96isr_H200_v5": "standardNDSH200v5Family",
    "Standard_ND96amsr_A100_v4": "standardNDAMSv4_A100Family",
    "Standard_ND96asr_v4": "standardNDASv4_A100Family",
    "Standard_NC24ads_A100_v4": "standardNCADSA100v4Family",
    "Standard_NC48ads_A100_v4": "standardNCADSA100v4Family",
    "Standard_NC96ads_A100_v4": "standardNCADSA100v4Family",
    "Standard_NC40ads_H100_v5": "standardNCadsH100v5Family",
    "Standard_NC80adis_H100_v5": "standardNCadsH100v5Family",
    "Standard_NV36ads_A10_v5": "standardNVADSA10v5Family",
    "Standard_NV36adms_A10_v5": "standardNVADSA10v5Family",
    "Standard_NV72ads_A10_v5": "standardNVADSA10v5Family",
    "Standard_NC4as_T4_v3": "standardNCASv3_T4Family",
    "Standard_NC8as_T4_v3": "standardNCASv3_T4Family",
    "Standard_NC16as_T4_v3": "standardNCASv3_T4Family",
    "Standard_NC64as_T4_v3": "standardNCASv3_T4Family",
}  # Standard_ND96isr_MI300X_v5 is left out: the region does not list it
VCPUS = {"Standard_ND96isr_H100_v5": 96, "Standard_ND96isr_H200_v5": 96, "Standard_ND96amsr_A100_v4": 96,
         "Standard_ND96asr_v4": 96, "Standard_NC24ads_A100_v4": 24, "Standard_NC48ads_A100_v4": 48,
         "Standard_NC96ads_A100_v4": 96, "Standard_NC40ads_H100_v5": 40, "Standard_NC80adis_H100_v5": 80,
         "Standard_NV36ads_A10_v5": 36, "Standard_NV36adms_A10_v5": 36, "Standard_NV72ads_A10_v5": 72,
         "Standard_NC4as_T4_v3": 4, "Standard_NC8as_T4_v3": 8, "Standard_NC16as_T4_v3": 16,
         "Standard_NC64as_T4_v3": 64}


def sku_entry(name: str, family: str, vcpus: int, *, restrictions=(), low_priority=True,
              resource_type="virtualMachines"):
    return {
        "resourceType": resource_type, "name": name, "tier": "Standard", "size": name.removeprefix("Standard_"),
        "family": family, "locations": ["eastus"],
        "locationInfo": [{"location": "eastus", "zones": ["1", "2", "3"], "zoneDetails": []}],
        "capabilities": [{"name": "vCPUs", "value": str(vcpus)}, {"name": "vCPUsAvailable", "value": str(vcpus)},
                         {"name": "LowPriorityCapable", "value": "True" if low_priority else "False"},
                         {"name": "MemoryGB", "value": "220"}],
        "restrictions": list(restrictions),
    }


LOCATION_RESTRICTED = {"type": "Location", "values": ["eastus"], "restrictionInfo": {"locations": ["eastus"]},
                       "reasonCode": "NotAvailableForSubscription"}


def zone_restricted(zones):
    return {"type": "Zone", "values": ["eastus"], "restrictionInfo": {"locations": ["eastus"], "zones": zones},
            "reasonCode": "NotAvailableForSubscription"}


def sku_pages() -> tuple[dict, dict]:
    entries = []
    for name, family in FAMILIES.items():
        restrictions, low = [], True
        if name == "Standard_ND96isr_H100_v5":
            restrictions = [LOCATION_RESTRICTED]
        elif name == "Standard_NC40ads_H100_v5":
            restrictions = [zone_restricted(["1", "2", "3"])]   # every zone: not offered
        elif name == "Standard_NC80adis_H100_v5":
            restrictions = [zone_restricted(["2"])]             # one zone: still offered
        elif name == "Standard_NV36ads_A10_v5":
            low = False
        entries.append(sku_entry(name, family, VCPUS[name], restrictions=restrictions, low_priority=low))
    # sizes outside the catalog, and a resource type that is not a VM, are ignored
    entries.insert(3, sku_entry("Standard_D2s_v3", "standardDSv3Family", 2))
    entries.insert(5, sku_entry("Premium_LRS", "", 0, resource_type="disks"))
    half = len(entries) // 2
    next_link = (f"{ARM}/subscriptions/{SUB}/providers/Microsoft.Compute/skus?api-version=2021-07-01"
                 "&$filter=location%20eq%20%27eastus%27&$skiptoken=page2")
    return {"value": entries[:half], "nextLink": next_link}, {"value": entries[half:]}


def usage(value: str, localized: str, used: int, limit: int) -> dict:
    return {"unit": "Count", "currentValue": used, "limit": limit,
            "name": {"value": value, "localizedValue": localized}}


def vm_usages() -> dict:
    rows = [usage("availabilitySets", "Availability Sets", 0, 2500),
            usage("cores", "Total Regional vCPUs", 100, 2000),
            usage("lowPriorityCores", "Total Regional Low-priority vCPUs", 8, 100),
            usage("standardDSv3Family", "Standard DSv3 Family vCPUs", 0, 350),
            usage("standardNCADSA100v4Family", "Standard NCADSA100v4 Family vCPUs", 72, 96),
            usage("standardNDSH200v5Family", "Standard NDSH200v5 Family vCPUs", 0, 192),
            usage("standardNDAMSv4_A100Family", "Standard NDAMSv4_A100 Family vCPUs", 0, 96),
            usage("standardNDASv4_A100Family", "Standard NDASv4_A100 Family vCPUs", 0, 0),
            usage("standardNDSH100v5Family", "Standard NDSH100v5 Family vCPUs", 0, 0)]
    for family in ("standardNCadsH100v5Family", "standardNVADSA10v5Family", "standardNCASv3_T4Family"):
        rows.append(usage(family, family.replace("standard", "Standard ").replace("Family", " Family vCPUs"), 0, 1000))
    return {"value": rows}


def aml_usage(rid: str, rtype: str, name: str, used: int, limit: int) -> dict:
    return {"id": rid, "amlWorkspaceLocation": "eastus", "type": f"Microsoft.MachineLearningServices/{rtype}",
            "unit": "Count", "currentValue": used, "limit": limit, "name": {"value": name, "localizedValue": name}}


def aml_usages() -> dict:
    sub = f"/subscriptions/{SUB}"
    ws = f"{sub}/resourceGroups/rg-distill/providers/Microsoft.MachineLearningServices/workspaces/ws-distill"
    other = f"{sub}/resourceGroups/rg-distill/providers/Microsoft.MachineLearningServices/workspaces/other-ws"
    return {"value": [
        aml_usage(f"{sub}/usages", "totalCores/usages", "Clusters", 1, 200),
        aml_usage(f"{sub}/usages", "dedicatedCores/usages", "Total Cluster Dedicated Regional vCPUs", 0, 3000),
        aml_usage(f"{sub}/usages", "lowPriorityCores/usages", "Total Cluster Low Priority Regional vCPUs", 0, 48),
        aml_usage(f"{sub}/usages/Standard_NCADSA100v4_Family_Cluster_Dedicated_vCPUs", "vmFamily/usages",
                  "Standard NCADSA100v4 Family Cluster Dedicated vCPUs", 24, 48),
        aml_usage(f"{sub}/usages/Standard_NDSH200v5_Family_Cluster_Dedicated_vCPUs", "vmFamily/usages",
                  "Standard NDSH200v5 Family Cluster Dedicated vCPUs", 0, 384),
        aml_usage(f"{ws}/usages/Standard_NDSH200v5_Family_Cluster_Dedicated_vCPUs", "workspaces/dedicatedCores/usages",
                  "Standard NDSH200v5 Family Cluster Dedicated vCPUs", 0, 192),
        aml_usage(f"{other}/usages/Standard_NCADSA100v4_Family_Cluster_Dedicated_vCPUs",
                  "workspaces/dedicatedCores/usages", "Standard NCADSA100v4 Family Cluster Dedicated vCPUs", 0, 0),
        aml_usage(f"{sub}/usages/Standard_D_Family_Cluster_Dedicated_vCPUs", "vmFamily/usages",
                  "Standard D Family Cluster Dedicated vCPUs", 0, 24),
    ]}


def arm_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


# --------------------------------------------------------------------------------------------------------
# The fake transport and credential


class FakeCred:
    def get_token(self, *scopes, **kw):
        return AccessToken("fake-token", 4_102_444_800)

    def get_token_info(self, *scopes, options=None):
        return AccessTokenInfo("fake-token", 4_102_444_800)


class FakeArm(CannedTransport):
    """Answers ARM's REST calls by method and URL pattern. ``script[route]`` holds answers served (in order) before
    the route's normal one: a 429, a 403."""

    ROUTES = (
        ("skus2", "GET", r"/providers/Microsoft\.Compute/skus\?.*skiptoken=page2"),
        ("skus", "GET", r"/providers/Microsoft\.Compute/skus\?"),
        ("vm_usages", "GET", r"/providers/Microsoft\.Compute/locations/eastus/usages\?"),
        ("aml_usages", "GET", r"/providers/Microsoft\.MachineLearningServices/locations/eastus/usages\?"),
    )

    def __init__(self, aml_status: int = 200) -> None:
        page1, page2 = sku_pages()
        self.normal = {"skus": (200, page1, {}), "skus2": (200, page2, {}), "vm_usages": (200, vm_usages(), {}),
                       "aml_usages": (200, aml_usages(), {}) if aml_status == 200 else
                       (aml_status, arm_error("AuthorizationFailed", "The client does not have authorization to "
                                              "perform action 'Microsoft.MachineLearningServices/locations/usages/"
                                              "read'"), {})}
        self.script: dict[str, list[tuple[int, dict, dict]]] = {}
        self.requests: list[tuple[str, str, str]] = []   # (route, method, url)

    def sleep(self, duration):  # the retry policy's back-off: nothing to wait for here
        pass

    def send(self, request, **kwargs):
        route = next((name for name, method, pattern in self.ROUTES
                      if request.method == method and re.search(pattern, request.url)), None)
        self.requests.append((route or "?", request.method, request.url))
        if route is None:
            status, body, headers = 404, arm_error("NotFound", f"no fake for {request.method} {request.url}"), {}
        elif self.script.get(route):
            status, body, headers = self.script[route].pop(0)
        else:
            status, body, headers = self.normal[route]
        return self.reply(request, status, {"Content-Type": "application/json; charset=utf-8",
                                            "x-ms-request-id": "fake", **headers}, json.dumps(body).encode())

    def hits(self, route: str) -> int:
        return sum(1 for r, _, _ in self.requests if r == route)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(d))
    monkeypatch.setenv("DISTILL_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    return d


def refreshed(aml_status: int = 200) -> tuple[K.CapacityTable, FakeArm]:
    t = FakeArm(aml_status)
    return C.refresh_capacity(Azure(WS, cred=FakeCred(), t=t), "eastus"), t


# --------------------------------------------------------------------------------------------------------
# Reading Azure


def test_refresh_reads_every_page_and_keeps_only_catalog_sizes():
    table, t = refreshed()
    assert t.hits("skus") == 1 and t.hits("skus2") == 1          # the nextLink was followed
    first = urllib.parse.unquote(next(u for r, _, u in t.requests if r == "skus"))
    assert "$filter=location eq 'eastus'" in first
    assert set(table.skus) == {k.lower() for k in FAMILIES}        # no D2s_v3, no disks, MI300X not listed
    nc = table.offer("Standard_NC24ads_A100_v4")
    assert (nc.offered, nc.family, nc.vcpus) == (True, "standardNCADSA100v4Family", 24)
    h100 = table.offer("Standard_ND96isr_H100_v5")
    assert (h100.offered, h100.reason, h100.scope) == (False, "NotAvailableForSubscription", "location")
    assert table.offer("Standard_NC40ads_H100_v5").scope == "zone"      # every zone restricted
    one_zone = table.offer("Standard_NC80adis_H100_v5")
    assert one_zone.offered and one_zone.restricted_zones == ("2",)
    assert not table.offer("Standard_NV36ads_A10_v5").low_priority
    assert table.aml_quota_read and table.subscription_id == SUB and table.checked_on == TODAY
    vm = table.quota("standardNCADSA100v4Family", "vm")
    assert (vm.used, vm.limit, vm.free, vm.short_label) == (72, 96, 24, "Standard NCADSA100v4 Family")
    aml = table.quota("standardNCADSA100v4Family", "aml")
    assert (aml.free, aml.limit) == (24, 48)
    assert table.quota("cores", "aml").limit == 3000 and table.quota("lowPriorityCores", "aml").limit == 48
    assert table.quota("standardNDSH200v5Family", "aml-workspace").limit == 192
    # another workspace's share, a family outside the catalog and the cluster count are not kept
    assert [q for q in table.quotas if q.source == "aml-workspace"] == [table.quota("standardNDSH200v5Family",
                                                                                      "aml-workspace")]
    assert not any("standardd" == q.name.lower().replace("family", "") for q in table.quotas)
    assert any("Standard_ND96isr_MI300X_v5" in n for n in table.notes)


def test_the_check_is_cached_with_its_date_and_read_back_offline(data_dir):
    table, _ = refreshed()
    path = data_dir / "azure" / "capacity-eastus.json"
    doc = json.loads(path.read_text())
    assert (doc["region"], doc["subscription_id"], doc["checked_on"]) == ("eastus", SUB, TODAY)
    assert doc["checked_at"].startswith(TODAY[:4]) and doc["workspace"] == "ws-distill"
    assert [p.name for p in path.parent.iterdir()] == ["capacity-eastus.json"]   # no temporary file left
    back = K.load_capacity("eastus")
    assert back is not None and back.origin == "cache" and table.origin == "live"
    assert back.skus == table.skus and back.quotas == table.quotas and back.aml_quota_read
    for sku, nodes, prio in [("Standard_NC24ads_A100_v4", 2, "dedicated"), ("Standard_ND96isr_H100_v5", 1,
                                                                          "dedicated"),
                             ("Standard_NC48ads_A100_v4", 2, "low-priority")]:
        assert back.problem(sku, nodes, prio) == table.problem(sku, nodes, prio)
    assert K.load_capacity("westus") is None                  # never checked


def test_a_bad_or_foreign_cache_is_ignored_with_a_note(data_dir):
    path = data_dir / "azure" / "capacity-eastus.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    notes: list[str] = []
    assert K.load_capacity("eastus", notes) is None
    assert len(notes) == 1 and str(path) in notes[0] and "distill azure capacity --refresh --region eastus" in notes[0]
    refreshed()
    doc = json.loads(path.read_text())
    doc["region"] = "westus"
    path.write_text(json.dumps(doc))
    notes = []
    assert K.load_capacity("eastus", notes) is None and "'westus'" in notes[0]
    a = analyse(load_plan(PLAN), PLAN.parent)
    assert a.capacity is None and "available" not in a.sweep.out
    assert any(n.startswith("ignored the unreadable Azure capacity cache") for n in a.notes)


# --------------------------------------------------------------------------------------------------------
# The sentences


def test_problems_when_azure_ml_quota_governs():
    table, _ = refreshed()
    p = table.problem
    assert p("Standard_ND96isr_H100_v5", 1, "dedicated") == \
        "not offered in eastus for this subscription (NotAvailableForSubscription)"
    assert p("Standard_ND96isr_MI300X_v5", 1, "dedicated").startswith("not offered in eastus")
    assert p("Standard_NC40ads_H100_v5", 1, "dedicated") == \
        "not offered in any zone of eastus for this subscription (NotAvailableForSubscription)"
    assert p("Standard_NC80adis_H100_v5", 4, "dedicated") == ""
    assert "low-priority" in p("Standard_NV36ads_A10_v5", 1, "low-priority")
    assert p("Standard_NV36ads_A10_v5", 1, "dedicated") == ""
    # the family's Azure ML quota: 24 of 48 free
    assert p("Standard_NC24ads_A100_v4", 1, "dedicated") == ""
    assert p("Standard_NC24ads_A100_v4", 2, "dedicated") == (
        "no dedicated quota for family standardNCADSA100v4Family in eastus: Azure ML quota 'Standard NCADSA100v4 "
        "Family Cluster Dedicated vCPUs' has 24 of 48 vCPUs in use; 2 nodes × 24 vCPUs of NC24ads_A100_v4 need 48; "
        "request 24 more vCPUs for standardNCADSA100v4Family (a dedicated limit of 72) in Azure ML's quota (Azure ML "
        "studio › Quotas, or a support request)")
    # the workspace's share (192) is smaller than the subscription's (384)
    assert p("Standard_ND96isr_H200_v5", 2, "dedicated") == ""
    assert p("Standard_ND96isr_H200_v5", 3, "dedicated").startswith(
        "no dedicated quota for family standardNDSH200v5Family in eastus: Azure ML quota 'Standard NDSH200v5 Family "
        "Cluster Dedicated vCPUs' has 0 of 192 vCPUs in use; 3 nodes × 96 vCPUs of ND96isr_H200_v5 need 288; "
        "request 96 more vCPUs for standardNDSH200v5Family (a dedicated limit of 288) in workspace ws-distill's share")
    # low priority: Azure ML's regional low-priority total, 48
    assert p("Standard_NC48ads_A100_v4", 1, "low-priority") == ""
    assert p("Standard_NC24ads_A100_v4", 3, "low-priority").startswith(
        "no low-priority quota for NC24ads_A100_v4 (family standardNCADSA100v4Family) in eastus: Azure ML quota "
        "'Total Cluster Low Priority Regional vCPUs', which the low-priority nodes of every family share, has 0 of 48 "
        "vCPUs in use; 3 nodes × 24 vCPUs of NC24ads_A100_v4 need 72; request 24 more vCPUs for 'Total Cluster Low "
        "Priority Regional vCPUs' (a low-priority limit of 72)")
    # a family Azure ML lists no row for: the VM quota stands in
    assert p("Standard_ND96amsr_A100_v4", 1, "dedicated") == ""
    assert p("Standard_ND96amsr_A100_v4", 2, "dedicated").startswith(
        "no dedicated quota for family standardNDAMSv4_A100Family in eastus: VM quota 'Standard NDAMSv4_A100 Family "
        "vCPUs' has 0 of 96 vCPUs in use; 2 nodes × 96 vCPUs of ND96amsr_A100_v4 need 192; request 96 more vCPUs for "
        "standardNDAMSv4_A100Family (a dedicated limit of 192)")
    assert table.max_nodes("Standard_ND96isr_H200_v5", "dedicated") == 2
    assert table.max_nodes("Standard_NC4as_T4_v3", "dedicated") == K.MAX_NODES


def test_problems_from_the_vm_quota_when_azure_ml_does_not_answer():
    table, t = refreshed(aml_status=403)
    assert t.hits("aml_usages") == 1 and not table.aml_quota_read
    assert any("Azure ML's quota could not be read" in n and "403" in n for n in table.notes)
    p = table.problem
    assert p("Standard_NC24ads_A100_v4", 1, "dedicated") == ""
    assert p("Standard_NC24ads_A100_v4", 11, "dedicated") == (
        "no dedicated quota for family standardNCADSA100v4Family in eastus: VM quota 'Standard NCADSA100v4 Family "
        "vCPUs' has 72 of 96 vCPUs in use; 11 nodes × 24 vCPUs of NC24ads_A100_v4 need 264; request 240 more vCPUs "
        "for standardNCADSA100v4Family (a dedicated limit of 336) (Azure portal › Quotas › Compute)")
    assert p("Standard_NC96ads_A100_v4", 1, "low-priority") == (
        "no low-priority quota for NC96ads_A100_v4 (family standardNCADSA100v4Family) in eastus: VM quota 'Total "
        "Regional Low-priority vCPUs', which the low-priority nodes of every family share, has 8 of 100 vCPUs in use; "
        "1 node × 96 vCPUs of NC96ads_A100_v4 need 96; request 4 more vCPUs for lowPriorityCores (a low-priority "
        "limit of 104) (Azure portal › Quotas › Compute)")
    assert p("Standard_NC48ads_A100_v4", 1, "low-priority") == ""
    assert sorted(table.unavailable_sizes()) == sorted([
        "Standard_ND96isr_H100_v5", "Standard_ND96isr_MI300X_v5", "Standard_ND96asr_v4", "Standard_NC96ads_A100_v4",
        "Standard_NC40ads_H100_v5"])


def test_describe_lists_each_size_with_its_quota():
    table, _ = refreshed(aml_status=403)
    text = table.describe()
    assert f"Azure capacity and quota in eastus, checked {TODAY}" in text
    line = next(line for line in text.splitlines() if "Standard_NC24ads_A100_v4" in line)
    assert "standardNCADSA100v4Family" in line and "24/96" in line and re.search(r"\byes\b", line)
    line = next(line for line in text.splitlines() if "Standard_ND96isr_H100_v5" in line)
    assert "no (NotAvailableForSubscription)" in line
    assert "low-priority 92 of 100 vCPUs free (VM)" in text
    assert "Azure ML's quota could not be read" in text


# --------------------------------------------------------------------------------------------------------
# Retries and errors


def test_throttling_is_retried_by_the_sdk():
    t = FakeArm()
    t.script["skus"] = [(429, arm_error("TooManyRequests", "slow down"), {"Retry-After": "0"})]
    table = C.refresh_capacity(Azure(WS, cred=FakeCred(), t=t), "eastus")
    assert t.hits("skus") == 2 and t.hits("skus2") == 1
    assert table.offer("Standard_NC24ads_A100_v4").offered


def test_access_denied_is_an_azure_error_and_nothing_is_cached(data_dir):
    t = FakeArm()
    t.script["skus"] = [(403, arm_error("AuthorizationFailed", "The client 'u@x' does not have authorization to "
                                         "perform action 'Microsoft.Compute/skus/read'"), {})]
    with pytest.raises(AzureError) as info:
        C.refresh_capacity(Azure(WS, cred=FakeCred(), t=t), "eastus")
    msg = str(info.value)
    assert "denied access while checking capacity and quota in eastus" in msg and "(403)" in msg
    assert "ws-distill" in msg and "Contributor" in msg
    assert not (data_dir / "azure" / "capacity-eastus.json").exists()


# --------------------------------------------------------------------------------------------------------
# The planner


def test_planner_skips_a_size_the_region_does_not_offer():
    plan = load_plan(PLAN)
    base = analyse(plan, PLAN.parent)
    assert base.capacity is None and any(
        n == "Azure capacity and quota in eastus not checked: run `distill azure capacity --refresh` (needs sign-in)"
        for n in base.notes)
    i = base.decision.recommended
    assert i is not None
    sku = base.sweep.label("machine", i)
    table, _ = refreshed()
    offer = table.offer(sku)
    assert offer is not None and offer.offered, "the fake offers the size the planner picks without a check"
    table.skus[sku.lower()] = dataclasses.replace(offer, offered=False, reason="NotAvailableForSubscription",
                                                  scope="location")
    table._memo.clear()
    a = analyse(plan, PLAN.parent, capacity=table)
    d, sw = a.decision, a.sweep
    assert d.recommended is not None and sw.label("machine", d.recommended) != sku
    assert a.reason(i) == "not offered in eastus for this subscription (NotAvailableForSubscription)"
    assert a.reason(d.recommended) == ""
    mine = sw.grid.extra["machine"] == sw.labels["machine"].index(sku)
    assert not (d.candidates & mine).any() and not mine[d.pareto].any()
    assert not mine[d.fastest] and not mine[d.cheapest]
    note = next(n for n in a.notes if n.startswith("capacity and quota checked"))
    assert note.startswith(f"capacity and quota checked {TODAY}: ") and sku.removeprefix("Standard_") in note
    assert not any("not checked" in n for n in a.notes)
    doc = summary_dict(a, 5)
    assert doc["capacity"] == {"region": "eastus", "date": TODAY, "subscription_id": SUB}
    row = next(r for r in doc["options"] if r["index"] == i)
    assert row["reason"].startswith("not offered in eastus") and not row["meets_budget"]


def test_planner_reads_the_cached_check_and_respects_family_quota():
    refreshed(aml_status=403)    # cached: 24 of 96 vCPUs free for the NC A100 family, per the VM quota
    plan = load_plan(PLAN)
    a = analyse(plan, PLAN.parent)
    assert a.capacity is not None and a.capacity.origin == "cache"
    sw, d = a.sweep, a.decision
    nc = np.isin(sw.grid.extra["machine"], [sw.labels["machine"].index(s) for s in
                                            ("Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4",
                                             "Standard_NC96ads_A100_v4")])
    vcpus = np.asarray([VCPUS.get(m, 0) for m in sw.labels["machine"]])[sw.grid.extra["machine"]]
    dedicated = sw.grid.extra["priority"] == 0
    over = nc & dedicated & (sw.grid.nodes * vcpus > 24)
    assert over.any() and not (d.candidates & over).any()
    assert (d.candidates & nc & dedicated).any()       # one NC24ads node still fits the quota
    rec = d.recommended
    assert rec is not None and sw.out["available"][rec]
    eight = np.flatnonzero(a.planned & over & (sw.grid.nodes == 8) & (sw.grid.extra["machine"] ==
                                                                       sw.labels["machine"].index(
                                                                           "Standard_NC24ads_A100_v4")))
    assert eight.size and a.reason(int(eight[0])) == (
        "no dedicated quota for family standardNCADSA100v4Family in eastus: VM quota 'Standard NCADSA100v4 Family "
        "vCPUs' has 72 of 96 vCPUs in use; 8 nodes × 24 vCPUs of NC24ads_A100_v4 need 192; request 168 more vCPUs "
        "for standardNCADSA100v4Family (a dedicated limit of 264) (Azure portal › Quotas › Compute)")
    note = next(n for n in a.notes if n.startswith("capacity and quota checked"))
    assert f"checked {TODAY}: 5 sizes unavailable" in note and "quota limits" in note


def test_a_plan_fixed_on_an_unoffered_size_says_so_and_does_not_run():
    table, _ = refreshed()
    plan = load_plan(PLAN)
    plan = plan.model_copy(update={"hardware": plan.hardware.model_copy(update={"sku": "Standard_ND96isr_H100_v5"})})
    a = analyse(plan, PLAN.parent, capacity=table)
    assert a.decision.recommended is None and a.decision.fastest is None
    assert "not offered" in a.decision.impossible and "NotAvailableForSubscription" in a.decision.impossible
    with pytest.raises(RunError) as info:
        resolve_run(plan, PLAN.parent)   # reads the cached check
    assert "NotAvailableForSubscription" in str(info.value) and "hardware.sku" in str(info.value)


def test_a_check_of_another_region_is_not_applied():
    table, _ = refreshed()
    other = dataclasses.replace(table, region="westus", _memo={})
    a = analyse(load_plan(PLAN), PLAN.parent, capacity=other)
    assert any("for westus, not the plan's region eastus" in n for n in a.notes)
    assert a.capacity is not None and a.capacity.region == "eastus"    # the cached eastus check is used instead


def exhausted(rows: list[dict]) -> dict:
    """Usage rows with every vCPU of every quota in use."""
    return {"value": [{**r, "currentValue": r["limit"]} for r in rows]}


def test_a_refusal_names_the_family_the_chosen_option_needs_not_another_sizes_reason():
    plan = load_plan(PLAN)
    base = analyse(plan, PLAN.parent)          # unchecked: the option the planner chooses
    i = base.decision.recommended
    sku, nodes = base.sweep.label("machine", i), int(base.sweep.grid.nodes[i])
    prio = base.sweep.label("priority", i)
    assert prio == "dedicated" and nodes > 1, "the fake's quota below is shaped for a multi-node dedicated choice"
    t = FakeArm()                              # every quota in use; the MI300X size is not listed at all
    t.normal["vm_usages"] = (200, exhausted(vm_usages()["value"]), {})
    rows = aml_usages()["value"]
    label = re.sub(r"^standard(.*)Family$", r"Standard \1 Family Cluster Dedicated vCPUs", FAMILIES[sku])
    if not any(r["name"]["value"] == label for r in rows):     # Azure ML lists the chosen size's family too
        rows.append(aml_usage(f"/subscriptions/{SUB}/usages/{label.replace(' ', '_')}", "vmFamily/usages", label, 0,
                              nodes * VCPUS[sku] - 1))
    t.normal["aml_usages"] = (200, exhausted(rows), {})
    table = C.refresh_capacity(Azure(WS, cred=FakeCred(), t=t), "eastus")
    a = analyse(plan, PLAN.parent, capacity=table)
    assert a.decision.recommended is None and a.decision.fastest is None
    text = a.decision.impossible
    family, need = FAMILIES[sku], nodes * VCPUS[sku]
    aml = next(q for q in table.quotas if q.source == "aml" and q.name == family)
    size = sku.removeprefix("Standard_")
    assert (f"(the option it would choose, {nodes} × {size} dedicated: no dedicated quota for "
            f"family {family} in eastus: Azure ML quota '{aml.label}' has {aml.used:,} of {aml.limit:,} vCPUs in use; "
            f"{nodes} nodes × {VCPUS[sku]} vCPUs of {size} need {need:,}; request {need:,} "
            f"more vCPUs for {family} (a dedicated limit of {aml.limit + need:,})") in text, text
    # no other option's reason: not the size Azure does not list, not another family
    assert "MI300X" not in text and "no such size" not in text
    assert [f for f in set(FAMILIES.values()) if f in text] == [family]
    with pytest.raises(RunError) as info:      # `distill run` / submit: the same sentence, from the cached check
        resolve_run(plan, PLAN.parent)
    assert f"request {need:,} more vCPUs for {family}" in str(info.value) and "MI300X" not in str(info.value)


def no_low_priority_rows() -> FakeArm:
    """Neither Azure ML's listing nor the VM quota has a low-priority total (a row Azure sometimes omits)."""
    t = FakeArm()
    t.normal["vm_usages"] = (200, {"value": [r for r in vm_usages()["value"]
                                             if r["name"]["value"] != "lowPriorityCores"]}, {})
    t.normal["aml_usages"] = (200, {"value": [r for r in aml_usages()["value"]
                                              if "Low Priority" not in r["name"]["value"]]}, {})
    return t


def test_a_missing_low_priority_quota_row_is_unknown_never_unlimited(capsys):
    t = no_low_priority_rows()
    live = C.refresh_capacity(Azure(WS, cred=FakeCred(), t=t), "eastus")
    table = K.load_capacity("eastus")
    assert table is not None and table.quotas == live.quotas
    assert table.missing_quota("Standard_NC4as_T4_v3", "low-priority") == ["lowPriorityCores"]
    assert table.missing_quota("Standard_NC4as_T4_v3", "dedicated") == []
    assert table.missing_quota("Standard_NV36ads_A10_v5", "low-priority") == []   # not offered low-priority at all
    assert table.problem("Standard_NC4as_T4_v3", 16, "low-priority") == ""       # nothing to refuse on
    rows = {r["sku"]: r for r in table.rows()}
    t4 = rows["Standard_NC4as_T4_v3"]
    assert t4["max_nodes"] == {"dedicated": K.MAX_NODES, "low-priority": None}
    assert t4["missing_quota"]["low-priority"] == ["lowPriorityCores"]
    assert rows["Standard_NV36ads_A10_v5"]["max_nodes"]["low-priority"] == 0

    # `distill azure capacity`: the cached check as the terminal shows it
    from distill_studio.engine.cli import main
    assert main(["azure", "capacity", "--region", "eastus"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(line for line in lines if line.lstrip().startswith("size"))
    low_col = head.index("low-priority")

    def cells(sku):
        line = next(line for line in lines if line.lstrip().startswith(sku + " "))
        return line[:low_col].split()[-1], line[low_col:].strip()

    assert cells("Standard_NC4as_T4_v3") == ("16+", "unknown")
    assert cells("Standard_NC24ads_A100_v4") == ("1", "unknown")   # the family's 24 free vCPUs: one node, known
    assert cells("Standard_NV36ads_A10_v5")[1] == "none"
    assert "16+" not in "".join(line[low_col:] for line in lines if line.lstrip().startswith("Standard_"))
    assert "low-priority unknown (no quota row listed)" in out
    assert "quota unknown in eastus: Azure listed no row for the regional low-priority total (low-priority)" in out

    # --json: unknown is null, never 16
    assert C.cmd_capacity(SimpleNamespace(region="eastus", refresh=False, json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    t4 = next(r for r in doc["sizes"] if r["sku"] == "Standard_NC4as_T4_v3")
    assert t4["max_nodes"]["low-priority"] is None and t4["at_most"]["low-priority"] == K.MAX_NODES

    # the planner's capacity text says so too (the app shows the planner's notes)
    a = analyse(load_plan(PLAN), PLAN.parent)
    note = next(n for n in a.notes if n.startswith("capacity and quota checked"))
    assert "quota unknown in eastus: Azure listed no row for the regional low-priority total (low-priority)" in note
    assert "not unlimited" in note


def test_every_row_listed_leaves_nothing_unknown():
    table, _ = refreshed()
    assert table.unknown_note([o.sku for o in table.skus.values()]) == ""
    assert not any("unknown" in line for line in table.describe().splitlines()
                   if line.lstrip().startswith("Standard_"))


# --------------------------------------------------------------------------------------------------------
# `distill azure capacity`


def test_cmd_capacity_without_a_check_says_how_to_refresh(capsys):
    assert C.cmd_capacity(SimpleNamespace(region="westeurope", refresh=False)) == 0
    out = capsys.readouterr().out
    assert "never been checked" in out and "distill azure capacity --refresh --region westeurope" in out


def test_cmd_capacity_refresh_signs_in_with_the_settings_workspace(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "settings.json").write_text(json.dumps({"version": 1, "azure": {
        "subscription_id": SUB, "resource_group": "rg-distill", "workspace": "ws-distill", "region": "eastus",
        "sign_in": "azure-cli"}}))
    t = FakeArm()
    monkeypatch.setattr(client_mod, "transport", lambda: t)
    monkeypatch.setattr(client_mod, "credential", lambda ws, t=None: FakeCred())
    assert C.cmd_capacity(SimpleNamespace(region=None, refresh=True)) == 0
    out = capsys.readouterr().out
    assert f"Azure capacity and quota in eastus, checked {TODAY}" in out and "Standard_NC24ads_A100_v4" in out
    assert t.hits("skus") == 1
    # without --refresh: the cache, the settings' region
    assert C.cmd_capacity(SimpleNamespace(region=None, refresh=False)) == 0
    assert f"checked {TODAY}" in capsys.readouterr().out
    assert t.hits("skus") == 1                           # no network the second time


def test_cmd_capacity_refresh_without_a_workspace_names_the_settings(monkeypatch):
    with pytest.raises(AzureError) as info:
        C.cmd_capacity(SimpleNamespace(region="eastus", refresh=True))
    assert "Settings › Azure" in str(info.value)


def test_preflight_warns_where_a_quota_row_is_missing_and_never_calls_it_free():
    from distill_studio.engine.azure.preflight import Preflight, check_quota

    az = Azure(WS, cred=FakeCred(), t=no_low_priority_rows())
    report = Preflight(plan="p", workspace=WS.workspace)
    check_quota(az, report, [("", "Standard_NC4as_T4_v3", 2, "low-priority"),
                             ("", "Standard_NC4as_T4_v3", 2, "dedicated")])
    low, dedicated = report.checks
    assert low.status == "warn" and "quota unknown" in low.text and "lowPriorityCores" in low.text, low
    assert "free" not in low.text
    assert dedicated.status == "ok" and "quota is free" in dedicated.text
