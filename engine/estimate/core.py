"""Time, memory and cost of a distillation job on many hardware options at once.

Every function works on numpy arrays: one element per configuration (accelerator, node count, adapter, teacher
mode, recomputation, ...), so a sweep of tens of thousands of options is a few array operations.

The model, in brief (docs/estimator.md has the derivations):
- per trained token the student costs 6N FLOPs (4N with a frozen base under LoRA; +2N when activations are
  recomputed in full, nothing more under selective recomputation, which keeps the matmul outputs and re-runs only
  the elementwise work), the online teacher 2N_t; attention adds its own term;
- a step's compute time is FLOPs over peak x efficiency, where efficiency comes from the calibrated fit in
  ``data/throughput.toml``; memory-bound work moves at HBM bandwidth; FSDP's collectives hide behind compute up to
  an overlap share, the rest is added;
- memory per GPU sums sharded weights, gradients and optimiser states, activations (one micro-batch), logits
  (chunked or not) and the KD loss's temporaries, the teacher's weights and a runtime overhead; ``Job.precision``
  says in which number formats (mixed bf16 by default, pure bf16 as the engine trains on a GPU, fp32 on a CPU).
"""
from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .placement import SHARDINGS, shard_degree, teacher_replicated
from .shape import ModelShape

GIB = 1024**3
GB = 1e9

ADAPTERS = ("full", "lora", "qlora")
TEACHER_MODES = ("none", "online", "offline-topk", "generate")
# activation recomputation of the student's layers (training.recompute; engine/train/recompute.py)
RECOMPUTE = ("off", "full", "selective")
TEACHER_BYTES = {"bf16": 2.0, "int8": 1.0, "int4": 0.55}
# Job.precision -> bytes per parameter of a fully trained model's (weights, gradients, AdamW moments), and bytes of
# a number in the compute dtype (activations, a frozen or bf16 teacher's weights, FSDP's gathered blocks).
# "bf16-mixed": fp32 master weights, gradients and moments, bf16 compute (FSDP mixed precision; what the published
# measurements of the calibration and the planner assume). "bf16": every tensor in bf16, the optimiser's moments
# included (what the engine does on a GPU: it loads the models in bf16 and gives their parameters to AdamW).
# "fp32": every tensor in fp32 (the engine on a CPU, models.train_dtype). LoRA adapters and their moments stay fp32
# (peft keeps adapters in fp32). Precision changes the memory model only; the time model is bf16's (calibrated).
PRECISIONS = {"bf16-mixed": (4.0, 4.0, 8.0, 2.0), "bf16": (2.0, 2.0, 4.0, 2.0), "fp32": (4.0, 4.0, 8.0, 4.0)}
# Bytes of AdamW state per trained parameter where the optimiser sets it, whatever the precision: bitsandbytes'
# 8-bit AdamW keeps both moments as uint8 with one fp32 scale per block of 256 values (blockwise quantisation).
OPTIMIZER_STATE = {"adamw-8bit": 2.0 + 2 * 4.0 / 256}
# On a CPU the engine's fused loss keeps each [rows, V] fp32 temporary under this many bytes (train/losses.py, which
# reads it from here, and docs/engine.md say why): fewer rows per chunk than logits_chunk_tokens at a large vocabulary.
CPU_LOSS_CHUNK_BYTES = 24 << 20


