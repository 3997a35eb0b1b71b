"""Calibration from the runs this machine watched: every run the engine finishes (or stops) records what it
measured next to what was planned, and the planner uses those records.

A record (one JSON line in ``data_dir()/calibration/runs.jsonl``, one per run folder) holds:

- **where**: a fingerprint of the machine (an Azure VM size; a local accelerator and GPU count; for a CPU, its model
  and core count, since two CPUs differ far more than two A100s), the option the planner chose (VM size, nodes,
  GPUs, adapter, teacher mode and precision, recomputation, sharding), the model shapes, method, sequence length and
  micro-batch;
- **what**: training tokens per second per device, the tokens trained, set-up and teacher-pass seconds, step time,
  peak memory per device, the spread of its speed between stretches of its steps, and a key of the data (file,
  size, epochs, steps, batch) so a run of the same data tells its exact token count; on a CPU also the process's
  CPU seconds over training, its torch threads and how many cores other programs kept busy meanwhile;
- **its parts**: a run stopped and resumed is one run; each part's steps, seconds and CPU seconds are kept and summed;
- **against**: the planner's estimate for that run.

How the planner uses them (:func:`calibrate`):

- an option of exactly that configuration on that machine is **measured here (N runs)**: its throughput and set-up
  are the median of the runs', and for the same data its token count is the runs' own. A CPU run that other
  programs slowed counts by its CPU seconds per token, over the cores an unloaded run of this machine reaches;
- other options of the same machine and models are **corrected here**: the measured speed of the nearest measured
  configuration times the model's own difference between the two (so recomputing more comes out slower than what
  was measured, never faster). A measured/estimated ratio outside :data:`CORRECTION_BOUNDS` is applied as it is;
  the model is then **far off here**, and the range widens with how far;
- the training spread of both is the variation the runs showed here (between runs, and between stretches of a run's
  steps), never below :data:`MEASURED_HERE_FLOOR`, written to ``calibration_log_sd`` for ``estimate/ranges.py``;
- everything else is the **published fit** (an accelerator the calibration table covers) or **extrapolated** (an
  accelerator it does not, or a CPU).

No torch here: the planner imports this.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .sweep import CALIBRATION_SOURCES as SOURCES  # codes 0..3 of sw.out["calibration"]

STORE = "calibration/runs.jsonl"
MAX_RECORDS = 1000
CORRECTION_BOUNDS = (0.25, 4.0)   # a measured/estimated speed outside: the model is far off here


def store_path() -> Path:
    from ..catalog.prices import data_dir

    return data_dir() / STORE


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_fingerprint(plan) -> str:
    """Where a plan runs, as precisely as its speed depends on it."""
    hw = plan.hardware
    if hw.target == "azure":
        return f"azure:{(hw.sku or '').lower()}"
    if (hw.accelerator or "").lower() == "cpu":
        return f"cpu:{platform.machine()}:{_cpu_model()}:{os.cpu_count()}"
    return f"local:{(hw.accelerator or '').lower()}:{hw.gpus}"


def model_key(shape) -> str:
    if shape is None:
        return "-"
    return f"{shape.params}:{shape.num_layers}:{shape.hidden_size}:{shape.vocab_size}"


def data_key(plan, base: Path | None) -> str:
    """The data and how much of it is trained: the same key means the same token count."""
    d, t = plan.data, plan.training
    path = Path(d.train or "")
    if base is not None and d.train and not path.is_absolute():
        path = base / path
    try:
        size = path.stat().st_size if d.train else 0
        where = str(path.resolve()) if d.train else ""
    except (OSError, ValueError, RuntimeError):
        size, where = -1, str(path)
    return (f"{where}|{size}|{d.tokens}|{d.epochs}|{t.max_steps}|{d.global_batch_tokens}|{d.seq_len}|{d.format}|"
            f"{d.reasoning}|{plan.method.kind}")


def option_key(option: dict) -> tuple:
    return (str(option["sku"]).lower(), int(option["nodes"]), int(option["gpus"]), option["adapter"],
            option["teacher_mode"], option["teacher_precision"],
            # older records say recompute true / false: full / off
            {True: "full", False: "off"}.get(option["recompute"], option["recompute"]), option["sharding"])


def run_key(plan, pair) -> tuple:
    """What must be equal for two runs' speeds to be compared at all."""
    from .shape import shape_of

    teacher = shape_of(pair.teacher) if plan.method.kind != "ce" else None
    return (machine_fingerprint(plan), model_key(shape_of(pair.student)), model_key(teacher), plan.method.kind,
            plan.data.seq_len, plan.adapter.kind, plan.adapter.rank if plan.adapter.kind != "full" else 0)


