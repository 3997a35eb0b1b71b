"""The desktop app's responsiveness: start-up, import time, and the planner's redraw after a budget change.

    .venv/bin/python benchmarks/bench_gui_app.py [--runs 7]

* start-up: a fresh process does what ``distill-studio --demo`` does (``gui.app.create_window``) and reports when
  the window has been shown and painted once, and when the demo plan's options are drawn. Timed from just before
  the process is spawned, so interpreter start and every import count. Median and max over ``--runs``. Target: shown
  in under 1.5 s (median). Also checks that no torch/transformers/peft/azure module was imported on the way.
* import: a fresh ``python -c "import distill_studio.gui.main_window"`` against a bare ``python -c pass``.
* planner: the Gemma 3 27B -> 4B plan's sweep on screen; the deadline is changed 20 times; each change re-solves the
  budget, redraws the chart and the table and repaints (``PlannerView.last_update_ms`` plus a forced repaint).
  Target: under 100 ms.

Runs offscreen (QT_QPA_PLATFORM=offscreen is set when unset). Medians, not single times: the machine is noisy.
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
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "accelerate", "azure")

CHILD = r"""
import os, sys, time, json
t_import = time.perf_counter()
from distill_studio.gui.app import create_window
from PySide6.QtCore import QTimer
app, win = create_window(["--demo"])
out = {}
def painted():
    out["shown"] = time.time()
win.planner.sig_analysis_ready.connect(lambda: out.setdefault("plan_drawn", time.time()))
QTimer.singleShot(0, painted)
deadline = time.time() + 30
while "plan_drawn" not in out or "shown" not in out:
    app.processEvents()
    if time.time() > deadline:
        break
    time.sleep(0.002)
out["heavy"] = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps(out), flush=True)
"""


def startup(runs: int) -> dict:
    shown, drawn, heavy = [], [], set()
    code = f"HEAVY = {HEAVY!r}\n" + CHILD
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, DISTILL_STUDIO_DATA_DIR=f"{tmp}/data", DISTILL_STUDIO_CONFIG_DIR=f"{tmp}/cfg")
            t0 = time.time()
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not line:
            raise SystemExit(f"the app did not start:\n{res.stderr[-2000:]}")
        out = json.loads(line[-1])
        shown.append(out["shown"] - t0)
        drawn.append(out.get("plan_drawn", float("nan")) - t0)
        heavy |= set(out["heavy"])
    return {"shown_median_s": statistics.median(shown), "shown_max_s": max(shown),
            "plan_drawn_median_s": statistics.median(drawn), "heavy_modules_imported": sorted(heavy)}


def import_time(runs: int) -> dict:
    def once(stmt: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        return time.perf_counter() - t0

    bare, gui = [], []
    for _ in range(runs):
        bare.append(once("pass"))
        gui.append(once("import distill_studio.gui.main_window"))
    return {"python_bare_median_s": statistics.median(bare), "gui_import_median_s": statistics.median(gui),
            "gui_import_minus_bare_s": statistics.median(gui) - statistics.median(bare)}


def planner(repeats: int = 20) -> dict:
    from PySide6.QtWidgets import QApplication

    from distill_studio.engine.plan import load_plan
    from distill_studio.engine.planner import analyse
    from distill_studio.gui.planner.view import PlannerView

    app = QApplication.instance() or QApplication([])
    v = PlannerView()
    v.resize(1300, 900)
    v.show()
    path = ROOT / "resources" / "plans" / "gemma3-27b-to-4b-3h.toml"
    a = analyse(load_plan(path), path.parent)
    v.plan = a.plan
    v._analysed(a)
    app.processEvents()
    update, total = [], []
    for k in range(repeats):
        t0 = time.perf_counter()
        v.deadline.setValue(2.0 + (k % 10))
        v.repaint()
        total.append((time.perf_counter() - t0) * 1000)
        update.append(v.last_update_ms)
        app.processEvents()
    return {"options_planned": int(a.planned.sum()), "configurations": len(a.sweep),
            "update_median_ms": statistics.median(update), "with_repaint_median_ms": statistics.median(total),
            "with_repaint_max_ms": max(total)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    s = startup(args.runs)
    i = import_time(args.runs)
    p = planner()
    print(f"start-up ({args.runs} fresh processes): window shown median {s['shown_median_s']:.2f} s "
          f"(max {s['shown_max_s']:.2f}), demo plan drawn median {s['plan_drawn_median_s']:.2f} s; "
          f"heavy modules imported: {s['heavy_modules_imported'] or 'none'}")
    print(f"import: bare python {i['python_bare_median_s']:.2f} s, import distill_studio.gui.main_window "
          f"{i['gui_import_median_s']:.2f} s (+{i['gui_import_minus_bare_s']:.2f} s)")
    print(f"planner ({p['options_planned']:,} options of {p['configurations']:,}): budget change "
          f"{p['update_median_ms']:.1f} ms, with repaint median {p['with_repaint_median_ms']:.1f} ms "
          f"(max {p['with_repaint_max_ms']:.1f})")
    ok = s["shown_median_s"] < 1.5 and not s["heavy_modules_imported"] and p["with_repaint_median_ms"] < 100
    print(f"targets: shown < 1.5 s, no heavy import, planner redraw < 100 ms -> {'PASS' if ok else 'FAIL'}")
    print(json.dumps({"bench": "gui_app", "date": time.strftime("%Y-%m-%d"), **s, **i, **p, "pass": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
