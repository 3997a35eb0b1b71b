"""Predict published training measurements with the throughput model, to fit it and to check it.

A measurement row (see tests/data/calibration_measurements.csv) names a model by its dimensions, a cluster
(accelerator, GPU count, 8 per node), a sequence length, micro-batch and global batch, and the tokens per second per
GPU it reached. Rows from stacks faster than ours (Megatron/NeMo with tensor parallelism, fp8 Transformer Engine)
are ceilings, not targets; rows with torch.compile or fp8 are kept for reference but not fitted, since our engine
runs eager bf16 by default.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..catalog.hardware import load_accelerators, load_skus
from .core import RECOMPUTE, Job, evaluate
from .shape import (ModelShape, activation_bytes_per_token_layer, layer_params,
                    selective_activation_bytes_per_token_layer)
from .sweep import Machine, build_grid

GPUS_PER_NODE = 8


@dataclass(frozen=True)
class Measurement:
    id: str
    source: str
    accelerator: str
    gpus: int
    seq_len: int
    micro_batch: int
    global_batch_tokens: int
    recompute: bool               # any recomputation (checkpointing below says which)
    tokens_per_second_per_gpu: float
    shape: ModelShape
    fitted: bool                  # used for the fit (bf16, eager, FSDP-family)
    ceiling: bool
    precision: str
    compiled: bool
    sharding: str                 # "all" (FSDP over every GPU), "node" (hybrid: shard in a node), "best" (not stated)
    checkpointing: str = "off"    # the grid's mode: "off" | "full" | "selective" (core.RECOMPUTE)
    recompute_blocks: float = 0.0  # "blocks:p": the share of the blocks recomputed in full, the rest not at all
    recompute_matmul_share: float = 0.0  # "selective-op": the share of the matmul FLOPs recomputed all the same


# tests/data/calibration_measurements.csv, column activation_checkpointing: what each published run recomputed
CHECKPOINTING = {
    "false": "none", "none": "none",
    "true": "full", "full": "full",           # every block checkpointed: its forward re-run in backward
    "selective": "selective",                 # the engine's policy: every matmul and attention output kept
    "selective-op": "selective-op",           # torchtitan's op policy: as the engine's, but every second matmul of a
                                              # block is recomputed (wk, wo, w3 in Llama's order q k v o w1 w3 w2)
    "unknown": "none",                        # rows that are not modelled (no cluster size or batch)
}


def _checkpointing(value: str, row_id: str, shape: ModelShape, h: int, i: int, kv_dim: int) -> dict:
    """The Measurement fields of one row's activation_checkpointing value (CHECKPOINTING, or "blocks:p/q")."""
    v = value.strip().lower()
    if v.startswith("blocks:"):       # torchtitan's "selective layer" (every n-th block), fms-fsdp's p of the blocks
        try:
            num, _, den = v.removeprefix("blocks:").partition("/")
            share = float(num) / float(den or 1)
        except ValueError:
            share = -1.0
        if not 0.0 < share <= 1.0:
            raise ValueError(f"calibration_measurements.csv, row {row_id}: activation_checkpointing {value!r}: "
                             "blocks:p needs a share of the blocks in (0, 1], e.g. blocks:1/2")
        return {"recompute": True, "checkpointing": "full", "recompute_blocks": share}
    kind = CHECKPOINTING.get(v)
    if kind is None:
        raise ValueError(f"calibration_measurements.csv, row {row_id}: activation_checkpointing {value!r} is not "
                         f"one of {', '.join(CHECKPOINTING)} or blocks:p/q")
    if kind == "none":
        return {"recompute": False, "checkpointing": "off"}
    if kind == "full":
        return {"recompute": True, "checkpointing": "full", "recompute_blocks": 1.0}
    share = 0.0
    if kind == "selective-op":
        # the recomputed matmuls of a block: wk (h x kv_dim), wo (h x h), w3 (h x i), over every matmul of the model
        share = shape.num_layers * (h * kv_dim + h * h + h * i) / shape.matmul_params
    return {"recompute": True, "checkpointing": "selective", "recompute_matmul_share": share}


def _sharding(stack: str) -> str:
    s = stack.lower()
    if "hsdp/fsdp" in s:
        return "best"
    if "hsdp" in s or "hybrid" in s:
        return "node"
    if "full_shard" in s or "(1d" in s or "fsdp)" in s:
        return "all"
    return "best"


