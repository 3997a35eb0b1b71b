"""Sharded runs (FSDP2 over two CPU processes, gloo): the same student as one process, exact resume after kill -9,
the bundled demo sharded, and every launch mistake refused with a message instead of a hang or a wrong run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tomli_w  # noqa: E402
import tomllib  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from distill_studio.engine.cli import main  # noqa: E402
from distill_studio.engine.runs.events import fold_events, read_events  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
SHARDED = 'gpus = 2\nsharding = "all-gpus"'


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _metrics(run: Path) -> list[dict]:
    return [e for e in fold_events(read_events(run / "events.jsonl")) if e["type"] == "metric"]


def test_sharded_student_and_teacher_match_one_process(tmp_path):
    tiny.make_models(tmp_path)
    one = tiny.write_plan(tmp_path, steps=3, extra="eval_samples = 2\ncheckpoint_every = 2", name="one.toml")
    two = tiny.write_plan(tmp_path, steps=3, extra="eval_samples = 2\ncheckpoint_every = 2", hardware=SHARDED,
                          name="two.toml")
    r2 = _cli("run", str(two), "--run-dir", str(tmp_path / "two"), "--processes", "2")
    assert r2.returncode == 0, r2.stderr[-3000:]
    r1 = _cli("run", str(one), "--run-dir", str(tmp_path / "one"))
    assert r1.returncode == 0, r1.stderr[-3000:]
    started = next(e for e in read_events(tmp_path / "two/events.jsonl") if e["type"] == "run_started")
    assert (started["world_size"], started["nodes"], started["sharding"], started["teacher_placement"]) == \
        (2, 1, "full", "sharded")
    est = started["estimate"]
    assert est["tokens_per_second_per_gpu"] > 0 and est["memory_gib_per_gpu"] > 0 and est["hours"]["total"] > 0
    a, b = _weights(tmp_path / "one/student"), _weights(tmp_path / "two/student")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert [m["loss"] for m in _metrics(tmp_path / "one")] == pytest.approx(
        [m["loss"] for m in _metrics(tmp_path / "two")], rel=1e-5)
    evals = [[e for e in read_events(tmp_path / r / "events.jsonl") if e["type"] == "eval"] for r in ("one", "two")]
    assert [e["kl"] for e in evals[0]] == pytest.approx([e["kl"] for e in evals[1]], rel=1e-4)
    assert [e["task_score"] for e in evals[0]] == [e["task_score"] for e in evals[1]]  # generated sharded too
    ckpt = tmp_path / "two/checkpoints/step-00000003"
    assert (ckpt / "sharded" / ".metadata").is_file() and (ckpt / "rng-1.pt").is_file()
    # the run folder holds the plan as it ran, and the plan as given beside it
    ran = tomllib.loads((tmp_path / "two/plan.toml").read_text())
    assert ran["teacher"]["placement"] == "sharded" and ran["method"]["teacher_mode"] == "online"
    assert (tmp_path / "two/plan.given.toml").read_text() == two.read_text()


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill_studio.engine.cli", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sharded_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=6, data_n=64, extra="checkpoint_every = 2\neval_samples = 0",
                           hardware=SHARDED)
    whole = _cli("run", str(plan), "--run-dir", str(tmp_path / "whole"), "--processes", "2")
    assert whole.returncode == 0, whole.stderr[-3000:]

    run = tmp_path / "killed"
    proc = _popen("run", str(plan), "--run-dir", str(run), "--processes", "2")
    deadline = time.monotonic() + 300
    while not any(m["step"] >= 3 for m in _metrics(run)) if (run / "events.jsonl").exists() else True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, at once
    proc.wait()
    assert "run_finished" not in [e["type"] for e in read_events(run / "events.jsonl")]
    resumed = _cli("run", "--resume", str(run), "--processes", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the kill landed mid-run (the ranks died with their launcher): the resume trained the steps after it again
    started = [e for e in read_events(run / "events.jsonl") if e["type"] == "run_started"]
    assert started[-1]["resumed_from_step"] in (2, 4)

    a, b = _weights(tmp_path / "whole/student"), _weights(run / "student")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["step"] for m in _metrics(run)] == list(range(1, 7))
    assert [m["loss"] for m in _metrics(run)] == [m["loss"] for m in _metrics(tmp_path / "whole")]
    # the clipping norm too: over every parameter the optimiser updates, whether or not an evaluation came first
    assert [m["grad_norm"] for m in _metrics(run)] == [m["grad_norm"] for m in _metrics(tmp_path / "whole")]

    # a checkpoint from another world size is refused, naming the size it needs
    doc = tomllib.loads((run / "plan.toml").read_text())
    doc["hardware"].update(gpus=1, sharding="none")
    (run / "plan.toml").write_text(tomli_w.dumps(doc))
    again = _cli("run", "--resume", str(run))
    assert again.returncode == 2
    assert "written by 2 process(es)" in again.stderr and "Traceback" not in again.stderr


def test_sigterm_to_a_multi_process_run_checkpoints_every_rank_and_says_so_plainly(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=100_000, data_n=64, extra="eval_samples = 0", hardware=SHARDED)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "distill_studio.engine.cli", "run", str(plan), "--run-dir",
                             str(run), "--processes", "2"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while not ((run / "events.jsonl").exists() and any(m["step"] >= 2 for m in _metrics(run))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what the app's Stop sends to the process it started
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "cancelled: stopped by SIGTERM" in err and "Traceback" not in err and "elastic" not in err
    events = read_events(run / "events.jsonl")
    assert events[-1]["status"] == "cancelled"
    stopped = events[-1]["step"]
    assert (run / "checkpoints" / f"step-{stopped:08d}" / "sharded" / ".metadata").is_file()


def test_a_failure_on_one_rank_ends_the_run_at_once_and_says_which(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, kind="seq-kd", mode="generate", steps=2, extra="eval_samples = 0",
                           hardware=SHARDED)
    run = tmp_path / "run"
    (run / "generated" / "teacher.rank-001-of-002.jsonl").mkdir(parents=True)  # rank 1 alone cannot write its part
    t0 = time.monotonic()
    r = _cli("run", str(plan), "--run-dir", str(run), "--processes", "2", timeout=300)
    assert r.returncode not in (0, 130) and time.monotonic() - t0 < 120  # no wait for a collective timeout
    assert "error (rank 1): IsADirectoryError" in r.stderr and "Traceback" not in r.stderr
    assert "IsADirectoryError" in (run / "logs" / "run.rank-1.log").read_text()
    events = read_events(run / "events.jsonl")
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "failed"
    assert "another process of the run failed" in events[-1]["message"]  # rank 0's end says where to look


def test_a_sharded_lora_run_resumes_from_its_trainable_state(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, adapter="lora", steps=3, extra="checkpoint_every = 1\neval_samples = 0",
                           hardware=SHARDED)
    run = tmp_path / "run"
    first = _cli("run", str(plan), "--run-dir", str(run), "--processes", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    adapter = load_file(str(run / "student/adapter/adapter_model.safetensors"))
    # resuming a finished run loads its last checkpoint (the adapter and its optimiser, not the frozen base)
    again = _cli("run", "--resume", str(run), "--processes", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished its steps" in again.stderr
    reloaded = load_file(str(run / "student/adapter/adapter_model.safetensors"))
    assert adapter.keys() == reloaded.keys() and all(torch.equal(adapter[k], reloaded[k]) for k in adapter)
    from torch.distributed.checkpoint import FileSystemReader

    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1] / "sharded"
    keys = list(FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata)
    assert any("lora_A" in k for k in keys) and not any("base_layer" in k for k in keys)


def _demo_plan(tmp_path: Path, name: str, **hardware) -> Path:
    doc = tomllib.loads((DEMO / "plan.toml").read_text())
    for section, key in (("teacher", "model"), ("student", "model"), ("data", "train"), ("data", "eval"),
                         ("data", "prompts")):
        doc[section][key] = str(DEMO / doc[section][key])
    # the plan's micro-batch of 32 is the whole global batch: two processes take 16 each, and say so
    doc["training"].update(max_steps=50, eval_every=0, eval_samples=60, checkpoint_every=0)
    doc["hardware"].update(hardware)
    plan = tmp_path / f"{name}.toml"
    plan.write_text(tomli_w.dumps(doc))
    return plan


@pytest.mark.parametrize("mode", ["online", "offline-topk"])
def test_the_demo_sharded_over_two_processes_learns_as_one_process_does(tmp_path, mode, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one = _demo_plan(tmp_path, "one")
    two = _demo_plan(tmp_path, "two", gpus=2, sharding="all-gpus")
    for p in (one, two):
        p.write_text(p.read_text().replace('teacher_mode = "online"', f'teacher_mode = "{mode}"'))
    r2 = _cli("run", str(two), "--run-dir", str(tmp_path / "two"), "--processes", "2")
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert main(["run", str(one), "--run-dir", str(tmp_path / "one")]) == 0
    started = next(e for e in read_events(tmp_path / "two/events.jsonl") if e["type"] == "run_started")
    assert (started["sharding"], started["teacher_placement"], started["teacher_mode"]) == ("full", "sharded", mode)
    last = {r: [e for e in read_events(tmp_path / r / "events.jsonl") if e["type"] == "eval"][-1] for r in ("one", "two")}
    assert "training.micro_batch_size: 32 -> 16" in r2.stderr
    assert last["two"]["task_score"] >= 0.3
    assert last["two"]["task_score"] == pytest.approx(last["one"]["task_score"], abs=0.05)
    assert last["two"]["kl"] == pytest.approx(last["one"]["kl"], rel=0.02)
    if mode == "offline-topk":  # the pre-pass was split: rank s % 2 wrote shard s, so both ranks wrote some
        shards = sorted(p.name for p in (tmp_path / "two/teacher-topk/train").glob("shard-*.safetensors"))
        assert {int(n[6:11]) % 2 for n in shards} == {0, 1}
        manifest = json.loads((tmp_path / "two/teacher-topk/train/manifest.json").read_text())
        assert manifest["complete"] and manifest["shards"] == shards


def test_torchrun_starts_a_sharded_run(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=2, extra="eval_samples = 0", hardware=SHARDED)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "distill_studio.engine.train", str(plan), "--run-dir", str(tmp_path / "run")],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    events = read_events(tmp_path / "run" / "events.jsonl")
    started = [e for e in events if e["type"] == "run_started"]
    assert len(started) == 1 and (started[0]["world_size"], started[0]["sharding"]) == (2, "full")  # rank 0 only
    assert events[-1]["status"] == "succeeded" and len(events[-1]["measured"]["peak_memory_bytes_per_rank"]) == 2


# ---- launch mistakes ----------------------------------------------------------------------------------------

def test_a_world_size_other_than_the_plans_is_refused_before_any_process_starts(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=1)  # one GPU (process)
    r = _cli("run", str(plan), "--run-dir", str(tmp_path / "run"), "--processes", "2", timeout=120)
    assert r.returncode == 2
    assert "the plan runs on 1 process(es)" in r.stderr and "--processes 1" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_a_node_that_never_joins_is_an_error_after_the_join_timeout(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=1, hardware="gpus = 1\nnodes = 2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "DISTILL_JOIN_TIMEOUT": "3"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "distill_studio.engine.train", str(plan), "--run-dir",
                        str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and time.monotonic() - t0 < 60
    assert "did not all join within 3 s" in r.stderr and "MASTER_ADDR" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run" / "events.jsonl").exists()


def test_a_teacher_that_fits_no_gpu_even_sharded_is_refused_with_the_estimate(tmp_path, capsys):
    plan = tmp_path / "big.toml"
    plan.write_text('''name = "too-big"
[teacher]
model = "Qwen/QwQ-32B"
[student]
model = "Qwen/Qwen2.5-7B-Instruct"
[method]
teacher_mode = "online"
[adapter]
kind = "full"
[data]
tokens = 1000000
seq_len = 4096
[hardware]
target = "local"
accelerator = "t4"
gpus = 2
sharding = "all-gpus"
''')
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "fits no GPU" in err and "GiB per GPU" in err and "usable" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
