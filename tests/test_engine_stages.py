"""A plan's two stages run apart (`distill run --stage teacher`, then `--stage student --teacher-run`), as a
split-hardware plan runs them on two sets of nodes: the student trains on the teacher stage's cache exactly as a
whole run trains on its own, and every wrong hand-over is refused with what to do."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from distill_studio.engine.cli import main  # noqa: E402
from distill_studio.engine.runs.events import read_events  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _losses(run: Path) -> list[float]:
    return [e["loss"] for e in read_events(run / "events.jsonl") if e["type"] == "metric"]


@pytest.mark.parametrize("kind,mode", [("logit-kd", "offline-topk"), ("seq-kd", "generate")])
def test_the_two_stages_train_the_same_student_as_one_run(tmp_path, kind, mode, capsys):
    tiny.make_models(tmp_path, student_weights=True)
    plan = tiny.write_plan(tmp_path, steps=3, kind=kind, mode=mode, init="pretrained")
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "whole")]) == 0

    teacher_run, student_run = tmp_path / "teacher", tmp_path / "student"
    assert main(["run", str(plan), "--run-dir", str(teacher_run), "--stage", "teacher"]) == 0
    events = read_events(teacher_run / "events.jsonl")
    started = next(e for e in events if e["type"] == "run_started")
    assert started["stage"] == "teacher" and started["total_steps"] == 0
    assert events[-1]["status"] == "succeeded" and "teacher pass kept" in events[-1]["message"]
    assert not (teacher_run / "student").exists() and not [e for e in events if e["type"] == "metric"]
    handoff = json.loads((teacher_run / "teacher-stage.json").read_text())
    assert handoff["complete"] and handoff["mode"] == mode
    assert json.loads((teacher_run / "run.json").read_text())["stage"] == "teacher"

    assert main(["run", str(plan), "--run-dir", str(student_run), "--stage", "student",
                 "--teacher-run", str(teacher_run)]) == 0
    events = read_events(student_run / "events.jsonl")
    assert events[-1]["status"] == "succeeded"
    started = next(e for e in events if e["type"] == "run_started")
    assert started["stage"] == "student" and started["teacher_mode"] == mode
    logs = " ".join(e.get("message", "") for e in events if e["type"] == "log")
    assert "loading the teacher" not in logs          # the student stage never loads the teacher's weights
    # the teacher's pass was not run again here: no cache or answers of its own
    assert not (student_run / "teacher-topk").exists() and not (student_run / "generated").exists()
    # the same data from the teacher, the same seed: the same losses and the same student as the whole run
    assert _losses(student_run) == pytest.approx(_losses(tmp_path / "whole"), rel=1e-5)
    a, b = (load_file(str(r / "student/model.safetensors")) for r in (student_run, tmp_path / "whole"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    whole_eval = [e for e in read_events(tmp_path / "whole/events.jsonl") if e["type"] == "eval"][-1]
    stage_eval = [e for e in events if e["type"] == "eval"][-1]
    assert stage_eval.get("teacher_task_score") == whole_eval.get("teacher_task_score")


def test_a_student_stage_without_a_finished_teacher_stage_is_refused(tmp_path, capsys):
    tiny.make_models(tmp_path, student_weights=True)
    plan = tiny.write_plan(tmp_path, steps=2, mode="offline-topk", init="pretrained")
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "s"), "--stage", "student"]) == 2
    assert "--teacher-run" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "s2"), "--stage", "student",
                 "--teacher-run", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "holds no finished teacher stage" in err and "teacher-stage.json" in err and "Traceback" not in err
    # a teacher stage of another plan (another top_k): its cache is not this run's
    other = tiny.write_plan(tmp_path, steps=2, mode="offline-topk", init="pretrained", name="other.toml")
    other.write_text(other.read_text().replace("top_k = 8", "top_k = 4"))
    assert main(["run", str(other), "--run-dir", str(tmp_path / "t"), "--stage", "teacher"]) == 0
    capsys.readouterr()
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "s3"), "--stage", "student",
                 "--teacher-run", str(tmp_path / "t")]) == 2
    assert "is not this run's" in capsys.readouterr().err


def test_stages_need_a_teacher_pass(tmp_path, capsys):
    tiny.make_models(tmp_path, student_weights=True)
    plan = tiny.write_plan(tmp_path, steps=2, mode="online", init="pretrained")
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "t"), "--stage", "teacher"]) == 2
    err = capsys.readouterr().err
    assert "no pass of its own" in err and 'teacher_mode = "offline-topk"' in err
    assert not (tmp_path / "t" / "events.jsonl").exists()
    assert main(["run", "--resume", str(tmp_path / "t"), "--stage", "teacher"]) == 2
    assert "as the stage it was started as" in capsys.readouterr().err
