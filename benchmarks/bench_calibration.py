"""The planner's estimate of the demo's training time against what the demo run takes, before and after it has
watched a run: `python benchmarks/bench_calibration.py [--runs 3]`.

In a fresh data folder: plan the demo (no watched run: the CPU is extrapolated), run it, plan it again (now
"measured here"), run it again; each estimate is compared with the run that follows it. Repeated --runs times
(each in its own data folder), medians reported. The machine is shared and noisy: the ratios matter, not the seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "resources" / "demo" / "plan.toml"


def distill(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", *args], env=env, capture_output=True,
                          text=True, check=True)


def planned_training_seconds(env: dict) -> tuple[float, str]:
    doc = json.loads(distill(["plan", str(PLAN), "--json"], env).stdout)
    r = doc["recommendation"]
    return r["hours"]["training"] * 3600, r["calibration"]["source"]


def measured_training_seconds(run_dir: Path, env: dict) -> float:
    distill(["run", str(PLAN), "--run-dir", str(run_dir)], env)
    end = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()][-1]
    return end["measured"]["training_seconds"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    before, after = [], []
    for k in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "DISTILL_STUDIO_DATA_DIR": tmp, "HF_HUB_OFFLINE": "1"}
            est0, src0 = planned_training_seconds(env)
            run0 = measured_training_seconds(Path(tmp) / "run0", env)
            est1, src1 = planned_training_seconds(env)
            run1 = measured_training_seconds(Path(tmp) / "run1", env)
            before.append(est0 / run0)
            after.append(est1 / run1)
            print(f"repeat {k + 1}: before ({src0}) planned {est0:.1f} s, ran {run0:.1f} s -> {est0 / run0:.2f}x;"
                  f" after ({src1}) planned {est1:.1f} s, ran {run1:.1f} s -> {est1 / run1:.2f}x", flush=True)
    print(f"median planned/measured training time: before any run {statistics.median(before):.2f}x, "
          f"after one watched run {statistics.median(after):.2f}x ({args.runs} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
