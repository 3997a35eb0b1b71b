"""Split-hardware options: the teacher's own pass (offline top-k caching, or seq-KD generation) on one set of nodes,
the student's training on another, the cache handed over through storage.

The teacher's pass is forward-only (or decoding) work on the big model, which wants memory and bandwidth; training
the small student wants neither. A split option runs them as two stages, each on the hardware that suits it: for
example the pre-pass on 2 × ND96isr H100 v5, then training on 4 × NC24ads A100 v4. What the split adds:

- each stage provisions its own nodes and loads only its own model (the teacher for the pass, the student for
  training);
- the cache goes through storage: tokens × k × 6 bytes for top-k (fp16 log-prob + int32 id per kept entry), the
  generated text for seq-KD. The pass's nodes write it (in parallel, each its shards), every training node reads it
  all (its ranks read examples from every shard), at ``[time] cache_transfer_gb_per_s`` per node (a size a smoke job
  measured: the smaller of its data read and output write, ``estimate/smoke_records.py``); the storage itself
  is billed per GB-month for the hours the run takes;
- the two stages run one after the other: time is their sum, cost is each stage's node-hours at its own price.

Every pair is not kept: a split option can only be on the cost/time front if each of its stages is on its own
stage's front, so the pairs are made from the per-stage Pareto fronts (per adapter, teacher mode, priority and
teacher precision), which keeps the sweep to a few thousand extra rows. A pair on the same size and node count is
the single-hardware option plus a transfer, never better, and is left out.

The rows are appended to the sweep: their grid columns are the training stage's (so the memory, throughput, MFU,
sharding and calibration shown are training's), ``grid.extra["pass_row"]`` points at the row whose teacher's pass
they use (-1 on single-hardware rows) and ``out`` gains ``transfer_hours``, ``pass_stage_hours``, ``cache_bytes``
and ``usd_per_hour`` (the blended rate, for ranges).
"""
from __future__ import annotations

import numpy as np

from .checkpointing import loss_without_checkpoints
from .core import GB, TEACHER_MODES, Job, coefficients, per_row
from .sweep import Sweep, pareto_front

PASS_MODES = (TEACHER_MODES.index("offline-topk"), TEACHER_MODES.index("generate"))


def cache_bytes(job: Job, mode: int) -> float:
    """Bytes the teacher's pass hands to training: the top-k cache or the generated text."""
    c = coefficients()["time"]
    if mode == TEACHER_MODES.index("offline-topk"):
        return job.tokens_per_epoch * job.top_k * 6.0
    if mode == TEACHER_MODES.index("generate"):
        return job.tokens_per_epoch * job.generated_share * c["generated_bytes_per_token"]
    return 0.0


def _stages(sw: Sweep) -> dict[str, np.ndarray]:
    """Every row's two stages as if each ran alone on its hardware: hours and cost of the teacher's pass (set-up,
    the pass, writing the cache) and of training (set-up, reading the cache, training, checkpoints)."""
    g, o, job = sw.grid, sw.out, sw.job
    tm = coefficients()["time"]
    load = tm["storage_read_gb_per_s"] * GB * 3600.0        # from the workspace's storage (staged models)
    # per node, each row's size as a smoke job measured it (the smaller of read and write), else the assumed figure
    rate = per_row(g, "cache_transfer_gb_per_s", tm["cache_transfer_gb_per_s"]) * GB * 3600.0
    nbytes = np.zeros(len(sw))
    for mode in PASS_MODES:
        nbytes = np.where(g.teacher_mode == mode, cache_bytes(job, mode), nbytes)
    node_rate = g.nodes * g.usd_per_node_hour
    pass_setup = g.provision_hours + 2.0 * job.teacher.params / load
    upload = nbytes / (rate * g.nodes)
    # the pass is not checkpointed: a failure in it (or in the upload) starts it again (estimate/checkpointing.py)
    pass_loss = loss_without_checkpoints(o["prepass_hours"] + upload, o["mtbf_hours"], pass_setup)
    pass_hours = pass_setup + o["prepass_hours"] + upload + pass_loss
    download = nbytes / rate
    train_setup = g.provision_hours + 2.0 * job.student.params / load
    train_hours = train_setup + download + o["train_hours"] + o["checkpoint_hours"] + o["train_failure_hours"]
    return {"bytes": nbytes, "pass_setup": pass_setup, "upload": upload, "pass_loss": pass_loss,
            "pass_hours": pass_hours, "pass_cost": pass_hours * node_rate, "train_setup": train_setup,
            "download": download, "train_hours": train_hours, "train_cost": train_hours * node_rate}


def stage_hours(sw: Sweep, i: int) -> dict[str, dict[str, float]]:
    """A split option's time by stage, each as ``Sweep.row``'s "hours": {"teacher": ..., "student": ...}."""
    o = sw.out
    setup_pass, upload = float(o["pass_setup_hours"][i]), float(o["upload_hours"][i])
    teacher = {"setup": setup_pass, "teacher_pass": float(o["prepass_hours"][i]), "training": 0.0,
               "checkpoints": 0.0, "failures": float(o["pass_failure_hours"][i]), "cache_transfer": upload,
               "total": float(o["pass_stage_hours"][i])}
    student = {"setup": float(o["setup_hours"][i]) - setup_pass, "teacher_pass": 0.0,
               "training": float(o["train_hours"][i]), "checkpoints": float(o["checkpoint_hours"][i]),
               "failures": float(o["train_failure_hours"][i]),
               "cache_transfer": float(o["transfer_hours"][i]) - upload,
               "total": float(o["total_hours"][i] - o["pass_stage_hours"][i])}
    return {"teacher": teacher, "student": student}


