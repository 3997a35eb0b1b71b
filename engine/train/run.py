"""One run, from a plan to a trained student: set-up and every check first, then the teacher's pre-pass or
generation, the loop, and the result. Every process of a multi-process launch runs this; rank 0 writes events.

A run folder holds ``plan.toml`` (a copy), ``run.json`` (where the plan came from, so relative paths still
resolve on resume), ``events.jsonl``, ``checkpoints/``, ``student/`` (the result), ``teacher-topk/`` or
``generated/`` (teacher output, kept for resume) and ``logs/run.log``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..errors import DistillError, RunError
from ..plan import INPUT_FIELDS, Plan, load_plan, with_stop_at
from ..planner import check_world, resolve_run
from ..runs.events import EventWriter

log = logging.getLogger("distill_studio.run")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class StopFlag:
    """Set by SIGTERM / SIGINT, or by the run folder's stop file (``engine/runs/process.py``: how the app asks on
    Windows, where a detached process gets no signal); the loop checks it between steps, checkpoints and stops."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None
        self.file: Path | None = None
        self.at: float | None = None   # time.monotonic() of the request: a stop's grace period runs from it
        self.limit: tuple[float, str] | None = None   # (time.monotonic(), why): budget.stop_at's own stop

    def watch(self, path: Path) -> None:
        self.file = path

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop now, the last checkpoint stays
            raise KeyboardInterrupt
        if not self.requested:
            self.at = time.monotonic()
        self.requested = True
        self.signal = signal.Signals(signum).name

    def until(self, monotonic_deadline: float, reason: str) -> None:
        """Ask for a stop by itself at ``monotonic_deadline`` (``budget.stop_at``), ``reason`` saying why."""
        self.limit = (monotonic_deadline, reason)

    def __call__(self) -> bool:
        if not self.requested and self.file is not None and self.file.exists():   # a stat: microseconds a step
            self.requested, self.signal, self.at = True, "the stop file", time.monotonic()
        if not self.requested and self.limit is not None and time.monotonic() >= self.limit[0]:
            self.requested, self.signal, self.at = True, self.limit[1], time.monotonic()
        return self.requested


def prior_active_seconds(events: Path) -> float:
    """The time a run has already been running in its earlier sessions (each from its ``run_started`` to its last
    event), from its events file: what a resumed run's budget stop counts on from."""
    total, start, last = 0.0, None, None
    try:
        lines = events.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0.0
    for line in lines:
        try:
            e = json.loads(line)
            t = float(e["time"])
        except (ValueError, KeyError, TypeError):
            continue                      # a torn last line of a killed run
        if e.get("type") == "run_started":
            if start is not None and last is not None:
                total += max(0.0, last - start)
            start = t
        last = t
    if start is not None and last is not None:
        total += max(0.0, last - start)
    return total


def budget_stop(plan, resolved, events: Path) -> tuple[float, str] | None:
    """(seconds left, why) of ``budget.stop_at``: the deadline, the cost cap at the run's price per hour, or the
    nearer of the two; None when the plan asks for no such stop (or the cap has no price to count it by)."""
    from ..estimate.solve import hours_text

    b = plan.budget
    limits = []
    if b.stop_at in ("deadline", "either") and b.hours is not None:
        limits.append((b.hours * 3600, f"the deadline ({hours_text(b.hours)}), as budget.stop_at asks"))
    price = (resolved.estimate.get("price") if resolved is not None else None) or {}
    rate = price.get("usd_per_node_hour", 0) * price.get("nodes", 1)
    if b.stop_at in ("cap", "either") and b.usd is not None and rate > 0:
        limits.append((b.usd / rate * 3600, f"the cost cap (${b.usd:,.2f} at ${rate:,.2f} an hour), as "
                       "budget.stop_at asks"))
    if not limits:
        return None
    seconds, why = min(limits)
    return seconds - prior_active_seconds(events), why


@dataclass
class RunPaths:
    run_dir: Path
    plan_base: Path  # the folder the plan's relative paths resolve from

    @property
    def events(self) -> Path:
        return self.run_dir / "events.jsonl"


_held_lock = None  # the open lock file of the run folder this process trains in (released when the process ends)


