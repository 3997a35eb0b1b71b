"""The packaged app against the installed one: start-up to a shown, painted main window (offscreen), alternating the
two in one run, median of --repeats; and the bundle's size on disk. Needs a bundle (`make bundle`).

    .venv/bin/python benchmarks/bench_bundle.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))
from build import bundle_bytes  # noqa: E402
from smoke import bundle_dir  # noqa: E402


def startup_ms(cmd: list[str], env: dict) -> int:
    out = subprocess.run([*cmd, "--startup-time"], env=env, capture_output=True, text=True, timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith("startup_ms "):
            return int(line.split()[1])
    raise RuntimeError(f"{cmd[0]}: no start-up time printed\n{out.stdout}\n{out.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    folder = bundle_dir()
    frozen = [str(folder / "DistillStudio")]
    installed = [str(ROOT / ".venv" / "bin" / "distill-studio")]      # what `make demo` starts
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DISTILL_STUDIO_DATA_DIR=f"{tmp}/data",
                   DISTILL_STUDIO_CONFIG_DIR=f"{tmp}/config")
        startup_ms(frozen, env), startup_ms(installed, env)           # first runs warm the disk cache
        a, b = [], []
        for _ in range(args.repeats):
            a.append(startup_ms(frozen, env))
            b.append(startup_ms(installed, env))
    size = bundle_bytes(folder)
    print(f"bundle: {folder.name}, {size / 1e6:,.0f} MB on disk")
    print(f"start-up to a shown window, median of {args.repeats}: packaged {statistics.median(a)} ms "
          f"(min {min(a)}), installed (make demo) {statistics.median(b)} ms (min {min(b)}); "
          f"ratio {statistics.median(a) / statistics.median(b):.2f}")


if __name__ == "__main__":
    main()
