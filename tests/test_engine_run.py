"""`distill run` end to end on tiny models built from configs: every teacher mode, LoRA and full, the run folder,
checkpoints, exact resume after kill -9, SIGTERM, two processes against one, and clear refusals of bad input."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from distill_studio.engine.cli import main  # noqa: E402
from distill_studio.engine.runs.events import fold_events, read_events  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _run(plan: Path, run_dir: Path, *extra: str) -> int:
    return main(["run", str(plan), "--run-dir", str(run_dir), *extra])


def _types(run_dir: Path) -> list[str]:
    return [e["type"] for e in read_events(run_dir / "events.jsonl")]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_online_logit_kd_writes_the_run_folder_and_learns(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=6, extra="checkpoint_every = 2\nkeep_checkpoints = 2")
    assert _run(plan, tmp_path / "run") == 0
    run = tmp_path / "run"
    for name in ("plan.toml", "run.json", "events.jsonl", "logs/run.log", "student/config.json",
                 "student/model.safetensors", "student/tokenizer.json"):
        assert (run / name).is_file(), name
    events = read_events(run / "events.jsonl")
    types = [e["type"] for e in events]
    assert types.count("run_started") == 1 and types[-1] == "run_finished"
    assert events[-1]["status"] == "succeeded"
    metrics = [e for e in events if e["type"] == "metric"]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    for m in metrics:
        assert {"loss", "kd_loss", "ce_loss", "lr", "grad_norm", "tokens_per_second", "tokens_seen"} <= set(m)
    assert metrics[-1]["ce_loss"] < metrics[0]["ce_loss"]
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [0, 6]
    assert {"kl", "perplexity", "top1_agreement", "task_score", "teacher_task_score"} <= set(evals[-1])
    assert evals[-1]["perplexity"] < evals[0]["perplexity"]
    # every 2 steps plus the end, keeping the newest 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2, 4, 6]
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(run / "student")
    assert student.config.num_hidden_layers == 1


def test_from_teacher_init_copies_every_kth_layer(tmp_path):
    from transformers import AutoModelForCausalLM

    from distill_studio.engine.train.models import init_from_teacher, layer_indices

    assert layer_indices(6, 3) == [0, 2, 4] and layer_indices(4, 4) == [0, 1, 2, 3]
    teacher_dir, _ = tiny.make_models(tmp_path, teacher_layers=4)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = AutoModelForCausalLM.from_config(tiny.qwen2_config(2))
    assert init_from_teacher(student, teacher) == [0, 2]
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["model.layers.1.mlp.up_proj.weight"], t["model.layers.2.mlp.up_proj.weight"])
    assert torch.equal(s["lm_head.weight"], t["lm_head.weight"])


@pytest.mark.parametrize("case", ["offline-topk", "generate", "lora", "ce"])
def test_teacher_modes_and_adapters(tmp_path, case):
    tiny.make_models(tmp_path, student_weights=True)
    kw = {"offline-topk": dict(mode="offline-topk", init="pretrained"),
          "generate": dict(kind="seq-kd", mode="generate"),
          "lora": dict(adapter="lora", init="pretrained"),
          "ce": dict(kind="ce", mode="auto")}[case]
    plan = tiny.write_plan(tmp_path, steps=2, **kw)
    if case == "lora":
        plan.write_text(plan.read_text().replace("rank = 4", "rank = 4\nmerge = true"))
    run = tmp_path / "run"
    assert _run(plan, run) == 0
    events = read_events(run / "events.jsonl")
    assert events[-1]["status"] == "succeeded"
    started = next(e for e in events if e["type"] == "run_started")
    if case == "offline-topk":
        manifest = json.loads((run / "teacher-topk/train/manifest.json").read_text())
        assert manifest["complete"] and manifest["top_k"] == 8 and manifest["examples"] == 32
        shard = load_file(str(run / "teacher-topk/train" / manifest["shards"][0]))
        assert shard["logprobs"].shape[1] == 8 and shard["logprobs"].dtype == torch.float16
        assert (shard["logprobs"][:, :-1] >= shard["logprobs"][:, 1:]).all()  # sorted, largest first
        assert started["teacher_mode"] == "offline-topk"
        assert "kl" in [e for e in events if e["type"] == "eval"][-1]
    if case == "generate":
        lines = (run / "generated/teacher.jsonl").read_text().splitlines()
        assert len(lines) == 32 and all("response" in json.loads(line) for line in lines)
        assert started["examples"] == 32 + 8  # generated_share 0.8: 8 original examples beside 32 generated
    if case == "lora":
        cfg = json.loads((run / "student/adapter/adapter_config.json").read_text())
        assert cfg["r"] == 4 and (run / "student/adapter/adapter_model.safetensors").is_file()
        assert (run / "student/model.safetensors").is_file()  # merged on request
        assert started["trainable_parameters"] < 5000  # only the adapter trains
    if case == "ce":
        assert all("kd_loss" not in e for e in events if e["type"] == "metric")
        assert "kl" in [e for e in events if e["type"] == "eval"][-1]  # still measured against the teacher


def _subprocess_run(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill_studio.engine.train", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(run_dir: Path, proc: subprocess.Popen, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = read_events(run_dir / "events.jsonl")
        if any(e["type"] == "metric" and e["step"] >= step for e in events):
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    raise AssertionError(f"step {step} never came")


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=10, data_n=64, extra="checkpoint_every = 3\neval_samples = 0")
    whole = tmp_path / "whole"
    assert _subprocess_run(str(plan), "--run-dir", str(whole)).wait(timeout=300) == 0

    kill_at = random.Random().randint(2, 8)
    print("killed at step", kill_at)
    run = tmp_path / "killed"
    proc = _subprocess_run(str(plan), "--run-dir", str(run))
    _wait_for_step(run, proc, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "run_finished" not in _types(run)
    resumed = _subprocess_run("--resume", str(run))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out

    a, b = _weights(whole / "student"), _weights(run / "student")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    folded = fold_events(read_events(run / "events.jsonl"))
    reference = read_events(whole / "events.jsonl")
    steps = [e["step"] for e in folded if e["type"] == "metric"]
    assert steps == list(range(1, 11))  # none lost, none twice
    losses = [e["loss"] for e in folded if e["type"] == "metric"]
    assert losses == [e["loss"] for e in reference if e["type"] == "metric"]
    starts = [e for e in folded if e["type"] == "run_started"]
    assert len(starts) == 2 and starts[1]["resumed_from_step"] % 3 == 0


def test_sigterm_checkpoints_and_stops_then_resume_finishes(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=40, data_n=64, extra="eval_samples = 0")
    run = tmp_path / "run"
    proc = _subprocess_run(str(plan), "--run-dir", str(run))
    _wait_for_step(run, proc, 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    events = read_events(run / "events.jsonl")
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "cancelled"
    stopped = events[-1]["step"]
    assert 2 <= stopped < 40
    assert (run / "checkpoints" / f"step-{stopped:08d}" / "trainer_state.json").is_file()
    assert main(["run", "--resume", str(run)]) == 0
    folded = fold_events(read_events(run / "events.jsonl"))
    assert [e["step"] for e in folded if e["type"] == "metric"] == list(range(1, 41))
    assert folded[-1]["status"] == "succeeded"


def test_the_stop_file_stops_a_run_as_sigterm_does_and_a_resume_clears_it(tmp_path):
    """How the app asks a run to stop where there are no signals (Windows): the run folder's stop file."""
    from distill_studio.engine.runs.process import request_stop_file, stop_file

    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=400, data_n=64, extra="eval_samples = 0")
    run = tmp_path / "run"
    proc = _subprocess_run(str(plan), "--run-dir", str(run))
    _wait_for_step(run, proc, 2)
    request_stop_file(run)
    assert proc.wait(timeout=120) == 130
    events = read_events(run / "events.jsonl")
    assert events[-1]["status"] == "cancelled" and "stop file" in events[-1]["message"]
    assert stop_file(run).exists()
    assert main(["run", "--resume", str(run)]) == 0            # the old request is not for the resumed run
    assert read_events(run / "events.jsonl")[-1]["status"] == "succeeded"


