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
