"""The monitor on run folders written here (no training): ETA, cost against the budget and the deadline warning,
comparing two runs, and stop forcing a run that ignores the polite request."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill_studio.engine.plan import load_plan, save_plan
from distill_studio.engine.runs.events import EventWriter
from distill_studio.gui.monitor import view as view_module
from distill_studio.gui.monitor.runs import RunRecord
from distill_studio.gui.monitor.view import MonitorView

DEMO_PLAN = Path(__file__).resolve().parents[2] / "resources" / "demo" / "plan.toml"


def make_run(root: Path, name: str, steps: int, total: int, hours=None, usd=None, usd_per_hour=None,
             estimate=None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    plan = load_plan(DEMO_PLAN)
    plan = plan.model_copy(update={
        "hardware": plan.hardware.model_copy(update={"usd_per_hour": usd_per_hour}),
        "budget": plan.budget.model_copy(update={"hours": hours, "usd": usd})})
    save_plan(plan, d / "plan.toml")
    with EventWriter(d / "events.jsonl") as w:
        w.emit("run_started", plan={}, total_steps=total, total_tokens=total, examples=1, global_batch=1,
               processes=1, device="cpu", trainable_parameters=1, teacher_mode="online",
               **({"estimate": estimate} if estimate else {}))
        for s in range(1, steps + 1):
            w.emit("metric", step=s, tokens_seen=s * 10, loss=2.0 / s, kd_loss=2.2 / s, ce_loss=1.0 / s, lr=1e-3,
                   grad_norm=1.0, tokens_per_second=100.0, step_seconds=36.0)
    return d


def stand_in(run_dir: Path, ignore_sigterm: bool = False) -> subprocess.Popen:
    """A process that looks like the run to the monitor (its command line names the run folder)."""
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(120)\n"
    return subprocess.Popen([sys.executable, "-c", code, str(run_dir)], start_new_session=True)


@pytest.fixture
def monitor(qtbot):
    m = MonitorView()
    m.resize(1200, 800)
    qtbot.addWidget(m)
    m.show()
    yield m
    m.stop_watching()


def test_eta_cost_and_deadline_warning(qtbot, monitor, tmp_path, screenshot):
    # 10 of 1,000 steps at 36 s a step: 9.9 h to go, against a 1 h deadline and a $5 cap at $3.60 an hour
    d = make_run(tmp_path, "late", steps=10, total=1000, hours=1.0, usd=5.0, usd_per_hour=3.6)
    p = stand_in(d)
    try:
        monitor.show_run(RunRecord(run_dir=str(d), name="late", pid=p.pid))
        qtbot.waitUntil(lambda: "ETA" in monitor.figures.text(), timeout=10_000)
        text = monitor.figures.text()
        assert "ETA 9 h 54 min" in text and "36.00 s/step" in text
        assert "cost so far $" in text and "of $5.00 budget" in text
        projected = float(text.split("projected $")[1].split()[0].replace(",", ""))
        assert projected == pytest.approx(3.6 * (monitor.snapshot.elapsed_seconds + 990 * 36) / 3600, rel=0.01)
        assert monitor.warning.isVisible()
        assert "past its 1 h deadline" in monitor.warning.text() and "over the $5.00 budget" in monitor.warning.text()
        assert monitor.progress.value() == 10       # 1% of 1,000
        qtbot.waitUntil(lambda: monitor.charts["loss"].point_count("loss") == 10, timeout=5_000)
        qtbot.waitUntil(lambda: not any(c.is_dirty() for c in monitor.charts.values()), timeout=5_000)
        x, _ = monitor.charts["loss"].plot_item.listDataItems()[0].getData()
        assert len(x) == 10                      # the curve on screen, not only the buffer
        screenshot(monitor, "monitor_deadline_warning")
    finally:
        p.kill()


def test_compare_two_runs(qtbot, monitor, tmp_path):
    a = make_run(tmp_path, "a", steps=30, total=30)
    b = make_run(tmp_path, "b", steps=20, total=20)
    ra, rb = RunRecord(run_dir=str(a), name="run a"), RunRecord(run_dir=str(b), name="run b")
    monitor.show_run(ra)
    monitor.set_compare_choices([ra, rb])
    assert monitor.compare.count() == 2          # "(none)" and the other run, not the watched one
    monitor.compare.setCurrentIndex(1)
    loss = monitor.charts["loss"]
    qtbot.waitUntil(lambda: "loss" in loss.overlay_names(), timeout=10_000)
    assert loss.point_count("loss") == 30
    monitor.compare.setCurrentIndex(0)
    assert loss.overlay_names() == []


def test_stop_forces_a_run_that_does_not_stop(qtbot, monitor, tmp_path, monkeypatch):
    monkeypatch.setattr(view_module, "CANCEL_TIMEOUT_MS", 800)
    d = make_run(tmp_path, "stubborn", steps=3, total=100)
    p = stand_in(d, ignore_sigterm=True)
    try:
        time.sleep(0.3)          # let it install its handler
        monitor.show_run(RunRecord(run_dir=str(d), name="stubborn", pid=p.pid))
        qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.alive, timeout=10_000)
        assert monitor.stop_button.isEnabled()
        monitor.request_stop()
        qtbot.wait(300)
        assert p.poll() is None                  # SIGTERM was ignored
        qtbot.waitUntil(lambda: p.poll() is not None, timeout=10_000)
        assert p.returncode == -9
        assert "forced" in monitor.log.toPlainText()
        qtbot.waitUntil(lambda: monitor.snapshot.status == "stopped", timeout=5_000)
    finally:
        p.kill()


def test_a_plan_written_after_launch_is_attached_for_cost_and_deadline(qtbot, monitor, tmp_path):
    """A run launched from the app writes its plan a moment after it starts: the monitor, already watching, picks
    it up, so cost so far and the deadline warning appear without reopening the run."""
    d = make_run(tmp_path, "fresh", steps=10, total=1000, hours=1.0, usd=5.0, usd_per_hour=3.6)
    plan_text = (d / "plan.toml").read_text()
    (d / "plan.toml").unlink()
    p = stand_in(d)
    try:
        monitor.show_run(RunRecord(run_dir=str(d), name="fresh", pid=p.pid))
        qtbot.waitUntil(lambda: "ETA" in monitor.figures.text(), timeout=10_000)
        assert monitor.plan is None and "cost so far" not in monitor.figures.text()
        (d / "plan.toml").write_text(plan_text)
        qtbot.waitUntil(lambda: "cost so far $" in monitor.figures.text(), timeout=10_000)
        assert monitor.plan is not None and monitor.warning.isVisible()
        assert "past its 1 h deadline" in monitor.warning.text()
    finally:
        p.kill()


def test_scores_and_kl_on_their_own_scales_with_the_teacher_as_reference(qtbot, monitor, tmp_path, screenshot):
    d = make_run(tmp_path, "evals", steps=20, total=100)
    with EventWriter(d / "events.jsonl") as w:
        for step, kl, score in ((0, 0.9, 0.1), (10, 0.4, 0.6), (20, 0.2, 0.8)):
            w.emit("eval", step=step, kl=kl, perplexity=1.5, top1_agreement=0.5 + score / 3, task_score=score,
                   teacher_task_score=0.95)
    p = stand_in(d)
    try:
        monitor.show_run(RunRecord(run_dir=str(d), name="evals", pid=p.pid))
        qtbot.waitUntil(lambda: monitor.charts["eval"].point_count("task_score") == 3, timeout=10_000)
        assert monitor.charts["loss"].point_count("kl") == 3            # KL beside the losses (nats)
        assert "kl" not in monitor.charts["eval"].series_names()         # scores alone on their 0-1 axis
        assert monitor.charts["eval"].reference() == pytest.approx(0.95)
        (x0, x1), _ = monitor.charts["loss"].plot_item.viewRange()
        assert x0 <= 0 and 100 <= x1 <= 110                              # the axis spans the run's 100 steps
        qtbot.waitUntil(lambda: not any(c.is_dirty() for c in monitor.charts.values()), timeout=5_000)
        screenshot(monitor, "monitor_scores_and_kl")
    finally:
        p.kill()


def test_status_words_while_resuming_and_finishing_and_the_result_card(qtbot, monitor, tmp_path, screenshot):
    planned = {"range": {"confidence": 0.8, "hours": [0.5, 1.2, 1.5], "cost_usd": [1.8, 4.32, 5.4],
                         "median_hours": 1.0, "median_cost_usd": 3.6}}
    d = make_run(tmp_path, "done", steps=100, total=100, usd_per_hour=3.6, estimate=planned)
    with EventWriter(d / "events.jsonl") as w:
        w.emit("eval", step=100, kl=0.0544, task_score=0.94, teacher_task_score=1.0)
    p = stand_in(d)
    try:
        # the last step is done, the process still runs: the final evaluation and the save, not "Running"
        monitor.show_run(RunRecord(run_dir=str(d), name="done", pid=p.pid))
        qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "finishing",
                        timeout=10_000)
        assert monitor.status_label.text().startswith("Finishing")
        with EventWriter(d / "events.jsonl") as w:
            w.emit("run_finished", status="succeeded", step=100, message=f"student saved to {d / 'student'}")
        p.kill()
        p.wait()
        qtbot.waitUntil(lambda: monitor.snapshot.status == "succeeded", timeout=10_000)
        card = monitor.result_card.text()
        assert monitor.result_card.isVisible()
        assert "0.940" in card and "teacher 1.000" in card and "0.0544" in card and str(d / "student") in card
        assert "cost $" in card
        # what it took beside what the planner said before it started
        assert "(planned 1 h 00 min, P10–P90 30 min 00 s to 1 h 30 min)" in card, card
        assert "(planned $3.60, P10–P90 $1.80 to $5.40)" in card, card
        screenshot(monitor, "monitor_result_card")
        # resumed from here after an end: the old end event is not the state of the new process
        p = stand_in(d)
        import time as _t

        monitor.record.pid, monitor.record.resumed_at = p.pid, _t.time() + 1
        qtbot.waitUntil(lambda: monitor.snapshot.status == "resuming", timeout=10_000)
        assert monitor.status_label.text().startswith("Resuming") and not monitor.result_card.isVisible()
    finally:
        p.kill()



def test_elapsed_moves_while_a_launched_run_loads(qtbot, monitor, tmp_path):
    d = tmp_path / "loading"
    d.mkdir()
    p = stand_in(d)
    try:
        monitor.show_run(RunRecord(run_dir=str(d), name="loading", pid=p.pid, launched_at=time.time() - 5))
        qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "starting",
                        timeout=10_000)
        assert monitor.snapshot.elapsed_seconds >= 5
        assert "elapsed 0 s" not in monitor.figures.text()
    finally:
        p.kill()


def test_smoothing_gradient_norm_wall_clock_markers_and_legends(qtbot, monitor, tmp_path, screenshot):
    """A run stopped at step 30 and resumed from its checkpoint at 20 a minute later: the gradient norm has its
    chart, smoothing draws the trailing mean over the raw points, the stop and the resume are marked, the x axis
    can read elapsed time (with the pause in it), and no legend sits on the curves."""
    import numpy as np

    from distill_studio.gui.monitor.chart import trailing_mean

    d = tmp_path / "resumed"
    d.mkdir()
    save_plan(load_plan(DEMO_PLAN), d / "plan.toml")
    rng = np.random.default_rng(0)
    t0 = time.time() - 600
    with EventWriter(d / "events.jsonl") as w:
        def step(s: int, t: float) -> None:
            w.write({"v": 1, "time": t, "type": "metric", "step": s, "tokens_seen": s * 10,
                     "loss": float(2.0 / s ** 0.5 + rng.normal(0, 0.2)), "lr": 1e-3,
                     "grad_norm": float(1.0 + rng.normal(0, 0.3)), "tokens_per_second": 100.0, "step_seconds": 1.0})

        w.write({"v": 1, "time": t0, "type": "run_started", "total_steps": 60, "total_tokens": 600, "processes": 1,
                 "device": "cpu"})
        for s in range(1, 31):
            step(s, t0 + s)
        w.write({"v": 1, "time": t0 + 31, "type": "checkpoint", "step": 20, "path": "checkpoints/step-00000020"})
        w.write({"v": 1, "time": t0 + 32, "type": "run_finished", "status": "cancelled", "step": 30,
                 "message": "stopped"})
        w.write({"v": 1, "time": t0 + 92, "type": "run_started", "total_steps": 60, "total_tokens": 600,
                 "processes": 1, "device": "cpu", "resumed_from_step": 20})
        for s in range(21, 61):
            step(s, t0 + 92 + (s - 20))
        w.write({"v": 1, "time": t0 + 140, "type": "run_finished", "status": "succeeded", "step": 60,
                 "message": "done"})
    monitor.show_run(RunRecord(run_dir=str(d), name="resumed", pid=0))
    qtbot.waitUntil(lambda: monitor.charts["grad"].point_count("grad_norm") == 60, timeout=10_000)
    loss = monitor.charts["loss"]
    x, y = loss.data("loss")
    assert list(x) == list(range(1, 61))                 # the stopped run's steps 21-30 replaced by the resumed
    assert ("stopped", "resumed") == tuple(label for _, label in loss.markers())
    assert [pos for pos, _ in loss.markers()] == [30.0, 20.0]
    assert len(monitor.charts["speed"].markers()) == 2

    monitor.smoothing.setCurrentIndex(monitor.smoothing.findData(10))
    loss.redraw()
    s = loss._series["loss"]
    drawn = s.item.getData()[1]
    assert np.allclose(drawn, trailing_mean(y, 10)) and np.std(np.diff(drawn)) < np.std(np.diff(y)) / 2
    assert s.shadow is not None and np.allclose(s.shadow.getData()[1], y)      # the raw points, faint
    assert monitor.charts["grad"].smoothing == 10 and monitor.charts["eval"].smoothing == 0

    monitor.x_axis.setCurrentIndex(monitor.x_axis.findData("time"))
    axis = loss.plot_item.getAxis("bottom")
    assert axis.clock is not None
    # step 20 (the checkpoint) 20 s in; step 40 after the resume (92 s) and 20 more steps: 112 s
    assert axis.tickStrings([20, 40], 1.0, 10) == ["20 s", "1 min 52 s"]
    assert "elapsed" in axis.labelText

    # legends: a score curve that climbs into the top right moves the legend to an empty corner
    with EventWriter(d / "events.jsonl") as w:
        for k, sc in enumerate((0.1, 0.3, 0.6, 0.8, 0.9, 0.95, 0.97)):
            w.emit("eval", step=k * 10, task_score=sc, top1_agreement=sc)
    qtbot.waitUntil(lambda: monitor.charts["eval"].point_count("task_score") == 7, timeout=10_000)
    qtbot.wait(300)
    for key, c in monitor.charts.items():
        c.redraw()
        assert c.place_legend() == c.legend_corner
    assert monitor.charts["eval"].legend_corner != "top-right"
    qtbot.wait(500)
    screenshot(monitor, "monitor_smoothing_markers_time_axis")


def _legend_labels(chart) -> list[str]:
    return [label.text for _sample, label in chart.legend.items]


def test_log_scale_leaves_the_scores_chart_linear(qtbot, monitor, tmp_path):
    d = make_run(tmp_path, "logs", steps=20, total=100)
    with EventWriter(d / "events.jsonl") as w:
        w.emit("eval", step=0, kl=4.3, task_score=0.0, top1_agreement=0.66, teacher_task_score=1.0)
    monitor.show_run(RunRecord(run_dir=str(d), name="logs"))
    qtbot.waitUntil(lambda: monitor.charts["eval"].point_count("task_score") == 1, timeout=10_000)
    monitor.log_scale.setChecked(True)
    assert monitor.charts["loss"].log_y
    assert not monitor.charts["eval"].log_y and monitor.charts["eval"].plot_item.getAxis("left").logMode is False
    assert not monitor.charts["eval"].plot_item.ctrl.logYCheck.isEnabled()    # nor from the chart's own menu
    assert monitor.charts["eval"].plot_item.viewRange()[1] == pytest.approx([0.0, 1.05])
    # the figures line says which step its held-out figures are from
    qtbot.waitUntil(lambda: "task score 0.000" in monitor.figures.text(), timeout=10_000)
    assert "task score 0.000 · KL 4.300 (step 0)" in monitor.figures.text()


def test_stop_and_resume_at_one_step_share_a_marker_and_close_ones_do_not_overprint(qtbot, monitor, tmp_path):
    from distill_studio.gui.monitor.chart import LiveChart

    c = LiveChart("Loss")
    qtbot.addWidget(c)
    c.add_marker(40, "stopped")
    c.add_marker(40, "resumed")
    assert c.markers() == [(40.0, "stopped · resumed")]
    c.add_marker(41, "stopped")
    heights = [m.label.orthoPos for m in c._markers]
    assert len(set(heights)) == len(heights)          # two labels a step apart sit at different heights


def test_compare_names_the_other_run_and_keeps_the_legends_short(qtbot, monitor, tmp_path):
    a = make_run(tmp_path, "a", steps=30, total=30)
    b = make_run(tmp_path, "b", steps=20, total=20)
    c = make_run(tmp_path, "c", steps=20, total=20)
    now = time.time()
    ra = RunRecord(run_dir=str(a), name="demo", launched_at=now - 7200)
    rb = RunRecord(run_dir=str(b), name="demo", launched_at=now - 3600)   # two runs of one plan: one name
    rc = RunRecord(run_dir=str(c), name="demo", launched_at=now - 60)
    monitor.show_run(ra)
    monitor.set_compare_choices([ra, rb, rc])
    texts = [monitor.compare.itemText(i) for i in range(1, monitor.compare.count())]
    assert len(set(texts)) == 2 and all(t.startswith("demo, started ") for t in texts)
    loss = monitor.charts["loss"]
    before = _legend_labels(loss)
    monitor.compare.setCurrentIndex(1)
    qtbot.waitUntil(lambda: "loss" in loss.overlay_names(), timeout=10_000)
    assert _legend_labels(loss) == before                  # no long "· demo" entries that clip and cover curves
    assert monitor.compare_note.isVisible() and monitor.compare_note.text() == f"Dashed curves: {texts[0]}"
    monitor.compare.setCurrentIndex(0)
    assert not monitor.compare_note.isVisible()


def test_elapsed_axis_ticks_at_round_times_in_the_apps_words(qtbot, monitor, tmp_path):
    from distill_studio.gui.monitor.chart import elapsed_text

    assert [elapsed_text(s) for s in (45, 120, 150, 3600, 3900)] == ["45 s", "2 min", "2 min 30 s", "1 h",
                                                                      "1 h 05 min"]
    d = tmp_path / "clock"
    d.mkdir()
    t0 = time.time() - 4000
    with EventWriter(d / "events.jsonl") as w:                # 36 s a step: an hour in 100 steps
        w.write({"v": 1, "time": t0, "type": "run_started", "total_steps": 100, "total_tokens": 1000,
                 "processes": 1, "device": "cpu"})
        for s in range(1, 101):
            w.write({"v": 1, "time": t0 + 36 * s, "type": "metric", "step": s, "tokens_seen": s * 10,
                     "loss": 2.0 / s, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_second": 100.0, "step_seconds": 36.0})
    monitor.show_run(RunRecord(run_dir=str(d), name="clock"))
    qtbot.waitUntil(lambda: monitor.charts["loss"].point_count("loss") == 100, timeout=10_000)
    monitor.x_axis.setCurrentIndex(monitor.x_axis.findData("time"))
    axis = monitor.charts["loss"].plot_item.getAxis("bottom")
    assert axis.labelText == "elapsed time"
    ((_spacing, values),) = axis.tickValues(0, 100, 300)
    labels = axis.tickStrings(values, 1.0, 1.0)
    assert labels == ["0 s", "15 min", "30 min", "45 min", "1 h"]            # round times, not "2m26", "3m47"


def test_the_teacher_reference_label_is_not_under_the_legend(qtbot, monitor, tmp_path):
    d = make_run(tmp_path, "teacher", steps=100, total=100)
    with EventWriter(d / "events.jsonl") as w:
        for step, score, top1 in ((0, 0.0, 0.66), (50, 0.64, 0.98), (100, 0.94, 1.0)):
            w.emit("eval", step=step, kl=0.5, task_score=score, top1_agreement=top1, teacher_task_score=1.0)
    monitor.show_run(RunRecord(run_dir=str(d), name="teacher"))
    chart = monitor.charts["eval"]
    qtbot.waitUntil(lambda: chart.point_count("task_score") == 3, timeout=10_000)
    qtbot.wait(300)
    chart.redraw()
    chart.place_legend()
    qtbot.wait(100)
    label = chart._reference.label
    assert label.isVisible() and label.format == "teacher 1.00"
    assert not chart.legend.sceneBoundingRect().intersects(label.sceneBoundingRect())


def test_a_cents_cap_is_shown_in_cents_and_its_warning_stays_while_finishing(qtbot, monitor, tmp_path):
    d = make_run(tmp_path, "cents", steps=0, total=10, usd=0.2, usd_per_hour=3.6)
    t0 = time.time() - 3600
    (d / "events.jsonl").unlink()
    with EventWriter(d / "events.jsonl") as w:       # an hour of training, the last step done
        w.write({"v": 1, "time": t0, "type": "run_started", "total_steps": 10, "total_tokens": 100, "processes": 1,
                 "device": "cpu"})
        for s in range(1, 11):
            w.write({"v": 1, "time": t0 + 360 * s, "type": "metric", "step": s, "tokens_seen": s * 10, "loss": 1.0,
                     "lr": 1e-3, "grad_norm": 1.0, "tokens_per_second": 100.0, "step_seconds": 360.0})
    p = stand_in(d)
    try:
        monitor.show_run(RunRecord(run_dir=str(d), name="cents", pid=p.pid))
        qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "finishing",
                        timeout=10_000)
        assert "of $0.20 budget" in monitor.figures.text()
        assert monitor.warning.isVisible() and "over the $0.20 budget" in monitor.warning.text()
    finally:
        p.kill()
