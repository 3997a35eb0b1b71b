"""How often an option checkpoints, what the checkpoints add, and what failures cost with and without them.

For every option of a sweep at once (numpy columns, like the rest of the estimator):

- **size**: what the engine writes. Full training: the fp32 weights and AdamW's two fp32 moments (12 bytes a
  parameter; 8-bit AdamW: 4 + 2.03). LoRA: the adapter and its moments (12 bytes an adapter parameter) and, when
  the student is not sharded, the frozen base as well (accelerate's ``save_state`` writes the whole state dict:
  2 bytes a parameter in bf16, QLoRA's 4-bit base as held); sharded, torch.distributed.checkpoint skips frozen
  parameters.
- **write time** W: the size over the node's local write bandwidth, on one node (replicated: rank 0 writes all)
  or spread over the nodes (sharded: every rank writes its shard), then, on Azure, the copy of it to the output
  datastore (the engine copies each checkpoint file by file into the mounted run folder, its manifest last, before
  training goes on: ``engine/train/checkpoint.py``), so W is the local write plus the copy.
- **failure rate**: per node, hardware faults (Llama 3's fleet figure, per GPU) and, on low priority, evictions;
  the run's mean time between failures M is the node's over the option's nodes.
- **interval** τ by the Young–Daly rule, τ = √(2·W·M), capped at ``[interval] max_hours`` and at half of
  training (every run has a periodic checkpoint to resume from); a plan that fixes
  ``training.checkpoint_every`` in steps keeps its own (0: none but the last).
- **what the checkpoints add**: (number of periodic checkpoints) × W, in time and at the option's price.
- **expected loss**: with checkpoints, each failure costs a restart (set-up again, the checkpoint read back from
  storage) and half a segment; without, a failure loses everything trained so far: for exponential failures the
  expected time to finish T hours of work is (M + R)·(e^{T/M} − 1), so the loss is that less T (≈ T/M·(T/2 + R)
  when T ≪ M). The teacher's own pass is not checkpointed: its loss is counted the second way in both.

The option's time and cost include the checkpoint writes and the expected loss with them.
"""
from __future__ import annotations

import functools
import tomllib
from importlib import resources

import numpy as np

from .core import ADAPTERS, GB, OPTIMIZER_STATE, PRECISIONS, Grid, Job, coefficients, per_row

# out columns this module writes
COLUMNS = ("checkpoint_bytes", "checkpoint_write_hours", "checkpoint_interval_hours", "checkpoint_interval_steps",
           "checkpoint_count", "checkpoint_hours", "mtbf_hours", "failures_expected", "failure_hours",
           "pass_failure_hours", "train_failure_hours", "loss_without_hours", "total_steps")


@functools.lru_cache(maxsize=1)
def figures() -> dict:
    with resources.files("distill_studio.engine.estimate.data").joinpath("checkpointing.toml").open("rb") as f:
        return tomllib.load(f)


def young_daly(write_hours, mtbf_hours):
    """The checkpoint interval that minimises the time lost to writes and to rework: √(2 · W · M) (Young 1974; Daly
    2006's first-order term). Hours in, hours out; an infinite MTBF gives an infinite interval."""
    with np.errstate(invalid="ignore"):
        tau = np.sqrt(2.0 * np.asarray(write_hours, dtype=float) * np.asarray(mtbf_hours, dtype=float))
    return np.where(np.isnan(tau), np.inf, tau)     # nothing to write and no failures: never


