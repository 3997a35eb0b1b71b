"""The checkpoint interval of Azure options: the Young–Daly rule on the checkpoint's write time and the nodes' failure
rate, what the checkpoints add to every option's time and cost, the expected loss without them, the interval the
resolved plan runs with, and where it is shown (`distill plan`, --json, the planner view)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from distill_studio.engine.cli import main
from distill_studio.engine.errors import PlanError
from distill_studio.engine.estimate import checkpointing
from distill_studio.engine.plan import load_plan
from distill_studio.engine.planner import analyse, resolve_run

ROOT = Path(__file__).resolve().parents[1]
PLANS = ROOT / "resources" / "plans"
AZURE_PLANS = sorted(p for p in PLANS.glob("*.toml") if load_plan(p).hardware.target == "azure")
LONG = PLANS / "qwq32b-to-qwen7b-27h.toml"


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path, monkeypatch):
    # no watched runs, no cached prices or capacity of the user's: the bundled figures only
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISTILL_STUDIO_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def long_analysis():
    return analyse(load_plan(LONG))


def _pair(a, sku="Standard_ND96isr_H100_v5", nodes=4) -> tuple[int, int]:
    """Two options alike in all but priority: (dedicated, low-priority)."""
    sw = a.sweep
    g, labels = sw.grid, sw.labels
    m = ((g.extra["machine"] == labels["machine"].index(sku)) & (g.nodes == nodes) & (g.adapter == 0)
         & (g.sharding == 2) & (g.recompute == 0) & (g.teacher_mode == 2) & (g.extra["teacher_precision"] == 0)
         & (g.extra.get("pass_row", np.full(len(sw), -1)) < 0))
    ded = np.flatnonzero(m & (g.extra["priority"] == 0))
    low = np.flatnonzero(m & (g.extra["priority"] == 1))
    assert ded.size == 1 and low.size == 1
    return int(ded[0]), int(low[0])


# ---- the rule ------------------------------------------------------------------------------------------------

def test_young_daly_for_known_inputs():
    # √(2 · 0.02 h · 100 h) = 2 h; √(2 · 36 s · 2,000 h) = 12 h
    assert checkpointing.young_daly(0.02, 100.0) == pytest.approx(2.0)
    assert checkpointing.young_daly(36 / 3600, 2000.0) == pytest.approx(math.sqrt(40.0))
    # vectorised, and no failures means never
    out = checkpointing.young_daly(np.array([0.02, 0.08]), np.array([100.0, 100.0]))
    assert out == pytest.approx([2.0, 4.0])
    assert np.isinf(checkpointing.young_daly(0.02, np.inf))


def test_loss_without_checkpoints_is_the_exponential_restart_formula():
    # (M + R)(e^{T/M} − 1) − T: 10 h of work, M = 10 h, R = 0.5 h -> 10.5 (e − 1) − 10
    assert checkpointing.loss_without_checkpoints(10.0, 10.0, 0.5) == pytest.approx(10.5 * (math.e - 1) - 10)
    # far below the MTBF it is the first-order T/M · (T/2 + R)
    assert checkpointing.loss_without_checkpoints(2.0, 5000.0, 0.25) == pytest.approx(2 / 5000 * (1 + 0.25), rel=1e-3)
    assert checkpointing.loss_without_checkpoints(5.0, np.inf, 0.25) == 0.0


def test_figures_have_their_sources():
    text = (ROOT / "engine" / "estimate" / "data" / "checkpointing.toml").read_text()
    for source in ("2407.21783", "419", "16,384", "spot-vms", "SpotResources"):
        assert source in text
    f = checkpointing.figures()
    # 16,384 GPUs × 54 days × 24 h / 419 unexpected interruptions
    assert f["failures"]["gpu_mtbf_hours"] == pytest.approx(16384 * 54 * 24 / 419, rel=1e-3)
    assert f["failures"]["low_priority_evictions_per_node_hour"] == pytest.approx(-math.log(1 - 0.05), rel=1e-2)


# ---- in the sweep ----------------------------------------------------------------------------------------------

def test_low_priority_checkpoints_more_often_than_dedicated(long_analysis):
    o = long_analysis.sweep.out
    ded, low = _pair(long_analysis)
    assert o["mtbf_hours"][low] < o["mtbf_hours"][ded] / 50     # evictions dwarf hardware faults
    assert 0 < o["checkpoint_interval_hours"][low] < o["checkpoint_interval_hours"][ded]
    assert o["checkpoint_interval_steps"][low] < o["checkpoint_interval_steps"][ded]
    assert o["checkpoint_count"][low] > o["checkpoint_count"][ded]
    # the low-priority interval is the Young–Daly value, to the step
    expected = checkpointing.young_daly(o["checkpoint_write_hours"][low], o["mtbf_hours"][low])
    hours_per_step = o["train_hours"][low] / o["total_steps"][low]
    assert abs(o["checkpoint_interval_hours"][low] - expected) <= hours_per_step + 1e-12
    # and without checkpoints a low-priority run loses far more than a dedicated one
    assert o["loss_without_hours"][low] > 5 * o["loss_without_hours"][ded]


def test_a_longer_write_time_gives_a_longer_interval(monkeypatch, long_analysis):
    sw = long_analysis.sweep
    _ded, low = _pair(long_analysis)
    before = {k: v.copy() for k, v in sw.out.items()}
    slow = json.loads(json.dumps(checkpointing.figures()))
    slow["storage"]["local_write_gb_per_s"] /= 4.0                # each write (the local write and the copy to the
    slow["storage"]["blob_copy_gb_per_s"] /= 4.0                  # output, which training waits for) 4 × as long
    monkeypatch.setattr(checkpointing, "figures", lambda: slow)
    after = dict(before)
    checkpointing.apply(sw.job, sw.grid, after)
    assert after["checkpoint_write_hours"][low] == pytest.approx(4 * before["checkpoint_write_hours"][low])
    # √4 = 2 × the interval (to the step), fewer checkpoints, and a longer option
    ratio = after["checkpoint_interval_hours"][low] / before["checkpoint_interval_hours"][low]
    assert ratio == pytest.approx(2.0, rel=0.05)
    assert after["checkpoint_count"][low] < before["checkpoint_count"][low]
    assert after["total_hours"][low] > before["total_hours"][low]
    # over the whole sweep the interval never shrinks when writing gets slower
    fin = np.isfinite(before["total_hours"])
    assert (after["checkpoint_interval_hours"][fin] >= before["checkpoint_interval_hours"][fin] - 1e-12).all()


def test_every_azure_option_carries_an_interval_in_its_time_and_cost(long_analysis):
    sw = long_analysis.sweep
    o, g = sw.out, sw.grid
    fin = np.isfinite(o["total_hours"]) & (o["train_hours"] > 0)
    assert fin.sum() > 1000
    assert (o["checkpoint_interval_steps"][fin] >= 1).all() and (o["checkpoint_interval_hours"][fin] > 0).all()
    # the total is the sum of its parts, checkpoints and the expected loss to failures among them
    parts = (o["setup_hours"] + o["prepass_hours"] + o["train_hours"] + o["checkpoint_hours"] + o["failure_hours"]
             + o["transfer_hours"])
    single = fin & (g.extra["pass_row"] < 0)
    assert np.allclose(o["total_hours"][single], parts[single])
    priced = single & np.isfinite(o["cost_usd"])
    # (the staging of hub models runs on its own VM, at its price: estimate/core.py staging_hours)
    nodes_h = o["total_hours"] - o["staging_hours"]
    assert np.allclose(o["cost_usd"][priced],
                       nodes_h[priced] * g.nodes[priced] * g.usd_per_node_hour[priced] + o["staging_usd"][priced])
    # a run long enough for several checkpoints pays for their writes
    many = single & (o["checkpoint_count"] >= 2)
    assert many.any() and (o["checkpoint_hours"][many] > 0).all()
    # checkpoints never leave the expected loss above what it is without them
    assert (o["failure_hours"][fin] <= o["loss_without_hours"][fin] + 1e-9).all()
    # split options (teacher pass on other hardware): training's interval, the total still adds up
    split = fin & (g.extra["pass_row"] >= 0)
    assert split.any() and (o["checkpoint_interval_steps"][split] >= 1).all()


def test_checkpoint_size_is_what_the_engine_writes(long_analysis):
    sw = long_analysis.sweep
    o, g, job = sw.out, sw.grid, sw.job
    P, L = job.student.params, job.lora_params
    full = g.adapter == 0
    # full training: fp32 weights and AdamW's two fp32 moments
    assert np.allclose(o["checkpoint_bytes"][full], 12.0 * P)
    # LoRA sharded: the adapter and its moments; not sharded: the bf16 base too (accelerate writes the whole state)
    lora = g.adapter == 1
    assert np.allclose(o["checkpoint_bytes"][lora & (o["shard_degree"] > 1)], 12.0 * L)
    assert np.allclose(o["checkpoint_bytes"][lora & (o["shard_degree"] == 1)], 12.0 * L + 2.0 * P)


# ---- the resolved plan -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", AZURE_PLANS, ids=lambda p: p.stem)
def test_every_bundled_azure_plan_resolves_to_a_checkpoint_interval(path):
    assert load_plan(path).training.checkpoint_every == "auto"
    r = resolve_run(load_plan(path), path.parent)
    every = r.plan.training.checkpoint_every
    c = r.estimate["checkpointing"]
    assert isinstance(every, int) and every > 0 and every == c["interval_steps"]
    assert 0 < c["interval_hours"] <= 2.0 and c["size_gb"] > 0 and c["write_hours"] > 0
    # at least one periodic checkpoint, its time in the estimate's hours, its cost in dollars
    assert c["count"] >= 1 and c["hours"] > 0 and c["cost_usd"] > 0
    assert r.estimate["hours"]["checkpoints"] == pytest.approx(c["hours"])
    assert c["expected_loss"]["hours"] <= c["expected_loss_without"]["hours"]
    assert c["mtbf_hours"] > 0
    parts = sum(v for k, v in r.estimate["hours"].items() if k != "total")
    assert r.estimate["hours"]["total"] == pytest.approx(parts)


def test_a_plan_that_fixes_its_interval_keeps_it(tmp_path):
    text = LONG.read_text().replace("[hardware]", "[training]\ncheckpoint_every = 37\n\n[hardware]", 1)
    (tmp_path / "fixed.toml").write_text(text)
    r = resolve_run(load_plan(tmp_path / "fixed.toml"), PLANS)
    assert r.plan.training.checkpoint_every == 37 and r.estimate["checkpointing"]["interval_steps"] == 37
    # 0: none but the last, and the loss with them is the loss without
    (tmp_path / "none.toml").write_text(text.replace("checkpoint_every = 37", "checkpoint_every = 0"))
    r = resolve_run(load_plan(tmp_path / "none.toml"), PLANS)
    c = r.estimate["checkpointing"]
    assert r.plan.training.checkpoint_every == 0 and c["count"] == 0 and c["hours"] == 0
    assert c["expected_loss"]["hours"] == pytest.approx(c["expected_loss_without"]["hours"])


def test_a_local_plan_keeps_its_own_checkpoints():
    demo = ROOT / "resources" / "demo" / "plan.toml"
    assert load_plan(demo).training.checkpoint_every == 50
    r = resolve_run(load_plan(demo), demo.parent)
    assert r.plan.training.checkpoint_every == 50
    assert r.estimate["checkpointing"]["mtbf_hours"] is None       # no failure model for a local machine
    # left out, a local plan checkpoints only at the end, as before
    doc = demo.read_text().replace("checkpoint_every = 50\n", "")
    assert load_plan_text(doc, demo.parent).training.checkpoint_every == "auto"
    r = resolve_run(load_plan_text(doc, demo.parent), demo.parent)
    assert r.plan.training.checkpoint_every == 0


def load_plan_text(text: str, base: Path):
    path = base / ".checkpoint-interval-test.toml"
    try:
        path.write_text(text)
        return load_plan(path)
    finally:
        path.unlink(missing_ok=True)


def test_a_bad_interval_is_refused_naming_the_field(tmp_path):
    for bad in ('"often"', "-5", "2.5"):
        path = tmp_path / "bad.toml"
        path.write_text(LONG.read_text().replace("[hardware]", f"[training]\ncheckpoint_every = {bad}\n\n[hardware]", 1))
        with pytest.raises(PlanError) as err:
            load_plan(path)
        assert "checkpoint_every" in str(err.value)


# ---- shown -----------------------------------------------------------------------------------------------------

def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def _reject(name):
    raise ValueError(f"not JSON: {name}")


def test_plan_text_and_json_show_the_interval():
    rc, out, err = _cli(["plan", LONG])
    assert rc == 0, err
    line = next(x for x in out.splitlines() if "checkpoint every" in x)
    assert "steps):" in line and "+$" in line and "without: expected loss" in line
    rc, out, err = _cli(["plan", LONG, "--json"])
    assert rc == 0, err
    doc = json.loads(out, parse_constant=_reject)           # strict: no NaN or Infinity
    for row in [doc["recommendation"], *doc["pareto"], *doc["options"][:50]]:
        c = row["checkpointing"]
        for key in ("interval_hours", "interval_steps", "count", "size_gb", "write_hours", "hours", "cost_usd",
                    "mtbf_hours", "failures_expected", "expected_loss", "expected_loss_without"):
            assert key in c
        assert c["interval_steps"] >= 1 and c["interval_hours"] > 0
        assert set(c["expected_loss_without"]) == {"hours", "cost_usd"}
        assert "checkpoints" in row["hours"] and "failures" in row["hours"]
    rec = doc["recommendation"]
    assert rec["checkpointing"]["expected_loss_without"]["hours"] > 0


def test_the_planner_view_shows_the_checkpoint_line(qtbot, tmp_path):
    pytest.importorskip("PySide6")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from distill_studio.gui.planner.view import PlannerView

    v = PlannerView()
    v.resize(1300, 900)
    qtbot.addWidget(v)
    v.show()
    with qtbot.waitSignal(v.sig_analysis_ready, timeout=60_000):
        v.set_plan(load_plan(LONG), LONG.parent)
    i = v.analysis.decision.recommended
    assert i is not None
    v.select_option(i)
    label = v.option_label.text()
    c = v.analysis.sweep.row(i)["checkpointing"]
    assert f"every {c['interval_steps']:,} steps" in label and "without: expected loss" in label
    assert "checkpoints" in label         # the write time among the phases
    qtbot.wait(100)
    shots = Path(os.environ.get("DISTILL_STUDIO_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    assert v.grab().save(str(shots / "planner_checkpoint_interval.png"))


def test_an_azure_checkpoint_counts_the_copy_to_the_output_that_training_waits_for(monkeypatch, long_analysis):
    """The engine copies each checkpoint into the mounted run folder before training goes on: its time is part of
    every checkpoint's time, as the local write is."""
    sw = long_analysis.sweep
    _ded, low = _pair(long_analysis)
    before = {k: v.copy() for k, v in sw.out.items()}
    f = checkpointing.figures()
    size = before["checkpoint_bytes"][low]
    writers = sw.grid.nodes[low] if before["shard_degree"][low] > 1 else 1
    per_node_gb = size / writers / 1e9
    expected = (per_node_gb / f["storage"]["local_write_gb_per_s"] + per_node_gb / f["storage"]["blob_copy_gb_per_s"])
    assert before["checkpoint_write_hours"][low] * 3600 == pytest.approx(expected, rel=1e-6)
    slow = json.loads(json.dumps(f))
    slow["storage"]["blob_copy_gb_per_s"] /= 2.0
    monkeypatch.setattr(checkpointing, "figures", lambda: slow)
    after = dict(before)
    checkpointing.apply(sw.job, sw.grid, after)
    assert after["checkpoint_write_hours"][low] > before["checkpoint_write_hours"][low]
