"""The Runs screen: the list keyed by run folder, the monitor always on the run just launched, Stop and Resume on
the run shown, failed and cancelled runs told as such, the empty state. Runs are folders written here; a launch
starts a stand-in process (its command line names the run folder, as the real one does) instead of training."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill_studio.engine.plan import load_plan, save_plan
from distill_studio.engine.runs.events import EventWriter
from distill_studio.engine.runs.process import stop_file
from distill_studio.engine.settings import Settings
from distill_studio.gui.monitor import runs_page as runs_page_module
from distill_studio.gui.monitor.runs import CONSOLE_LOG, RunRecord, RunStore
from distill_studio.gui.monitor.runs_page import RunsPage

DEMO_PLAN = Path(__file__).resolve().parents[2] / "resources" / "demo" / "plan.toml"
PROCESSES: list[subprocess.Popen] = []


def write_run(root: Path, name: str, steps: int, total: int, end: str | None = None, message: str = "") -> Path:
    d = root / name
    d.mkdir(parents=True)
    save_plan(load_plan(DEMO_PLAN), d / "plan.toml")
    with EventWriter(d / "events.jsonl") as w:
        w.emit("run_started", plan={}, total_steps=total, total_tokens=total, examples=1, global_batch=1,
               processes=1, device="cpu", trainable_parameters=1, teacher_mode="online")
        for s in range(1, steps + 1):
            w.emit("metric", step=s, tokens_seen=s * 10, loss=2.0 / s, kd_loss=2.2 / s, ce_loss=1.0 / s, lr=1e-3,
                   grad_norm=1.0, tokens_per_second=100.0, step_seconds=1.0)
        if end == "cancelled":
            w.emit("checkpoint", step=steps, path=f"checkpoints/step-{steps:08d}")
        if end:
            w.emit("run_finished", status=end, step=steps, message=message)
    return d


def stand_in(run_dir: Path, lines: tuple[str, ...] = (), exit_now: bool = False) -> int:
    """A process that looks like the run to the app: its command line names the run folder; it writes ``lines``
    to the run's console log, and lives on unless ``exit_now``."""
    console = run_dir / CONSOLE_LOG
    console.parent.mkdir(parents=True, exist_ok=True)
    console.write_text("".join(line + "\n" for line in lines))
    code = "import sys, time\n" + ("" if exit_now else "time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], start_new_session=True)
    PROCESSES.append(p)
    if exit_now:
        p.wait()
    return p.pid


@pytest.fixture(autouse=True)
def _end_stand_ins():
    yield
    while PROCESSES:
        p = PROCESSES.pop()
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def fake_launch(monkeypatch):
    """``launch`` as the runs page calls it, starting a stand-in: records each call; ``script`` says what the next
    launched run prints and whether it lives."""
    calls: list[dict] = []
    script = {"lines": (), "exit_now": False}

    def launch(plan_path, run_dir, resume=False, target="local", **_options):
        calls.append({"plan_path": plan_path, "run_dir": run_dir, "resume": resume})
        return stand_in(Path(run_dir), script["lines"], script["exit_now"])

    monkeypatch.setattr(runs_page_module, "launch", launch)
    return calls, script


def make_page(qtbot, tmp_path, records: list[RunRecord]) -> RunsPage:
    store = RunStore(tmp_path / "runs.json")
    for r in reversed(records):
        store.add(r)
    page = RunsPage(Settings(runs_dir=str(tmp_path / "runs")), store=store)
    page.resize(1200, 760)
    qtbot.addWidget(page)
    page.show()
    return page


def row_status(page: RunsPage, run_dir: str) -> str:
    for row in range(page.table.rowCount()):
        if page.table.item(row, 0).data(0x0100) == run_dir:     # Qt.UserRole
            return page.table.item(row, 1).text()
    raise AssertionError(f"{run_dir} is not listed")


def statuses_shown(page: RunsPage, records: list[RunRecord]) -> bool:
    return all(row_status(page, r.run_dir) not in ("", "…") for r in records)


def test_launch_switches_the_monitor_to_the_new_run_when_row_0_was_selected(qtbot, tmp_path, fake_launch):
    calls, _ = fake_launch
    old = write_run(tmp_path, "old", steps=7, total=30, end="cancelled", message="stopped by SIGTERM at step 7")
    page = make_page(qtbot, tmp_path, [RunRecord(run_dir=str(old), name="old", launched_at=time.time() - 600)])
    qtbot.waitUntil(lambda: page.monitor.snapshot is not None and page.monitor.snapshot.status == "cancelled",
                    timeout=10_000)
    assert page.selected().run_dir == str(old)           # row 0, selected

    record = page.launch_plan(str(DEMO_PLAN), "new")
    assert record is not None and calls[-1]["run_dir"] == record.run_dir
    assert page.selected().run_dir == record.run_dir      # the new run is selected in the list...
    assert page.monitor.record is not None and page.monitor.record.run_dir == record.run_dir   # ...and shown
    assert page.monitor.title.text() == "new"
    qtbot.waitUntil(lambda: page.monitor.snapshot is not None and page.monitor.snapshot.alive, timeout=10_000)
    assert page.monitor.stop_button.isEnabled() and not page.monitor.resume_button.isEnabled()

    # Stop acts on the run shown: the new one ends, the old folder gets no stop request
    page.monitor.request_stop()
    assert stop_file(record.run_dir).exists() and not stop_file(old).exists()
    qtbot.waitUntil(lambda: PROCESSES[-1].poll() is not None, timeout=10_000)


def test_resume_acts_on_the_run_shown(qtbot, tmp_path, fake_launch):
    calls, _ = fake_launch
    a = write_run(tmp_path, "a", steps=7, total=30, end="cancelled", message="stopped")
    b = write_run(tmp_path, "b", steps=5, total=30, end="cancelled", message="stopped")
    page = make_page(qtbot, tmp_path, [RunRecord(run_dir=str(a), name="a"), RunRecord(run_dir=str(b), name="b")])
    page.select(str(b))
    qtbot.waitUntil(lambda: page.monitor.snapshot is not None and page.monitor.record.run_dir == str(b)
                    and page.monitor.resume_button.isEnabled(), timeout=10_000)
    page.monitor.resume_button.click()
    assert calls and calls[-1] == {"plan_path": None, "run_dir": str(b), "resume": True}


def test_statuses_are_keyed_by_run_folder_not_by_row(qtbot, tmp_path, fake_launch):
    """A run cancelled at step 7 stays "Stopped" when a new run is added above it; it is never shown as finished,
    and the list uses the monitor's words, not the engine's."""
    finished = write_run(tmp_path, "finished", steps=30, total=30, end="succeeded", message="student saved")
    cancelled = write_run(tmp_path, "cancelled", steps=7, total=30, end="cancelled", message="stopped at step 7")
    failed = write_run(tmp_path, "failed", steps=3, total=30, end="failed", message="CUDA out of memory")
    records = [RunRecord(run_dir=str(d), name=d.name) for d in (finished, cancelled, failed)]
    page = make_page(qtbot, tmp_path, records)
    qtbot.waitUntil(lambda: statuses_shown(page, records), timeout=10_000)
    qtbot.wait(200)
    before = {r.run_dir: row_status(page, r.run_dir) for r in records}
    page.launch_plan(str(DEMO_PLAN), "newest")               # a new row 0: every other row moves down
    assert {r.run_dir: row_status(page, r.run_dir) for r in records} == before     # at once, not at the refresh

    def check() -> None:
        assert row_status(page, str(finished)) == "Finished"
        assert row_status(page, str(cancelled)).startswith("Stopped")
        assert row_status(page, str(failed)).startswith("Failed")

    check()
    words = {page.table.item(r, 1).text() for r in range(page.table.rowCount())}
    assert not words & {"succeeded", "cancelled", "failed", "stopped"}
    qtbot.wait(2_500)                                        # and after the list's own refresh too
    check()


def test_a_run_that_fails_before_its_first_step_says_failed_with_its_own_error(qtbot, tmp_path, fake_launch,
                                                                               screenshot):
    calls, script = fake_launch
    done = write_run(tmp_path, "done", steps=30, total=30, end="succeeded", message="student saved")
    page = make_page(qtbot, tmp_path, [RunRecord(run_dir=str(done), name="done")])
    qtbot.waitUntil(lambda: page.monitor.snapshot is not None and page.monitor.snapshot.step == 30, timeout=10_000)
    script["exit_now"] = True
    script["lines"] = (
        "/venv/lib/python3.12/site-packages/numpy/_core/fromnumeric.py:3596: RuntimeWarning: Mean of empty slice.",
        "  return hours * (rate if rate is not None else sw.grid.nodes * sw.grid.usd_per_node_hour)",
        "error: hardware: the plan fits no GPU it can use: its smallest configuration needs 22.4 GiB per GPU of "
        "21.2 GiB usable; use more GPUs or nodes, or a smaller teacher",
    )
    record = page.launch_plan(str(DEMO_PLAN), "unfit")
    monitor = page.monitor
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "failed", timeout=10_000)
    assert monitor.status_label.text().startswith("Failed")
    assert "c0392b" in monitor.status_label.styleSheet()                       # red
    text = monitor.failure_card.text()
    assert monitor.failure_card.isVisible() and "Failed:" in text
    assert "the plan fits no GPU it can use" in text and "RuntimeWarning" not in text
    assert monitor.edit_plan_button.isVisible()
    asked = []
    page.sig_edit_plan_requested.connect(asked.append)
    monitor.edit_plan_button.click()
    assert asked == [str(DEMO_PLAN)]                     # the plan the run was launched from
    assert "Stopped without finishing" not in monitor.status_label.text()
    assert "waiting for the first step" not in monitor.progress.format()
    assert "elapsed 0 s" not in monitor.figures.text()
    # the previous run's 30 steps do not stay on the axes
    (x0, x1), _ = monitor.charts["loss"].plot_item.viewRange()
    assert x1 < 30
    qtbot.waitUntil(lambda: row_status(page, record.run_dir).startswith("Failed"), timeout=10_000)
    assert row_status(page, str(done)) == "Finished"
    screenshot(page, "runs_failed_before_first_step")


