"""The estimator reads what smoke jobs measured (``distill azure smoke``, estimate/smoke_records.py): a size's measured
bus bandwidth within and across nodes replaces the catalog's link speeds, its measured output write and data read
the assumed storage speeds, for that size only; the option says so in the breakdown and its ``--json`` row.

Each test writes its records into its own data folder (tests/conftest.py), so no record leaks between tests."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from distill_studio.engine.estimate import smoke_records as R
from distill_studio.engine.estimate.core import TEACHER_MODES, coefficients
from distill_studio.engine.estimate.placement import SHARDINGS
from distill_studio.engine.plan import load_plan
from distill_studio.engine.planner import analyse
from distill_studio.engine.report import render_text

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "resources" / "plans" / "qwq32b-to-qwen7b-3h.toml"      # Azure, eastus; recommends 4 × ND96asr_v4
SIZE = "Standard_ND96asr_v4"          # 8 × A100 80 GB, NVLink within, 200 GB/s InfiniBand across nodes (catalog)


def results(sku: str = SIZE, *, nodes: int = 2, intra: float | None = 150.0, inter: float | None = 40.0,
            read: float | None = 1.2, write: float | None = 0.6, backend: str = "nccl", cuda: bool = True,
            failed: tuple[str, ...] = ()) -> dict:
    """A node's smoke.json: the checks named in ``failed`` fail; a figure given as None was not measured."""
    checks = [{"name": "cuda", "ok": cuda, "text": "8 GPU(s)" if cuda else "no GPU"}]
    rows = []
    for scope, bw in (("intra-node", intra), ("across nodes", inter)):
        if bw is None or (scope == "across nodes" and nodes < 2):
            continue
        checks.append({"name": f"all_reduce {scope}", "ok": f"all_reduce {scope}" not in failed, "text": ""})
        ranks = 8 * (nodes if scope == "across nodes" else 1)
        rows += [{"op": "all_reduce", "scope": scope, "ranks": ranks, "size_bytes": s << 20, "seconds": 0.01,
                  "algbw_gb_per_s": b / 1.75, "busbw_gb_per_s": b} for s, b in ((16, bw / 2), (256, bw))]
    storage = {}
    if read is not None:
        checks.append({"name": "data_read", "ok": "data_read" not in failed, "text": ""})
        storage["read_gb_per_s"] = read
    if write is not None:
        checks.append({"name": "output_write", "ok": "output_write" not in failed, "text": ""})
        storage["write_gb_per_s"] = write
    return {"version": 1, "sku": sku, "nodes": nodes, "gpus_per_node": 8, "world_size": 8 * nodes,
            "backend": backend, "ok": cuda and not failed, "checks": checks, "collectives": rows, "storage": storage}


def plan_analysis():
    return analyse(load_plan(PLAN), PLAN.parent)


def base_rows(a) -> np.ndarray:
    """The single-hardware rows (split options are paired from per-stage fronts, which a calibration may change)."""
    pr = a.sweep.grid.extra.get("pass_row")
    return np.flatnonzero(pr < 0) if pr is not None else np.arange(len(a.sweep))


