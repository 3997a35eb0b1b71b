"""The planner's estimate of the demo's training time against what the demo run takes, before and after it has
watched a run: `python benchmarks/bench_calibration.py [--runs 3] [--load] [--steps N]`.

In a fresh data folder: plan the demo (no watched run: the CPU is extrapolated), run it, plan it again (now
"measured here"), run it again; each estimate is compared with the run that follows it. Repeated --runs times
(each in its own data folder), medians reported. ``--load`` keeps one core busy (a second Python process spinning)
during the first run only: the plan after it must still hold for the unloaded run that follows, since a loaded run
is counted by its CPU seconds per token (estimate/watched.py). ``--steps`` trains fewer steps than the demo's 100
(a copy of the plan). Each run's CPU seconds, parallelism and the other programs' busy cores are printed: the machine
is shared and noisy, and a second run that others loaded is slower than planned for reasons the plan cannot know.
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


def plan_copy(folder: Path, steps: int | None) -> Path:
    """The demo plan, its paths absolute; ``steps``: its max_steps."""
    text = PLAN.read_text()
    if steps:
        text = text.replace("max_steps = 100", f"max_steps = {steps}")
    for rel in ("teacher", "student", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'"{rel}"', f'"{(PLAN.parent / rel).as_posix()}"')
    path = folder / "plan.toml"
    path.write_text(text)
    return path


def planned_training_seconds(plan: Path, env: dict) -> tuple[float, str]:
    doc = json.loads(distill(["plan", str(plan), "--json"], env).stdout)
    r = doc["recommendation"]
    return r["hours"]["training"] * 3600, r["calibration"]["source"]


def measured(plan: Path, run_dir: Path, env: dict, load: bool = False) -> dict:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load else None
    try:
        distill(["run", str(plan), "--run-dir", str(run_dir)], env)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    end = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()][-1]
    return end["measured"]


def describe(m: dict) -> str:
    others = m.get("busy_cores_others")
    return (f"{m['training_seconds']:.1f} s ({m.get('cpu_seconds', float('nan')):.1f} CPU s, parallelism "
            f"{m.get('parallelism') or float('nan'):.2f}, others {others if others is not None else float('nan'):.2f}"
            " cores)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--load", action="store_true", help="keep one core busy during the first run of each repeat")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps (default: the demo's 100)")
    args = ap.parse_args(argv)
    before, after, normalised = [], [], []
    for k in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "DISTILL_STUDIO_DATA_DIR": tmp, "HF_HUB_OFFLINE": "1"}
            plan = plan_copy(Path(tmp), args.steps)
            est0, src0 = planned_training_seconds(plan, env)
            run0 = measured(plan, Path(tmp) / "run0", env, load=args.load)
            est1, src1 = planned_training_seconds(plan, env)
            run1 = measured(plan, Path(tmp) / "run1", env)
            before.append(est0 / run0["training_seconds"])
            after.append(est1 / run1["training_seconds"])
            # the second run at the cores the plan assumed: what the plan predicts when others loaded that run
            from distill_studio.engine.estimate.watched import load_records, unloaded_parallelism

            os.environ["DISTILL_STUDIO_DATA_DIR"] = tmp
            cores = unloaded_parallelism([r for r in load_records() if r["run_dir"].endswith("run0")])
            if cores and run1.get("cpu_seconds"):
                normalised.append(est1 / (run1["cpu_seconds"] / cores))
            print(f"repeat {k + 1}: before ({src0}) planned {est0:.1f} s, ran {describe(run0)}"
                  f"{' under load' if args.load else ''} -> {before[-1]:.2f}x; after ({src1}) planned {est1:.1f} s,"
                  f" ran {describe(run1)} -> {after[-1]:.2f}x"
                  + (f", {normalised[-1]:.2f}x of its CPU seconds over {cores:.2f} cores" if normalised else ""),
                  flush=True)
    print(f"median planned/measured training time: before any run {statistics.median(before):.2f}x, "
          f"after one watched run{' (loaded)' if args.load else ''} {statistics.median(after):.2f}x"
          + (f" (of the next run's CPU seconds over the planned cores: {statistics.median(normalised):.2f}x)"
             if normalised else "") + f" ({args.runs} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