# ---- measuring (the engine, around the training loop) ---------------------------------------------------------------

def _proc_stat() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none (not Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(v) - v[3] - (v[4] if len(v) > 4 else 0), sum(v)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def usable_cpus() -> int:
    """The cores this process may run on (its affinity; a container's limit shows there, not in cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CpuMeter:
    """Wall time, this process's CPU time (all its threads: ``time.process_time``) and how busy the whole machine
    was, from creation to :meth:`stop`: what a CPU run needs to tell its own speed from the machine's load.

    ``busy_cores_others`` is the machine's busy cores (``/proc/stat``) less this process's share, averaged over the
    interval: about 1.0 while one other program keeps one core busy. ``parallelism`` is this process's CPU seconds
    per wall second: the cores the run actually had."""

    def __init__(self) -> None:
        self.wall0, self.cpu0, self.stat0, self.load0 = time.monotonic(), time.process_time(), _proc_stat(), _loadavg()
        self.result: dict | None = None

    def stop(self) -> dict:
        if self.result is None:
            wall, cpu = time.monotonic() - self.wall0, time.process_time() - self.cpu0
            stat = _proc_stat()
            cpus = usable_cpus()
            busy = None
            if self.stat0 is not None and stat is not None and stat[1] > self.stat0[1]:
                busy = (stat[0] - self.stat0[0]) / (stat[1] - self.stat0[1]) * (os.cpu_count() or cpus)
            own = cpu / wall if wall > 0 else 0.0
            self.result = {"wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "cpus": cpus,
                           "parallelism": round(own, 3),
                           "busy_cores_others": round(max(0.0, busy - own), 3) if busy is not None else None,
                           "loadavg": [self.load0, _loadavg()]}
        return self.result


def window_log_sd(step_seconds: list[float], step_tokens: list[float], windows: int = 5) -> float | None:
    """How much a run's speed varied within it: the log standard deviation of its speed over consecutive stretches
    of steps (the first step, the warm-up, left out; up to ``windows`` stretches of at least 3 steps). None with
    fewer than two stretches."""
    t, n = np.asarray(step_seconds[1:], dtype=float), np.asarray(step_tokens[1:], dtype=float)
    k = min(windows, len(t) // 3)
    if k < 2 or not (t > 0).all() or not (n > 0).all():
        return None
    speed = [n[i].sum() / t[i].sum() for i in np.array_split(np.arange(len(t)), k)]
    return round(float(np.std(np.log(speed), ddof=1)), 4)


# ---- writing (the engine, at the end of a run) -------------------------------------------------------------------

def record_run(plan, base: Path | None, estimate: dict, measured: dict, *, status: str, total_tokens: int,
               setup_seconds: float, run_dir: Path) -> dict | None:
    """Keep what a run measured; returns the run's record (None when it measured nothing to learn from).

    One run is one record across stops and resumes: the part of a run a resume trained is merged into the record
    of its run folder (:func:`merge_parts`), never counted as another run."""
    from ..checks import check_plan

    tps = measured.get("tokens_per_second_per_device")
    steps = int(measured.get("steps") or 0)
    if not tps or steps < 2 or not estimate.get("option"):
        return None
    pair = check_plan(plan, base)
    peaks = [p for p in measured.get("peak_memory_bytes_per_rank") or [] if p]
    seconds = float(measured.get("training_seconds") or 0.0)
    part = {"first_step": int(measured.get("first_step") or 0), "steps": steps, "training_seconds": seconds,
            # tokens one device trained in this part: what its speed is counted over
            "device_tokens": float(tps) * seconds, "status": status}
    for k in ("cpu_seconds", "threads", "cpus", "parallelism", "busy_cores_others", "loadavg", "window_log_sd"):
        if measured.get(k) is not None:
            part[k] = measured[k]
    rec = {
        "v": 1, "time": round(time.time(), 3), "status": status, "run_dir": str(run_dir),
        "key": list(run_key(plan, pair)), "option": list(option_key(estimate["option"])),
        "data": data_key(plan, base), "micro_batch": plan.training.micro_batch_size,
        "measured": {
            "tokens_per_second_per_device": float(tps),
            "train_tokens": int(total_tokens),
            "steps": steps,
            "training_seconds": seconds,
            "setup_seconds": float(setup_seconds),
            "teacher_pass_seconds": float(measured.get("teacher_pass_seconds") or 0.0),
            "peak_memory_gib_per_device": round(max(peaks) / 1024**3, 4) if peaks else None,
            **{k: part[k] for k in ("cpu_seconds", "threads", "cpus", "parallelism", "busy_cores_others",
                                    "window_log_sd") if k in part},
        },
        "parts": [part],
        # the fit's own figure (before any earlier run corrected it): what the next runs' ratio is taken against
        "estimated": {"tokens_per_second_per_gpu": float(estimate.get("model_tokens_per_second_per_gpu")
                                                         or estimate.get("tokens_per_second_per_gpu") or 0.0),
                      "hours": estimate.get("hours"), "memory_gib_per_gpu": estimate.get("memory_gib_per_gpu")},
    }
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    for i in range(len(lines) - 1, -1, -1):          # this run's earlier part (a stop, then --resume)
        try:
            old = json.loads(lines[i])
        except ValueError:
            continue
        if isinstance(old, dict) and old.get("run_dir") == rec["run_dir"] and isinstance(old.get("measured"), dict):
            rec = merge_parts(old, rec)
            lines[i] = json.dumps(rec, separators=(",", ":"), default=str)
            tmp = path.with_suffix(".tmp")
            tmp.write_text("\n".join(lines[-MAX_RECORDS:]) + "\n", encoding="utf-8")
            os.replace(tmp, path)
            return rec
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
    _trim(path)
    return rec


def _parts(rec: dict) -> list[dict]:
    """A record's parts (a record written before parts were kept is one part)."""
    if rec.get("parts"):
        return list(rec["parts"])
    m = rec["measured"]
    return [{"first_step": 0, "steps": int(m.get("steps") or 0),
             "training_seconds": float(m.get("training_seconds") or 0.0),
             "device_tokens": float(m.get("tokens_per_second_per_device") or 0.0)
             * float(m.get("training_seconds") or 0.0), "status": rec.get("status"),
             **{k: m[k] for k in ("cpu_seconds", "threads", "cpus", "parallelism", "busy_cores_others",
                                  "window_log_sd") if m.get(k) is not None}}]


def merge_parts(earlier: dict, later: dict) -> dict:
    """One run from two records of its run folder (a run stopped, then resumed): the parts' tokens, seconds and
    CPU seconds summed, so its speed is the whole run's; set-up and the fit's estimate from its first start (a
    fresh start's set-up is what the planner plans; a resume's loads a checkpoint), status and token count from its
    latest part. Summed rather than the later part kept: each part trained different steps, and a short resume
    (a few steps after a stop) alone says little. A part already there (the same events recorded twice) is not
    added again."""
    parts = _parts(earlier)
    seen = {(p.get("first_step"), p.get("steps"), p.get("training_seconds")) for p in parts}
    parts += [p for p in _parts(later) if (p.get("first_step"), p.get("steps"), p.get("training_seconds")) not in seen]
    seconds = sum(p["training_seconds"] for p in parts)
    tokens = sum(p["device_tokens"] for p in parts)
    m = dict(later["measured"])
    m.update(steps=sum(p["steps"] for p in parts), training_seconds=round(seconds, 3),
             tokens_per_second_per_device=tokens / seconds if seconds > 0 else m["tokens_per_second_per_device"],
             setup_seconds=earlier["measured"].get("setup_seconds", m.get("setup_seconds", 0.0)),
             teacher_pass_seconds=sum(float(r["measured"].get("teacher_pass_seconds") or 0.0)
                                      for r in (earlier, later)))
    timed = [p for p in parts if p.get("cpu_seconds") is not None and p["training_seconds"] > 0]
    if len(timed) == len(parts):       # CPU time is only whole if every part measured it
        m["cpu_seconds"] = round(sum(p["cpu_seconds"] for p in parts), 3)
        m["parallelism"] = round(m["cpu_seconds"] / seconds, 3) if seconds > 0 else None
        others = [p for p in parts if p.get("busy_cores_others") is not None]
        if len(others) == len(parts):
            m["busy_cores_others"] = round(sum(p["busy_cores_others"] * p["training_seconds"] for p in parts)
                                           / seconds, 3)
    else:
        for k in ("cpu_seconds", "parallelism", "busy_cores_others"):
            m.pop(k, None)
    sds = [p["window_log_sd"] for p in parts if p.get("window_log_sd") is not None]
    if sds:
        m["window_log_sd"] = round(float(np.sqrt(np.mean(np.square(sds)))), 4)
    return {**later, "measured": m, "parts": parts, "estimated": earlier.get("estimated", later.get("estimated"))}


def record_from_events(run_dir: Path, base: Path | None) -> dict | None:
    """Record a run that executed elsewhere (an Azure ML job) from its events as the desktop holds them: the last
    ``run_started`` (estimate, tokens) and the ``run_finished`` with what the node measured."""
    from ..plan import load_plan
    from ..runs.events import read_events

    events = read_events(Path(run_dir) / "events.jsonl")
    started = [e for e in events if e.get("type") == "run_started"]
    finished = [e for e in events if e.get("type") == "run_finished" and e.get("measured")]
    if not started or not finished or not started[-1].get("estimate"):
        return None
    end = finished[-1]
    return record_run(load_plan(Path(run_dir) / "plan.toml"), base, started[-1]["estimate"], end["measured"],
                      status=str(end.get("status", "")), total_tokens=int(started[-1].get("total_tokens") or 0),
                      setup_seconds=float(end["measured"].get("setup_seconds") or 0.0), run_dir=Path(run_dir))


def _trim(path: Path) -> None:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) > MAX_RECORDS:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines[-MAX_RECORDS:]) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def load_records() -> list[dict[str, Any]]:
    """Every run's record, one per run folder (a torn or foreign line is skipped; the parts of a run that an
    older store kept on separate lines are merged)."""
    try:
        lines = store_path().read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out: list[dict] = []
    where: dict[str, int] = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("v") == 1 and isinstance(rec.get("measured"), dict):
            run = rec.get("run_dir")
            if run is not None and run in where:
                out[where[run]] = merge_parts(out[where[run]], rec)
            else:
                if run is not None:
                    where[run] = len(out)
                out.append(rec)
    return out