def _shape(r: dict) -> ModelShape:
    h, L, i = int(r["hidden_size"]), int(r["num_layers"]), int(r["intermediate_size"])
    heads, kv, vocab = int(r["num_heads"]), int(r["num_kv_heads"]), int(r["vocab_size"])
    gated = "not gated" not in r["notes"]
    tied = "tied embeddings" in r["notes"]
    params = int(round(float(r["params_b"]) * 1e9))
    return ModelShape(
        params=params,
        matmul_params=params if tied else params - vocab * h,
        layer_params=layer_params(h, i, heads, kv, h // heads, gated),
        num_layers=L,
        hidden_size=h,
        vocab_size=vocab,
        attn_width=h,
        kv_bytes_per_token=2 * L * kv * (h // heads) * 2,
        act_bytes_per_token_layer=activation_bytes_per_token_layer(h, i, kv, h // heads),
        sliding_window_tokens=0,
        global_layers=float(L),
        gated_mlp=gated,
        act_selective_bytes_per_token_layer=selective_activation_bytes_per_token_layer(h, i, kv, h // heads),
    )


def load_measurements(path: str | Path) -> list[Measurement]:
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if not r["gpus"] or not r["micro_batch"]:
                continue  # cluster size or batch not stated: cannot be modelled
            gpus, seq, mb = int(r["gpus"]), int(r["seq_len"]), int(r["micro_batch"])
            gbt = int(r["global_batch_tokens"]) if r["global_batch_tokens"] else gpus * seq * mb
            ceiling = r["ceiling"] == "true"
            compiled = r["compile"] == "true"
            shape = _shape(r)
            h, heads = int(r["hidden_size"]), int(r["num_heads"])
            ckpt = _checkpointing(r["activation_checkpointing"], r["id"], shape, h, int(r["intermediate_size"]),
                                  int(r["num_kv_heads"]) * (h // heads))
            out.append(Measurement(
                id=r["id"], source=r["source"], accelerator=r["accelerator"], gpus=gpus, seq_len=seq,
                micro_batch=mb, global_batch_tokens=gbt, **ckpt,
                tokens_per_second_per_gpu=float(r["tokens_per_second_per_gpu"]), shape=shape,
                fitted=not ceiling and r["precision"] == "bf16" and not compiled and "production" not in r["id"],
                ceiling=ceiling, precision=r["precision"], compiled=compiled, sharding=_sharding(r["stack"]),
            ))
    return out


def _machine(accelerator: str, gpus: int) -> Machine:
    acc = load_accelerators()[accelerator]
    per_node = min(gpus, GPUS_PER_NODE)
    # The published clusters: NVLink inside a node, InfiniBand between (as the Azure ND sizes of the same GPU).
    nd = [s for s in load_skus().values() if s.accelerator == accelerator and s.gpus == GPUS_PER_NODE]
    intra = nd[0].intra_node_gb_per_s if nd else 300.0
    inter = (nd[0].inter_node_gb_per_s if nd else 200.0) or 200.0
    return Machine(id=f"{gpus}x{accelerator}", accelerator=accelerator, gpus=per_node,
                   peak_tflops=acc.bf16_dense_tflops, hbm_gb=acc.hbm_gb, hbm_gb_per_s=acc.hbm_gb_per_s,
                   intra_gb_per_s=intra, inter_gb_per_s=inter, usd_per_hour={}, max_nodes=gpus // per_node,
                   priorities=("dedicated",), provision="local")


def predict(rows: list[Measurement], coeffs: dict | None = None) -> np.ndarray:
    """The model's tokens/s per GPU for each row (full training, FSDP over every GPU, the row's micro-batch).

    A row that recomputed a share p of its blocks in full and kept the rest (torchtitan's "selective layer",
    fms-fsdp's selective_checkpointing) takes p of a fully recomputed step's time per token and 1 - p of a step's
    without recomputation; a row under torchtitan's op policy is the selective mode with the share of the matmuls
    that policy recomputes all the same (``recompute_matmul_share``)."""
    out = np.empty(len(rows))
    for k, m in enumerate(rows):
        job = Job(student=m.shape, teacher=None, method="ce", seq_len=m.seq_len, tokens_per_epoch=1e9, epochs=1,
                  global_batch_tokens=m.global_batch_tokens, micro_batch_seqs=m.micro_batch)
        machine = _machine(m.accelerator, m.gpus)
        grid, _ = build_grid([machine], has_teacher=False, teacher_modes=("none",), nodes=machine.max_nodes,
                              coeffs=coeffs)
        if m.recompute_matmul_share:
            grid.extra["recompute_matmul_share"] = np.full(len(grid), m.recompute_matmul_share)
        res = evaluate(job, grid, coeffs)

        def speed(mode: str) -> float:
            pick = (grid.adapter == 0) & (grid.recompute == RECOMPUTE.index(mode))
            if (grid.sharding != 0).any():
                pick &= grid.sharding != 0  # the measurements are of FSDP-family stacks, not DDP
            if m.sharding != "best" and machine.max_nodes > 1:
                pick &= grid.shard_all == (m.sharding == "all")
            elif (pick & res["fits"]).any():
                pick &= res["fits"]  # not stated: the faster sharding that fits, as a tuned run would choose
            return float(res["tokens_per_second_per_gpu"][pick].max())

        if 0.0 < m.recompute_blocks < 1.0:
            out[k] = 1.0 / (m.recompute_blocks / speed("full") + (1.0 - m.recompute_blocks) / speed("off"))
        else:
            out[k] = speed(m.checkpointing)
    return out


def errors(rows: list[Measurement], coeffs: dict | None = None) -> np.ndarray:
    """Relative error of the prediction, (predicted - measured) / measured, per row."""
    measured = np.array([m.tokens_per_second_per_gpu for m in rows])
    return predict(rows, coeffs) / measured - 1.0
