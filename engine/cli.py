"""`distill …`: the headless commands. Errors a user can act on print as one message, never a traceback."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .errors import DistillError
from .runs.folders import default_run_dir


def _num(v: float) -> str:
    """1048576 -> "1,048,576" (argparse's messages already name the option, so these only show values)."""
    return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e16 else f"{v:g}"


def _positive(name: str, lo: float, hi: float, kind=int):
    """An argparse type for a number in [lo, hi]; argparse prefixes its message with "argument NAME: "."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; allowed {_num(lo)} to {_num(hi)}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not (lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed {_num(lo)} to {_num(hi)}")
        return value
    parse.__name__ = name  # what argparse calls the type in its own messages
    return parse


def _finite(v):
    """JSON has no NaN or Infinity: non-finite floats (e.g. the hours of an option that cannot run) become null."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _dump_json(doc) -> None:
    # Indented for a person at a terminal; compact into a pipe, where it is also several times faster to write
    # (json only uses its C encoder without indentation; `plan --json` holds thousands of options).
    indent = 1 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(_finite(doc), indent=indent, default=_json_default, allow_nan=False))
    sys.stdout.write("\n")


def _field(flag: str, resolve, *args):
    """Run a catalog look-up; a failure names the option it came from."""
    try:
        return resolve(*args)
    except DistillError as exc:
        raise DistillError(f"{flag}: {exc}") from None


