"""Fit the throughput model to published measurements and report its error, row by row.

    python benchmarks/calibrate_throughput.py            # report the committed coefficients' errors
    python benchmarks/calibrate_throughput.py --fit      # refit, write engine/estimate/data/throughput.toml [fit]

The fit minimises the squared log error of tokens/s per GPU over the fitted rows (bf16, eager, FSDP-family
stacks); ceilings (Megatron/NeMo, fp8 Transformer Engine) and compiled or fp8 rows are reported, not fitted.
Needs scipy (a dev dependency), the product does not.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import re
import sys
from pathlib import Path

import numpy as np

from distill_studio.engine.estimate.calibration import errors, load_measurements
from distill_studio.engine.estimate.core import coefficients

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "calibration_measurements.csv"
COEFFS = ROOT / "engine" / "estimate" / "data" / "throughput.toml"
PARAMS = ("a100", "h100", "attention_ratio", "memory_bytes")


def with_params(base: dict, x: np.ndarray) -> dict:
    c = copy.deepcopy(base)
    f = c["fit"]
    f["matmul_efficiency"] = {"a100": float(x[0]), "h100": float(x[1])}
    f["attention_ratio"], f["memory_bytes_per_token_layer_hidden"] = map(float, x[2:])
    return c


def fit(rows, base: dict) -> np.ndarray:
    from scipy.optimize import minimize

    # Search in log space so every coefficient stays positive; efficiencies above 1 are not physical.
    def loss(z):
        x = np.exp(z)
        if x[0] > 1 or x[1] > 1 or x[2] > 2:
            return 1e9
        e = errors(rows, with_params(base, x))
        return float(np.sum(np.log1p(np.maximum(e, -0.999)) ** 2))

    f = base["fit"]
    x0 = np.array([f["matmul_efficiency"]["a100"], f["matmul_efficiency"]["h100"], f["attention_ratio"],
                   f["memory_bytes_per_token_layer_hidden"]])
    best = minimize(loss, np.log(x0), method="Nelder-Mead", options={"maxiter": 3000, "xatol": 1e-4, "fatol": 1e-9})
    return np.exp(best.x)


def write_fit(x: np.ndarray, n_rows: int) -> None:
    text = COEFFS.read_text()
    block = (
        "[fit]\n"
        f"date = \"{dt.date.today().isoformat()}\"\n"
        f"rows = {n_rows}\n"
        "# Fraction of dense bf16 peak that matmuls reach, by accelerator family, for a very wide model.\n"
        f"matmul_efficiency = {{ a100 = {x[0]:.4f}, h100 = {x[1]:.4f} }}\n"
        "# Attention (FlashAttention) reaches this fraction of the matmul efficiency.\n"
        f"attention_ratio = {x[2]:.4f}\n"
        "# Memory-bound work (norms, activations, residuals, optimizer step amortised), bytes per token per layer per\n"
        "# unit of hidden size, moved at HBM bandwidth. It is what makes narrow models reach less of the peak:\n"
        "# their FLOPs per token grow with hidden^2, this traffic with hidden.\n"
        f"memory_bytes_per_token_layer_hidden = {x[3]:.2f}\n"
    )
    text = re.sub(r"\[fit\]\n.*?(?=\n# Accelerators)", block, text, flags=re.S)
    COEFFS.write_text(text)


def report(rows, coeffs: dict) -> str:
    e = errors(rows, coeffs)
    lines = ["| row | accelerator | GPUs | seq | params (B) | recompute | measured tok/s/GPU | predicted | error |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for m, err in zip(rows, e):
        tag = "" if m.fitted else (" (ceiling)" if m.ceiling else f" ({m.precision}{', compiled' if m.compiled else ''}, not fitted)")
        pred = m.tokens_per_second_per_gpu * (1 + err)
        lines.append(f"| {m.id}{tag} | {m.accelerator} | {m.gpus} | {m.seq_len} | {m.shape.params / 1e9:.1f} | "
                     f"{'yes' if m.recompute else 'no'} | {m.tokens_per_second_per_gpu:,.0f} | {pred:,.0f} | "
                     f"{err * 100:+.1f}% |")
    fitted = np.array([m.fitted for m in rows])
    ef = np.abs(e[fitted])
    sources = len({m.source for m, f in zip(rows, fitted) if f})
    lines.append("")
    lines.append(f"Fitted rows: {fitted.sum()} from {sources} sources; median |error| {np.median(ef) * 100:.1f}%, "
                 f"max |error| {ef.max() * 100:.1f}%, within 15%: {(ef <= 0.15).sum()} of {fitted.sum()}")
    ceil = np.array([m.ceiling for m in rows])
    if ceil.any():
        above = (e[ceil] > 0).sum()
        lines.append(f"Ceiling rows (faster stacks): {ceil.sum()}; our estimate exceeds {above} of them")
    return "\n".join(lines)


def cross_validate(rows, base: dict) -> str:
    fitted = [m for m in rows if m.fitted]
    lines = ["| source left out | rows | median abs error | max abs error |", "|---|---:|---:|---:|"]
    for source in sorted({m.source for m in fitted}):
        train = [m for m in fitted if m.source != source]
        held = [m for m in fitted if m.source == source]
        e = np.abs(errors(held, with_params(base, fit(train, base))))
        lines.append(f"| {source} | {len(held)} | {np.median(e) * 100:.1f}% | {e.max() * 100:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", action="store_true", help="refit and write the coefficients")
    ap.add_argument("--cross-validate", action="store_true",
                    help="leave one source out: fit on the others, report the error on the one left out")
    args = ap.parse_args(argv)
    rows = load_measurements(TABLE)
    base = coefficients()
    if args.cross_validate:
        print(cross_validate(rows, base))
        return 0
    if args.fit:
        fitted = [m for m in rows if m.fitted]
        x = fit(fitted, base)
        print("fitted:", dict(zip(PARAMS, np.round(x, 4))), file=sys.stderr)
        write_fit(x, len(fitted))
        coefficients.cache_clear()
        base = coefficients()
    print(report(rows, base))
    print(spread(rows, base))
    return 0


def spread(rows, coeffs) -> str:
    """The log spread of measured / predicted per family: [uncertainty] fit_log_sd, what the planner's ranges
    start from."""
    fitted = [m for m in rows if m.fitted]
    e = np.log1p(errors(fitted, coeffs))
    parts = []
    for fam in ("a100", "h100"):
        sel = [i for i, m in enumerate(fitted) if m.accelerator.startswith(fam)]
        if len(sel) > 1:
            parts.append(f"{fam} = {np.std(e[sel], ddof=1):.3f}")
    return "fit_log_sd = { " + ", ".join(parts) + " }   # [uncertainty] in throughput.toml"


if __name__ == "__main__":
    sys.exit(main())
