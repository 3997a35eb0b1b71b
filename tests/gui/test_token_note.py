"""The planner view says how the plan's tokens were obtained: the note in its notes pane, and the few words beside
the token counts of an option's phases."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill_studio.engine.plan import load_plan
from distill_studio.gui.planner.view import PlannerView

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture
def planner(qtbot):
    v = PlannerView()
    v.resize(1300, 900)
    qtbot.addWidget(v)
    return v


def _open(qtbot, v: PlannerView, path: Path):
    with qtbot.waitSignal(v.sig_analysis_ready, timeout=60_000):
        v.set_plan(load_plan(path), path.parent)
    return v.analysis


def test_the_demo_shows_tokens_counted_with_the_tokenizer(qtbot, planner):
    a = _open(qtbot, planner, DEMO / "plan.toml")
    assert "• token count counted with the student's tokenizer as training reads the data: 304,874 tokens in 6,000 " \
           "examples; the run's 100 steps train 162,563" in planner.notes.text()
    i = a.decision.recommended
    assert "training " in planner.describe(i) and "(163k tokens, counted with the tokenizer)" in planner.describe(i)


def test_without_a_tokenizer_the_view_says_estimated_from_bytes(qtbot, planner, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(DEMO / "student" / "config.json", folder / "config.json")
    shutil.copy(DEMO / "train.jsonl", tmp_path / "train.jsonl")
    text = (DEMO / "plan.toml").read_text().replace('model = "teacher"', f'model = "{folder}"')
    (tmp_path / "plan.toml").write_text(text.replace('model = "student"', f'model = "{folder}"'))
    a = _open(qtbot, planner, tmp_path / "plan.toml")
    assert "• token count estimated from 615,880 bytes of data at 4 bytes a token (no tokenizer at hand" \
           in planner.notes.text()
    assert "(154k tokens, estimated from bytes)" in planner.describe(a.decision.recommended)
