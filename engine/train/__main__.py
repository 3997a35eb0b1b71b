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
    parser.add_argument("--input", action="append", default=[], metavar="FIELD=PATH",
                        help="set a plan path to where it is on this machine (a cluster job's mounted input)")
    parser.add_argument("--resume-if-started", metavar="RUN_KEY",
                        help="with PLAN and --run-dir: the run's key; continue the run if the folder already holds "
                             "the run of that key (a cluster job submitted again after preemption), start it if the "
                             "folder is empty, refuse a folder holding another run")
    parser.add_argument("--stage", choices=["teacher", "student"],
                        help="teacher: only the teacher's pass (offline top-k or generation), its output kept in the "
                             "run folder; student: training on the output of a finished teacher stage (--teacher-run)")
    parser.add_argument("--teacher-run", type=Path, metavar="RUN_DIR",
                        help="with --stage student: the teacher stage's run folder")
    parser.add_argument("--checkpoint-local", metavar="DIR",
                        help="the run folder is a mount (an Azure ML job's output): write each checkpoint to DIR on "
                             "this node's own disk first, then copy it into the run folder, its manifest last; "
                             "'auto': under $DISTILL_LOCAL_DISK, else Azure ML's job folder on the node's disk "
                             "($AZUREML_CR_EXECUTION_WORKING_DIR_PATH), else the system's temporary folder")
    parser.add_argument("--stop-at", choices=["deadline", "cap", "either"],
                        help="a new run: stop by itself at the plan's deadline, cost cap or either (budget.stop_at)")
    args = parser.parse_args(argv)
    from .run import execute, started_here

    local = None
    if args.checkpoint_local:
        local = Path(args.checkpoint_local)
        if args.checkpoint_local == "auto":
            import tempfile

            local = Path(os.environ.get("DISTILL_LOCAL_DISK") or os.environ.get("AZUREML_CR_EXECUTION_WORKING_DIR_PATH")
                         or tempfile.gettempdir()) / "distill-checkpoints"

    if args.teacher_run is not None and args.stage != "student":
        parser.error("--teacher-run goes with --stage student")
    common = dict(stage=args.stage, teacher_run=args.teacher_run, checkpoint_local=local)

    inputs = {}
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep or not value:
            parser.error(f"--input {item!r}: expected FIELD=PATH")
        inputs[key] = value
    if args.resume is not None:
        return execute(None, args.resume, resume=True, expect_world_size=args.expect_world_size, inputs=inputs,
                       **common)
    if args.plan is None or args.run_dir is None:
        parser.error("give PLAN and --run-dir, or --resume RUN_DIR")
    if args.resume_if_started:
        from ..errors import DistillError

        try:
            started = started_here(args.run_dir, args.resume_if_started)
        except DistillError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if started:
            return execute(None, args.run_dir, resume=True, expect_world_size=args.expect_world_size,
                           inputs=inputs, **common)
    return execute(args.plan, args.run_dir, resume=False, expect_world_size=args.expect_world_size, inputs=inputs,
                   run_key=args.resume_if_started, stop_at=args.stop_at, **common)


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