def loss_without_checkpoints(work_hours, mtbf_hours, restart_hours):
    """Expected hours lost to failures (rework and restarts) by ``work_hours`` of work with no checkpoint, failures
    exponential with mean ``mtbf_hours``: (M + R)(e^{T/M} − 1) − T."""
    t = np.asarray(work_hours, dtype=float)
    m = np.asarray(mtbf_hours, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(np.isfinite(m) & (m > 0), t / m, 0.0)
        lost = (m + restart_hours) * np.expm1(np.minimum(ratio, 50.0)) - t
    return np.where(ratio > 0, np.maximum(lost, 0.0), 0.0)


def checkpoint_bytes(job: Job, g: Grid, shard) -> np.ndarray:
    """Bytes of one checkpoint as the engine writes it, for every option."""
    mem = coefficients()["memory"]
    P, L = float(job.student.params), float(job.lora_params)
    w_b, _g_b, o_b, cb = PRECISIONS.get(job.precision, PRECISIONS["bf16-mixed"])
    full = w_b * P + OPTIMIZER_STATE.get(job.optimizer, o_b) * P
    adapter = L * (4.0 + OPTIMIZER_STATE.get(job.optimizer, 8.0))
    base = np.where(g.adapter == ADAPTERS.index("qlora"), mem["qlora_bytes_per_param"] * P, cb * P)
    lora = adapter + np.where(np.asarray(shard) > 1, 0.0, base)   # sharded (DCP): frozen parameters skipped
    return np.where(g.adapter == ADAPTERS.index("full"), full, lora)


def _is_local(g: Grid) -> np.ndarray:
    local = g.extra.get("local")
    return np.asarray(local, dtype=bool) if local is not None else np.asarray(g.provision_hours) == 0


def apply(job: Job, g: Grid, o: dict[str, np.ndarray]) -> None:
    """Add the checkpoint and failure columns to ``o`` and recompute ``total_hours`` and ``cost_usd`` from the
    parts (``setup_hours``, ``prepass_hours``, ``train_hours``): called by ``core.evaluate`` and again by whatever
    changes those parts (``watched.calibrate``)."""
    f = figures()
    n = len(g)
    nodes = np.asarray(g.nodes, dtype=float)
    gpn = np.asarray(g.gpus_per_node, dtype=float)
    shard = o["shard_degree"]
    local = _is_local(g)

    size = checkpoint_bytes(job, g, shard)
    writers = np.where(shard > 1, nodes, 1.0)
    per_node = size / writers
    write_h = per_node / (f["storage"]["local_write_gb_per_s"] * GB) / 3600.0
    # the copy to the output datastore: as a smoke job measured the size's write speed, else the assumed figure.
    # Training waits for it (the engine copies before it goes on), so it is part of every checkpoint's time.
    copy_h = per_node / (per_row(g, "blob_copy_gb_per_s", f["storage"]["blob_copy_gb_per_s"]) * GB) / 3600.0
    write_h = write_h + np.where(local, 0.0, copy_h)

    # failures per node-hour: hardware (per GPU) and, on low priority, evictions; none modelled on a local machine
    fail = f["failures"]
    rate = gpn / fail["gpu_mtbf_hours"] + np.where(g.low_priority, fail["low_priority_evictions_per_node_hour"], 0.0)
    rate = np.where(local, 0.0, rate * nodes)
    with np.errstate(divide="ignore"):
        mtbf = np.where(rate > 0, 1.0 / np.where(rate > 0, rate, 1.0), np.inf)

    train = o["train_hours"]
    batch_tokens = o["grad_accum_steps"] * o["micro_batch_seqs"] * o["gpus"] * float(job.seq_len)
    steps = np.maximum(1.0, np.ceil(job.train_tokens / batch_tokens))
    with np.errstate(divide="ignore", invalid="ignore"):
        hours_per_step = np.where(steps > 0, train / steps, 0.0)
    lim = f["interval"]
    if job.checkpoint_every is None:          # the planner's choice on Azure; only the last locally
        top = np.minimum(lim["max_hours"], lim["max_share_of_training"] * train)
        tau = np.maximum(np.minimum(young_daly(write_h, mtbf), top), np.maximum(lim["min_hours"], hours_per_step))
        every = np.maximum(1.0, np.floor(tau / np.where(hours_per_step > 0, hours_per_step, np.inf)))
        every = np.where(local, 0.0, every)
    else:
        every = np.full(n, float(job.checkpoint_every))
    tau = np.where(every > 0, every * hours_per_step, np.inf)
    # periodic checkpoints: every `every` steps, not on the last (the run's end writes its own)
    count = np.where(every > 0, np.ceil(steps / np.where(every > 0, every, 1.0)) - 1.0, 0.0)
    ckpt_h = count * write_h

    staging = o.get("staging_hours", np.zeros(n))     # once, before the first attempt: not part of a restart
    restart = np.maximum(o["setup_hours"] - staging, 0.0)
    pass_loss = loss_without_checkpoints(o["prepass_hours"], mtbf, restart)
    without = loss_without_checkpoints(train, mtbf, restart)
    with np.errstate(invalid="ignore", divide="ignore"):
        failures = np.where(np.isfinite(mtbf), (train + ckpt_h) / mtbf, 0.0)
        segment = np.minimum(tau, train)
        # a failure: set-up again, the checkpoint read back from storage, half a segment of rework
        with_ckpt = failures * (restart + copy_h + (segment + write_h) / 2.0)
    train_loss = np.where(every > 0, np.minimum(with_ckpt, without), without)
    failure_h = pass_loss + train_loss

    o["checkpoint_bytes"] = size
    o["checkpoint_write_hours"] = write_h
    o["checkpoint_interval_hours"] = np.where(every > 0, tau, 0.0)
    o["checkpoint_interval_steps"] = every
    o["checkpoint_count"] = count
    o["checkpoint_hours"] = ckpt_h
    o["mtbf_hours"] = mtbf
    o["failures_expected"] = failures + np.where(np.isfinite(mtbf), o["prepass_hours"] / mtbf, 0.0)
    o["pass_failure_hours"] = pass_loss
    o["train_failure_hours"] = train_loss
    o["failure_hours"] = failure_h
    o["loss_without_hours"] = pass_loss + without
    o["total_steps"] = steps
    o["total_hours"] = o["setup_hours"] + o["prepass_hours"] + train + ckpt_h + failure_h
    # the staging runs on its own small VM: its hours are not the option's node-hours
    o["cost_usd"] = (o["total_hours"] - staging) * nodes * np.asarray(g.usd_per_node_hour, dtype=float) + \
        o.get("staging_usd", np.zeros(n))


def summary(o: dict[str, np.ndarray], i: int, usd_per_hour: float | None) -> dict:
    """One option's checkpointing, as ``Sweep.row`` and ``--json`` give it."""
    def usd(hours: float) -> float | None:
        return None if usd_per_hour is None or not np.isfinite(usd_per_hour) else round(hours * usd_per_hour, 2)

    every = int(o["checkpoint_interval_steps"][i])
    mtbf = float(o["mtbf_hours"][i])
    ckpt, fail, without = (float(o[k][i]) for k in ("checkpoint_hours", "failure_hours", "loss_without_hours"))
    return {
        "interval_hours": round(float(o["checkpoint_interval_hours"][i]), 4) if every else None,
        "interval_steps": every,          # 0: none but the last
        "count": int(o["checkpoint_count"][i]),
        "size_gb": round(float(o["checkpoint_bytes"][i]) / GB, 3),
        "write_hours": float(o["checkpoint_write_hours"][i]),
        "hours": ckpt,                    # what the writes add
        "cost_usd": usd(ckpt),
        "mtbf_hours": mtbf if np.isfinite(mtbf) else None,   # of the run's nodes together; None: not modelled
        "failures_expected": round(float(o["failures_expected"][i]), 3),
        "expected_loss": {"hours": fail, "cost_usd": usd(fail)},          # with these checkpoints (in the total)
        "expected_loss_without": {"hours": without, "cost_usd": usd(without)},
    }
