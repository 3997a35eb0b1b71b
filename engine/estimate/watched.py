"""Calibration from the runs this machine watched: every run the engine finishes (or stops) records what it
measured next to what was planned, and the planner uses those records.

A record (one JSON line in ``data_dir()/calibration/runs.jsonl``) holds:

- **where**: a fingerprint of the machine (an Azure VM size; a local accelerator and GPU count; for a CPU, its model
  and core count, since two CPUs differ far more than two A100s), the option the planner chose (VM size, nodes,
  GPUs, adapter, teacher mode and precision, recomputation, sharding), the model shapes, method, sequence length and
  micro-batch;
- **what**: training tokens per second per device, the tokens trained, set-up and teacher-pass seconds, step time,
  peak memory per device, and a key of the data (file, size, epochs, steps, batch) so a run of the same data tells
  its exact token count;
- **against**: the planner's estimate for that run.

How the planner uses them (:func:`calibrate`):

- an option of exactly that configuration on that machine is **measured here (N runs)**: its throughput and set-up
  are the median of the runs', and for the same data its token count is the runs' own;
- other options of the same machine and models are **corrected here**: their modelled throughput is scaled by the
  median ratio of measured to estimated of those runs (bounded to 1/4..4);
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
CORRECTION_BOUNDS = (0.25, 4.0)


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
            option["teacher_mode"], option["teacher_precision"], bool(option["recompute"]), option["sharding"])


def run_key(plan, pair) -> tuple:
    """What must be equal for two runs' speeds to be compared at all."""
    from .shape import shape_of

    teacher = shape_of(pair.teacher) if plan.method.kind != "ce" else None
    return (machine_fingerprint(plan), model_key(shape_of(pair.student)), model_key(teacher), plan.method.kind,
            plan.data.seq_len, plan.adapter.kind, plan.adapter.rank if plan.adapter.kind != "full" else 0)


# ---- writing (the engine, at the end of a run) -------------------------------------------------------------------

def record_run(plan, base: Path | None, estimate: dict, measured: dict, *, status: str, total_tokens: int,
               setup_seconds: float, run_dir: Path) -> dict | None:
    """Append what a run measured; returns the record (None when it measured nothing to learn from)."""
    from ..checks import check_plan

    tps = measured.get("tokens_per_second_per_device")
    steps = int(measured.get("steps") or 0)
    if not tps or steps < 2 or not estimate.get("option"):
        return None
    pair = check_plan(plan, base)
    peaks = [p for p in measured.get("peak_memory_bytes_per_rank") or [] if p]
    rec = {
        "v": 1, "time": round(time.time(), 3), "status": status, "run_dir": str(run_dir),
        "key": list(run_key(plan, pair)), "option": list(option_key(estimate["option"])),
        "data": data_key(plan, base), "micro_batch": plan.training.micro_batch_size,
        "measured": {
            "tokens_per_second_per_device": float(tps),
            "train_tokens": int(total_tokens),
            "steps": steps,
            "training_seconds": float(measured.get("training_seconds") or 0.0),
            "setup_seconds": float(setup_seconds),
            "teacher_pass_seconds": float(measured.get("teacher_pass_seconds") or 0.0),
            "peak_memory_gib_per_device": round(max(peaks) / 1024**3, 4) if peaks else None,
        },
        # the fit's own figure (before any earlier run corrected it): what the next runs' ratio is taken against
        "estimated": {"tokens_per_second_per_gpu": float(estimate.get("model_tokens_per_second_per_gpu")
                                                         or estimate.get("tokens_per_second_per_gpu") or 0.0),
                      "hours": estimate.get("hours"), "memory_gib_per_gpu": estimate.get("memory_gib_per_gpu")},
    }
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
    _trim(path)
    return rec


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
    """Every readable record (a torn or foreign line is skipped)."""
    try:
        lines = store_path().read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("v") == 1 and isinstance(rec.get("measured"), dict):
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

def calibrate(sw, plan, pair, base: Path | None, records: list[dict] | None = None) -> list[str]:
    """Replace the modelled figures of the options these runs measured (and correct their neighbours'), in
    ``sw.out``; add ``calibration`` (codes into :data:`SOURCES`) and ``calibration_runs``. Returns notes."""
    from .core import accelerator_efficiency

    o, g = sw.out, sw.grid
    n = len(sw)
    acc_ok = np.asarray([accelerator_efficiency(a)[1] for a in sw.labels["accelerator"]])[g.extra["accelerator"]]
    cpu = plan.hardware.target == "local" and (plan.hardware.accelerator or "").lower() == "cpu"
    code = np.where(acc_ok & (not cpu), 1, 0).astype(np.int8)
    runs = np.zeros(n, dtype=np.int32)
    o["calibration"], o["calibration_runs"] = code, runs
    o["model_tokens_per_second_per_gpu"] = o["tokens_per_second_per_gpu"].copy()   # what the fit alone says
    records = load_records() if records is None else records
    key = list(run_key(plan, pair))
    mine = [r for r in records if r.get("key") == key]
    if not mine:
        return []
    dkey = data_key(plan, base)
    tps, setup = o["tokens_per_second_per_gpu"].copy(), o["setup_hours"].copy()
    staging = o.get("staging_hours", np.zeros(len(sw)))
    by_option: dict[tuple, list[dict]] = {}
    for r in mine:
        by_option.setdefault(tuple(r["option"]), []).append(r)
    ratios = [r["measured"]["tokens_per_second_per_device"] / r["estimated"]["tokens_per_second_per_gpu"]
              for r in mine if r["estimated"].get("tokens_per_second_per_gpu")]
    ratio = float(np.clip(statistics.median(ratios), *CORRECTION_BOUNDS)) if ratios else None
    # the same machine and models: speed corrected by what the runs found, set-up as measured
    machine_names = [m.lower() for m in sw.labels["machine"]]
    watched_machines = [machine_names.index(k[0]) for k in by_option if k[0] in machine_names]
    if ratio is not None and watched_machines:
        near = np.isin(g.extra["machine"], watched_machines)
        tps = np.where(near, tps * ratio, tps)
        # a watched run's set-up is its nodes' own; staging the models (once, on its own VM) stays as estimated
        setup = np.where(near, statistics.median(r["measured"]["setup_seconds"] for r in mine) / 3600.0 + staging,
                         setup)
        code[near], runs[near] = 2, len(mine)
    for key, found in by_option.items():          # a handful of watched configurations: one mask each
        same = _rows_of(sw, key)
        tps[same] = statistics.median(r["measured"]["tokens_per_second_per_device"] for r in found)
        setup[same] = statistics.median(r["measured"]["setup_seconds"] for r in found) / 3600.0 + staging[same]
        code[same], runs[same] = 3, len(found)
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
             + (f", the other {int((code == 2).sum())} on this machine corrected by the runs' measured/estimated "
                f"speed, {ratio:.2f}"
                if ratio is not None and (code == 2).any() else "")]
    if same_data:
        notes.append(f"token count {tokens:,.0f}, as trained by a watched run of the same data and steps")
    return notes


def _rows_of(sw, key) -> np.ndarray:
    """The sweep's rows of one watched configuration (``option_key``'s order), as a mask."""
    from .core import ADAPTERS, TEACHER_MODES
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
            & (g.recompute == bool(recompute)) & (g.sharding == SHARDINGS.index(sharding)))


def source_of(sw, i: int) -> dict[str, Any]:
    """``{"source": ..., "runs": N}`` for one option, as ``--json`` writes it."""
    return sw.row(i)["calibration"]