def cmd_plan(args) -> int:
    from .plan import load_plan
    from .planner import analyse
    from .report import render_text, summary_dict

    t0 = time.perf_counter()
    plan = load_plan(args.plan)
    if args.confidence is not None:
        plan = plan.model_copy(update={"budget": plan.budget.model_copy(update={"confidence": args.confidence})})
    analysis = analyse(plan, base=Path(args.plan).resolve().parent)
    if args.json:
        doc = summary_dict(analysis, args.top)
        doc["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        _dump_json(doc)
    else:
        print(render_text(analysis, args.top))
    return 0


def _json_default(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def cmd_estimate(args) -> int:
    from .catalog.hardware import load_skus, resolve_accelerator
    from .catalog.models import model_from_hf_config, resolve_model
    from .checks import vocabulary_check
    import numpy as np

    from .estimate.core import ADAPTERS, RECOMPUTE, TEACHER_MODES, Job, coefficients, evaluate
    from .estimate.ranges import add_ranges, at_confidence
    from .estimate.shape import lora_params, shape_of
    from .estimate.solve import hours_text
    from .estimate.placement import SHARDINGS
    from .estimate.sweep import Machine, Sweep, build_grid

    if bool(args.model) == bool(args.model_config):
        raise DistillError("give exactly one of --model ID and --model-config PATH")
    student = (_field("--model", resolve_model, args.model) if args.model
               else _field("--model-config", model_from_hf_config, args.model_config))
    teacher = _field("--teacher", resolve_model, args.teacher) if args.teacher else None
    acc = _field("--accelerator", resolve_accelerator, args.accelerator)
    if args.global_batch_tokens < args.seq_len:
        raise DistillError(f"--global-batch-tokens: {args.global_batch_tokens} is smaller than one sequence "
                           f"(--seq-len {args.seq_len}); allowed: at least the sequence length")
    if args.seq_len > student.max_context_tokens:
        raise DistillError(f"--seq-len: {args.seq_len:,} is longer than {student.name}'s context; "
                           f"allowed: at most {student.max_context_tokens:,}")
    if args.precision == "fp8" and not acc.fp8_dense_tflops:
        raise DistillError(f"--precision: {acc.name} has no fp8 units; allowed here: bf16")
    mode = args.teacher_mode if teacher else "none"
    if teacher is not None:
        if mode != "generate" and teacher.tokenizer_family != student.tokenizer_family:
            # vocabulary_check words this for a plan file (method.kind); here the choice is --teacher-mode.
            raise DistillError(
                f"--teacher-mode: {mode} is logit KD, which needs teacher and student to share a vocabulary, and "
                f"they do not: {teacher.name} uses the '{teacher.tokenizer_family}' tokenizer, {student.name} the "
                f"'{student.tokenizer_family}' tokenizer. Use --teacher-mode generate (sequence-level KD, seq-kd: "
                f"the student learns from text the teacher writes), which works across tokenizers.")
        vocabulary_check(teacher, student, "seq-kd" if mode == "generate" else "logit-kd")
    per_node = args.gpus_per_node or min(args.gpus, 8)
    if args.gpus % per_node:
        if args.gpus_per_node:
            raise DistillError(f"--gpus: {args.gpus} is not a multiple of --gpus-per-node {per_node}")
        raise DistillError(f"--gpus: {args.gpus} is not a multiple of {per_node}, the default GPUs per node; "
                           "allowed: 1 to 8, or a multiple of 8 (or set --gpus-per-node)")
    nodes = args.gpus // per_node
    intra, inter = _links(acc.id, load_skus())
    machine = Machine(
        id="custom", accelerator=acc.id, gpus=per_node, peak_tflops=acc.bf16_dense_tflops, hbm_gb=acc.hbm_gb,
        hbm_gb_per_s=acc.hbm_gb_per_s, intra_gb_per_s=intra, inter_gb_per_s=inter if nodes > 1 else 0.0,
        usd_per_hour={}, max_nodes=nodes, priorities=("dedicated",), provision="local",
    )
    job = Job(
        student=shape_of(student), teacher=shape_of(teacher) if teacher else None,
        method="ce" if teacher is None else ("seq-kd" if mode == "generate" else "logit-kd"),
        seq_len=args.seq_len, tokens_per_epoch=float(args.tokens), epochs=1.0,
        global_batch_tokens=args.global_batch_tokens, lora_params=lora_params(student, args.lora_rank),
        sharding_auto=args.sharding is None,  # a named sharding shards the teacher too, as in a plan
        top_k=64, chunked_logits=not args.unchunked_logits,
    )
    grid, labels = build_grid([machine], has_teacher=teacher is not None, teacher_modes=(mode,), nodes=nodes)
    if args.precision == "fp8":
        c = coefficients()["speed"]
        grid.linear_speedup = np.full(len(grid), acc.fp8_dense_tflops / acc.bf16_dense_tflops * c["fp8_efficiency_ratio"])
    sw = Sweep(job=job, grid=grid, out=evaluate(job, grid), labels=labels)
    pick = (grid.adapter == ADAPTERS.index(args.adapter)) & (grid.recompute == RECOMPUTE.index(args.recompute))
    pick &= grid.teacher_mode == TEACHER_MODES.index(mode)
    pick &= grid.extra["teacher_precision"] == labels["teacher_precision"].index(
        args.teacher_precision if teacher else "bf16")
    sharding = args.sharding or ("all-gpus" if nodes > 1 else "within-node" if args.gpus > 1 else "none")
    pick &= grid.sharding == SHARDINGS.index(sharding)
    if not pick.any():
        raise DistillError(f"--sharding: {sharding} is not possible on {args.gpus} GPU(s) in {nodes} node(s); "
                        "allowed: none on one GPU, within-node or all-gpus (several nodes) on more")
    i = int(np.flatnonzero(pick)[0])
    add_ranges(sw)          # the same P10-P90 and figure at a confidence as `distill plan --json` gives an option
    row = sw.row(i)
    row.pop("sku"), row.pop("priority"), row.pop("cost_usd")
    hq = float(at_confidence(sw, args.confidence)[0][i])
    row["range"] = {"hours": row["range"]["hours"], "cost_usd": [None, None], "confidence": args.confidence,
                    "at_confidence": {"hours": hq, "cost_usd": None}}      # no price: no cost
    row.update({"model": student.id, "teacher": teacher.id if teacher else None, "precision": args.precision,
                "seq_len": args.seq_len, "global_batch_tokens": args.global_batch_tokens,
                "chunked_logits": not args.unchunked_logits})
    if args.json:
        _dump_json(row)
    else:
        mem = row["memory_gib_per_gpu"]
        print(f"{student.name} on {args.gpus} × {acc.name}" + (f", teacher {teacher.name} ({mode})" if teacher else ""))
        print(f"  {row['tokens_per_second_per_gpu']:,.0f} tokens/s per GPU, MFU {row['mfu'] * 100:.1f}%, "
              f"micro-batch {row['micro_batch_seqs']} × {args.seq_len}, accumulation {row['grad_accum_steps']}, "
              f"recompute {row['recompute']}")
        print("  memory per GPU (GiB): " + ", ".join(f"{k} {v:.1f}" for k, v in mem.items()))
        h = row["hours"]
        phases = (f"teacher pass {h['teacher_pass']:.1f} h, " if h["teacher_pass"] else "") + \
            f"training {h['training']:.1f} h"
        print(f"  {args.tokens:,.0f} tokens (--tokens): {h['total']:.1f} h in all ({phases})")
        lo, hi = row["range"]["hours"]
        print(f"  P10-P90 {hours_text(lo)} to {hours_text(hi)}; P{round(args.confidence * 100)} {hours_text(hq)}")
        print("  fits" if row["fits"] else f"  does NOT fit in {acc.hbm_gb:g} GB")
    return 0


def _links(accelerator: str, skus: dict) -> tuple[float, float]:
    """Intra- and inter-node bandwidth of the best Azure node with this accelerator (defaults: PCIe, 100 GB/s)."""
    best = [s for s in skus.values() if s.accelerator == accelerator and s.gpus > 1]
    if not best:
        return 32.0, 100.0
    s = max(best, key=lambda s: (s.intra_node_gb_per_s, s.inter_node_gb_per_s))
    return s.intra_node_gb_per_s, s.inter_node_gb_per_s or 100.0


def cmd_catalog(args) -> int:
    from dataclasses import asdict

    from .catalog.hardware import load_accelerators, load_skus
    from .catalog.models import load_models

    if args.what == "models":
        items = list(load_models().values())
        rows = [{**asdict(m), "params": m.params} for m in items]
        cols = [("id", 16), ("name", 26), ("params", 8), ("layers", 6), ("hidden", 6), ("vocab", 8),
                ("tokenizer", 10), ("context", 8), ("license", 12)]
        fmt = lambda r: [r["id"], r["name"], f"{r['params'] / 1e9:.2f}B", r["num_layers"], r["hidden_size"],  # noqa: E731
                         r["vocab_size"], r["tokenizer_family"], r["max_context_tokens"], r["license"]]
    elif args.what == "accelerators":
        rows = [asdict(a) for a in load_accelerators().values()]
        cols = [("id", 14), ("name", 28), ("bf16 TF", 8), ("fp8 TF", 8), ("HBM GB", 7), ("GB/s", 6), ("cloud", 18)]
        fmt = lambda r: [r["id"], r["name"], r["bf16_dense_tflops"], r["fp8_dense_tflops"] or "-", r["hbm_gb"],  # noqa: E731
                         r["hbm_gb_per_s"], r["cloud"] + (" (comparison)" if r["comparison_only"] else "")]
    else:
        rows = [asdict(s) for s in load_skus().values()]
        cols = [("id", 28), ("gpus", 4), ("accelerator", 14), ("GB/GPU", 6), ("link", 15), ("infiniband", 10)]
        fmt = lambda r: [r["id"], r["gpus"], r["accelerator"], r["gpu_memory_gb"], r["intra_node_link"],  # noqa: E731
                         "yes" if r["infiniband"] else "no"]
    if args.json:
        _dump_json(rows)
        return 0
    cells = [[str(v) for v in fmt(r)] for r in rows]
    widths = [max([w, len(c)] + [len(line[k]) for line in cells]) for k, (c, w) in enumerate(cols)]
    print("  ".join(f"{c:<{w}}" for (c, _), w in zip(cols, widths)).rstrip())
    for line in cells:
        print("  ".join(f"{v:<{w}}" for v, w in zip(line, widths)).rstrip())
    return 0


def cmd_prices(args) -> int:
    from .catalog.prices import load_prices, refresh_prices

    table = refresh_prices(args.region) if args.action == "refresh" else load_prices(args.region)
    if table.prices:
        print(f"{len(table.prices)} prices for {table.region} ({table.origin}, from {table.fetched_on})")
    else:
        print(f"no prices known for {table.region}")
    for p in sorted(table.prices, key=lambda p: (p.sku, p.priority)):
        print(f"  {p.sku:<30} {p.priority:<13} ${p.usd_per_hour:>9,.2f}/h")
    if table.note:
        print(table.note)
    return 0


def cmd_calibration(args) -> int:
    """The runs this machine watched, as the planner uses them; or forget them."""
    from .estimate.watched import clear_records, load_records, store_path

    if args.action == "clear":
        n = clear_records()
        print(f"forgot {n} watched run{'s' if n != 1 else ''} ({store_path()})")
        return 0
    records = load_records()
    if args.json:
        _dump_json(records)
        return 0
    if not records:
        print(f"no watched runs yet ({store_path()}); every run `distill run` or the app finishes is recorded")
        return 0
    print(f"{len(records)} watched run{'s' if len(records) != 1 else ''} ({store_path()})")
    for r in records:
        m, e = r["measured"], r["estimated"]
        est = e.get("tokens_per_second_per_gpu") or 0
        ratio = f"{m['tokens_per_second_per_device'] / est:.2f}× the fit" if est else "no estimate"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.get("time", 0)))
        opt = r["option"]
        print(f"  {when}  {r['status']:<9}  {opt[1]}×{opt[0]} {opt[2]} GPU(s) {opt[3]} {opt[4]}  "
              f"{m['tokens_per_second_per_device']:,.0f} tok/s/device ({ratio}), {m['steps']} steps in "
              f"{m['training_seconds']:.1f} s, set-up {m['setup_seconds']:.1f} s  [{r['key'][0]}]")
    return 0