def test_a_failed_run_shows_the_engines_reason_and_how_to_go_on(qtbot, tmp_path):
    d = write_run(tmp_path, "oom", steps=12, total=100, end="failed",
                  message="CUDA out of memory: tried to allocate 2.00 GiB. The last checkpoint is kept.")
    page = make_page(qtbot, tmp_path, [RunRecord(run_dir=str(d), name="oom")])
    monitor = page.monitor
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "failed", timeout=10_000)
    assert monitor.status_label.text().startswith("Failed")
    assert "CUDA out of memory" in monitor.failure_card.text() and "Edit" in monitor.failure_card.text()
    assert not monitor.result_card.isVisible()
    assert row_status(page, str(d)).startswith("Failed")


def test_list_words_selection_buttons_and_one_line_names(qtbot, tmp_path):
    long_name = "demo-costed-tight-budget-with-a-name-that-does-not-fit-the-column"
    d = write_run(tmp_path, long_name, steps=30, total=30, end="succeeded", message="student saved")
    page = make_page(qtbot, tmp_path, [RunRecord(run_dir=str(d), name=long_name)])
    assert not page.table.wordWrap()
    assert page.table.rowHeight(0) <= page.table.fontMetrics().height() + 16        # one line
    assert page.remove_button.isEnabled()
    page.table.clearSelection()
    assert not page.remove_button.isEnabled()