def size_mask(a, sku: str = SIZE) -> np.ndarray:
    return a.sweep.grid.extra["machine"] == a.sweep.labels["machine"].index(sku)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The plan with no smoke record (a data folder of its own: module fixtures run before conftest's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path_factory.mktemp("baseline-data")))
        return plan_analysis()


def test_an_empty_store_changes_nothing_and_adds_no_columns(baseline):
    assert not R.store_path().exists()
    sw = baseline.sweep
    assert "blob_copy_gb_per_s" not in sw.grid.extra and "cache_transfer_gb_per_s" not in sw.grid.extra
    assert "measured" not in sw.labels
    assert sw.row(baseline.decision.recommended)["calibration"]["smoke"] is None
    assert not any("smoke job" in n for n in baseline.notes)


def test_a_slow_measured_interconnect_slows_that_sizes_multi_node_sharded_options(baseline):
    R.add_record(results(intra=150.0, inter=5.0, read=None, write=None), job="smoke-slow-ib")
    a = plan_analysis()
    rows = base_rows(a)
    assert len(rows) == len(base_rows(baseline))
    before, after = baseline.sweep.out, a.sweep.out
    mine = size_mask(a)[rows]
    g = a.sweep.grid
    sharded = (g.nodes[rows] > 1) & (g.sharding[rows] == SHARDINGS.index("all-gpus")) & mine
    sharded &= np.isfinite(before["total_hours"][rows])
    assert sharded.sum() > 10
    r = rows[sharded]
    # across nodes 5 GB/s of bus bandwidth instead of the catalog's 200 GB/s link at the bus efficiency
    eff = coefficients()["communication"]["bus_efficiency"]
    assert g.inter_bytes_per_s[r] == pytest.approx(5.0 / eff * 1e9)
    assert (after["train_hours"][r] >= before["train_hours"][r]).all()
    # fully trained on the teacher's cache: the whole student's gradients cross nodes, little compute to hide them
    # behind (an online 32B teacher's forward can hide even 5 GB/s on 2 nodes)
    full = (g.adapter[r] == 0) & (g.teacher_mode[r] == TEACHER_MODES.index("offline-topk"))
    assert full.any() and (after["total_hours"][r][full] > before["total_hours"][r][full] * 1.2).all()
    priced = full & np.isfinite(before["cost_usd"][r])
    assert priced.any() and (after["cost_usd"][r][priced] > before["cost_usd"][r][priced]).all()
    assert np.median(after["total_hours"][r] / before["total_hours"][r]) > 1.3
    # every other size's options are unchanged, to the bit
    others = rows[~mine]
    for col in ("train_hours", "total_hours", "cost_usd", "failure_hours", "checkpoint_hours"):
        np.testing.assert_array_equal(after[col][others], before[col][others])
    # one node: nothing crosses the network; within the node 150 GB/s measured is near the catalog's 300 × 0.7
    one = rows[mine & (g.nodes[rows] == 1)]
    assert np.allclose(after["train_hours"][one], before["train_hours"][one], rtol=0.2)
    # the planner no longer recommends spreading over that size's slow network
    rec = a.decision.recommended
    assert rec is not None and not (a.sweep.label("machine", rec) == SIZE and g.nodes[rec] > 1
                                    and a.sweep.row(rec)["sharding"] == "all-gpus")


def test_a_fast_measured_write_shortens_the_checkpoint_copy_and_the_expected_loss(baseline):
    R.add_record(results(nodes=1, intra=None, inter=None, read=2.0, write=8.0), job="smoke-fast-write")
    a = plan_analysis()
    rows = base_rows(a)
    before, after = baseline.sweep.out, a.sweep.out
    mine = size_mask(a)[rows]
    col = a.sweep.grid.extra["blob_copy_gb_per_s"]
    assert (col[rows[mine]] == 8.0).all() and np.isnan(col[rows[~mine]]).all()
    r = rows[mine & np.isfinite(before["total_hours"][rows]) & (before["checkpoint_count"][rows] > 0)]
    assert r.size > 10
    # the copy to the datastore (in what a failure loses) is 16 times faster than the assumed 0.5 GB/s
    # (where losing everything is cheaper than resuming, the loss without checkpoints stands: no change there)
    assert (after["train_failure_hours"][r] <= before["train_failure_hours"][r]).all()
    assert (after["train_failure_hours"][r] < before["train_failure_hours"][r]).mean() > 0.9
    assert (after["total_hours"][r] <= before["total_hours"][r]).all()
    assert (after["total_hours"][r] < before["total_hours"][r]).mean() > 0.9
    priced = np.isfinite(before["cost_usd"][r])
    assert (after["cost_usd"][r][priced] < before["cost_usd"][r][priced]).mean() > 0.9
    # the interconnect was not measured: training itself is as before
    np.testing.assert_array_equal(after["train_hours"][r], before["train_hours"][r])
    others = rows[~mine]
    np.testing.assert_array_equal(after["total_hours"][others], before["total_hours"][others])


def test_a_measured_read_and_write_set_a_split_options_cache_transfer(baseline):
    R.add_record(results(nodes=1, intra=None, inter=None, read=0.05, write=0.1), job="smoke-slow-storage")
    a = plan_analysis()
    o, g = a.sweep.out, a.sweep.grid
    col = g.extra["cache_transfer_gb_per_s"]
    assert (col[size_mask(a)] == 0.05).all()           # the slower of read and write
    pr = g.extra["pass_row"]
    split = np.flatnonzero((pr >= 0) & size_mask(a))          # training on the measured size
    assert split.size
    # the cache is read back by each training node at 0.05 GB/s instead of 0.5: ten times the download
    download = o["transfer_hours"][split] - o["upload_hours"][split]
    assert np.allclose(download, o["cache_bytes"][split] / (0.05e9 * 3600.0))


def test_a_gloo_or_failed_record_is_ignored(baseline):
    # collectives on CPUs (gloo, no CUDA), storage checks failed: nothing usable
    R.add_record(results(backend="gloo", cuda=False, failed=("data_read", "output_write")), job="smoke-cpu")
    # a GPU record whose checks failed: its figures are not used either
    R.add_record(results(failed=("all_reduce intra-node", "all_reduce across nodes", "data_read", "output_write")),
                 job="smoke-failed")
    assert R.measured_interconnect(SIZE) is None
    a = plan_analysis()
    rows = base_rows(a)
    for col in ("train_hours", "total_hours", "cost_usd"):
        np.testing.assert_array_equal(a.sweep.out[col][rows], baseline.sweep.out[col][rows])
    assert "measured" not in a.sweep.labels and "blob_copy_gb_per_s" not in a.sweep.grid.extra
    assert not any("smoke job" in n for n in a.notes)
    # a failed across-nodes check alone: the intra-node figure is used, the network keeps the catalog's
    R.add_record(results(inter=5.0, failed=("all_reduce across nodes",)), job="smoke-ib-failed")
    a = plan_analysis()
    g = a.sweep.grid
    mine = size_mask(a)
    eff = coefficients()["communication"]["bus_efficiency"]
    assert g.inter_bytes_per_s[mine] == pytest.approx(200.0e9)
    assert g.intra_bytes_per_s[mine] == pytest.approx(150.0 / eff * 1e9)


def test_the_label_in_the_breakdown_notes_and_json_row(baseline, capsys):
    from distill_studio.engine.cli import main

    R.add_record(results(inter=180.0), job="smoke-labelled")      # a healthy network: still the recommendation
    day = time.strftime("%Y-%m-%d")
    a = plan_analysis()
    want = f"interconnect and storage measured by a smoke job on {day} (smoke-labelled)"
    note = [n for n in a.notes if want in n]
    assert len(note) == 1 and note[0].startswith("ND96asr_v4: ") and "180 GB/s across nodes" in note[0]
    assert "output write 0.60 GB/s" in note[0] and "data read 1.20 GB/s" in note[0]
    i = int(np.flatnonzero(size_mask(a) & (a.sweep.grid.nodes > 1))[0])
    assert a.sweep.row(i)["calibration"]["smoke"] == want
    j = int(np.flatnonzero(~size_mask(a))[0])
    assert a.sweep.row(j)["calibration"]["smoke"] is None
    assert want in render_text(a, 5)
    # a plan on that size: its recommendation's figures say where the links and storage speeds come from
    pinned = load_plan(PLAN)
    pinned = pinned.model_copy(update={"hardware": pinned.hardware.model_copy(update={"sku": SIZE})})
    b = analyse(pinned, PLAN.parent)
    i = b.decision.recommended if b.decision.recommended is not None else b.decision.fastest
    assert b.sweep.label("machine", i) == SIZE
    assert f"; {want})" in render_text(b, 5)
    assert main(["plan", str(PLAN), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = [r for r in doc["pareto"] + doc["options"] if r["sku"] == SIZE]
    assert rows and all(r["calibration"]["smoke"] == want for r in rows)
    assert all(r["calibration"]["smoke"] is None for r in doc["options"] if r["sku"] != SIZE)
    assert any(want in n for n in doc["notes"])


def test_a_damaged_smoke_store_never_stops_planning(baseline):
    """An optional calibration file that cannot be read is named in the notes; the plan is made as without it."""
    R.store_path().parent.mkdir(parents=True, exist_ok=True)
    R.store_path().write_text("{ not json", encoding="utf-8")
    a = plan_analysis()
    assert any("smoke-job measurements not used" in n and "smoke.json" in n for n in a.notes), a.notes
    assert a.decision.recommended == baseline.decision.recommended
    assert a.sweep.out["total_hours"][a.decision.recommended] == baseline.sweep.out["total_hours"][
        baseline.decision.recommended]