def cmd_run(args) -> int:
    """Train: in this process, or through `accelerate launch` for several processes."""
    import os

    if args.resume is not None:
        if args.plan is not None:
            raise DistillError("give a PLAN or --resume RUN_DIR, not both")
        if args.stage or args.teacher_run:
            raise DistillError("--resume continues a run as the stage it was started as; leave out --stage and "
                               "--teacher-run")
        run_dir, target = args.resume, ["--resume", str(args.resume)]
    else:
        if args.plan is None:
            raise DistillError("give a PLAN file to run, or --resume RUN_DIR")
        from .plan import load_plan

        plan = load_plan(args.plan)  # fails here, before any process starts, on a bad plan
        from .planner import check_launch_risks, check_world, resolve_run

        # a plan that fits nothing fails here; one the planner does not stand behind starts only with --force
        resolved = resolve_run(plan, Path(args.plan).resolve().parent, stage=args.stage or "all")
        check_launch_risks(resolved, args.force, "distill run")
        if args.processes > 1:  # and on a plan for another number of processes
            from .train.parallel import check_devices

            check_devices(resolved)   # before N processes start, each to find the same
            check_world(resolved, args.processes, None)
        if args.teacher_run is not None and args.stage != "student":
            raise DistillError("--teacher-run goes with --stage student")
        if args.stage == "student" and args.teacher_run is None:
            raise DistillError("--stage student: give --teacher-run RUN_DIR, the folder of a finished teacher stage")
        if args.stop_at:
            from .plan import with_stop_at

            with_stop_at(plan, args.stop_at)     # a stop at a limit the plan does not have: a clear error here
        run_dir = args.run_dir or default_run_dir(plan.name + (f"-{args.stage}" if args.stage else ""))
        target = [str(args.plan), "--run-dir", str(run_dir)]
        if args.stop_at:
            target += ["--stop-at", args.stop_at]
        if args.stage:
            target += ["--stage", args.stage]
        if args.teacher_run is not None:
            target += ["--teacher-run", str(args.teacher_run)]
    print(f"run folder: {run_dir}", file=sys.stderr, flush=True)
    if args.processes == 1:
        from .train.__main__ import main as train_main

        return train_main(target)
    env = dict(os.environ)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(args.processes),
              "--num_machines", "1", "--dynamo_backend", "no"]
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        raise DistillError("training needs the train extra: pip install 'distill-studio[train]'") from None
    if cuda:
        launch += ["--multi_gpu", "--mixed_precision", "bf16"]
    else:
        # `--cpu` would start ONE process; --multi_gpu with ACCELERATE_USE_CPU=1 starts N ranks talking over gloo
        launch += ["--multi_gpu", "--mixed_precision", "no"]
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = launch + ["-m", "distill_studio.engine.train", *target, "--expect-world-size", str(args.processes)]
    failure: list[str] = []
    code = _launch_quietly(cmd, env, failure)
    if code not in (0, 2, 130):
        if _record_failure(Path(run_dir), code, failure[0] if failure else None):   # rank 0 did not say it
            print(f"the last checkpoint is kept; resume with `distill run --resume {run_dir} --processes "
                  f"{args.processes}`", file=sys.stderr)
    return code


