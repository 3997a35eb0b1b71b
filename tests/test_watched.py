"""Calibration from watched runs: a finished run records what it measured; the next plan of the same
configuration on the same machine is "measured here" with the run's own speed, set-up and token count, its
neighbours are corrected, and nothing crosses to another machine or other models. `training.max_steps` caps the
tokens the planner sizes the run by."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill_studio.engine.cli import main
from distill_studio.engine.plan import loads_plan
from distill_studio.engine.planner import analyse, build_job
from distill_studio.engine.checks import check_plan
from distill_studio.engine.estimate.watched import (LOADED_CORES, cpu_speed, load_records, store_path,
                                                    unloaded_parallelism)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"


def demo_plan(tmp_path: Path, steps: int) -> Path:
    text = (DEMO / "plan.toml").read_text().replace("max_steps = 100", f"max_steps = {steps}").replace(
        "eval_every = 50", "eval_every = 0").replace("checkpoint_every = 50", "checkpoint_every = 0").replace(
        "eval_samples = 200", "eval_samples = 4").replace("eval_at_start", "eval_at_start")
    for rel in ("teacher", "student", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'"{rel}"', f'"{(DEMO / rel).as_posix()}"')
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def recommended(a) -> dict:
    return a.sweep.row(a.decision.recommended)


def test_max_steps_caps_the_tokens_planned():
    plan = loads_plan((DEMO / "plan.toml").read_text())
    pair = check_plan(plan, DEMO)
    capped = build_job(plan.model_copy(update={"training": plan.training.model_copy(update={"max_steps": 10})}),
                       pair, 1e6)
    assert capped.train_tokens == 10 * plan.data.global_batch_tokens
    free = build_job(plan.model_copy(update={"training": plan.training.model_copy(update={"max_steps": None})}),
                     pair, 1e6)
    assert free.train_tokens == 1e6 * plan.data.epochs


def test_a_watched_run_makes_the_next_estimate_measured_here(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from distill_studio.engine.train.run import execute

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan_path = demo_plan(tmp_path, steps=12)
    plan = loads_plan(plan_path.read_text())
    before = recommended(analyse(plan, DEMO))
    assert before["calibration"] == {"source": "extrapolated", "runs": 0, "smoke": None}   # a CPU: no published fit
    assert execute(plan_path, tmp_path / "run", resume=False) == 0
    (rec,) = load_records()
    m = rec["measured"]
    assert m["steps"] == 12 and m["train_tokens"] > 0 and m["training_seconds"] > 0
    assert rec["estimated"]["tokens_per_second_per_gpu"] == pytest.approx(before["tokens_per_second_per_gpu"])
    finished = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()][-1]
    assert finished["measured"]["setup_seconds"] == pytest.approx(m["setup_seconds"])

    after_a = analyse(plan, DEMO)
    after = recommended(after_a)
    assert after["calibration"] == {"source": "measured here", "runs": 1, "smoke": None}
    # the run's own speed; on a machine other programs loaded, its CPU seconds per token over the cores an
    # unloaded run reaches (estimate/watched.py: cpu_speed)
    speed = cpu_speed(rec, unloaded_parallelism([rec]))
    if m["busy_cores_others"] < LOADED_CORES:
        assert speed == m["tokens_per_second_per_device"]
    else:
        assert speed == pytest.approx(m["tokens_per_second_per_device"] * m["training_seconds"] / m["cpu_seconds"]
                                      * unloaded_parallelism([rec]))
    assert after["tokens_per_second_per_gpu"] == pytest.approx(speed)
    # the planned training time is the run's own tokens at that speed, the set-up its own
    assert after["hours"]["training"] * 3600 == pytest.approx(
        m["training_seconds"] * m["tokens_per_second_per_device"] / speed, rel=0.01)
    assert after["hours"]["setup"] * 3600 == pytest.approx(m["setup_seconds"], rel=0.01)
    assert any("as trained by a watched run" in n for n in after_a.notes)
    # the other configurations of this machine and models are corrected by the measured/estimated ratio
    o = after_a.sweep.out
    corrected = np.flatnonzero(o["calibration"] == 2)
    assert corrected.size > 0
    ratio = speed / rec["estimated"]["tokens_per_second_per_gpu"]
    i = int(corrected[0])
    assert o["tokens_per_second_per_gpu"][i] == pytest.approx(o["model_tokens_per_second_per_gpu"][i] * ratio)
    assert np.isfinite(o["calibration_log_sd"][corrected]).all()
    # JSON carries it on every option
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", "plan", str(plan_path), "--json"],
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["recommendation"]["calibration"]["source"] == "measured here"
    assert all("calibration" in opt for opt in doc["options"])


def test_records_apply_only_to_the_same_machine_and_models(tmp_path):
    plan = loads_plan(demo_plan(tmp_path, steps=12).read_text())
    a = analyse(plan, DEMO)
    row = recommended(a)
    from distill_studio.engine.estimate.watched import option_key, run_key

    key = list(run_key(plan, a.pair))
    rec = {"v": 1, "time": 0, "status": "succeeded", "run_dir": "x", "option": list(option_key(row)),
           "data": "other", "micro_batch": 32,
           "measured": {"tokens_per_second_per_device": 10.0, "train_tokens": 1000, "steps": 12,
                        "training_seconds": 100.0, "setup_seconds": 1.0, "teacher_pass_seconds": 0.0},
           "estimated": {"tokens_per_second_per_gpu": row["tokens_per_second_per_gpu"]}}
    store_path().parent.mkdir(parents=True, exist_ok=True)
    other_machine = dict(rec, key=["cpu:x86_64:Some Other CPU:64", *key[1:]])
    other_models = dict(rec, key=[key[0], "1:1:1:1", *key[2:]])
    store_path().write_text("\n".join(json.dumps(r) for r in (other_machine, other_models)) + "\nnot json\n")
    assert recommended(analyse(plan, DEMO))["calibration"]["source"] == "extrapolated"
    with open(store_path(), "a") as f:
        f.write(json.dumps(dict(rec, key=key)) + "\n")
    b = analyse(plan, DEMO)
    mine = b.sweep.row(row["index"])
    assert mine["calibration"] == {"source": "measured here", "runs": 1, "smoke": None}
    assert mine["tokens_per_second_per_gpu"] == 10.0
    assert main(["calibration", "show"]) == 0
    assert main(["calibration", "clear"]) == 0
    assert load_records() == [] and recommended(analyse(plan, DEMO))["calibration"]["source"] == "extrapolated"


# ---- corrections that respect the measurement (no training: records written as a run would) ------------------------

def _store(*records: dict) -> None:
    store_path().parent.mkdir(parents=True, exist_ok=True)
    store_path().write_text("".join(json.dumps(r) + "\n" for r in records))


def _record(plan, a, row: dict, tps: float, *, run_dir: str = "run-a", **measured) -> dict:
    from distill_studio.engine.estimate.watched import option_key, run_key

    return {"v": 1, "time": 0, "status": "succeeded", "run_dir": run_dir, "key": list(run_key(plan, a.pair)),
            "option": list(option_key(row)), "data": "other", "micro_batch": 32,
            "measured": {"tokens_per_second_per_device": tps, "train_tokens": 24576, "steps": 12,
                         "training_seconds": 24576 / tps, "setup_seconds": 1.0, "teacher_pass_seconds": 0.0,
                         **measured},
            "estimated": {"tokens_per_second_per_gpu": row["tokens_per_second_per_gpu"]}}


def _recompute_mode(row: dict) -> str:
    return {True: "full", False: "off"}.get(row["recompute"], row["recompute"])


def test_a_neighbour_is_the_measured_speed_times_the_models_own_difference(tmp_path):
    """Measured with recompute off at 0.07 of the model's speed (outside the bounds): recompute on comes out slower
    than what was measured, by the model's own factor; the ratio is applied, not clamped to 0.25; the model is
    said to be far off there, and those ranges widen with how far."""
    plan = loads_plan(demo_plan(tmp_path, steps=12).read_text())
    a = analyse(plan, DEMO)
    o0 = a.sweep.out
    row = recommended(a)
    assert _recompute_mode(row) == "off"
    fast = 0.07 * row["tokens_per_second_per_gpu"]
    _store(_record(plan, a, row, fast, busy_cores_others=0.0, window_log_sd=0.02))
    b = analyse(plan, DEMO)
    o = b.sweep.out
    i = row["index"]
    assert o["calibration"][i] == 3 and o["tokens_per_second_per_gpu"][i] == pytest.approx(fast)
    model = o["model_tokens_per_second_per_gpu"]
    assert model[i] == pytest.approx(o0["tokens_per_second_per_gpu"][i])
    # the same option but recomputing (more work): the measured speed times the model's own factor, below it
    g = b.sweep.grid
    same = np.ones(len(b.sweep), dtype=bool)
    for field in ("nodes", "adapter", "teacher_mode", "sharding"):
        same &= getattr(g, field) == getattr(g, field)[i]
    same &= (g.extra["machine"] == g.extra["machine"][i]) & (g.extra["teacher_precision"]
                                                            == g.extra["teacher_precision"][i])
    more = np.flatnonzero(same & (g.recompute != g.recompute[i]))
    assert more.size >= 1
    for j in more:
        assert o["calibration"][j] == 2
        assert model[j] < model[i]          # the model: recomputing does more work
        assert o["tokens_per_second_per_gpu"][j] == pytest.approx(fast * model[j] / model[i])
        assert o["tokens_per_second_per_gpu"][j] < fast          # never faster than what was measured
        assert o["train_hours"][j] > o["train_hours"][i]
    # no neighbour that only recomputes more is faster than measured, anywhere in the sweep
    neighbours = np.flatnonzero(o["calibration"] == 2)
    assert (o["tokens_per_second_per_gpu"][neighbours] <= model[neighbours] * fast / model[i] * (1 + 1e-9)).all()
    # not clamped: the 0.07 is applied as it is
    assert o["tokens_per_second_per_gpu"][neighbours] == pytest.approx(
        model[neighbours] * fast / model[i])
    # far off: flagged, said, and the neighbours' spread grows with how far outside 0.25..4 the ratio is
    assert o["calibration_far_off"][neighbours].all() and not o["calibration_far_off"][i]
    assert b.sweep.row(int(more[0]))["calibration"]["far_off"] is True
    assert any("far off here" in n and "0.07" in n for n in b.notes)
    from distill_studio.engine.estimate.core import coefficients
    from distill_studio.engine.estimate.ranges import spreads

    CORRECTED = coefficients()["uncertainty"]["corrected_here_log_sd"]   # the model's difference between two options
    sd = spreads(b.sweep)["train"]
    assert sd[i] == pytest.approx(0.05)                          # one run, steady steps: the floor
    assert sd[more[0]] == pytest.approx(np.hypot(0.05, CORRECTED) + np.log(0.25 / 0.07))
    # the recommendation is the measured option or one the model says does less work than it
    r = recommended(b)
    assert r["index"] == i or r["tokens_per_second_per_gpu"] <= fast * model[r["index"]] / model[i] * (1 + 1e-9)

    # within the bounds: no flag, no widening beyond the model's difference
    _store(_record(plan, a, row, 0.5 * row["tokens_per_second_per_gpu"], busy_cores_others=0.0))
    c = analyse(plan, DEMO)
    assert not c.sweep.out["calibration_far_off"].any() and not any("far off" in n for n in c.notes)
    assert spreads(c.sweep)["train"][more[0]] == pytest.approx(np.hypot(0.05, CORRECTED))


def test_the_measured_here_spread_is_the_runs_own(tmp_path):
    """Two runs of the same configuration, 1.5x apart, and steps that varied within them: the spread is theirs,
    not a constant; with one steady run it is the floor."""
    from distill_studio.engine.estimate.ranges import spreads

    plan = loads_plan(demo_plan(tmp_path, steps=12).read_text())
    a = analyse(plan, DEMO)
    row = recommended(a)
    i = row["index"]
    est = row["tokens_per_second_per_gpu"]
    _store(_record(plan, a, row, est, run_dir="r1", window_log_sd=0.1),
           _record(plan, a, row, 1.5 * est, run_dir="r2", window_log_sd=0.1))
    b = analyse(plan, DEMO)
    between = np.std(np.log([1.0, 1.5]), ddof=1)
    expected = np.hypot(between, 0.1)
    assert b.sweep.out["calibration_log_sd"][i] == pytest.approx(expected)
    assert spreads(b.sweep)["train"][i] == pytest.approx(expected)
    assert b.sweep.row(i)["calibration"]["runs"] == 2
    lo, hi = b.sweep.out["hours_low"][i], b.sweep.out["hours_high"][i]
    _store(_record(plan, a, row, est, run_dir="r1", window_log_sd=0.001))
    c = analyse(plan, DEMO)
    assert c.sweep.out["calibration_log_sd"][i] == pytest.approx(0.05)     # the floor
    assert c.sweep.out["hours_high"][i] / c.sweep.out["hours_low"][i] < hi / lo


def test_one_run_across_stops_and_resumes(tmp_path):
    """A run stopped and resumed is one run: its parts' tokens and seconds summed, set-up its first start's; the
    same part recorded twice (events read again) is not added again; an older store's two lines merge too."""
    from distill_studio.engine.estimate.watched import record_run

    plan_path = demo_plan(tmp_path, steps=12)
    plan = loads_plan(plan_path.read_text())
    a = analyse(plan, DEMO)
    row = recommended(a)
    est = {"option": row, "model_tokens_per_second_per_gpu": row["tokens_per_second_per_gpu"]}
    run = tmp_path / "run"
    first = {"tokens_per_second_per_device": 100.0, "steps": 6, "training_seconds": 2.0, "first_step": 0,
             "cpu_seconds": 3.0, "busy_cores_others": 0.1, "window_log_sd": 0.03}
    second = {"tokens_per_second_per_device": 200.0, "steps": 6, "training_seconds": 3.0, "first_step": 6,
              "cpu_seconds": 5.0, "busy_cores_others": 0.2, "window_log_sd": 0.04}
    record_run(plan, tmp_path, est, first, status="cancelled", total_tokens=24576, setup_seconds=1.0, run_dir=run)
    other = record_run(plan, tmp_path, est, first, status="succeeded", total_tokens=24576, setup_seconds=9.0,
                       run_dir=tmp_path / "other-run")
    for _ in range(2):     # the second part, recorded twice
        record_run(plan, tmp_path, est, second, status="succeeded", total_tokens=24576, setup_seconds=4.0,
                   run_dir=run)
    recs = load_records()
    assert len(recs) == 2 and len(store_path().read_text().splitlines()) == 2
    (rec,) = [r for r in recs if r["run_dir"] == str(run)]
    m = rec["measured"]
    assert len(rec["parts"]) == 2 and m["steps"] == 12 and rec["status"] == "succeeded"
    assert m["training_seconds"] == pytest.approx(5.0)
    assert m["tokens_per_second_per_device"] == pytest.approx((100 * 2 + 200 * 3) / 5)
    assert m["setup_seconds"] == 1.0 and m["cpu_seconds"] == pytest.approx(8.0)
    assert m["busy_cores_others"] == pytest.approx((0.1 * 2 + 0.2 * 3) / 5)
    assert other["measured"]["setup_seconds"] == 9.0
    b = analyse(plan, DEMO)
    assert b.sweep.row(row["index"])["calibration"]["runs"] == 2        # two runs, not three
    assert any(n.startswith("2 runs watched") for n in b.notes)
    # a store written before runs were merged: one line per part, merged as it is read
    old = [dict(_record(plan, a, row, 100.0, run_dir="r"), status="cancelled"),
           _record(plan, a, row, 300.0, run_dir="r")]
    _store(*old)
    (merged,) = load_records()
    assert merged["measured"]["tokens_per_second_per_device"] == pytest.approx(2 * 24576 / (24576 / 100 + 24576 / 300))
    assert merged["status"] == "succeeded"


