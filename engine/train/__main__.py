"""One process of a run: ``python -m distill_studio.engine.train PLAN --run-dir DIR`` (or ``--resume DIR``).

``distill run`` calls this in-process for one process, and through ``accelerate launch`` for several.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill_studio.engine.train")
    parser.add_argument("plan", nargs="?", type=Path)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR")
    parser.add_argument("--expect-world-size", type=int)
    args = parser.parse_args(argv)
    from .run import execute

    if args.resume is not None:
        return execute(None, args.resume, resume=True, expect_world_size=args.expect_world_size)
    if args.plan is None or args.run_dir is None:
        parser.error("give PLAN and --run-dir, or --resume RUN_DIR")
    return execute(args.plan, args.run_dir, resume=False, expect_world_size=args.expect_world_size)


def leave(code: int) -> None:
    """End a rank of a multi-process run without the interpreter's teardown. Every file the run writes is closed
    and synced by then and the process group is down; what is left is the garbage collection of torch's
    process-group objects still referenced by sharded modules, which has been seen to abort a gloo rank ("terminate
    called without an active exception") after a run that succeeded, about once in 30 runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        leave(code)
    sys.exit(code)