def lock_run_dir(run_dir: Path) -> None:
    """Take the run folder for this process: two trainers in one folder (a run resumed twice, from two terminals
    or two clicks) would interleave events and overwrite each other's checkpoints. An advisory ``flock`` on
    ``run_dir/.lock``, released by the OS however the process ends, so a killed run never leaves a stale lock.
    (No-op where ``fcntl`` is missing, i.e. Windows.)"""
    global _held_lock
    from ..runs.lock import hold

    f, other = hold(run_dir / ".lock")
    if other is not None:
        raise RunError(f"{run_dir} is being trained by another process{f' (pid {other})' if other else ''}; "
                       "wait for it to finish, or stop it, before resuming")
    _held_lock = f


def prepare_run_dir(plan_path: Path, run_dir: Path, resolved: Plan | None = None,
                    run_key: str | None = None, stage: dict | None = None) -> RunPaths:
    """A new run folder with the plan as it runs (every "auto" resolved by the planner; the file as given beside
    it, ``plan.given.toml``) and ``run.json``; refuses a folder that already holds a run."""
    plan_path = plan_path.resolve()
    if (run_dir / "events.jsonl").exists():
        raise RunError(f"--run-dir: {run_dir} already holds a run; use `distill run --resume {run_dir}` to "
                       "continue it, or choose a new folder")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plan_path, run_dir / "plan.given.toml")
    if resolved is not None:
        from ..plan import save_plan

        save_plan(resolved, run_dir / "plan.toml")
    else:
        shutil.copyfile(plan_path, run_dir / "plan.toml")
    meta = {"plan_path": str(plan_path), "plan_base": str(plan_path.parent), "created": time.time()}
    if run_key:
        meta["run_key"] = run_key
    if stage and stage.get("stage"):   # a split run's stage, kept for --resume
        meta["stage"] = stage["stage"]
        if stage.get("teacher_run"):
            meta["teacher_run"] = str(Path(stage["teacher_run"]).resolve())
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1))
    return RunPaths(run_dir, plan_path.parent)


def open_run_dir(run_dir: Path) -> tuple[Plan, RunPaths]:
    """An existing run folder, for ``--resume``."""
    if not (run_dir / "plan.toml").is_file():
        raise RunError(f"--resume: {run_dir} is not a run folder (it has no plan.toml)")
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        base = Path(meta["plan_base"])
    except (OSError, ValueError, KeyError):
        base = run_dir
    return load_plan(run_dir / "plan.toml"), RunPaths(run_dir, base)


def run_stage(run_dir: Path) -> dict:
    """The stage a run folder was started as ({"stage": ..., "teacher_run": ...}; {} for a whole run)."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: meta[k] for k in ("stage", "teacher_run") if meta.get(k)}


def _setup_logging(run_dir: Path, main: bool) -> None:
    root = logging.getLogger("distill_studio")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    if main:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / "logs" / "run.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(fh)
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(sh)
    else:
        root.addHandler(logging.NullHandler())


def _quiet_libraries() -> None:
    """Our progress lines and events say what happens; the libraries' progress bars and notices only add noise."""
    import warnings

    import transformers

    # deprecation notices about transformers' own API, raised inside peft and transformers, not by the user's plan
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    # a tied head and embedding are one tensor: accelerate notes at every checkpoint that it stored it once
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def release_run_dir() -> None:
    """Give the run folder back (a run executed in-process, e.g. by tests, then resumed in the same process)."""
    global _held_lock
    if _held_lock is not None:
        _held_lock.close()      # closing the file releases the flock
        _held_lock = None


def with_inputs(plan: Plan, inputs: dict[str, str]) -> Plan:
    """The plan with the named fields set to paths on this machine (an Azure ML job's mounted inputs)."""
    for key, value in inputs.items():
        if key not in INPUT_FIELDS:
            raise RunError(f"--input: {key} cannot be given as an input; allowed: {', '.join(INPUT_FIELDS)}")
        section, name = key.split(".")
        part = getattr(plan, section)
        plan = plan.model_copy(update={section: part.model_copy(update={name: value})})
    return plan


def started_here(run_dir: Path, run_key: str) -> bool:
    """Whether ``run_dir`` already holds the run named ``run_key`` (a job submitted again after preemption
    continues it). A folder holding another run is refused: an old run must never be continued by a new plan."""
    if not (run_dir / "events.jsonl").is_file():
        return False
    try:
        found = json.loads((run_dir / "run.json").read_text()).get("run_key")
    except (OSError, ValueError):
        found = None
    if found != run_key:
        raise RunError(f"--run-dir: {run_dir} holds another run ({found or 'without a run key'}, not {run_key}); "
                       "give this run a folder of its own")
    return True