def _launch_quietly(cmd: list[str], env: dict, failure: list[str] | None = None) -> int:
    """Run the launcher, passing its ranks' output through but not the launcher's own reports (its log lines and
    tracebacks when a rank fails or is stopped). From its report of a failed run, one message says which rank ended
    first, how (its signal or exit code), and that the others stopped because of it; it is printed, and appended to
    ``failure``. A SIGTERM (the app's Stop) is passed on, so the ranks checkpoint and stop (exit 130)."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1, errors="replace")
    stopped = []

    def stop(signum, frame) -> None:
        # To the ranks themselves: the launcher would pass it on too, but kill them 30 s later, in the middle of
        # the checkpoint of a large model. The launcher ends when they have.
        stopped.append(signum)
        ranks = _ranks_of(proc.pid)
        for pid in ranks or [proc.pid]:
            try:
                os.kill(pid, signum)
            except OSError:
                pass

    previous = signal.signal(signal.SIGTERM, stop)
    hidden, block, rules, report = 0, None, 0, []
    try:
        for line in proc.stderr:
            text = line.rstrip("\n")
            if block is None and text.startswith("Traceback (most recent call last)"):
                block = "traceback"
            if block == "traceback" and text and not text[0].isspace() and not text.startswith(("Traceback", "During")):
                block = "report" if "ChildFailedError" in text else "end"
            elif block == "report" and text.startswith("====="):
                rules += 1
                if rules == 2:
                    block = "end"
            if block is not None or "torch/distributed/elastic" in text:
                hidden += 1
                if block in ("report", "end") and rules:
                    report.append(text)
                if block == "end":
                    block, rules = None, 0
                continue
            sys.stderr.write(line)
            sys.stderr.flush()
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopped:
        return 130  # the ranks checkpointed and said so; the launcher's own code says only that it was signalled
    if code:
        message = describe_rank_failure(report) if report else None
        if message is None and hidden:
            message = (f"a training process failed (the launcher exited with {code}); see the messages above and "
                       "the run folder's logs/run.log")
        if message:
            print(f"error: {message}", file=sys.stderr)
            if failure is not None:
                failure.append(message)
    return code


def describe_rank_failure(report: list[str]) -> str | None:
    """One sentence from the launcher's report of a failed run (torch elastic's ChildFailedError: a "Root Cause"
    entry and the "Failures" that followed, each with its rank and exit code): which rank ended first and how, and
    that the others stopped because of it. None when the report names no rank."""
    import re
    import signal

    entries, section = [], None
    for text in report:
        if text.startswith("Root Cause"):
            section = "root"
        elif text.startswith("Failures"):
            section = "other"
        m = re.match(r"\s*rank\s*:\s*(\d+)", text)
        if m:
            entries.append({"rank": int(m.group(1)), "root": section == "root", "code": None, "pid": None})
        m = re.match(r"\s*exitcode\s*:\s*(-?\d+)(?:\s*\(pid:\s*(\d+)\))?", text)
        if m and entries:
            entries[-1]["code"], entries[-1]["pid"] = int(m.group(1)), m.group(2)
    first = next((e for e in entries if e["root"] and e["code"] is not None), None)
    if first is None:
        return None
    r, code = first["rank"], first["code"]
    pid = f" (pid {first['pid']})" if first["pid"] else ""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name} (signal {-code}, exit {code})"
        if -code == signal.SIGKILL:
            how += ("; nothing in the run sends that: something outside ended it (the kernel's out-of-memory killer, "
                    "see `dmesg`; a `kill -9`; the machine's scheduler)")
        elif -code in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL):
            how += "; a crash in native code (a library, the driver)"
    else:
        log = "logs/run.log" if r == 0 else f"logs/run.rank-{r}.log"
        how = f"failed with exit code {code} (its error is above, its traceback in the run folder's {log})"
    others = sorted({e["rank"] for e in entries if not e["root"] and e["rank"] != r})
    if len(others) == 1:
        after = f"The other rank ({others[0]}) stopped because of it."
    elif others:
        after = f"The other ranks ({', '.join(str(o) for o in others)}) stopped because of it."
    else:
        after = "The run's other processes stopped because of it."
    return f"rank {r}{pid} {how}. {after}"


def _ranks_of(launcher: int) -> list[int]:
    """The training processes a launcher started (its descendants running the engine)."""
    try:
        import psutil

        children = psutil.Process(launcher).children(recursive=True)
        return [c.pid for c in children if "distill_studio.engine.train" in " ".join(c.cmdline())]
    except Exception:  # noqa: BLE001 — psutil missing, or the processes are gone: signal the launcher instead
        return []


def _record_failure(run_dir: Path, code: int, message: str | None = None) -> bool:
    """A rank that failed alone ends the run without rank 0 writing its end (the launcher stops rank 0 in a
    collective, or rank 0 was the one killed): say in the run's events that it failed, and how, so the run does not
    look alive or unfinished. True when it wrote that end (rank 0 had not)."""
    events = run_dir / "events.jsonl"
    if not events.is_file():
        return False
    from .runs.events import EventWriter, read_events

    found = read_events(events)
    if found and found[-1]["type"] == "run_finished":
        return False
    step = max((e.get("step", 0) for e in found if e["type"] == "metric"), default=0)
    writer = EventWriter(events)
    writer.emit("run_finished", status="failed", step=step,
                message=f"{message} The last checkpoint is kept." if message else
                f"a training process failed (launcher exit code {code}); its message is in the run's output and "
                f"logs/ (run.rank-N.log for a rank other than 0); the last checkpoint is kept")
    writer.close()
    return True


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the one-line message and a pointer to --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(run `{self.prog} --help` for the options)\n")


class _VersionAction(argparse.Action):
    """``--version``: ours and the training libraries' (read when asked, not at every start)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .version import version_text

        print(version_text("distill"))       # on stdout, as argparse's own version action prints
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    from .version import VERSION

    ap = _Parser(prog="distill", description="Plan, estimate and run knowledge distillation.")
    ap.add_argument("--version", action=_VersionAction, help="the version, and those of torch, transformers, peft "
                    f"and accelerate it runs with (distill {VERSION})")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="options, Pareto front and recommendation for a plan file")
    p.add_argument("plan", help="plan file (TOML)")
    p.add_argument("--json", action="store_true", help="complete answer as JSON")
    p.add_argument("--top", type=_positive("--top", 1, 10_000), default=10, help="options to list (default 10)")
    p.add_argument("--confidence", type=_positive("--confidence", 0.5, 0.99, float), default=None,
                   help="how sure the recommendation must be to meet the budget (default: the plan's, 0.8)")
    p.set_defaults(func=cmd_plan)

    e = sub.add_parser("estimate", help="throughput and memory of one configuration")
    e.add_argument("--model", help="catalog id or hub id of the model trained")
    e.add_argument("--model-config", help="a Hugging Face config.json (file or folder)")
    e.add_argument("--accelerator", required=True)
    e.add_argument("--gpus", type=_positive("--gpus", 1, 4096), default=1)
    e.add_argument("--gpus-per-node", type=_positive("--gpus-per-node", 1, 16), default=None)
    e.add_argument("--seq-len", type=_positive("--seq-len", 16, 1_048_576), default=4096)
    e.add_argument("--global-batch-tokens", type=_positive("--global-batch-tokens", 16, 1_000_000_000),
                   default=1_048_576)
    e.add_argument("--tokens", type=_positive("--tokens", 1, 1e15, float), default=1e9,
                   help="tokens to train on, for the time estimate")
    e.add_argument("--adapter", choices=["full", "lora", "qlora"], default="full")
    e.add_argument("--lora-rank", type=_positive("--lora-rank", 1, 1024), default=16)
    e.add_argument("--precision", choices=["bf16", "fp8"], default="bf16")
    e.add_argument("--recompute", nargs="?", choices=("off", "full", "selective"), const="full", default="off",
                   help="activation recomputation of the student's layers: off (default), full (--recompute alone) "
                   "or selective (keeps the matmul outputs, recomputes the elementwise work)")
    e.add_argument("--sharding", choices=["none", "within-node", "all-gpus"],
                   help="none (DDP), within-node (hybrid) or all-gpus (full); default: all-gpus on several nodes, "
                        "within-node on several GPUs, none on one")
    e.add_argument("--teacher", help="teacher model: estimates distillation instead of plain training")
    e.add_argument("--teacher-mode", choices=["online", "offline-topk", "generate"], default="online")
    e.add_argument("--teacher-precision", choices=["bf16", "int8", "int4"], default="bf16")
    e.add_argument("--unchunked-logits", action="store_true", help="count full-vocabulary logits at once")
    e.add_argument("--confidence", type=_positive("--confidence", 0.5, 0.99, float), default=0.8,
                   help="the range's figure at this confidence, as a plan's budget is judged (default 0.8)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_estimate)

    r = sub.add_parser("run", help="train a student as the plan says (or --resume a run folder)")
    r.add_argument("plan", nargs="?", type=Path, help="plan file (TOML)")
    r.add_argument("--run-dir", type=Path, help="folder for the run (default: a new one under the user data folder)")
    r.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped or killed run")
    r.add_argument("--stage", choices=["teacher", "student"],
                   help="run one stage of a plan with a teacher pass: 'teacher' caches the teacher's top-k (or "
                        "writes its answers) and stops; 'student' trains on that output (--teacher-run)")
    r.add_argument("--teacher-run", type=Path, metavar="RUN_DIR", help="with --stage student: the teacher stage's "
                   "run folder")
    r.add_argument("--force", action="store_true", help="start even when the planner recommends no option or the "
                   "run misses the plan's deadline or cost cap (the risks are printed)")
    r.add_argument("--stop-at", choices=["deadline", "cap", "either"],
                   help="stop the run by itself (a checkpoint saved) at the plan's deadline, its cost cap, or either "
                        "(budget.stop_at for this run)")
    r.add_argument("--processes", type=_positive("--processes", 1, 4096), default=1,
                   help="processes to train with (GPUs of this machine; CPU ranks in tests)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("catalog", help="list known models, accelerators or Azure VM sizes")
    c.add_argument("what", choices=["models", "accelerators", "skus"])
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_catalog)

    pr = sub.add_parser("prices", help="Azure prices: show the ones in use, or refresh from the Retail Prices API")
    pr.add_argument("action", choices=["show", "refresh"])
    pr.add_argument("--region", default="eastus")
    pr.set_defaults(func=cmd_prices)

    ca = sub.add_parser("calibration", help="the runs this machine watched, which the planner's estimates use")
    ca.add_argument("action", choices=["show", "clear"])
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(func=cmd_calibration)

    from .azure.cli import add_parser as add_azure

    add_azure(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