def test_empty_runs_tab_shows_an_empty_state_not_empty_charts(qtbot, tmp_path, screenshot):
    page = make_page(qtbot, tmp_path, [])
    assert page.empty_state.isVisible() and not page.monitor.isVisible()
    assert "Launch" in page.empty_state_text.text()
    assert not page.remove_button.isEnabled()
    label = page.empty_state_text               # the whole sentence shows, none of it cut off at the bottom
    assert label.height() >= label.heightForWidth(label.width())
    opened = []
    page.sig_open_demo_requested.connect(lambda: opened.append(True))
    page.empty_state.findChild(type(page.remove_button), "empty_open_demo").click()
    assert opened == [True]
    screenshot(page, "runs_empty_state_page")


def write_demo_like_run(root: Path, name: str, t0: float, stop_at: int | None = 41, resume_from: int = 40) -> Path:
    """A 100-step run as the demo writes it: evaluations at 0, 50 and 100 against a teacher at 1.0, 4 s a step,
    stopped at ``stop_at`` and resumed from its checkpoint at ``resume_from`` a minute later, then finished."""
    import math

    d = root / name
    d.mkdir(parents=True)
    save_plan(load_plan(DEMO_PLAN), d / "plan.toml")
    with EventWriter(d / "events.jsonl") as w:
        def started(t: float, resumed: int | None = None) -> None:
            e = {"v": 1, "time": t, "type": "run_started", "total_steps": 100, "total_tokens": 40_000,
                 "processes": 1, "device": "cpu"}
            if resumed is not None:
                e["resumed_from_step"] = resumed
            w.write(e)

        def metric(s: int, t: float) -> None:
            loss = 0.1 + 4.2 * math.exp(-s / 12) + 0.05 * math.sin(s)
            w.write({"v": 1, "time": t, "type": "metric", "step": s, "tokens_seen": s * 400, "loss": loss,
                     "kd_loss": loss * 1.05, "ce_loss": 0.3 * loss, "lr": 1e-3 * min(1.0, s / 10),
                     "grad_norm": 1.0 + 3 * math.exp(-s / 30) + 0.3 * math.sin(3 * s), "tokens_per_second": 450.0,
                     "step_seconds": 4.0})

        def evaluate(s: int, t: float, kl: float, score: float, top1: float) -> None:
            w.write({"v": 1, "time": t, "type": "eval", "step": s, "kl": kl, "task_score": score,
                     "top1_agreement": top1, "teacher_task_score": 1.0})

        started(t0)
        evaluate(0, t0, 4.35, 0.0, 0.66)
        last = stop_at or 100
        for s in range(1, last + 1):
            metric(s, t0 + 4 * s)
            if s == 50:
                evaluate(50, t0 + 4 * s, 0.18, 0.64, 0.98)
        t = t0 + 4 * last
        if stop_at:
            w.write({"v": 1, "time": t, "type": "checkpoint", "step": resume_from})
            w.write({"v": 1, "time": t + 1, "type": "run_finished", "status": "cancelled", "step": stop_at,
                     "message": "stopped"})
            t += 60
            started(t, resume_from)
            for s in range(resume_from + 1, 101):
                metric(s, t + 4 * (s - resume_from))
                if s == 50:
                    evaluate(50, t + 4 * (s - resume_from), 0.18, 0.64, 0.98)
            t += 4 * (100 - resume_from)
        evaluate(100, t, 0.054, 0.94, 1.0)
        w.write({"v": 1, "time": t + 1, "type": "run_finished", "status": "succeeded", "step": 100,
                 "message": f"student saved to {d / 'student'}"})
    return d