def execute(plan_path: Path | None, run_dir: Path, *, resume: bool, expect_world_size: int | None = None,
            keep_process_group: bool = False, inputs: dict[str, str] | None = None, run_key: str | None = None,
            stage: str | None = None, teacher_run: Path | None = None, checkpoint_local: Path | None = None,
            stop_at: str | None = None) -> int:
    """Run (or resume) a plan; returns the exit status. Errors a user can act on never become tracebacks.
    ``stop_at``: a new run's ``budget.stop_at``, as its launch asked (kept in the run folder's plan).
    ``keep_process_group``: leave the process group up for another run in the same processes (tests).
    ``inputs``: plan fields set to paths on this machine (see :data:`INPUT_FIELDS`).
    ``checkpoint_local``: the run folder is a mount (an Azure ML job's output); checkpoints are written to this
    folder on the node's own disk, then copied into the run folder with their manifest last."""
    try:
        return _execute(plan_path, run_dir, resume=resume, expect_world_size=expect_world_size,
                        keep_process_group=keep_process_group, inputs=inputs or {}, run_key=run_key,
                        stage=stage, teacher_run=teacher_run, checkpoint_local=checkpoint_local, stop_at=stop_at)
    finally:
        release_run_dir()


def _execute(plan_path: Path | None, run_dir: Path, *, resume: bool, expect_world_size: int | None = None,
             keep_process_group: bool = False, inputs: dict[str, str], run_key: str | None = None,
             stage: str | None = None, teacher_run: Path | None = None,
             checkpoint_local: Path | None = None, stop_at: str | None = None) -> int:
    t_begin = time.monotonic()
    # torch's OpenMP threads wait for work asleep, not spinning (a user's own OMP_WAIT_POLICY is kept): on a CPU
    # another program keeps busy, spinning threads took the demo's 40 steps from 3.3 s to 110 s of training and their
    # CPU time per token 8-fold, so the run's CPU seconds no longer told its work (BENCHMARKS.md). OpenMP reads it
    # once, as torch loads; a process that imported torch before keeps what it had
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch  # noqa: F401  (heavy imports only once a run is really starting)
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from . import parallel

    cuda = torch.cuda.is_available()
    if not cuda:
        tune_cpu_allocator()
    try:
        parallel.join(cuda)  # a node that never starts: an error after DISTILL_JOIN_TIMEOUT, not a hang
        from ..azure.node import load_hf_token

        load_hf_token()      # an Azure ML job that names a Key Vault secret for gated models
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from accelerate.utils import DistributedDataParallelKwargs

    # DDP's gradients as views of its communication buckets: no second copy of every gradient
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no",
                              kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)])
    main = accelerator.is_main_process
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = expect_world_size or launched
    if accelerator.num_processes != wanted or launched != accelerator.num_processes:
        # a wrong launch (e.g. `accelerate launch --cpu`) starts processes that each train alone, with no error
        print(f"error: {launched} processes were launched (WORLD_SIZE), {wanted} expected, but this process is in "
              f"a group of {accelerator.num_processes}. On CPU, launch with ACCELERATE_USE_CPU=1 "
              "(`distill run --processes N` does this)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if resume:
            plan, paths = open_run_dir(run_dir)
            kept = run_stage(run_dir)           # a stage resumes as the stage it was started as
            stage = stage or kept.get("stage")
            teacher_run = teacher_run or (Path(kept["teacher_run"]) if kept.get("teacher_run") else None)
        else:
            plan, paths = with_stop_at(load_plan(plan_path), stop_at), RunPaths(run_dir, plan_path.resolve().parent)
        plan = with_inputs(plan, inputs)  # again on every start: mount paths change from one job to the next
        # the configuration the planner chose, every "auto" fixed; the world must be the plan's
        # a resumed run, or a job submitted with a plan resolved on the desktop, runs that configuration exactly
        resolved = resolve_run(plan, paths.plan_base, pinned=resume or run_key is not None, stage=stage or "all")
        parallel.check_devices(resolved)   # a GPU plan on a process without its GPUs stops here, never on the CPU
        check_world(resolved, accelerator.num_processes, os.environ.get("LOCAL_WORLD_SIZE"))
        plan = resolved.plan
        if main:
            lock_run_dir(run_dir)
            from ..runs.process import clear_stop_file

            clear_stop_file(run_dir)     # a request left from before this process is not for it
            if not resume:
                prepare_run_dir(plan_path, run_dir, resolved=plan, run_key=run_key,
                                stage={"stage": stage, "teacher_run": teacher_run})
        accelerator.wait_for_everyone()
    except DistillError as exc:
        if main:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _setup_logging(paths.run_dir, main)
    _quiet_libraries()
    if main:
        from ..runs.mlflow_bridge import mirror_from_environment

        events = EventWriter(paths.events, mirror=mirror_from_environment())
    else:
        events = None
    stop = StopFlag()
    stop.install()
    from ..runs.process import stop_file

    stop.watch(stop_file(paths.run_dir))
    limit = budget_stop(plan, resolved, paths.events)
    if limit is not None:
        stop.until(time.monotonic() + limit[0], limit[1])
        if main:
            print(f"budget: the run stops by itself in {limit[0] / 3600:.2f} h, at "
                  f"{limit[1].removesuffix(', as budget.stop_at asks')}", file=sys.stderr, flush=True)
    set_seed(plan.training.seed)
    from .session import Session  # torch, transformers, peft

    session = Session(plan, paths, accelerator, events, stop, resolved=resolved, stage=stage or "all",
                      teacher_run=teacher_run, checkpoint_local=checkpoint_local)
    together = False  # every process reached the same end (a collective at the end cannot hang)
    try:
        session.setup(resume=resume)
        status = session.train()
        measured = session.measure()
        # set-up as the planner counts it: start to the first step, without the teacher's pass
        measured["setup_seconds"] = round(max(0.0, session._t_start - t_begin - session.teacher_pass_seconds), 3)
        measured.update(_measured_here(session))
        together = True
    except DistillError as exc:
        return _fail(events, main, str(exc), session, EXIT_BAD_INPUT if not session.started else EXIT_FAILED)
    except KeyboardInterrupt:
        return _finish(events, "cancelled", "stopped by a second interrupt; the last checkpoint is kept",
                       session, EXIT_CANCELLED)
    except Exception as exc:  # noqa: BLE001 — a crash is reported in the events, its traceback in logs/run.log
        log.debug("crash", exc_info=True)
        rank = accelerator.process_index
        (paths.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        # every process keeps its own traceback: a crash on one rank (out of memory on one GPU) is that rank's
        with open(paths.run_dir / "logs" / ("run.log" if main else f"run.rank-{rank}.log"), "a", encoding="utf-8") as f:
            traceback.print_exc(file=f)
        if not main:   # a collective's raw text after a peer died says nothing of use: say what happened
            what = ("stopped: another process of the run ended, so a collective could not complete"
                    if accelerator.num_processes > 1 and _peer_gone(exc) else f"{type(exc).__name__}: {exc}")
            print(f"error (rank {rank}): {what}; traceback in "
                  f"{paths.run_dir / 'logs' / f'run.rank-{rank}.log'}", file=sys.stderr, flush=True)
        message = f"{type(exc).__name__}: {exc}"
        if accelerator.num_processes > 1 and _peer_gone(exc):
            message = ("another process of the run failed, so this one could not go on (its error is in the run's "
                       "output and in logs/run.rank-N.log); the last checkpoint is kept")
        return _fail(events, main, message, session, EXIT_FAILED)
    finally:
        if not keep_process_group:
            _leave(accelerator, together)
    if status == "cancelled":
        return _finish(events, "cancelled", f"stopped by {stop.signal or 'request'} at step {session.state.step}; "
                       f"resume with `distill run --resume {paths.run_dir}`", session, EXIT_CANCELLED, measured)
    done = (f"teacher pass kept in {paths.run_dir} for the student stage" if session.stage == "teacher"
            else f"student saved to {paths.run_dir / 'student'}")
    return _finish(events, "succeeded", done, session, EXIT_OK, measured)


def _measured_here(session) -> dict:
    """Beside the wall time: this process's CPU time over training, its torch threads, the machine's load and the
    run's own step-to-step spread (``estimate/watched.py`` turns a CPU run's speed into CPU-seconds per token, so a
    loaded machine does not teach the planner a wrong speed), and where in the run this part began (one run across
    stops and resumes)."""
    import torch

    from ..estimate.watched import window_log_sd

    out: dict = {"first_step": int(getattr(session, "_first_step", 0) or 0),
                 "tokens_trained": int(getattr(session, "_tokens_trained", 0) or 0),
                 "threads": torch.get_num_threads()}
    meter = getattr(session, "meter", None)
    if meter is not None:
        m = meter.stop()
        out.update(cpu_seconds=m["cpu_seconds"], parallelism=m["parallelism"], cpus=m["cpus"],
                   busy_cores_others=m["busy_cores_others"], loadavg=m["loadavg"])
    if session.main:
        try:   # the logged steps of this part of the run: after its run_started
            from ..runs.events import read_events

            events = read_events(session.paths.events)
            start = max((i for i, e in enumerate(events) if e.get("type") == "run_started"), default=-1)
            steps = [(float(e["step_seconds"]), float(e["tokens_per_second"]) * float(e["step_seconds"]))
                     for e in events[start + 1:] if e.get("type") == "metric" and e.get("step_seconds")]
            out["window_log_sd"] = window_log_sd([t for t, _ in steps], [n for _, n in steps])
        except Exception:  # noqa: BLE001 — a spread it cannot read is left out, never fails the run
            log.debug("no step spread", exc_info=True)
    return out


def _remember(session, measured: dict, status: str) -> None:
    """What this run measured, for the planner's next estimates (``estimate/watched.py``). Never fails the run."""
    try:
        from ..estimate.watched import record_run

        resolved = session.resolved
        if resolved is None:
            return
        rec = record_run(resolved.plan, session.paths.plan_base, resolved.estimate, measured, status=status,
                         total_tokens=int(getattr(session, "total_tokens", 0) or 0),
                         setup_seconds=float(measured.get("setup_seconds") or 0.0), run_dir=session.paths.run_dir)
        if rec is not None:
            log.info("measured %.0f tokens/s per device (planned %.0f); kept for the planner's next estimates",
                     rec["measured"]["tokens_per_second_per_device"], rec["estimated"]["tokens_per_second_per_gpu"])
    except Exception as exc:  # noqa: BLE001
        log.warning("could not keep this run's measurements for the planner (%s: %s)", type(exc).__name__, exc)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_cpu_allocator() -> bool:
    """Keep freed memory for reuse instead of giving it back to the kernel after each tensor: blocks up to 32 MiB
    (glibc's largest mmap threshold) come from the heap, and the heap is not trimmed until 1 GiB lies free at its top.
    Left to glibc's defaults, a training step on the CPU maps, page-faults in and unmaps its large temporaries
    again and again (page faults were about 45% of a step's CPU time at a 262,144-token vocabulary). The loss keeps
    its own temporaries under that size (``estimate.core.CPU_LOSS_CHUNK_BYTES``). Applies to this process only;
    False where the C library is not glibc (macOS, Windows, musl), which keep their own allocators, or where
    ``DISTILL_CPU_ALLOCATOR=default`` asks to leave glibc as it is (benchmarks/bench_cpu_allocator.py compares)."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux") or os.environ.get("DISTILL_CPU_ALLOCATOR") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def _peer_gone(exc: BaseException) -> bool:
    """A collective that failed because another rank of the run died."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        k in text for k in ("closed by peer", "Connection reset by peer", "remote worker", "NCCL communicator was aborted"))


def _leave(accelerator, together: bool) -> None:
    """Take the process group down. After a run every process finished, they wait for each other first (one
    still finishing its last collective while another destroys the group can abort in gloo). After a failure
    they do not: the others may be inside a collective the failed one left, and waiting would hang them until the
    collective timeout; the process ends (``__main__.leave``) and the launcher stops the rest."""
    if accelerator.num_processes > 1:
        if not together:
            return
        import torch.distributed as dist

        dist.barrier()
    accelerator.end_training()


def _fail(events: EventWriter | None, main: bool, message: str, session, code: int) -> int:
    if main:
        print(f"error: {message}", file=sys.stderr)
        if session.started:
            print(f"the last checkpoint is kept; resume with `distill run --resume {session.paths.run_dir}`",
                  file=sys.stderr)
    return _finish(events, "failed", message, session, code)


def _finish(events: EventWriter | None, status: str, message: str, session, code: int,
            measured: dict | None = None) -> int:
    if events is not None:
        events.emit("run_finished", status=status, message=message, step=session.state.step,
                    **({"measured": measured} if measured else {}))
        events.close()
        if measured:
            _remember(session, measured, status)
    if session.accelerator.is_main_process and status != "failed":
        print(f"{status}: {message}", file=sys.stderr)
    return code