def loss_chunk_rows(chunk_tokens: int, vocab: int, value_bytes: int = 4, cpu: bool = False) -> int:
    """Rows of the loss's chunks, as the engine takes them."""
    return max(1, min(chunk_tokens, CPU_LOSS_CHUNK_BYTES // (vocab * value_bytes))) if cpu else chunk_tokens


@functools.lru_cache(maxsize=1)
def coefficients() -> dict:
    with resources.files("distill_studio.engine.estimate.data").joinpath("throughput.toml").open("rb") as f:
        return tomllib.load(f)


def accelerator_efficiency(accelerator_id: str, coeffs: dict | None = None) -> tuple[float, bool]:
    """Fraction of peak a very wide model's matmuls reach on this accelerator, and whether it is calibrated."""
    c = coeffs or coefficients()
    entry = c["accelerators"].get(accelerator_id, {"family": "h100", "ratio": 0.8, "calibrated": False})
    return c["fit"]["matmul_efficiency"][entry["family"]] * entry["ratio"], bool(entry.get("calibrated", False))


def forward_ratio(coeffs: dict | None = None) -> float:
    """Matmul efficiency of a forward-only pass (the teacher's) over the training fit's: ``[forward_fit]``, fitted on
    published prefill measurements by ``benchmarks/calibrate_teacher_pass.py``."""
    c = coeffs or coefficients()
    return float(c["forward_fit"]["efficiency_ratio"])


def forward_seconds_per_token(shape: ModelShape, seq_len, peak_flops, efficiency, hbm_bytes_per_s,
                              coeffs: dict | None = None, *, matmul_params: float | None = None, slowdown=1.0):
    """Seconds one GPU takes for a forward-only pass over one token (numpy-friendly): the teacher's, online and in
    the offline top-k pass. The 2N matmul FLOPs and the attention at the forward fit's efficiency (``efficiency``
    is the accelerator's training efficiency, as in the grid; ``slowdown`` a quantised teacher's), plus the
    memory-bound third of a training step's traffic at HBM bandwidth. ``matmul_params`` replaces the shape's own
    (a prefill measurement runs the head for one token only: estimate/forward_calibration.py)."""
    c = coeffs or coefficients()
    fit = c["fit"]
    eff = np.asarray(efficiency, dtype=float) * forward_ratio(c)
    lin = 2.0 * float(shape.matmul_params if matmul_params is None else matmul_params)
    attn = np.asarray(shape.attention_flops_fwd(seq_len), dtype=float)
    peak = np.asarray(peak_flops, dtype=float)
    compute = lin / (peak * eff) + attn / (peak * eff * fit["attention_ratio"])
    return compute * slowdown + (fit["memory_bytes_per_token_layer_hidden"] / 3.0 * shape.num_layers
                                 * shape.hidden_size / np.asarray(hbm_bytes_per_s, dtype=float))




@dataclass(frozen=True)
class Job:
    """What is trained, on how much data: the scalars shared by every configuration of a sweep."""

    student: ModelShape
    teacher: ModelShape | None
    method: str                   # "logit-kd" | "seq-kd" | "ce"
    seq_len: int
    tokens_per_epoch: float
    epochs: float
    global_batch_tokens: int
    lora_params: int = 0          # LoRA parameters for the student at the plan's rank
    top_k: int = 64
    generated_share: float = 0.8
    chunked_logits: bool = True
    micro_batch_seqs: int | None = None  # fixed micro-batch (sequences); None: chosen from the memory target
    precision: str = "bf16-mixed"  # number formats of training: a key of PRECISIONS
    kd_loss: str = "forward-kl"   # the divergence of logit KD: "forward-kl" | "reverse-kl" | "jsd"
    teacher_placement: str = "auto"  # "auto" | "sharded" | "replicated" (placement.teacher_replicated)
    sharding_auto: bool = True    # the plan leaves the sharding to the planner (placement.teacher_replicated)
    optimizer: str = "adamw"      # "adamw" | "adamw-8bit" (bitsandbytes: both moments in 8 bits, OPTIMIZER_STATE)
    cpu: bool = False             # the engine on a CPU: the loss's chunks are also bounded by CPU_LOSS_CHUNK_BYTES
    max_tokens: float | None = None  # training.max_steps × the global batch: the run stops there
    counted_train_tokens: float | None = None  # the run's tokens counted from its data with the tokenizer, as the run
                                               # counts them (data_scan.count_plan_tokens); None: from the two above
    checkpoint_every: int | None = None  # steps between checkpoints as the plan fixes them (0: only the last);
                                         # None: the planner's choice on Azure (estimate/checkpointing.py)
    staging_bytes: float = 0.0    # Azure: bytes of the plan's hub models not staged in the workspace yet, which a
                                  # staging job downloads once before training (staging_hours)

    @property
    def train_tokens(self) -> float:
        if self.counted_train_tokens is not None:
            return self.counted_train_tokens
        tokens = self.tokens_per_epoch * self.epochs
        return min(tokens, self.max_tokens) if self.max_tokens else tokens


@dataclass
class Grid:
    """One row per configuration. Arrays of equal length."""

    peak_flops: np.ndarray        # dense bf16 (or fp8) FLOP/s per GPU
    hbm_bytes: np.ndarray
    hbm_bytes_per_s: np.ndarray
    efficiency: np.ndarray        # accelerator's matmul efficiency (from the fit)
    gpus_per_node: np.ndarray
    nodes: np.ndarray
    intra_bytes_per_s: np.ndarray  # per GPU, inside a node
    inter_bytes_per_s: np.ndarray  # per node, between nodes (0: none)
    adapter: np.ndarray           # index into ADAPTERS
    teacher_mode: np.ndarray      # index into TEACHER_MODES
    recompute: np.ndarray         # index into RECOMPUTE (a bool column reads as off / full)
    teacher_bytes_per_param: np.ndarray
    sharding: np.ndarray          # index into placement.SHARDINGS: none (DDP), within-node (hybrid), all-gpus
    provision_hours: np.ndarray
    usd_per_node_hour: np.ndarray  # nan where the price is unknown
    low_priority: np.ndarray      # bool
    linear_speedup: np.ndarray | None = None  # fp8 matmuls: speed-up of the linear layers over bf16 (None: 1)
    extra: dict = field(default_factory=dict)  # labels (sku ids, ...) carried along for reports

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def shard_all(self) -> np.ndarray:
        """FSDP over every GPU (full sharding)."""
        return self.sharding == SHARDINGS.index("all-gpus")


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def per_row(g: Grid, key: str, default: float):
    """A coefficient per option: the grid's column ``key`` (``Grid.extra``: a smoke job's figure for the option's
    size, NaN where none) with ``default`` in its gaps; ``default`` alone when the grid has no such column."""
    col = g.extra.get(key)
    if col is None:
        return default
    return np.where(np.isnan(col), default, col)


def evaluate(job: Job, g: Grid, coeffs: dict | None = None) -> dict[str, np.ndarray]:
    """Throughput, memory, time and cost of every configuration in ``g``."""
    c = coeffs or coefficients()
    fit, comm, mem, speed, tm = c["fit"], c["communication"], c["memory"], c["speed"], c["time"]
    s, t = job.student, job.teacher
    n = len(g)
    gpus = _f(g.gpus_per_node) * _f(g.nodes)
    shard = shard_degree(g.sharding, g.nodes, g.gpus_per_node)
    full = g.adapter == 0
    qlora = g.adapter == 2
    online = g.teacher_mode == 1
    rc_mode = np.asarray(g.recompute).astype(np.int8)
    rc_full = rc_mode == RECOMPUTE.index("full")
    rc_selective = rc_mode == RECOMPUTE.index("selective")
    seq = float(job.seq_len)

    # --- micro-batch: enough sequences for ~target tokens, no more than one GPU's share of the global batch
    seqs_per_gpu_step = np.maximum(1.0, np.ceil(job.global_batch_tokens / (gpus * seq)))
    if job.micro_batch_seqs:
        micro_seqs = np.minimum(seqs_per_gpu_step, float(job.micro_batch_seqs))
    else:
        micro_seqs = np.minimum(seqs_per_gpu_step, max(1.0, np.floor(mem["microbatch_target_tokens"] / seq)))
    accum = np.ceil(seqs_per_gpu_step / micro_seqs)
    mb_tokens = micro_seqs * seq

    # --- FLOPs per trained token
    attn_fwd = float(s.attention_flops_fwd(seq))
    lin = s.matmul_params
    # Full recomputation re-runs each layer's forward: +2N, and attention's forward again. Selective keeps the
    # matmul and attention outputs, so recomputes none of them; a grid column "recompute_matmul_share" says what
    # share of the matmuls a selective policy recomputes all the same (calibration: torchtitan's op policy
    # recomputes every second one; the engine's policy none).
    lin_recomputed = np.where(rc_full, 1.0, np.where(rc_selective, per_row(g, "recompute_matmul_share", 0.0), 0.0))
    lin_flops = np.where(full, 6.0 * lin, 4.0 * lin + 6.0 * job.lora_params) + 2.0 * lin * lin_recomputed
    attn_flops = 3.0 * attn_fwd + np.where(rc_full, attn_fwd, 0.0)
    # MFU counts the FLOPs the method needs (no recomputation): 6N for full training, 4N + adapter under LoRA.
    model_flops = np.where(full, 6.0 * lin, 4.0 * lin + 6.0 * job.lora_params) + 3.0 * attn_fwd
    if t is not None:
        t_attn = float(t.attention_flops_fwd(seq))
        t_lin = 2.0 * t.matmul_params
        quant_slow = np.select(
            [g.teacher_bytes_per_param <= 0.6, g.teacher_bytes_per_param <= 1.0],
            [speed["teacher_int4_slowdown"], speed["teacher_int8_slowdown"]],
            1.0,
        )
    else:
        t_attn, t_lin, quant_slow = 0.0, 0.0, np.ones(n)

    # --- compute time per token on one GPU
    eff_lin = _f(g.efficiency)
    eff_attn = _f(g.efficiency) * fit["attention_ratio"]
    peak = _f(g.peak_flops)
    lin_time = lin_flops / (peak * eff_lin) * np.where(qlora, speed["qlora_slowdown"], 1.0)
    if g.linear_speedup is not None:
        lin_time = lin_time / _f(g.linear_speedup)
    attn_time = attn_flops / (peak * eff_attn)
    membound = fit["memory_bytes_per_token_layer_hidden"] * s.num_layers * s.hidden_size / _f(g.hbm_bytes_per_s)
    # either recomputation re-runs the forward's elementwise work (norms, activations, rotary, casts): a share of
    # the step's memory-bound time ([speed] recompute_memory_share, from published pairs of runs that differ only in
    # their recomputation; docs/estimator.md, "Recomputation")
    membound = membound * np.where(rc_full | rc_selective, 1.0 + speed["recompute_memory_share"], 1.0)
    student_time = lin_time + attn_time + membound
    if t is not None:
        # the teacher's forward (online, and the offline top-k pass) at the forward fit's efficiency, fitted on
        # published prefill measurements, not the training fit's (docs/estimator.md, "The teacher's pass")
        teacher_fwd_time = forward_seconds_per_token(t, seq, peak, g.efficiency, g.hbm_bytes_per_s, c,
                                                     slowdown=quant_slow)
    else:
        teacher_fwd_time = np.zeros(n)
    compute_per_token = student_time + np.where(online, teacher_fwd_time, 0.0)
    # the online teacher's share of a step's compute: its part of the training hours, which ranges.py gives the
    # teacher pass's spread (the student's part keeps the training spread)
    teacher_share = np.where(online, teacher_fwd_time / compute_per_token, 0.0)

    # --- FSDP communication per micro-batch, hidden behind compute up to `overlap`. A collective over a group
    # moves the whole tensor through each GPU's NVLink/IF ((k-1)/k of it) and, when the group spans nodes, through
    # each node's network ((N-1)/N of it, spread over the node's NICs); the slower of the two sets the pace.
    gpn = _f(g.gpus_per_node)
    in_node = np.minimum(shard, gpn)
    group_nodes = np.maximum(shard / gpn, 1.0)
    intra_s = np.where(in_node > 1, (in_node - 1.0) / in_node / np.maximum(_f(g.intra_bytes_per_s), 1.0), 0.0)
    inter_s = np.where(group_nodes > 1, (group_nodes - 1.0) / group_nodes / np.maximum(_f(g.inter_bytes_per_s), 1.0), 0.0)
    seconds_per_byte = np.maximum(intra_s, inter_s) / comm["bus_efficiency"]
    # per micro-batch: all-gather forward and backward (bf16), reduce-scatter of gradients (bf16); a replicated
    # teacher needs no collective (decided with the memory below, so computed after it)
    student_bytes = np.where(full, 6.0, np.where(qlora, 2.0 * 0.55, 4.0)) * s.params
    # across replicas (DDP, or hybrid sharding's replicas): an all-reduce of the gradients once per step, through
    # NVLink between the replicas of a node and the network between nodes; the slower sets the pace
    rep_in_node = gpn / in_node
    rep_nodes = np.where(shard > gpn, 1.0, _f(g.nodes))
    replica_s = 2.0 * np.maximum(
        np.where(rep_in_node > 1, (rep_in_node - 1.0) / rep_in_node / np.maximum(_f(g.intra_bytes_per_s), 1.0), 0.0),
        np.where(rep_nodes > 1, (rep_nodes - 1.0) / rep_nodes / np.maximum(_f(g.inter_bytes_per_s), 1.0), 0.0))
    # DDP (no sharding) all-reduces the fp32 gradients the engine keeps; hybrid sharding's replicas as fitted
    grad_bytes = np.where(shard <= 1, 4.0, 2.0)
    comm_replicas = np.where(full, grad_bytes * s.params, grad_bytes * job.lora_params) * replica_s / comm["bus_efficiency"]
    # --- memory per GPU (bytes)
    P = float(s.params)
    if job.precision not in PRECISIONS:
        raise ValueError(f"Job.precision must be one of {', '.join(PRECISIONS)}, not {job.precision!r}")
    w_b, g_b, o_b, cb = PRECISIONS[job.precision]
    weights = np.select([full, qlora], [w_b * P, mem["qlora_bytes_per_param"] * P], cb * P) / shard
    gathered = np.where(shard > 1, 2.0 * cb, 0.0)  # FSDP holds two blocks gathered (current + prefetch)
    # the root group (embeddings, final norm, head) stays gathered through the micro-step: the chunked loss reads
    # the head in forward and in backward
    s_root = max(0.0, P - s.num_layers * s.layer_params)
    weights = weights + job.lora_params * 4.0 / shard + gathered * s.layer_params + np.where(shard > 1, cb * s_root, 0.0)
    grads = np.where(full, g_b * P, 4.0 * job.lora_params) / shard
    o_lora = OPTIMIZER_STATE.get(job.optimizer, 8.0)
    optimizer = np.where(full, OPTIMIZER_STATE.get(job.optimizer, o_b) * P, o_lora * job.lora_params) / shard
    act_layer = float(s.act_bytes_per_token_layer) * cb / 2.0  # the shape's figure is for bf16
    # full: each layer keeps its input, and backward holds one layer's activations while it recomputes it;
    # selective: each layer keeps its matmul and attention outputs (and its input), and backward holds the rest
    # of one layer's while it recomputes them (shape.selective_activation_bytes_per_token_layer)
    act_kept = float(s.act_selective_bytes_per_token_layer or s.act_bytes_per_token_layer) * cb / 2.0
    activations = np.select(
        [rc_full, rc_selective],
        [mb_tokens * (s.num_layers * cb * s.hidden_size + act_layer),
         mb_tokens * (s.num_layers * act_kept + (act_layer - act_kept))],
        mb_tokens * s.num_layers * act_layer,
    )
    usable = _f(g.hbm_bytes) * mem["usable_fraction"]
    chunk_rows = loss_chunk_rows(int(mem["logits_chunk_tokens"]), s.vocab_size, cpu=job.cpu)
    logit_tokens = np.minimum(mb_tokens, chunk_rows) if job.chunked_logits else mb_tokens
    logits = logit_tokens * s.vocab_size * mem["student_logit_bytes"]
    # a bf16 teacher is held in the compute dtype (fp32 when training in fp32); a quantised one as quantised
    t_bytes = np.where(g.teacher_bytes_per_param >= TEACHER_BYTES["bf16"], cb, _f(g.teacher_bytes_per_param))
    if t is not None:
        logits = logits + np.where(online, logit_tokens * t.vocab_size * mem["teacher_logit_bytes"], 0.0)
        cached = np.where(g.teacher_mode == 2, mb_tokens * job.top_k * 6.0, 0.0)  # fp16 log-prob + int32 id
        logits = logits + cached
        # The divergence against an online teacher's full distribution has [tokens, V] fp32 temporaries of its own
        # beside the logits and log-softmaxes above (exp(log p), log p - log q, their product; jsd's mixture), and
        # without chunking autograd keeps more of them for backward. Measured: benchmarks/bench_memory.py.
        if job.kd_loss not in mem["kd_temporary_bytes"]:
            raise ValueError(f"Job.kd_loss must be one of {', '.join(mem['kd_temporary_bytes'])}, not {job.kd_loss!r}")
        kd_bytes = mem["kd_temporary_bytes"][job.kd_loss] + (0.0 if job.chunked_logits else mem["kd_unchunked_extra_bytes"])
        loss_temporaries = np.where(online, logit_tokens * min(s.vocab_size, t.vocab_size) * kd_bytes, 0.0)
        # The teacher whole, or sharded like the student. Sharded, its root group (embeddings, final norm, head)
        # stays gathered for the whole micro-step (the chunked loss reads the head in forward and backward) and one
        # block at a time is gathered for its forward.
        t_full = t_bytes * t.params
        t_root = t_bytes * max(0, t.params - t.num_layers * t.layer_params)
        t_sharded = t_full / shard + np.where(shard > 1, t_root + t_bytes * t.layer_params, 0.0)
        rest = weights + grads + optimizer + activations + logits + loss_temporaries
        fits_whole = (rest + t_full) * (1.0 + mem["fragmentation"]) + mem["runtime_overhead_gib"] * GIB <= usable
        # a quantised teacher (bitsandbytes) cannot be sharded: it is always whole on every GPU
        quantised = _f(g.teacher_bytes_per_param) < TEACHER_BYTES["bf16"]
        t_replicated = teacher_replicated(shard, job.teacher_placement, job.sharding_auto, fits_whole) | quantised
        teacher_weights = np.where(online, np.where(t_replicated, t_full, t_sharded), 0.0)
    else:
        teacher_weights = np.zeros(n)
        loss_temporaries = np.zeros(n)
        t_replicated = np.ones(n, dtype=bool)
    base = weights + grads + optimizer + activations + logits + loss_temporaries + teacher_weights
    overhead = mem["runtime_overhead_gib"] * GIB + mem["fragmentation"] * base
    total = base + overhead
    fits_train = total <= usable

    # --- the teacher's own pass before training: offline top-k (a forward over the data once) or generation
    prepass_hours = np.zeros(n)
    fits_prepass = np.ones(n, dtype=bool)
    if t is not None:
        pass_logits = np.minimum(mb_tokens, mem["logits_chunk_tokens"]) * t.vocab_size * mem["teacher_logit_bytes"]
        pass_fixed = mem["runtime_overhead_gib"] * GIB + pass_logits
        topk = g.teacher_mode == 2
        # the pre-pass holds only the teacher: replicated where it fits one GPU alone (plain data parallel)
        pass_replicated = teacher_replicated(shard, job.teacher_placement, job.sharding_auto,
                                             t_full + pass_fixed <= usable) | quantised
        gen = g.teacher_mode == 3
        # generation too runs before the student is on the GPU: the teacher alone, placed the same way
        t_replicated = np.where(topk | gen, pass_replicated, t_replicated)
        prepass_mem = np.where(pass_replicated, t_full, t_sharded) + pass_fixed
        fits_prepass &= ~topk | (prepass_mem <= usable)
        prepass_hours = np.where(topk, job.tokens_per_epoch * teacher_fwd_time / gpus / 3600.0, 0.0)

        gen_hours, gen_fits = _generation(job, t, g, usable, speed, mem,
                                          held=np.where(pass_replicated, t_full, t_sharded),
                                          replicated=pass_replicated, seconds_per_byte=seconds_per_byte,
                                          fwd_ratio=forward_ratio(c))
        prepass_hours = np.where(gen, gen_hours, prepass_hours)
        fits_prepass &= ~gen | gen_fits

    # --- time per step: compute, plus what FSDP's collectives cannot hide behind it
    teacher_bytes = np.where(online & ~t_replicated, _f(g.teacher_bytes_per_param) * (t.params if t else 0), 0.0)
    comm_mb = (student_bytes + teacher_bytes) * seconds_per_byte
    compute_mb = compute_per_token * mb_tokens
    exposed_mb = np.maximum(0.0, comm_mb - comm["overlap"] * compute_mb)
    step_time = accum * (compute_mb + exposed_mb) + comm_replicas
    tokens_per_s_gpu = accum * mb_tokens / step_time
    # the online teacher's forward is work the method needs too
    needed_flops = model_flops + np.where(online, (t_lin + t_attn) if t is not None else 0.0, 0.0)
    mfu = tokens_per_s_gpu * needed_flops / peak


    train_hours = job.train_tokens / (tokens_per_s_gpu * gpus) / 3600.0
    # --- set-up; checkpoints and failures are added by estimate/checkpointing.py (below). An Azure node reads the
    # weights from the workspace's blob storage (the models staged there once, staging_hours); a local one from disk
    load_bytes = 2.0 * P + (2.0 * t.params if t is not None else 0.0)
    local = np.asarray(g.extra.get("local", _f(g.provision_hours) == 0), dtype=bool)
    read_gb_per_s = np.where(local, tm["weight_load_gb_per_s"], tm["storage_read_gb_per_s"])
    staging = np.where(local, 0.0, staging_hours(job.staging_bytes, tm))
    setup_hours = _f(g.provision_hours) + load_bytes / (read_gb_per_s * GB) / 3600.0 + staging

    out = {
        "tokens_per_second_per_gpu": tokens_per_s_gpu,
        "mfu": mfu,
        "gpus": gpus,
        "shard_degree": shard,
        "teacher_replicated": t_replicated,
        "micro_batch_seqs": micro_seqs,
        "grad_accum_steps": accum,
        "exposed_comm_share": accum * exposed_mb / step_time,
        "mem_weights": weights,
        "mem_gradients": grads,
        "mem_optimizer": optimizer,
        "mem_activations": activations,
        "mem_logits": logits,
        "mem_loss_temporaries": loss_temporaries,
        "mem_teacher": teacher_weights,
        "mem_overhead": overhead,
        "mem_total": total,
        "mem_usable": usable,
        "fits_train": fits_train,
        "fits_prepass": fits_prepass,
        "fits": fits_train & fits_prepass,
        "setup_hours": setup_hours,         # staging included: the time before training can start
        "staging_hours": staging,           # on the staging VM, not the option's nodes (its cost: staging_usd)
        "staging_usd": staging * tm["staging_usd_per_hour"],
        "prepass_hours": prepass_hours,
        "train_hours": train_hours,
        "teacher_share": teacher_share,     # of train_hours: the online teacher's forward (0 without one)
        "transfer_hours": np.zeros(n),   # split-hardware options only (split.py): the cache through storage
    }
    from .checkpointing import apply   # checkpoint interval and writes, failures; total_hours and cost_usd

    apply(job, g, out)
    return out


def staging_hours(nbytes: float, tm: dict) -> float:
    """Hours of the job that stages ``nbytes`` of hub models into the workspace (engine/azure/models.py): its VM
    started, the files downloaded from Hugging Face, then uploaded to the datastore (0 when nothing is to stage)."""
    if nbytes <= 0:
        return 0.0
    return float(tm["staging_provision_hours"] + nbytes / (tm["hub_download_gb_per_s"] * GB) / 3600.0
                 + nbytes / (tm["staging_upload_gb_per_s"] * GB) / 3600.0)


def _generation(job: Job, t: ModelShape, g: Grid, usable, speed: dict, mem: dict, *, held, replicated,
                seconds_per_byte, fwd_ratio: float = 1.0):
    """Hours for the teacher to write the seq-KD data, and whether it fits, as the engine generates: every GPU
    answers its own share of the prompts with ``generate``, the teacher whole on it (``replicated``) or sharded
    like the student (every decoding step then all-gathers each layer: the whole teacher through the group's
    links per step, which is why a sharded teacher generates slowly).

    Decoding is bound by memory bandwidth: every step reads the weights and the KV cache of the batch. ``held``:
    the teacher's bytes on one GPU; the rest, less the runtime overhead, holds the KV cache.
    """
    weights = g.teacher_bytes_per_param * t.params
    per_gpu = usable - mem["runtime_overhead_gib"] * GIB
    ctx = job.seq_len * 0.75  # average context while writing: prompt plus half the answer
    kv_room = np.maximum(per_gpu - held, 0.0)
    fits = kv_room >= t.kv_bytes_per_token * ctx  # at least one sequence
    batch = np.clip(np.floor(kv_room / (t.kv_bytes_per_token * ctx)), 1.0, speed["generation_max_batch"])
    bw = g.hbm_bytes_per_s * speed["generation_bandwidth_efficiency"]
    step_mem = (weights + batch * ctx * t.kv_bytes_per_token) / bw
    step_compute = 2.0 * t.matmul_params * batch / (g.peak_flops * g.efficiency * fwd_ratio)
    step_comm = np.where(replicated, 0.0, weights * seconds_per_byte)
    tokens_per_s = batch / (np.maximum(step_mem, step_compute) + step_comm)
    gpus = g.gpus_per_node * g.nodes
    tokens = job.tokens_per_epoch * job.generated_share
    hours = tokens / (tokens_per_s * gpus) / 3600.0
    return np.where(fits, hours, np.inf), fits
