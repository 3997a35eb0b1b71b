"""The monitor's reading of run events: points per series, resumes, ETA, status of the process behind a run."""
from __future__ import annotations

import os
import subprocess
import sys
import time



from distill_studio.engine.runs.events import EventWriter
from distill_studio.gui.monitor.digest import RunState
from distill_studio.gui.monitor.runs import RunRecord, RunStore, is_alive, record_from_folder, send_stop
from distill_studio.gui.monitor.watch import Watch, quick_status


def _metric(w: EventWriter, step: int, loss: float, sps: float = 0.5) -> None:
    w.emit("metric", step=step, tokens_seen=step * 100, loss=loss, kd_loss=loss * 1.1, ce_loss=loss * 0.5,
           lr=1e-3, grad_norm=1.0, tokens_per_second=200.0, step_seconds=sps)


def test_points_resume_and_eta(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.emit("run_started", plan={}, total_steps=10, total_tokens=1000, examples=10, global_batch=1,
               processes=1, device="cpu", trainable_parameters=5, teacher_mode="online")
        for s in range(1, 7):
            _metric(w, s, 10.0 - s)
        w.emit("checkpoint", step=4, path="x")
    os.utime(path, (time.time() - 3600, time.time() - 3600))   # written an hour ago: not training anywhere now
    watch = Watch(RunRecord(run_dir=str(tmp_path), name="t"))
    b, snap = watch.poll()
    assert list(b.points["loss"][0]) == [1, 2, 3, 4, 5, 6]
    assert b.points["kd_loss"][1][0] == 9.0 * 1.1
    assert snap.step == 6 and snap.total_steps == 10 and snap.last_checkpoint == 4
    assert snap.status == "stopped"          # no process behind it, no run_finished
    assert snap.eta_seconds is None          # only a running run has an ETA
    assert watch.state.eta_seconds() == 4 * 0.5
    # the run is resumed from the checkpoint at step 4: steps 5-6 are repeated and must be cut
    with EventWriter(path) as w:
        w.emit("run_started", plan={}, total_steps=10, total_tokens=1000, examples=10, global_batch=1,
               processes=1, device="cpu", trainable_parameters=5, teacher_mode="online", resumed_from_step=4)
        _metric(w, 5, 4.5, sps=2.0)
        w.emit("eval", step=5, kl=0.2, perplexity=3.0, task_score=0.5)
        w.emit("run_finished", status="cancelled", message="stopped", step=5)
    b, snap = watch.poll()
    assert b.truncate_to == 4
    assert list(b.points["loss"][0]) == [5] and b.points["loss"][1][0] == 4.5
    assert list(b.points["task_score"][1]) == [0.5]
    assert snap.status == "cancelled" and snap.step == 5
    # the median step time restarts with the resumed session (2.0 s/step), so the ETA follows the new speed
    assert watch.state.seconds_per_step() == 2.0


def test_elapsed_sums_sessions(tmp_path):
    st = RunState()
    t0 = 1000.0
    ev = [{"type": "run_started", "time": t0, "total_steps": 4},
          {"type": "metric", "time": t0 + 10, "step": 1, "loss": 1.0, "step_seconds": 10.0},
          {"type": "run_finished", "time": t0 + 12, "status": "cancelled", "step": 1},
          {"type": "run_started", "time": t0 + 500, "total_steps": 4, "resumed_from_step": 1},
          {"type": "metric", "time": t0 + 520, "step": 2, "loss": 0.5, "step_seconds": 20.0}]
    st.feed(ev)
    # 12 s in the first session, 20 s so far in the second; the 488 s gap between them is not training time
    assert st.elapsed_seconds() == 32.0
    assert st.elapsed_seconds(now=t0 + 530) == 42.0
    assert st.eta_seconds() == 2 * 20.0      # the resumed session's own speed


def test_store_survives_restart_and_bad_file(tmp_path):
    path = tmp_path / "runs.json"
    store = RunStore(path)
    store.add(RunRecord(run_dir=str(tmp_path / "a"), name="a", pid=123))
    store.add(RunRecord(run_dir=str(tmp_path / "b"), name="b"))
    again = RunStore(path)
    assert [r.name for r in again.records] == ["b", "a"] and again.records[1].pid == 123
    path.write_text("{not json")
    broken = RunStore(path)
    assert broken.records == [] and "could not be read" in broken.warning
    assert (tmp_path / "runs.json.bad").exists()


def test_record_from_folder_refuses_non_run(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="no plan.toml"):
        record_from_folder(tmp_path)


def test_process_liveness_and_stop(tmp_path):
    run_dir = tmp_path / "run-xyz"
    run_dir.mkdir()
    # a stand-in process whose command line names the run folder, in its own session like a launched run
    p = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", str(run_dir)],
                         start_new_session=True)
    try:
        # right after the fork the child may not have exec'd yet (its command line is still pytest's)
        deadline = time.time() + 10
        while not is_alive(p.pid, str(run_dir)) and time.time() < deadline:
            time.sleep(0.05)
        assert is_alive(p.pid, str(run_dir))
        assert not is_alive(p.pid, str(tmp_path / "another-run"))   # a reused id is not taken for the run
        assert quick_status(RunRecord(run_dir=str(run_dir), name="x", pid=p.pid)) == "starting"
        assert send_stop(p.pid)
        assert p.wait(timeout=10) == -15
    finally:
        p.kill()
    assert not is_alive(p.pid, str(run_dir))
    assert os.getpgid(0) != p.pid   # the test's own group was never signalled (we are still here)