def clear_records() -> int:
    n = len(load_records())
    try:
        store_path().unlink()
    except FileNotFoundError:
        pass
    return n


# ---- reading (the planner) -----------------------------------------------------------------------------------------

LOADED_CORES = 0.5        # other programs' busy cores over a CPU run above which its wall time is the machine's load's
MEASURED_HERE_FLOOR = 0.05   # the least log spread a measured configuration is given (a few runs agree by chance)
# an unloaded CPU run's CPU seconds per wall second, per torch thread: 1.42 with 2 threads on an idle 2-core VM
# (docs/estimator.md); used until this machine has run unloaded once, then that run's own figure
CPU_PARALLEL_EFFICIENCY = 0.7
# turning CPU seconds back into wall time: the CPU seconds per token of one configuration differed by up to 8% between
# loaded and unloaded runs, the parallelism of an unloaded run is assumed (BENCHMARKS.md)
_CPU_CONVERSION_LOG_SD = 0.15
# work a recompute mode adds, in order: a neighbour that recomputes more is never faster than the one measured
RECOMPUTE_WORK = {"off": 0, "selective": 1, "full": 2}


def cpu_speed(rec: dict, parallelism: float | None) -> float:
    """The tokens per second per device a CPU run's record says the next, unloaded run of it reaches: its wall
    speed when nothing else loaded the machine; else its CPU seconds per token over ``parallelism`` (the CPU
    seconds per wall second an unloaded run of this machine reaches), so a run slowed by other programs does not
    teach the planner its slowness."""
    m = rec["measured"]
    wall = float(m["tokens_per_second_per_device"])
    cpu, others, seconds = m.get("cpu_seconds"), m.get("busy_cores_others"), float(m.get("training_seconds") or 0)
    if not cpu or others is None or others < LOADED_CORES or not parallelism or seconds <= 0:
        return wall
    return wall * seconds / cpu * parallelism