def add_split_options(sw: Sweep, pass_ok: np.ndarray, train_ok: np.ndarray) -> int:
    """Append the split options made from rows ``pass_ok`` (may run the teacher's pass) and ``train_ok`` (may run
    training) to ``sw``; returns how many were added."""
    g, o, job = sw.grid, sw.out, sw.job
    n0 = len(sw)
    g.extra.setdefault("pass_row", np.full(n0, -1, dtype=np.int64))
    for key in ("transfer_hours", "pass_stage_hours", "pass_setup_hours", "upload_hours", "cache_bytes"):
        o.setdefault(key, np.zeros(n0))
    o.setdefault("usd_per_hour", g.nodes * g.usd_per_node_hour)
    if job.teacher is None or len(sw.labels["machine"]) < 1:
        return 0
    st = _stages(sw)
    available = o.get("available", np.ones(n0, dtype=bool))
    finite = np.isfinite(st["pass_cost"]) & np.isfinite(st["train_cost"])
    pass_ok = pass_ok & o["fits_prepass"] & available & finite & np.isfinite(o["prepass_hours"])
    train_ok = train_ok & o["fits_train"] & available & finite
    machine, prio, prec = g.extra["machine"], g.extra["priority"], g.extra["teacher_precision"]
    pairs_p, pairs_t = [], []
    for mode in PASS_MODES:
        in_mode = g.teacher_mode == mode
        for p in np.unique(prio):
            for tp in np.unique(prec):
                group = in_mode & (prio == p) & (prec == tp)
                passes = pareto_front(st["pass_hours"], st["pass_cost"], group & pass_ok)
                if passes.size == 0:
                    continue
                for ad in np.unique(g.adapter):
                    trains = pareto_front(st["train_hours"], st["train_cost"], group & train_ok & (g.adapter == ad))
                    if trains.size == 0:
                        continue
                    pp, tt = (a.ravel() for a in np.meshgrid(passes, trains, indexing="ij"))
                    other = (machine[pp] != machine[tt]) | (g.nodes[pp] != g.nodes[tt])
                    pairs_p.append(pp[other])
                    pairs_t.append(tt[other])
    if not pairs_p:
        return 0
    pp, tt = np.concatenate(pairs_p), np.concatenate(pairs_t)
    if pp.size == 0:
        return 0
    # the training row, copied: what the option trains on and how
    for name, value in list(vars(g).items()):
        if isinstance(value, np.ndarray) and value.shape[:1] == (n0,):
            setattr(g, name, np.concatenate([value, value[tt]]))
    for name, value in list(g.extra.items()):
        g.extra[name] = np.concatenate([value, value[tt]])
    g.extra["pass_row"][n0:] = pp
    for name, value in list(o.items()):
        if isinstance(value, np.ndarray) and value.shape[:1] == (n0,):
            o[name] = np.concatenate([value, value[tt]])
    new = slice(n0, None)
    tm = coefficients()["time"]
    staging = o["staging_hours"][new]              # the training row's (copied): staged once, before the pass
    o["setup_hours"][new] = st["pass_setup"][pp] + st["train_setup"][tt] + staging
    o["prepass_hours"][new] = o["prepass_hours"][pp]
    o["transfer_hours"][new] = st["upload"][pp] + st["download"][tt]
    # training's checkpoint columns are the training row's (copied above); failures: each stage's own
    o["pass_failure_hours"][new] = st["pass_loss"][pp]
    o["failure_hours"][new] = st["pass_loss"][pp] + o["train_failure_hours"][new]
    o["loss_without_hours"][new] = st["pass_loss"][pp] + o["loss_without_hours"][tt] - o["pass_failure_hours"][tt]
    o["failures_expected"][new] = o["failures_expected"][tt] - o["prepass_hours"][tt] / o["mtbf_hours"][tt] + (
        (o["prepass_hours"][pp] + st["upload"][pp]) / o["mtbf_hours"][pp])
    o["pass_stage_hours"][new] = st["pass_hours"][pp]
    o["pass_setup_hours"][new] = st["pass_setup"][pp]
    o["upload_hours"][new] = st["upload"][pp]
    o["cache_bytes"][new] = st["bytes"][pp]
    total = st["pass_hours"][pp] + st["train_hours"][tt] + staging
    o["total_hours"][new] = total
    storage = st["bytes"][pp] / GB * tm["storage_usd_per_gb_month"] * total / 730.0
    cost = st["pass_cost"][pp] + st["train_cost"][tt] + storage + o["staging_usd"][new]
    o["cost_usd"][new] = cost
    o["usd_per_hour"][new] = (cost - o["staging_usd"][new]) / (total - staging)   # the nodes' blended rate
    o["fits_prepass"][new] = True
    o["fits"][new] = True
    return int(pp.size)