def test_a_loaded_cpu_run_is_counted_by_its_cpu_seconds(tmp_path):
    """A CPU run other programs slowed: its speed for the next run is its CPU seconds per token over the cores an
    unloaded run of this machine reaches (a quiet run's own, when there is one), not its wall time."""
    from distill_studio.engine.estimate.watched import CPU_PARALLEL_EFFICIENCY

    plan = loads_plan(demo_plan(tmp_path, steps=12).read_text())
    a = analyse(plan, DEMO)
    row = recommended(a)
    i = row["index"]
    # 1000 tokens/s of wall time, at 0.9 of a core: 0.9 ms of CPU per token
    loaded = _record(plan, a, row, 1000.0, run_dir="loaded", cpu_seconds=0.9 * 24.576, threads=2, cpus=2,
                     parallelism=0.9, busy_cores_others=1.1)
    _store(loaded)
    b = analyse(plan, DEMO)
    cores = 2 * CPU_PARALLEL_EFFICIENCY
    assert b.sweep.out["tokens_per_second_per_gpu"][i] == pytest.approx(cores / 0.9e-3)
    assert any("CPU time" in n for n in b.notes)
    # a quiet run of the same machine says what parallelism an unloaded run reaches
    quiet = _record(plan, a, row, 1500.0, run_dir="quiet", cpu_seconds=1.6 * 24576 / 1500, threads=2, cpus=2,
                    parallelism=1.6, busy_cores_others=0.1)
    _store(loaded, quiet)
    c = analyse(plan, DEMO)
    assert c.sweep.out["tokens_per_second_per_gpu"][i] == pytest.approx(
        float(np.median([1.6 / 0.9e-3, 1500.0])))
    # an unloaded run is taken at its wall speed
    _store(quiet)
    assert analyse(plan, DEMO).sweep.out["tokens_per_second_per_gpu"][i] == pytest.approx(1500.0)