def test_quick_status_reads_the_tail(tmp_path):
    with EventWriter(tmp_path / "events.jsonl") as w:
        for s in range(1, 2000):
            _metric(w, s, 1.0)
        w.emit("run_finished", status="succeeded", message="ok", step=1999)
    assert quick_status(RunRecord(run_dir=str(tmp_path), name="x")) == "succeeded"


def test_a_dead_run_stops_counting_time_and_cost(tmp_path):
    ev = tmp_path / "events.jsonl"
    ev.write_text('{"type":"run_started","time":1000.0,"total_steps":10}\n'
                  '{"type":"metric","time":1060.0,"step":1,"loss":1.0,"step_seconds":60.0}\n')
    os.utime(ev, (time.time() - 3600, time.time() - 3600))
    snap = Watch(RunRecord(run_dir=str(tmp_path), name="x", pid=0)).poll()[1]
    assert snap.status == "stopped" and snap.elapsed_seconds == 60.0   # not "now minus 1000"


def test_a_run_opened_from_disk_that_is_still_written_is_not_resumable(tmp_path):
    with EventWriter(tmp_path / "events.jsonl") as w:
        w.emit("run_started", total_steps=10)
        _metric(w, 1, 1.0)
        w.emit("checkpoint", step=1, path="x")
    snap = Watch(RunRecord(run_dir=str(tmp_path), name="x", pid=0)).poll()[1]
    assert snap.status == "elsewhere" and not snap.alive


def test_console_log_without_newlines_is_still_consumed(tmp_path):
    from distill_studio.gui.monitor.watch import MAX_LOG_BYTES

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "console.log").write_bytes(b"downloading\r" * (MAX_LOG_BYTES // 6) + b"done\n")
    w = Watch(RunRecord(run_dir=str(tmp_path), name="x"))
    lines = []
    for _ in range(5):
        lines += w.poll()[0].logs
    assert lines[-1] == "done"


def test_a_runs_list_of_the_wrong_shape_starts_empty(tmp_path):
    for text in ("[]", "null", '{"runs": 3}'):
        path = tmp_path / "runs.json"
        path.write_text(text)
        store = RunStore(path)
        assert store.records == [] and "could not be read" in store.warning


def test_launch_runs_one_process_per_gpu_of_the_plan_and_leaves_auto_to_the_engine(tmp_path):
    from pathlib import Path

    from distill_studio.gui.monitor.runs import processes_for, run_command

    demo = Path(__file__).resolve().parents[2] / "resources" / "demo" / "plan.toml"
    assert processes_for(str(demo)) == 1
    two = tmp_path / "two.toml"
    two.write_text(demo.read_text().replace('accelerator = "cpu"', 'accelerator = "cpu"\ngpus = 2'))
    assert processes_for(str(two)) == 2
    cmd = run_command(str(two), str(tmp_path / "run"), processes=processes_for(str(two)))
    assert cmd[-2:] == ["--processes", "2"] and str(two) in cmd   # the plan as saved: the engine resolves "auto"
    assert run_command(None, str(tmp_path / "run"), resume=True)[-2:] == ["--resume", str(tmp_path / "run")]
    bad = tmp_path / "bad.toml"
    bad.write_text("not a plan")
    assert processes_for(str(bad)) == 1