@pytest.mark.parametrize("size", [(1320, 860), (960, 640)], ids=["1320x860", "960x640"])
def test_screenshots_of_the_runs_screen(qtbot, tmp_path, fake_launch, screenshot, size):
    """The Runs screen in the main window at its usual size and at its minimum: empty, a finished run with a stop
    and resume, compare, elapsed time, log scale, a failed launch and the list after it."""
    from distill_studio.gui.app import create_window

    _calls, script = fake_launch
    suffix = f"{size[0]}x{size[1]}"
    _app, win = create_window([])
    qtbot.addWidget(win)
    win.resize(*size)
    win.show_runs()
    page = win.runs
    qtbot.wait(200)
    assert page.empty_state.isVisible()
    screenshot(win, f"runs_empty_{suffix}")

    now = time.time()
    first = write_demo_like_run(tmp_path, "first", now - 7200)
    second = write_demo_like_run(tmp_path, "second", now - 3000, stop_at=None)
    cancelled = write_run(tmp_path, "costed", steps=7, total=30, end="cancelled",
                          message="stopped by SIGTERM at step 7")
    for d, name, at in ((first, "demo-column-addition", now - 7200), (cancelled, "demo-costed-tight-budget", now - 5000),
                        (second, "demo-column-addition", now - 3000)):
        page.store.add(RunRecord(run_dir=str(d), name=name, launched_at=at))
    page.reload(select=str(first))
    monitor = page.monitor
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "succeeded", timeout=10_000)
    qtbot.waitUntil(lambda: statuses_shown(page, page.store.records), timeout=10_000)
    qtbot.wait(600)
    screenshot(win, f"monitor_finished_{suffix}")

    monitor.compare.setCurrentIndex(1)
    qtbot.waitUntil(lambda: "loss" in monitor.charts["loss"].overlay_names(), timeout=10_000)
    qtbot.wait(600)
    screenshot(win, f"monitor_compare_{suffix}")
    monitor.compare.setCurrentIndex(0)

    monitor.smoothing.setCurrentIndex(monitor.smoothing.findData(10))
    monitor.x_axis.setCurrentIndex(monitor.x_axis.findData("time"))
    qtbot.wait(600)
    screenshot(win, f"monitor_elapsed_axis_{suffix}")
    monitor.x_axis.setCurrentIndex(0)
    monitor.smoothing.setCurrentIndex(0)

    monitor.log_scale.setChecked(True)
    qtbot.wait(600)
    screenshot(win, f"monitor_log_scale_{suffix}")
    monitor.log_scale.setChecked(False)

    # a launch while a run is selected: the new run is shown, starting, with Stop on it
    launched = page.launch_plan(str(DEMO_PLAN), "demo-column-addition")
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.alive, timeout=10_000)
    assert monitor.record.run_dir == launched.run_dir and monitor.stop_button.isEnabled()
    qtbot.waitUntil(lambda: row_status(page, launched.run_dir) == "Starting…", timeout=10_000)
    qtbot.wait(300)
    screenshot(win, f"runs_after_launch_{suffix}")
    monitor.request_stop()
    qtbot.waitUntil(lambda: PROCESSES[-1].poll() is not None, timeout=10_000)

    script["exit_now"] = True
    script["lines"] = (
        "/venv/lib/python3.12/site-packages/numpy/_core/fromnumeric.py:3596: RuntimeWarning: Mean of empty slice.",
        "error: hardware: the plan fits no GPU it can use: its smallest configuration (1 × cpu, lora, teacher "
        "generate replicated, sharding none) needs 22.4 GiB per GPU (teacher 0.0 GiB) of 21.2 GiB usable; use more "
        "GPUs or nodes, teacher.precision int8/int4, or a smaller teacher",
    )
    record = page.launch_plan(str(DEMO_PLAN), "phi4-on-this-cpu")
    assert monitor.record.run_dir == record.run_dir
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "failed", timeout=10_000)
    qtbot.waitUntil(lambda: row_status(page, record.run_dir).startswith("Failed"), timeout=10_000)
    qtbot.wait(600)
    screenshot(win, f"monitor_failed_launch_{suffix}")
    assert row_status(page, str(cancelled)).startswith("Stopped")
    if size == (1320, 860):                              # the same in the dark theme
        from PySide6.QtWidgets import QApplication

        from distill_studio.gui.theme import apply_theme

        try:
            apply_theme(QApplication.instance(), "dark")
            qtbot.wait(400)
            screenshot(win, "monitor_failed_launch_dark_1320x860")
            page.select(str(first))
            qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "succeeded",
                            timeout=10_000)
            qtbot.wait(600)
            screenshot(win, "runs_dark_1320x860")
            page.select(record.run_dir)
            qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "failed",
                            timeout=10_000)
        finally:
            apply_theme(QApplication.instance(), "light")
    monitor.edit_plan_button.click()                     # the window opens the run's plan in the wizard
    assert win.plan_path == str(DEMO_PLAN.resolve()) and win.wizard is not None
    win.wizard.close()
    win.close()


def test_a_run_stopped_while_it_loads_is_stopped_not_failed(qtbot, tmp_path, fake_launch):
    page = make_page(qtbot, tmp_path, [])
    record = page.launch_plan(str(DEMO_PLAN), "stopped-early")
    monitor = page.monitor
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.alive, timeout=10_000)
    monitor.request_stop()                       # the stand-in ends on SIGTERM before it wrote any event
    qtbot.waitUntil(lambda: monitor.snapshot is not None and not monitor.snapshot.alive, timeout=10_000)
    qtbot.wait(500)
    assert monitor.snapshot.status == "stopped" and not monitor.failure_box.isVisible()
    qtbot.waitUntil(lambda: row_status(page, record.run_dir) == "Stopped", timeout=10_000)
