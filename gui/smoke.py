"""Checks the packaged app runs as a user would run it (``make bundle-smoke``), and its start-up time.

``DistillStudio --smoke-test``: opens the main window on the bundled demo plan, waits for the planner's estimate,
launches the demo run from the app (the engine as the bundle's own process), waits for it to finish with a student
saved, prints what it saw and exits 0 (1 on any failure, 2 on a timeout). ``--startup-time``: prints the
milliseconds from the process's start to the main window shown and painted, and exits.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

SMOKE_TIMEOUT_S = 1200


def _process_started() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - a start-up figure without the interpreter's own start
        return time.time()


def startup_time(app, win) -> int:
    """Quit after the first paint of the shown window; print the milliseconds since the process started."""
    from PySide6.QtCore import QTimer

    started = _process_started()

    def done() -> None:
        win.repaint()
        app.processEvents()
        print(f"startup_ms {round((time.time() - started) * 1000)}", flush=True)
        app.quit()

    QTimer.singleShot(0, done)
    return app.exec()


def smoke_test(app, win) -> int:
    from PySide6.QtCore import QTimer

    t0 = time.monotonic()
    state: dict = {"phase": "estimate", "code": None, "record": None}

    def say(text: str) -> None:
        print(f"[smoke {time.monotonic() - t0:6.1f} s] {text}", flush=True)

    def finish(code: int) -> None:
        state["code"] = code
        app.quit()

    def tick() -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the smoke test reports, never hangs
            say(f"failed: {type(exc).__name__}: {exc}")
            finish(1)

    def step() -> None:
        if time.monotonic() - t0 > SMOKE_TIMEOUT_S:
            say(f"timed out in phase {state['phase']}")
            finish(2)
            return
        if state["phase"] == "estimate":
            a = win.planner.analysis
            if a is None:
                return
            if a.decision.recommended is None:
                say(f"the planner recommends nothing: {a.decision.impossible}")
                finish(1)
                return
            r = a.sweep.row(a.decision.recommended)
            say(f"estimate: {a.plan.name}, {r['hours']['total'] * 3600:.0f} s, {int(a.planned.sum())} options")
            record = win.runs.launch_plan(str(win.plan_path), win.plan.name)
            if record is None:
                say("the run could not be launched")
                finish(1)
                return
            state.update(phase="run", record=record)
            say(f"launched the demo run (process {record.pid}) in {record.run_dir}")
        elif state["phase"] == "run":
            run = Path(state["record"].run_dir)
            events = run / "events.jsonl"
            ends = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()
                    if '"run_finished"' in line] if events.exists() else []
            if not ends:
                from ..engine.runs.process import is_alive

                if not is_alive(state["record"].pid, str(run)):     # gone without an end: it crashed
                    time.sleep(1.0)
                    if not events.exists() or '"run_finished"' not in events.read_text(encoding="utf-8"):
                        console = run / "logs" / "console.log"
                        tail = console.read_text(errors="replace").splitlines()[-30:] if console.exists() else []
                        say("the run's process ended without finishing; console log tail:\n" + "\n".join(tail))
                        finish(1)
                return
            end = ends[-1]
            student = run / "student" / "model.safetensors"
            evals = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines() if '"eval"' in line]
            score = evals[-1].get("task_score") if evals else None
            say(f"run {end.get('status')}: {end.get('message', '')}; task score {score}")
            ok = end.get("status") == "succeeded" and student.is_file()
            if not ok:
                console = run / "logs" / "console.log"
                if console.exists():
                    say("console log tail:\n" + "\n".join(console.read_text(errors="replace").splitlines()[-30:]))
            finish(0 if ok else 1)

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(250)
    app.exec()
    timer.stop()
    win.close()
    return int(state["code"] if state["code"] is not None else 1)


def run_mode(args, app, win) -> int | None:
    """The mode the command line asked for, run to its end; None for the normal app."""
    if getattr(args, "startup_time", False):
        return startup_time(app, win)
    if getattr(args, "smoke_test", False):
        return smoke_test(app, win)
    return None


if __name__ == "__main__":
    sys.exit(0)
