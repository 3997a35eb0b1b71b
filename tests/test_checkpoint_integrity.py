"""Checkpoints that fail safely: each damage done to a checkpoint after it was written (truncated weights or
optimiser state, an empty trainer state, a block of zeros inside the weights, a file that does not load) is found,
set aside and named, and the run resumes from the checkpoint before it, bit-identical to an uninterrupted run.
A run folder on a mount gets its checkpoints through the node's disk, the manifest last, and a kill in the middle
of a copy leaves the previous checkpoint in use. A stop whose grace period cannot hold a checkpoint skips it and
says so."""
from __future__ import annotations

import json
import os
import shutil
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
from distill_studio.engine.errors import RunError  # noqa: E402
from distill_studio.engine.runs.events import fold_events, read_events  # noqa: E402
from distill_studio.engine.train import checkpoint as C  # noqa: E402
from distill_studio.engine.train.__main__ import main as train_main  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STEPS = 5
RAW = ("SafetensorError", "PytorchStreamReader", "JSONDecodeError", "Traceback", "UnpicklingError")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run, and one that failed at its 4th step with checkpoints at steps 1, 2 and 3 (copied
    and damaged by each test). One thread, as in the subprocesses: the same arithmetic everywhere."""
    root = tmp_path_factory.mktemp("ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv(C.PAUSE_ENV, raising=False)
        tiny.make_models(root)
        plan = tiny.write_plan(root, steps=STEPS, extra="checkpoint_every = 1\nkeep_checkpoints = 3\neval_samples = 0")
        assert main(["run", str(plan), "--run-dir", str(root / "whole")]) == 0
        real_step, calls = torch.optim.AdamW.step, {"n": 0}

        def failing_step(self, *args, **kwargs):   # the 4th update fails, as a lost node would end it
            calls["n"] += 1
            if calls["n"] == 4:
                raise RuntimeError("node lost (simulated)")
            return real_step(self, *args, **kwargs)

        mp.setattr(torch.optim.AdamW, "step", failing_step)
        assert main(["run", str(plan), "--run-dir", str(root / "crashed")]) == 1
    yield {"root": root, "plan": plan, "whole": root / "whole", "crashed": root / "crashed"}
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(C.PAUSE_ENV, raising=False)
    yield
    torch.set_num_threads(threads)


def _same_student(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "student/model.safetensors")), load_file(str(b / "student/model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _losses(run: Path) -> list[float]:
    return [e["loss"] for e in fold_events(read_events(run / "events.jsonl")) if e["type"] == "metric"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero_block(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2            # inside the tensors, past the header
    data[start : start + 512] = bytes(512)
    path.write_bytes(bytes(data))


def _rewrite_manifest(ckpt: Path) -> None:
    """A checkpoint written bad (its manifest matches its files): only loading finds it out."""
    doc = json.loads((ckpt / C.MANIFEST).read_text())
    doc["files"] = C.hash_files(ckpt, [f["path"] for f in doc["files"]])
    (ckpt / C.MANIFEST).write_text(json.dumps(doc))


DAMAGES = {
    "truncated-weights": ("model.safetensors", _truncate, False, "model.safetensors has"),
    "truncated-optimizer": ("optimizer.bin", _truncate, False, "optimizer.bin has"),
    "empty-trainer-state": (C.STATE_FILE, lambda p: p.write_text(""), False, f"{C.STATE_FILE} has 0 bytes"),
    "zeroed-block-in-weights": ("model.safetensors", _zero_block, False, "does not match its checksum"),
    "optimizer-unreadable-though-listed": ("optimizer.bin", _truncate, True, "could not be loaded"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_it_resumes_bit_identical(runs, tmp_path, capsys,
                                                                                        one_thread, damage):
    name, harm, written_bad, said = DAMAGES[damage]
    run = tmp_path / "run"
    shutil.copytree(runs["crashed"], run)
    step3 = C.checkpoint_dir(run, 3)
    assert [p.name for p in C.list_checkpoints(run)] == ["step-00000001", "step-00000002", "step-00000003"]
    assert C.verify(step3) == []
    harm(step3 / name)
    if written_bad:
        _rewrite_manifest(step3)
        assert C.verify(step3) == []
    else:
        assert C.verify(step3) != []
    capsys.readouterr()

    assert main(["run", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert not any(raw in err for raw in RAW), err
    events = read_events(run / "events.jsonl")
    warned = [e["message"] for e in events if e["type"] == "log" and e.get("level") == "warning"]
    assert len(warned) == 1 and "checkpoints/step-00000003 is damaged" in warned[0] and said in warned[0], warned
    assert "set aside in checkpoints/damaged/step-00000003" in warned[0] and "step-00000002" in warned[0]
    assert warned[0] in err
    starts = [e for e in events if e["type"] == "run_started"]
    assert starts[-1]["resumed_from_step"] == 2
    aside = run / "checkpoints/damaged/step-00000003"
    assert (aside / name).is_file() and said in (aside / C.REASON_FILE).read_text()   # kept, never deleted
    assert [e["step"] for e in fold_events(events) if e["type"] == "metric"] == list(range(1, STEPS + 1))
    assert _losses(run) == _losses(runs["whole"])
    _same_student(run, runs["whole"])


def test_when_every_checkpoint_is_damaged_the_run_starts_over_and_says_so(runs, tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    shutil.copytree(runs["crashed"], run)
    for step in (1, 2, 3):
        _truncate(C.checkpoint_dir(run, step) / "model.safetensors")
    assert main(["run", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.count("is damaged") == 3 and "no earlier checkpoint is left" in err
    assert "the run starts again from step 0" in err
    assert [e for e in read_events(run / "events.jsonl") if e["type"] == "run_started"][-1]["resumed_from_step"] == 0
    assert sorted(p.name for p in (run / "checkpoints/damaged").iterdir()) == [
        "step-00000001", "step-00000002", "step-00000003"]
    _same_student(run, runs["whole"])


def test_a_copy_killed_before_its_marker_is_not_a_checkpoint_and_the_run_resumes_from_the_one_before(
        runs, tmp_path, one_thread, monkeypatch):
    """The run folder as a mount: checkpoints through the node's disk, a copy paused half way (the rehearsal's
    knob), the process killed there, and the resume from the last complete checkpoint, bit-identical."""
    run, local = tmp_path / "output" / "run", tmp_path / "node-disk"
    env = {**ENV, C.PAUSE_ENV: "3"}
    proc = subprocess.Popen([sys.executable, "-m", "distill_studio.engine.train", str(runs["plan"]), "--run-dir",
                             str(run), "--checkpoint-local", str(local)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    partial = C.checkpoint_dir(run, 2)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            events = read_events(run / "events.jsonl") if (run / "events.jsonl").exists() else []
            copying = any(e["type"] == "log" and "copying checkpoint step 2 to the output" in e["message"]
                          for e in events)
            if copying and partial.is_dir() and any(partial.iterdir()):
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        else:
            raise AssertionError("the copy of step 2 never started")
        assert not (partial / C.MANIFEST).exists()     # half copied, paused before its marker
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert C.is_complete(C.checkpoint_dir(run, 1)) and not C.is_complete(partial)
    assert [p.name for p in C.list_checkpoints(run)] == ["step-00000001"]
    assert C.latest_checkpoint(run) == C.checkpoint_dir(run, 1)

    # no directory is renamed inside the output while the run goes on there
    renamed: list[str] = []
    for fn in ("replace", "rename"):
        real = getattr(os, fn)

        def spy(src, dst, *a, _real=real, **kw):
            if os.path.isdir(src) and str(Path(src).resolve()).startswith(str(run.resolve())):
                renamed.append(str(src))
            return _real(src, dst, *a, **kw)

        monkeypatch.setattr(os, fn, spy)
    assert train_main(["--resume", str(run), "--checkpoint-local", str(local)]) == 0
    monkeypatch.undo()
    assert renamed == []
    events = read_events(run / "events.jsonl")
    assert [e for e in events if e["type"] == "run_started"][-1]["resumed_from_step"] == 1
    assert _losses(run) == _losses(runs["whole"])
    _same_student(run, runs["whole"])
    # the newest 3 complete checkpoints, each with its manifest; the node's disk emptied
    kept = C.list_checkpoints(run)
    assert [p.name for p in kept] == ["step-00000003", "step-00000004", "step-00000005"]
    assert all(C.verify(p) == [] for p in kept)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [p.name for p in kept]
    assert not [p for p in local.rglob("*") if p.is_file()]


def test_a_stop_whose_grace_period_cannot_hold_a_checkpoint_skips_it_and_the_last_periodic_one_is_used(runs,
                                                                                                      tmp_path):
    run = tmp_path / "run"
    plan = tiny.write_plan(runs["root"], steps=400, data_n=32, name="long.toml",
                           extra="checkpoint_every = 7\nkeep_checkpoints = 2\neval_samples = 0")
    env = {**ENV, "DISTILL_STOP_GRACE_S": "0.001"}
    proc = subprocess.Popen([sys.executable, "-m", "distill_studio.engine.train", str(plan), "--run-dir", str(run)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not any(e["type"] == "checkpoint" for e in read_events(run / "events.jsonl")
                  if (run / "events.jsonl").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    events = read_events(run / "events.jsonl")
    stopped = events[-1]["step"]
    print("stopped at step", stopped)
    assert events[-1]["status"] == "cancelled" and stopped >= 7
    latest = C.latest_checkpoint(run)
    if stopped % 7:   # between two periodic checkpoints: the stop's own is skipped, with a note
        notes = [e["message"] for e in events if e["type"] == "log" and e.get("level") == "warning"]
        assert len(notes) == 1 and f"no checkpoint at the stop (step {stopped})" in notes[0], notes
        assert "grace period (DISTILL_STOP_GRACE_S)" in notes[0] and latest.name in notes[0] and notes[0] in out
        assert C.read_state(latest)["step"] == stopped // 7 * 7
    else:             # it stopped right on a periodic checkpoint: that one is the stop's
        assert C.read_state(latest)["step"] == stopped
    assert [e["step"] for e in events if e["type"] == "checkpoint"][-1] == C.read_state(latest)["step"]
    assert not C.checkpoint_dir(run, stopped).exists() or stopped % 7 == 0


def test_the_rehearsal_and_grace_knobs_refuse_bad_values(monkeypatch):
    from distill_studio.engine.train.session import AZURE_GRACE_S, stop_grace_seconds

    for key in [k for k in os.environ if k.startswith("AZUREML_")] + ["DISTILL_STOP_GRACE_S"]:
        monkeypatch.delenv(key, raising=False)
    assert stop_grace_seconds(mount=False) is None and stop_grace_seconds(mount=True) == AZURE_GRACE_S
    monkeypatch.setenv("AZUREML_RUN_ID", "x")
    assert stop_grace_seconds(mount=False) == AZURE_GRACE_S
    monkeypatch.setenv("DISTILL_STOP_GRACE_S", "12.5")
    assert stop_grace_seconds(mount=False) == 12.5
    monkeypatch.setenv("DISTILL_STOP_GRACE_S", "soon")
    with pytest.raises(RunError, match="DISTILL_STOP_GRACE_S: 'soon'.*allowed"):
        stop_grace_seconds(mount=False)
    monkeypatch.setenv(C.PAUSE_ENV, "-1")
    with pytest.raises(RunError, match=f"{C.PAUSE_ENV}: '-1'.*allowed: 0 to 3600"):
        C.copy_pause()
    monkeypatch.setenv(C.PAUSE_ENV, "2.5")
    assert C.copy_pause() == 2.5


def test_an_intact_checkpoint_that_fails_to_load_for_another_reason_is_kept_and_the_run_stops(tmp_path):
    """Bytes that verify against the manifest but fail to load for a reason that is not damage (out of memory, a
    read error, another library version) stop the resume with the cause; the checkpoint is not set aside."""
    from types import SimpleNamespace

    run = tmp_path / "run"
    ckpt = C.checkpoint_dir(run, 4)
    ckpt.mkdir(parents=True)
    (ckpt / C.STATE_FILE).write_text(json.dumps({"step": 4, "world_size": 1, "sharded": False}))
    (ckpt / "model.safetensors").write_bytes(b"\0" * 64)
    C.write_manifest(ckpt, 4, C.hash_files(ckpt, C._files(ckpt)), 1.0)

    def no_memory(_path):
        raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    par = SimpleNamespace(sharded=False, acc=SimpleNamespace(load_state=no_memory))
    one = SimpleNamespace(rank=0, world=1, gather=lambda x: [x], barrier=lambda: None)
    said = []
    with pytest.raises(RunError) as info:
        C.resume_checkpoint(par, run, None, None, None, 1, collective=one, mount=False, say=said.append)
    assert "MemoryError" in str(info.value) and "kept" in str(info.value)
    assert ckpt.is_dir() and C.list_checkpoints(run) == [ckpt] and not said
    assert not (run / "checkpoints" / C.DAMAGED).exists()