def unloaded_parallelism(records: list[dict]) -> float | None:
    """The CPU seconds per wall second of this machine's unloaded runs (median), or, with none, the cores the
    loaded runs could have used (their torch threads, at most the cores) times :data:`CPU_PARALLEL_EFFICIENCY`."""
    quiet = [r["measured"]["parallelism"] for r in records
             if r["measured"].get("parallelism") and r["measured"].get("busy_cores_others") is not None
             and r["measured"]["busy_cores_others"] < LOADED_CORES]
    if quiet:
        return float(statistics.median(quiet))
    cores = [min(int(r["measured"].get("threads") or 1), int(r["measured"].get("cpus") or 1)) for r in records
             if r["measured"].get("cpu_seconds")]
    return max(cores) * CPU_PARALLEL_EFFICIENCY if cores else None


def calibrate(sw, plan, pair, base: Path | None, records: list[dict] | None = None) -> list[str]:
    """Replace the modelled figures of the options these runs measured (and correct their neighbours'), in
    ``sw.out``; add ``calibration`` (codes into :data:`SOURCES`), ``calibration_runs`` (distinct runs),
    ``calibration_log_sd`` (the spread of the training speed seen here; NaN where no run applies) and
    ``calibration_far_off`` (the model is far off here: its measured/estimated ratio lies outside
    :data:`CORRECTION_BOUNDS`). Returns notes."""
    from .core import accelerator_efficiency

    o, g = sw.out, sw.grid
    n = len(sw)
    acc_ok = np.asarray([accelerator_efficiency(a)[1] for a in sw.labels["accelerator"]])[g.extra["accelerator"]]
    cpu = plan.hardware.target == "local" and (plan.hardware.accelerator or "").lower() == "cpu"
    code = np.where(acc_ok & (not cpu), 1, 0).astype(np.int8)
    runs = np.zeros(n, dtype=np.int32)
    o["calibration"], o["calibration_runs"] = code, runs
    o["model_tokens_per_second_per_gpu"] = model = o["tokens_per_second_per_gpu"].copy()   # what the fit alone says
    o["calibration_log_sd"] = spread = np.full(n, np.nan)
    o["calibration_far_off"] = far_off = np.zeros(n, dtype=bool)
    records = load_records() if records is None else records
    key = list(run_key(plan, pair))
    mine = [r for r in records if r.get("key") == key]
    if not mine:
        return []
    dkey = data_key(plan, base)
    parallelism = unloaded_parallelism(mine) if cpu else None
    speed = {id(r): cpu_speed(r, parallelism) if cpu else float(r["measured"]["tokens_per_second_per_device"])
             for r in mine}
    tps, setup = o["tokens_per_second_per_gpu"].copy(), o["setup_hours"].copy()
    staging = o.get("staging_hours", np.zeros(len(sw)))
    by_option: dict[tuple, list[dict]] = {}
    for r in mine:
        by_option.setdefault(tuple(option_key(dict(zip(_OPTION_FIELDS, r["option"])))), []).append(r)
    # the spread seen here: between runs (their measured/estimated ratios) and within them (stretches of steps)
    logs = [np.log(speed[id(r)] / r["estimated"]["tokens_per_second_per_gpu"]) for r in mine
            if r["estimated"].get("tokens_per_second_per_gpu")]
    between = float(np.std(logs, ddof=1)) if len(logs) >= 2 else 0.0
    within = [r["measured"]["window_log_sd"] for r in mine if r["measured"].get("window_log_sd") is not None]
    within_sd = float(np.sqrt(np.mean(np.square(within)))) if within else 0.0
    here_sd = max(MEASURED_HERE_FLOOR, float(np.hypot(between, within_sd)))
    if cpu and any(speed[id(r)] != r["measured"]["tokens_per_second_per_device"] for r in mine):
        # a speed taken through CPU seconds (a loaded run): as uncertain as the unloaded parallelism it assumed
        here_sd = float(np.hypot(here_sd, _CPU_CONVERSION_LOG_SD))
    ratio = float(np.exp(np.median(logs))) if logs else None
    lo, hi = CORRECTION_BOUNDS
    off_by = max(0.0, np.log(lo / ratio), np.log(ratio / hi)) if ratio else 0.0   # log distance outside the bounds
    # where each watched configuration sits in this sweep, and its measured speed
    measured = []
    for k, found in by_option.items():
        same = _rows_of(sw, k)
        fast = float(statistics.median(speed[id(r)] for r in found))
        base_model = (float(np.median(model[same])) if same.any() else
                      float(statistics.median(r["estimated"]["tokens_per_second_per_gpu"] for r in found)))
        measured.append((k, same, fast, base_model, found))
    machine_names = [m.lower() for m in sw.labels["machine"]]
    watched_machines = [machine_names.index(k[0]) for k in by_option if k[0] in machine_names]
    if ratio is not None and watched_machines:
        near = np.isin(g.extra["machine"], watched_machines)
        # each neighbour from its nearest measured configuration: that one's measured speed times the model's own
        # difference (model here / model there), so recomputing more comes out slower than measured by the model's
        # factor, and nothing the model says does more work comes out faster than what was measured
        dist = np.stack([_distance(sw, k) for k, *_ in measured])
        nearest = np.argmin(dist, axis=0)
        scale = np.asarray([fast / base for _, _, fast, base, _ in measured])[nearest]
        tps = np.where(near, model * scale, tps)
        for j, (k, same, fast, base, found) in enumerate(measured):
            more_work = near & (nearest == j) & _more_work_than(sw, k)
            tps = np.where(more_work, np.minimum(tps, fast), tps)
        # a watched run's set-up is its nodes' own; staging the models (once, on its own VM) stays as estimated
        setup = np.where(near, statistics.median(r["measured"]["setup_seconds"] for r in mine) / 3600.0 + staging,
                         setup)
        code[near], runs[near] = 2, len(mine)
        # a neighbour: the spread here, the model's difference between two configurations, and how far off the
        # model is here, all together
        spread[near] = float(np.hypot(here_sd, _corrected_log_sd())) + off_by
        far_off[near] = off_by > 0
    for k, same, fast, base, found in measured:          # a handful of watched configurations: one mask each
        tps[same] = fast
        setup[same] = statistics.median(r["measured"]["setup_seconds"] for r in found) / 3600.0 + staging[same]
        code[same], runs[same] = 3, len(found)
        spread[same] = here_sd
        far_off[same] = False
    same_data = [r for r in mine if r.get("data") == dkey]
    tokens = (statistics.median(r["measured"]["train_tokens"] for r in same_data) if same_data
              else sw.job.train_tokens)
    touched = (code >= 2) | bool(same_data)
    gpus = o["gpus"].astype(float)
    train_hours = np.where(touched, tokens / (tps * gpus) / 3600.0, o["train_hours"])
    finite = np.isfinite(o["total_hours"])
    o["tokens_per_second_per_gpu"] = tps
    o["setup_hours"] = np.where(finite, setup, o["setup_hours"])
    o["train_hours"] = np.where(finite, train_hours, o["train_hours"])
    # checkpoints (their interval in hours follows the speed), failures, the total and the cost, again
    from .checkpointing import apply

    apply(sw.job, g, o)
    notes = [f"{len(mine)} run{'s' if len(mine) > 1 else ''} watched on this machine with these models: "
             f"{int((code == 3).sum())} configuration(s) measured here"
             + (f", the other {int((code == 2).sum())} on this machine corrected by the measured speed of the "
                f"nearest measured one times the model's own difference (measured/estimated {ratio:.2f})"
                if ratio is not None and (code == 2).any() else "")
             + f"; training time spread here ±{100 * (np.exp(here_sd) - 1):.0f}% (log sd {here_sd:.3f}, from "
             + (f"{len(logs)} runs" if len(logs) >= 2 else "one run") + (" and their steps" if within else "")
             + f", at least {MEASURED_HERE_FLOOR})"]
    if off_by > 0:
        notes.append(f"the model is far off here: measured/estimated speed {ratio:.2f} lies outside "
                     f"{lo:g}-{hi:g}; applied as measured (not clamped), the neighbours' ranges widened")
    if cpu and parallelism and any(speed[id(r)] != r["measured"]["tokens_per_second_per_device"] for r in mine):
        notes.append(f"a run on a loaded machine counted by its CPU time: {_cpu_per_token(mine) * 1e6:,.0f} "
                     f"CPU-µs per token over the {parallelism:.2f} cores an unloaded run of this machine reaches")
    if same_data:
        notes.append(f"token count {tokens:,.0f}, as trained by a watched run of the same data and steps")
    return notes


