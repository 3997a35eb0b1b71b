"""The engine's CPU allocator setting, on and off, on the KD step at Gemma 3's 262,144-token vocabulary.

    .venv/bin/python benchmarks/bench_cpu_allocator.py              # 3 interleaved pairs, 2 + 6 steps each
    .venv/bin/python benchmarks/bench_cpu_allocator.py --repeats 1  # one pair

The fixture, the child process and the measurements are ``bench_kd_trainer.py``'s (``--case gemma``: batch 2 x 256
tokens, a 262,144-token vocabulary on a small Qwen2 body, online JSD, full fine-tuning, one thread). "tuned" is the
engine as it runs (``train.run.tune_cpu_allocator``: glibc's mmap threshold at 32 MiB and no heap trimming below
1 GiB); "glibc defaults" sets ``DISTILL_CPU_ALLOCATOR=default``, which makes the engine leave glibc as it is. Runs
alternate (tuned, default, tuned, ...); medians. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_kd_trainer as B  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    s = B.Settings(**{**B.CASES["gemma"], "steps": args.steps, "warmup": args.warmup})
    root = Path(tempfile.mkdtemp(prefix="bench-cpu-allocator-"))
    variants = {"tuned": {}, "glibc defaults": {"DISTILL_CPU_ALLOCATOR": "default"}}
    results: dict[str, list[dict]] = {k: [] for k in variants}
    try:
        B.build_fixture(root, s)
        for rep in range(args.repeats):
            for name, env in variants.items():
                run_dir = root / "runs" / f"{rep}-{name.split()[0]}"
                cmd = [sys.executable, str(HERE / "bench_kd_trainer.py"), "--child", "ours", "--root", str(root),
                       "--run-dir", str(run_dir), "--settings", json.dumps(asdict(s))]
                proc = subprocess.run(cmd, env={**os.environ, **env, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                                      text=True)
                lines = [x for x in proc.stdout.splitlines() if x.startswith(B.RESULT)]
                if proc.returncode or not lines:
                    raise SystemExit(f"{name} run {rep} failed:\n{proc.stderr[-3000:]}")
                r = json.loads(lines[-1][len(B.RESULT):])
                results[name].append(r)
                print(f"run {rep + 1} {name}: {r['tokens_per_second']:.1f} tok/s, training peak "
                      f"{r['train_peak_mib']:,.0f} MiB", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    print("| median over runs | tuned (the engine) | glibc defaults | tuned / defaults |")
    print("|---|---:|---:|---:|")
    for label, key in (("tokens/s", "tokens_per_second"), ("peak RSS during training (MiB)", "train_peak_mib")):
        a, b = med("tuned", key), med("glibc defaults", key)
        print(f"| {label} | {a:,.1f} | {b:,.1f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
