"""The longest stall of the app's event loop while the run monitor watches a run that streams metrics.

    .venv/bin/python benchmarks/bench_gui_stall.py [--seconds 30] [--rate 5000]

A writer process appends ``metric`` events (all six series, as the engine writes them) to a run folder's
events.jsonl at ``--rate`` events a second, with an ``eval`` every 500 steps, for ``--seconds``; the monitor
(``MonitorView``) watches that folder as it does a real run, so by the end each curve holds rate x seconds points
(150,000 by default). A 10 ms timer on the GUI thread records every gap between its ticks: the worst gap minus 10 ms is
the longest the event loop was unavailable. Also reported: the 99th percentile, the points on screen at the end,
and how far behind the file the monitor was when the writer stopped. Target: no stall over 100 ms.

(The bundled demo run, watched from launch to stop, is measured the same way in tests/gui/test_app_run.py, which
writes artifacts/gui_stall.json.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

WRITER = r"""
import sys, time, math, random
from distill_studio.engine.runs.events import EventWriter
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
total = int(rate * seconds)
with EventWriter(path) as w:
    w.emit("run_started", plan={}, total_steps=total, total_tokens=total * 2048, examples=1, global_batch=1,
           processes=1, device="cpu", trainable_parameters=1, teacher_mode="online")
    t0 = time.time()
    for step in range(1, total + 1):
        loss = 3 * math.exp(-step / (total / 5)) + 0.5 + 0.05 * random.random()
        w.emit("metric", step=step, tokens_seen=step * 2048, loss=loss, kd_loss=loss * 1.1, ce_loss=loss * 0.4,
               lr=1e-4, grad_norm=1.0, tokens_per_second=2048 * rate, step_seconds=1 / rate)
        if step % 500 == 0:
            w.emit("eval", step=step, kl=loss / 5, perplexity=math.exp(loss / 3), top1_agreement=0.9, task_score=0.5)
        ahead = step / rate - (time.time() - t0)
        if ahead > 0:
            time.sleep(ahead)
    w.emit("run_finished", status="succeeded", message="done", step=total)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rate", type=float, default=5000)
    args = ap.parse_args()

    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from distill_studio.gui.monitor.runs import RunRecord
    from distill_studio.gui.monitor.view import MonitorView

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "plan.toml").write_text("")
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run / "events.jsonl"), str(args.rate),
                                   str(args.seconds)])
        view = MonitorView()
        view.resize(1300, 850)
        view.show()
        view.show_run(RunRecord(run_dir=str(run), name="stream", pid=writer.pid))
        gaps: list[int] = []
        clock = QElapsedTimer()
        clock.start()

        def tick() -> None:
            gaps.append(clock.restart())

        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(tick)
        timer.start()
        while writer.poll() is None:
            app.processEvents()
            time.sleep(0.001)
        written = int(args.rate * args.seconds)
        behind = written - view.charts["loss"].point_count("loss")
        t_end = time.time()
        while view.charts["loss"].point_count("loss") < written and time.time() - t_end < 30:
            app.processEvents()
            time.sleep(0.001)
        catch_up = time.time() - t_end
        timer.stop()
        points = view.charts["loss"].point_count("loss")
        redraw = [c.last_redraw_ms for c in view.charts.values()]
        view.stop_watching()
    stalls = sorted(max(0, g - 10) for g in gaps[1:])
    worst = stalls[-1] if stalls else 0
    p99 = stalls[int(0.99 * (len(stalls) - 1))] if stalls else 0
    ok = worst <= 100 and points == written
    print(f"{args.rate:,.0f} metric events/s for {args.seconds:g} s -> {points:,} points per curve "
          f"(written {written:,}; {behind:,} behind when the writer stopped, caught up in {catch_up:.2f} s)")
    print(f"event loop: {len(gaps):,} ticks of 10 ms, worst stall {worst} ms, 99th percentile {p99} ms, "
          f"median gap {statistics.median(gaps[1:]) if len(gaps) > 1 else 0} ms; last chart redraws "
          f"{', '.join(f'{r:.0f}' for r in redraw)} ms")
    print(f"target: worst stall <= 100 ms -> {'PASS' if ok else 'FAIL'}")
    print(json.dumps({"bench": "gui_stall", "date": time.strftime("%Y-%m-%d"), "rate": args.rate,
                      "seconds": args.seconds, "points": points, "worst_stall_ms": worst, "p99_stall_ms": p99,
                      "behind_at_end": behind, "catch_up_s": round(catch_up, 2), "pass": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