_OPTION_FIELDS = ("sku", "nodes", "gpus", "adapter", "teacher_mode", "teacher_precision", "recompute", "sharding")


def _corrected_log_sd() -> float:
    from .core import coefficients

    return float(coefficients()["uncertainty"]["corrected_here_log_sd"])


def _cpu_per_token(records: list[dict]) -> float:
    per = [r["measured"]["cpu_seconds"] / (r["measured"]["tokens_per_second_per_device"]
                                           * r["measured"]["training_seconds"])
           for r in records if r["measured"].get("cpu_seconds") and r["measured"].get("training_seconds")]
    return float(statistics.median(per)) if per else float("nan")


def _fields(sw) -> dict[str, np.ndarray]:
    """Each row's option fields, as codes comparable with :func:`_key_codes`."""
    g = sw.grid
    return {"machine": g.extra["machine"], "nodes": g.nodes, "gpus": sw.out["gpus"], "adapter": g.adapter,
            "teacher_mode": g.teacher_mode, "teacher_precision": g.extra["teacher_precision"],
            "recompute": g.recompute, "sharding": g.sharding}


def _recompute_modes() -> tuple:
    """The sweep's recompute modes by code (a grid of true/false: 0 off, 1 full)."""
    from . import core

    return tuple(getattr(core, "RECOMPUTE", ("off", "full")))


