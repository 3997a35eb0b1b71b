"""Split-hardware options in the planner: how many the bundled plans' sweeps gain, how many reach the Pareto front,
what they cost in `analyse` time, and whether the recommendation changes. Each plan is analysed as written and with
`hardware.split = "no"`, alternating in one process; medians of --repeats.

    .venv/bin/python benchmarks/bench_split.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from distill_studio.engine.plan import load_plan
from distill_studio.engine.planner import analyse

PLANS = sorted((Path(__file__).resolve().parents[1] / "resources" / "plans").glob("*.toml"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print("| plan | configurations | split rows added | split options on the front | analyse, no split → split | "
          "recommendation (split / no split) |")
    print("|---|---:|---:|---:|---|---|")
    for path in PLANS:
        plan = load_plan(path)
        no = plan.model_copy(update={"hardware": plan.hardware.model_copy(update={"split": "no"})})
        t_split, t_no = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            a = analyse(plan)
            t_split.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = analyse(no)
            t_no.append(time.perf_counter() - t)
        sw = a.sweep
        added = int((sw.grid.extra["pass_row"] >= 0).sum())
        front = sum(1 for i in a.decision.pareto if sw.pass_row(int(i)) is not None)

        def rec(x) -> str:
            i = x.decision.recommended
            if i is None:
                return "none"
            r = x.sweep.row(i)
            return f"{x.sweep.hardware(i)}, {r['hours']['total']:.1f} h, ${r['cost_usd']:,.0f}"

        print(f"| {path.stem} | {len(b.sweep):,} | {added:,} | {front} / {len(a.decision.pareto)} | "
              f"{statistics.median(t_no) * 1000:.0f} → {statistics.median(t_split) * 1000:.0f} ms | "
              f"{rec(a)} / {rec(b)} |")


if __name__ == "__main__":
    main()