def test_two_processes_match_one_process(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=3, extra="eval_samples = 0")
    plan2 = tiny.write_plan(tmp_path, steps=3, extra="eval_samples = 0", hardware='gpus = 2\nsharding = "none"',
                            name="plan2.toml")
    env = {**ENV}
    cmd = [sys.executable, "-m", "distill_studio.engine.cli", "run"]
    two = subprocess.run([*cmd, str(plan2), "--run-dir", str(tmp_path / "two"), "--processes", "2"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([*cmd, str(plan), "--run-dir", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    started = [e for e in read_events(tmp_path / "two/events.jsonl") if e["type"] == "run_started"]
    assert started[0]["processes"] == 2  # a wrong launch would show two runs of 1 process each
    assert (started[0]["world_size"], started[0]["sharding"], started[0]["teacher_placement"]) == (2, "none", "replicated")
    a, b = _weights(tmp_path / "one/student"), _weights(tmp_path / "two/student")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    la = [e["loss"] for e in read_events(tmp_path / "one/events.jsonl") if e["type"] == "metric"]
    lb = [e["loss"] for e in read_events(tmp_path / "two/events.jsonl") if e["type"] == "metric"]
    assert la == pytest.approx(lb, rel=1e-5)


def test_a_process_outside_the_expected_group_refuses_to_train(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=1)
    from distill_studio.engine.train.__main__ import main as train_main

    assert train_main([str(plan), "--run-dir", str(tmp_path / "run"), "--expect-world-size", "2"]) == 2
    assert "ACCELERATE_USE_CPU=1" in capsys.readouterr().err
    assert not (tmp_path / "run" / "events.jsonl").exists()


def test_a_second_trainer_in_the_same_folder_is_refused(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=1)
    run = tmp_path / "run"
    run.mkdir()
    # another process holds the folder (the cross-platform lock, engine/runs/lock.py)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from pathlib import Path\nfrom distill_studio.engine.runs.lock import hold\n"
                               "held, _ = hold(Path(sys.argv[1]) / '.lock')\nprint('held', flush=True)\n"
                               "time.sleep(60)", str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _run(plan, run) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"being trained by another process (pid {holder.pid})" in capsys.readouterr().err
    assert not (run / "events.jsonl").exists()
    assert _run(plan, run) == 0                      # once it is free, the run goes ahead


# ---- bad input: a clear message naming the field or file, before any training --------------------------------

def _refused(tmp_path, capsys, plan: Path) -> str:
    run = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    assert _run(plan, run) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if (run / "events.jsonl").exists():
        events = read_events(run / "events.jsonl")
        assert "metric" not in [e["type"] for e in events]
        assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "failed"
    return err


def test_missing_data_file(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path)
    (tmp_path / "train.jsonl").unlink()
    err = _refused(tmp_path, capsys, plan)
    assert "data.train" in err and "train.jsonl" in err and "does not exist" in err


def test_malformed_and_empty_data(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"prompt": "1+1="}\n{"oops": 1}\n')
    err = _refused(tmp_path, capsys, plan)
    assert "train.jsonl:2" in err and "prompt" in err
    (tmp_path / "train.jsonl").write_text("\n\n")
    err = _refused(tmp_path, capsys, plan)
    assert "no examples" in err


def test_student_folder_without_weights(tmp_path, capsys):
    tiny.make_models(tmp_path, student_weights=False)
    plan = tiny.write_plan(tmp_path, init="pretrained")
    err = _refused(tmp_path, capsys, plan)
    assert "student.model" in err and "no weights" in err and "from-teacher" in err


def test_sequence_longer_than_the_context(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path)
    plan.write_text(plan.read_text().replace("seq_len = 16", "seq_len = 128").replace(
        "global_batch_tokens = 128", "global_batch_tokens = 1024"))
    err = _refused(tmp_path, capsys, plan)
    assert "data.seq_len" in err and "64" in err


def test_qlora_without_a_gpu(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, adapter="qlora")
    err = _refused(tmp_path, capsys, plan)
    assert "adapter.kind" in err and "GPU" in err and '"lora"' in err


def test_logit_kd_across_different_tokenizers_is_refused(tmp_path, capsys):
    tiny.make_models(tmp_path)
    tok = json.loads((tmp_path / "student/tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["9"], vocab["8"] = vocab["8"], vocab["9"]  # same size, different ids
    (tmp_path / "student/tokenizer.json").write_text(json.dumps(tok))
    plan = tiny.write_plan(tmp_path)
    err = _refused(tmp_path, capsys, plan)
    assert "tokenizer" in err and "seq-kd" in err


def test_a_run_that_fails_midway_reports_it_and_keeps_its_checkpoint(tmp_path, capsys, monkeypatch):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=5, extra="checkpoint_every = 1\neval_samples = 0")
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def failing_step(self, *args, **kwargs):  # the third update fails, as an out-of-memory error would
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory (simulated)")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", failing_step)
    run = tmp_path / "run"
    assert _run(plan, run) == 1
    events = read_events(run / "events.jsonl")
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "failed"
    assert "out of memory (simulated)" in events[-1]["message"] and events[-1]["step"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-00000002"] or \
        (run / "checkpoints" / "step-00000002").is_dir()
    assert "--resume" in capsys.readouterr().err
    assert "Traceback" in (run / "logs" / "run.log").read_text()  # the details are in the log, not on screen
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert main(["run", "--resume", str(run)]) == 0
    folded = fold_events(read_events(run / "events.jsonl"))
    assert [e["step"] for e in folded if e["type"] == "metric"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("setting, mode", [("gradient_checkpointing = true", "full"),
                                           ('recompute = "selective"', "selective")])
def test_gradient_checkpointing_trains_the_same_student(tmp_path, setting, mode):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=3, extra="eval_samples = 0")
    assert _run(plan, tmp_path / "plain") == 0
    plan.write_text(plan.read_text().replace("[training]", "[training]\n" + setting))
    assert _run(plan, tmp_path / "recompute") == 0
    started = [e for e in read_events(tmp_path / "recompute/events.jsonl") if e["type"] == "run_started"][0]
    assert started["plan"]["training"]["recompute"] == mode
    losses = [[e["loss"] for e in read_events(tmp_path / r / "events.jsonl") if e["type"] == "metric"]
              for r in ("plain", "recompute")]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    a, b = _weights(tmp_path / "plain/student"), _weights(tmp_path / "recompute/student")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