def _key_codes(sw, key) -> dict[str, int]:
    from .core import ADAPTERS, TEACHER_MODES
    from .placement import SHARDINGS

    RECOMPUTE = _recompute_modes()

    sku, nodes, gpus, adapter, mode, precision, recompute, sharding = key
    recompute = {True: "full", False: "off"}.get(recompute, recompute)   # a record of a true/false recompute
    labels = sw.labels
    machines = [m.lower() for m in labels["machine"]]

    def index(values, v):
        return list(values).index(v) if v in values else -1

    return {"machine": index(machines, sku), "nodes": int(nodes), "gpus": int(gpus),
            "adapter": index(ADAPTERS, adapter), "teacher_mode": index(TEACHER_MODES, mode),
            "teacher_precision": index(labels["teacher_precision"], precision),
            "recompute": index(RECOMPUTE, recompute), "sharding": index(SHARDINGS, sharding)}


def _distance(sw, key) -> np.ndarray:
    """How many option fields each row differs in from a watched configuration."""
    codes = _key_codes(sw, key)
    return sum((np.asarray(v) != codes[f]).astype(np.int16) for f, v in _fields(sw).items())


def _more_work_than(sw, key) -> np.ndarray:
    """Rows that differ from a watched configuration only by recomputing more (the same work and then some)."""
    RECOMPUTE = _recompute_modes()
    codes, fields = _key_codes(sw, key), _fields(sw)
    same_else = np.ones(len(sw), dtype=bool)
    for f, v in fields.items():
        if f != "recompute":
            same_else &= np.asarray(v) == codes[f]
    work = np.asarray([RECOMPUTE_WORK.get(r, 0) for r in RECOMPUTE])[fields["recompute"].astype(int)]
    return same_else & (work > RECOMPUTE_WORK.get({True: "full", False: "off"}.get(key[6], key[6]), 0))


