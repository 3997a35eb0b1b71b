"""Speed of the estimator's sweep and of `distill plan` from a cold interpreter.

    python benchmarks/bench_sweep.py

Reports medians: the sweep (grid build + evaluation + Pareto front + budget solver) over every Azure size x
1-16 nodes x adapter x teacher mode x recomputation x teacher precision x sharding x priority for each demo plan,
and `distill plan` on a demo plan as a fresh process (interpreter start included).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from distill_studio.engine.plan import load_plan
from distill_studio.engine.planner import analyse

ROOT = Path(__file__).resolve().parents[1]
PLANS = sorted((ROOT / "resources" / "plans").glob("*.toml"))


def time_sweeps(repeats: int = 21) -> list[tuple[str, int, float, float]]:
    rows = []
    for path in PLANS:
        plan = load_plan(path)
        analyse(plan)  # warm caches (catalog files, prices)
        times = []
        n = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            a = analyse(plan)
            times.append(time.perf_counter() - t0)
            n = len(a.sweep)
        rows.append((path.stem, n, statistics.median(times) * 1000, min(times) * 1000))
    return rows


def time_cli(repeats: int = 7) -> tuple[float, float]:
    exe = Path(sys.executable).with_name("distill")
    plan = ROOT / "resources" / "plans" / "qwq32b-to-qwen7b-3h.toml"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "plan", str(plan)], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main() -> int:
    print("| plan | configurations | median ms | min ms | configurations per ms |")
    print("|---|---:|---:|---:|---:|")
    for name, n, med, best in time_sweeps():
        print(f"| {name} | {n:,} | {med:.1f} | {best:.1f} | {n / med:,.0f} |")
    med, best = time_cli()
    print(f"\n`distill plan qwq32b-to-qwen7b-3h.toml` as a fresh process: median {med:.2f} s, min {best:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
