"""Predict published forward-only (prefill) measurements with the teacher pass's model, to fit it and to check it.

A row of tests/data/forward_measurements.csv is one published prefill: a model by its dimensions, an accelerator,
the tensor-parallel GPUs it ran on, the batch and prompt length, and the milliseconds the prefill took, with the
source's address and the figure quoted as published. Rows whose prompt is too short to be compute-bound, or whose
precision is not bf16/fp16, are kept for reference and not fitted; fp8 rows are ceilings (a bf16 forward is slower).
``benchmarks/calibrate_teacher_pass.py`` fits ``[forward_fit]`` on them and reports the errors.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..catalog.hardware import load_accelerators
from .core import accelerator_efficiency, forward_seconds_per_token
from .shape import ModelShape, activation_bytes_per_token_layer, layer_params

REQUIRED = ("id", "source", "source_url", "model", "params_b", "num_layers", "hidden_size", "intermediate_size",
            "num_heads", "num_kv_heads", "vocab_size", "gated", "accelerator", "precision", "tensor_parallel",
            "batch", "prompt_tokens", "measured_ms", "fitted", "ceiling", "quoted")
PRECISIONS = ("bf16", "fp16", "fp8")


@dataclass(frozen=True)
class ForwardMeasurement:
    id: str
    model: str
    source: str
    source_url: str
    quoted: str
    accelerator: str
    precision: str
    gpus: int                     # tensor-parallel GPUs the prefill ran on
    batch: int
    prompt_tokens: int
    measured_ms: float
    shape: ModelShape
    prefill_matmul_params: float  # matmul parameters a prefill runs for every token (the head runs for one)
    fitted: bool
    ceiling: bool

    @property
    def tokens_per_second_per_gpu(self) -> float:
        return self.batch * self.prompt_tokens / (self.measured_ms / 1000.0) / self.gpus


def _shape(r: dict) -> ModelShape:
    h, L, i = int(r["hidden_size"]), int(r["num_layers"]), int(r["intermediate_size"])
    heads, kv, vocab = int(r["num_heads"]), int(r["num_kv_heads"]), int(r["vocab_size"])
    gated = r["gated"] == "true"
    params = int(round(float(r["params_b"]) * 1e9))
    return ModelShape(
        params=params, matmul_params=params - vocab * h, layer_params=layer_params(h, i, heads, kv, h // heads, gated),
        num_layers=L, hidden_size=h, vocab_size=vocab, attn_width=h, kv_bytes_per_token=2 * L * kv * (h // heads) * 2,
        act_bytes_per_token_layer=activation_bytes_per_token_layer(h, i, kv, h // heads), sliding_window_tokens=0,
        global_layers=float(L), gated_mlp=gated,
    )


def load_forward_measurements(path: str | Path) -> list[ForwardMeasurement]:
    """The table's rows; a row that lacks a field, its source's address or the quoted figure is refused by name."""
    path = Path(path)
    accelerators = load_accelerators()
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path.name}: missing column(s) {', '.join(missing)}")
        for n, r in enumerate(reader, start=2):
            where = f"{path.name} line {n} ({r.get('id') or 'no id'})"
            for c in REQUIRED:
                if not (r.get(c) or "").strip():
                    raise ValueError(f"{where}: '{c}' is empty; every row needs it")
            if not r["source_url"].startswith("https://"):
                raise ValueError(f"{where}: source_url must be the source's https:// address, not {r['source_url']!r}")
            if r["accelerator"] not in accelerators:
                raise ValueError(f"{where}: accelerator {r['accelerator']!r} is not in the catalog "
                                 f"({', '.join(sorted(accelerators))})")
            if r["precision"] not in PRECISIONS:
                raise ValueError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, not {r['precision']!r}")
            shape = _shape(r)
            out.append(ForwardMeasurement(
                id=r["id"], model=r["model"], source=r["source"], source_url=r["source_url"], quoted=r["quoted"],
                accelerator=r["accelerator"], precision=r["precision"], gpus=int(r["tensor_parallel"]),
                batch=int(r["batch"]), prompt_tokens=int(r["prompt_tokens"]), measured_ms=float(r["measured_ms"]),
                shape=shape, prefill_matmul_params=float(shape.matmul_params - shape.vocab_size * shape.hidden_size),
                fitted=r["fitted"] == "true" and r["precision"] != "fp8", ceiling=r["ceiling"] == "true",
            ))
    return out


def predict(rows: list[ForwardMeasurement], coeffs: dict | None = None) -> np.ndarray:
    """The model's bf16 prefill tokens/s per GPU for each row (the work split evenly over its GPUs)."""
    accelerators = load_accelerators()
    out = np.empty(len(rows))
    for k, m in enumerate(rows):
        acc = accelerators[m.accelerator]
        eff, _ = accelerator_efficiency(m.accelerator, coeffs)
        sec = forward_seconds_per_token(m.shape, m.prompt_tokens, acc.bf16_dense_tflops * 1e12, eff,
                                        acc.hbm_gb_per_s * 1e9, coeffs, matmul_params=m.prefill_matmul_params)
        out[k] = 1.0 / float(sec)
    return out


def errors(rows: list[ForwardMeasurement], coeffs: dict | None = None) -> np.ndarray:
    """Relative error of the prediction, (predicted - measured) / measured, per row."""
    measured = np.array([m.tokens_per_second_per_gpu for m in rows])
    return predict(rows, coeffs) / measured - 1.0
