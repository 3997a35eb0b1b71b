"""The bundled demo, shortened: `distill run` on resources/demo/plan.toml teaches the student something real.

The full figures (120 steps, KD against cross-entropy only, share of the teacher's score) are in BENCHMARKS.md
(`python benchmarks/bench_demo.py`); this test runs 50 steps so that CI stays quick.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tomli_w  # noqa: E402

from distill_studio.engine.cli import main  # noqa: E402
from distill_studio.engine.runs.events import read_events  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def test_the_demo_student_learns_the_task_from_the_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    doc = tomllib.loads((DEMO / "plan.toml").read_text())
    for section, key in (("teacher", "model"), ("student", "model"), ("data", "train"), ("data", "eval"),
                         ("data", "prompts")):
        doc[section][key] = str(DEMO / doc[section][key])
    doc["training"].update(max_steps=50, eval_every=0, eval_samples=60, checkpoint_every=0)
    plan = tmp_path / "demo.toml"
    plan.write_text(tomli_w.dumps(doc))
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "run")]) == 0
    events = read_events(tmp_path / "run" / "events.jsonl")
    first, last = [e for e in events if e["type"] == "eval"]
    assert first["step"] == 0 and last["step"] == 50
    assert last["teacher_task_score"] >= 0.95  # the shipped teacher solves the held-out sums
    assert first["task_score"] <= 0.05  # half the teacher's layers, untrained: it cannot
    assert last["task_score"] >= 0.3  # 50 steps of KD: it learns (the full demo reaches >= 0.9 of the teacher)
    assert last["kl"] < first["kl"] / 10 and last["top1_agreement"] > first["top1_agreement"]
