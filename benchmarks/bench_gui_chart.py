"""Redraw cost of the run monitor's live chart (distill_studio.gui.monitor.chart.LiveChart) at 500,000 points.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui_chart.py [--repeats 30] [--points 500000]

A shown LiveChart of 900x500 holds 3 series of 500,000 points each (noisy decaying loss curves). One "redraw" is
what the chart's timer does plus the paint it causes: push the buffers to the curves (``LiveChart.redraw()``, which
includes pyqtgraph's clip-to-view and peak downsampling) and a forced, synchronous repaint of the plot's viewport
(auto-range, path building, rasterising). Reported per case as the median and the max of ``--repeats`` redraws:

* live, full view: 100 new points appended to every series before each redraw, view auto-ranged to all data;
* static, full view: the same without appends (the curves are re-pushed unchanged);
* live, zoomed: 100 points appended per redraw, the view fixed on 5% of the steps (clip-to-view at work).

Also the cost of ``append`` itself (per scalar point, and per 100-point array). Target: median redraw under 50 ms.
Prints a table and then one JSON line. Medians, not single times: the machine is shared and noisy.

"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from distill_studio.gui.monitor.chart import LiveChart  # noqa: E402

TARGET_MEDIAN_MS = 50.0
SERIES = ("train", "kd", "ce")


def loss_curve(rng: np.random.Generator, x: np.ndarray, total: int, scale: float) -> np.ndarray:
    return scale * (3.0 * np.exp(-x / (total / 5)) + 0.5) + 0.08 * rng.standard_normal(x.size)


def measure(app: QApplication, chart: LiveChart, repeats: int, append_points: int, total: int,
            rng: np.random.Generator, next_x: list[float]) -> dict:
    totals, pushes, paints = [], [], []
    viewport = chart.plot_widget.viewport()
    for _ in range(repeats):
        if append_points:
            x = np.arange(next_x[0], next_x[0] + append_points, dtype=float)
            next_x[0] += append_points
            for k, name in enumerate(SERIES):
                chart.append(name, x, loss_curve(rng, x, total, 1.0 - 0.2 * k))
        else:
            chart._dirty.update(SERIES)       # re-push unchanged data: the "set data" half of a redraw
        t0 = time.perf_counter()
        push_ms = chart.redraw()
        t1 = time.perf_counter()
        viewport.repaint()
        t2 = time.perf_counter()
        app.processEvents()                   # let queued scene updates settle outside the timed part
        totals.append((t2 - t0) * 1000)
        pushes.append(push_ms)
        paints.append((t2 - t1) * 1000)
    drawn = int(chart._series[SERIES[0]].item.getData()[0].size)
    return {
        "median_ms": round(statistics.median(totals), 2),
        "max_ms": round(max(totals), 2),
        "median_set_data_ms": round(statistics.median(pushes), 2),
        "median_paint_ms": round(statistics.median(paints), 2),
        "drawn_points": drawn,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--points", type=int, default=500_000)
    args = ap.parse_args()

    app = QApplication.instance() or QApplication(sys.argv)
    rng = np.random.default_rng(0)
    n = args.points

    # append cost, on a chart of its own
    probe = LiveChart("append probe")
    t0 = time.perf_counter()
    for i in range(100_000):
        probe.append("a", i, 1.0 / (i + 1))
    scalar_us = (time.perf_counter() - t0) / 100_000 * 1e6
    chunk = np.arange(100, dtype=float)
    t0 = time.perf_counter()
    for i in range(2_000):
        probe.append("b", chunk + 100 * i, chunk)
    array_us = (time.perf_counter() - t0) / 2_000 * 1e6
    assert probe.point_count("a") == 100_000 and probe.point_count("b") == 200_000
    probe.deleteLater()

    chart = LiveChart("Loss", y_label="loss")
    for name in SERIES:
        chart.add_series(name)
    x = np.arange(n, dtype=float)
    for k, name in enumerate(SERIES):
        chart.append(name, x, loss_curve(rng, x, n, 1.0 - 0.2 * k))
    chart.resize(900, 500)
    chart.show()
    for _ in range(5):
        app.processEvents()
    chart.redraw()
    chart.plot_widget.viewport().repaint()
    app.processEvents()
    next_x = [float(n)]

    results = {}
    measure(app, chart, 3, 100, n, rng, next_x)  # warm-up
    results["live_full"] = measure(app, chart, args.repeats, 100, n, rng, next_x)
    results["static_full"] = measure(app, chart, args.repeats, 0, n, rng, next_x)
    lo = 0.45 * n
    chart.plot_item.setXRange(lo, lo + 0.05 * n, padding=0)   # turns x auto-range off: clip-to-view applies
    chart.plot_item.enableAutoRange(axis="y")
    app.processEvents()
    measure(app, chart, 3, 100, n, rng, next_x)
    results["live_zoomed"] = measure(app, chart, args.repeats, 100, n, rng, next_x)
    held = chart.point_count(SERIES[0])

    print(f"LiveChart 900x500, {len(SERIES)} series x {n:,} points (ending at {held:,}), {args.repeats} redraws per case")
    print(f"append: {scalar_us:.2f} us per scalar point, {array_us:.1f} us per 100-point array")
    print()
    print("| case | median ms | max ms | median set-data ms | median paint ms | points drawn (1 series) |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, r in results.items():
        print(f"| {case} | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['median_set_data_ms']:.1f} | "
              f"{r['median_paint_ms']:.1f} | {r['drawn_points']:,} |")
    worst_median = max(r["median_ms"] for r in results.values())
    ok = worst_median < TARGET_MEDIAN_MS
    print()
    print(f"target: median redraw < {TARGET_MEDIAN_MS:.0f} ms in every case -> {'PASS' if ok else 'FAIL'} "
          f"(worst median {worst_median:.1f} ms)")
    print(json.dumps({
        "bench": "gui_chart", "series": len(SERIES), "points_per_series": n, "repeats": args.repeats,
        "size": [900, 500], "append_us_per_scalar": round(scalar_us, 2), "append_us_per_100_array": round(array_us, 1),
        **results, "target_median_ms": TARGET_MEDIAN_MS, "pass": ok,
    }))
    chart.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