def _rows_of(sw, key) -> np.ndarray:
    """The sweep's rows of one watched configuration (``option_key``'s order), as a mask."""
    from .core import ADAPTERS, RECOMPUTE, TEACHER_MODES
    from .placement import SHARDINGS

    sku, nodes, gpus, adapter, mode, precision, recompute, sharding = key
    g, labels = sw.grid, sw.labels
    machines = [m.lower() for m in labels["machine"]]
    if sku not in machines or precision not in labels["teacher_precision"] or adapter not in ADAPTERS \
            or mode not in TEACHER_MODES or sharding not in SHARDINGS:
        return np.zeros(len(sw), dtype=bool)
    return ((g.extra["machine"] == machines.index(sku)) & (g.nodes == nodes) & (sw.out["gpus"] == gpus)
            & (g.adapter == ADAPTERS.index(adapter)) & (g.teacher_mode == TEACHER_MODES.index(mode))
            & (g.extra["teacher_precision"] == labels["teacher_precision"].index(precision))
            & (g.recompute == (RECOMPUTE.index(recompute) if recompute in RECOMPUTE else -1))
            & (g.sharding == SHARDINGS.index(sharding)))


def source_of(sw, i: int) -> dict[str, Any]:
    """``{"source": ..., "runs": N}`` for one option, as ``--json`` writes it."""
    return sw.row(i)["calibration"]
