"""Fit the throughput model to published measurements and report its error, row by row.

    python benchmarks/calibrate_throughput.py            # the committed coefficients' errors, and the ranges'
                                                         # coverage of sources left out of the fit
    python benchmarks/calibrate_throughput.py --fit      # refit, write engine/estimate/data/throughput.toml [fit]
                                                         # and [uncertainty] loso_log_sd
    python benchmarks/calibrate_throughput.py --cross-validate   # the per-source table only

The fit minimises the squared log error of tokens/s per GPU over the fitted rows (bf16, eager, FSDP-family
stacks); ceilings (Megatron/NeMo, fp8 Transformer Engine) and compiled or fp8 rows are reported, not fitted.

The ranges' training spread comes from out-of-sample error: each source's rows are predicted by a fit on the other
sources (leave one source out), and the spread per family is set so that the P10-P90 range holds 80% of those
predictions (``loso_spread``). Its coverage is checked nested, each source judged by a spread derived without it.
Needs scipy (a dev dependency), the product does not.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import re
import sys
from pathlib import Path

import time
from statistics import NormalDist

import numpy as np

from distill_studio.engine.estimate.calibration import errors, load_measurements
from distill_studio.engine.estimate.core import coefficients
from distill_studio.engine.estimate.ranges import RANGE_QUANTILES, outside_table, train_log_sd

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
    # the [fit] block runs to its first blank line
    text, n = re.subn(r"\[fit\]\n(?:[^\n]+\n)+", lambda _: block, text, count=1)
    if n != 1:
        raise SystemExit(f"{COEFFS}: no [fit] block to rewrite")
    COEFFS.write_text(text)


def write_spread(sd: dict[str, float], n_rows: dict[str, int], sources: int) -> None:
    """Rewrite [uncertainty] loso_log_sd (and its comment) in throughput.toml."""
    text = COEFFS.read_text()
    counts = ", ".join(f"{f}: {n_rows[f]} rows" for f in sd)
    block = (
        "# loso_log_sd: the training part's spread per family, from out-of-sample error, not the fit's own scatter:\n"
        f"# each of the {sources} sources of the calibration table predicted by a fit on the others ({counts});\n"
        "# the log sd set so that P10-P90 (+-1.28 sd, widened as for a plan: outside the table x outside_table)\n"
        "# holds 80% of those predictions (a conformal quantile of |log(measured / predicted)|: a bias widens it).\n"
        f"# Written by `benchmarks/calibrate_throughput.py --fit` on {dt.date.today().isoformat()}; "
        "do not edit by hand.\n"
        "loso_log_sd = { " + ", ".join(f"{f} = {v:.3f}" for f, v in sd.items()) + " }\n"
    )
    text, n = re.subn(r"# loso_log_sd:.*?\nloso_log_sd = \{[^\n]*\}\n", lambda _: block, text, count=1, flags=re.S)
    if n != 1:
        raise SystemExit(f"{COEFFS}: no [uncertainty] loso_log_sd line to rewrite")
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


Z = NormalDist().inv_cdf(RANGE_QUANTILES[1])      # P90's z: P10-P90 is the median x exp(+-Z sd)
COVERAGE = RANGE_QUANTILES[1] - RANGE_QUANTILES[0]


def loso_residuals(rows, base: dict) -> np.ndarray:
    """log(measured / predicted) of every row, each source predicted by a fit on the other sources only."""
    r = np.empty(len(rows))
    for source in sorted({m.source for m in rows}):
        held = [k for k, m in enumerate(rows) if m.source == source]
        train = [m for m in rows if m.source != source]
        coeffs = with_params(base, fit(train, base))
        r[held] = -np.log1p(errors([rows[k] for k in held], coeffs))
    return r


def row_factors(rows, uncertainty: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each row's family and the factor ranges.train_log_sd widens its family's spread by (as for a plan of that
    accelerator, model size and sequence length: full training on a GPU)."""
    accs = coefficients()["accelerators"]
    family = np.asarray([accs[m.accelerator]["family"] for m in rows], dtype=object)
    calibrated = np.asarray([bool(accs[m.accelerator].get("calibrated", False)) for m in rows])
    outside = outside_table([m.shape.params / 1e9 for m in rows], [m.seq_len for m in rows])
    unit = {**uncertainty, "loso_log_sd": {f: 1.0 for f in set(family)}}
    return family, train_log_sd(family, calibrated, False, False, outside, unit)


def loso_spread(residuals: np.ndarray, factors: np.ndarray, coverage: float = COVERAGE) -> float:
    """The log sd that makes the central range (median x exp(+-Z sd factor)) hold ``coverage`` of future rows.

    A row is inside when |r| / factor <= Z sd. The spread is the split-conformal quantile of those scores: the
    ceil((n + 1) coverage)-th smallest, divided by Z, which holds at least ``coverage`` of a new row exchangeable
    with these (not merely of these rows). Judged by |r|, a bias (residuals not centred on 0) widens the spread as
    much as it needs to, while the range stays centred on the model's own figure, the median the planner solves
    with; a standard deviation would need a normal, unbiased scatter, which out-of-sample errors are not."""
    s = np.sort(np.abs(np.asarray(residuals, dtype=float)) / np.asarray(factors, dtype=float))
    if len(s) == 0:
        raise ValueError("no residuals to derive a spread from")
    k = min(len(s), int(np.ceil((len(s) + 1) * coverage)))
    return float(s[k - 1] / Z)


def family_spreads(residuals, family, factors, keep=None) -> dict[str, float]:
    """loso_spread per family, over the rows ``keep`` (all by default)."""
    keep = np.ones(len(residuals), bool) if keep is None else keep
    return {f: loso_spread(residuals[keep & (family == f)], factors[keep & (family == f)])
            for f in sorted(set(family[keep]))}


def coverage_check(rows, residuals: np.ndarray, uncertainty: dict) -> dict:
    """How many rows fall inside P10-P90, and the ranges' median width (P90 / P10 of the training time), with:
    - ``loso``: each source's out-of-sample residuals judged by a spread derived from the other sources' (nested);
    - ``written``: the spread from every source (what --fit writes), on the same out-of-sample residuals;
    both widened per row by ranges.train_log_sd as the planner widens a plan."""
    family, factors = row_factors(rows, uncertainty)
    sources = np.asarray([m.source for m in rows], dtype=object)
    sd_row = np.empty(len(rows))
    for source in set(sources):
        held = sources == source
        spread = family_spreads(residuals, family, factors, keep=~held)
        wider = max(spread.values())      # a family the other sources lack: the widest, as train_log_sd does
        sd_row[held] = [spread.get(f, wider) for f in family[held]]
    sd_row *= factors
    written = family_spreads(residuals, family, factors)
    sd_all = np.asarray([written[f] for f in family]) * factors

    def judged(sd):
        inside = np.abs(residuals) <= Z * sd
        return {"inside": int(inside.sum()), "rows": len(rows), "width": float(np.median(np.exp(2 * Z * sd))),
                "mask": inside}

    return {"loso": judged(sd_row), "written": judged(sd_all), "spread": written,
            "rows_per_family": {f: int((family == f).sum()) for f in written}}


def in_sample_check(rows, coeffs: dict, uncertainty: dict) -> dict:
    """The fit's own residuals judged by their own standard deviation per family (how ranges were made before
    out-of-sample spreads), for comparison."""
    r = -np.log1p(errors(rows, coeffs))
    family, factors = row_factors(rows, uncertainty)
    sd = {f: float(np.std(r[family == f], ddof=1)) for f in set(family)}
    sd_row = np.asarray([sd[f] for f in family]) * factors
    inside = np.abs(r) <= Z * sd_row
    return {"inside": int(inside.sum()), "rows": len(rows), "width": float(np.median(np.exp(2 * Z * sd_row))),
            "spread": sd, "residuals": r, "sd_row": sd_row}


def cross_validate(rows, residuals: np.ndarray, inside: np.ndarray | None = None) -> str:
    """Per source left out: its rows' errors, and (``inside``) how many the nested P10-P90 holds."""
    head = "| source left out | rows | median abs error | max abs error |"
    head += " inside P10-P90 |" if inside is not None else ""
    lines = [head, "|---|---:|---:|---:|" + ("---:|" if inside is not None else "")]
    for source in sorted({m.source for m in rows}):
        held = np.asarray([m.source == source for m in rows])
        e = np.abs(np.expm1(-residuals[held]))        # (predicted - measured) / measured, as report() gives it
        lines.append(f"| {source} | {held.sum()} | {np.median(e) * 100:.1f}% | {e.max() * 100:.1f}% |"
                     + (f" {inside[held].sum()} of {held.sum()} |" if inside is not None else ""))
    return "\n".join(lines)


def coverage_text(loso: dict, insample: dict, old_loso: dict) -> str:
    def pct(d):
        return f"{d['inside']} of {d['rows']} ({d['inside'] / d['rows'] * 100:.0f}%)"
    s = loso["spread"]
    return "\n".join([
        f"P10-P90 coverage of the training time, fitted rows (target: at least {COVERAGE * 100:.0f}% of rows the fit "
        "has not seen):",
        f"  leave one source out, spread derived without the source: {pct(loso['loso'])}, "
        f"median width (P90 / P10) {loso['loso']['width']:.2f}x"
        + ("" if loso["loso"]["inside"] >= COVERAGE * loso["loso"]["rows"] else "  BELOW THE TARGET"),
        f"  leave one source out, spread from every source (as written): {pct(loso['written'])}, "
        f"median width {loso['written']['width']:.2f}x",
        f"  in sample, the fit's own scatter (the ranges before): {pct(insample)}, "
        f"median width {insample['width']:.2f}x; the same spread on the left-out sources: {pct(old_loso)}",
        "loso_log_sd = { " + ", ".join(f"{f} = {v:.3f}" for f, v in s.items()) + " }   # [uncertainty] in "
        "throughput.toml (" + ", ".join(f"{f}: {n} rows" for f, n in loso["rows_per_family"].items()) + ")",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", action="store_true", help="refit and write the coefficients and the training spread")
    ap.add_argument("--cross-validate", action="store_true",
                    help="leave one source out: fit on the others, report the error on the one left out")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    rows = load_measurements(TABLE)
    fitted = [m for m in rows if m.fitted]
    base = coefficients()
    if args.fit:
        x = fit(fitted, base)
        print("fitted:", dict(zip(PARAMS, np.round(x, 4))), file=sys.stderr)
        write_fit(x, len(fitted))
        coefficients.cache_clear()
        base = coefficients()
    residuals = loso_residuals(fitted, base)
    u = base["uncertainty"]
    loso = coverage_check(fitted, residuals, u)
    print(cross_validate(fitted, residuals, loso["loso"]["mask"]))
    if args.cross_validate:
        return 0
    if args.fit:
        write_spread(loso["spread"], loso["rows_per_family"], len({m.source for m in fitted}))
        coefficients.cache_clear()
        base = coefficients()
    print()
    print(report(rows, base))
    insample = in_sample_check(fitted, base, u)
    inside = np.abs(residuals) <= Z * insample["sd_row"]
    old_loso = {"inside": int(inside.sum()), "rows": len(fitted)}
    print()
    print(coverage_text(loso, insample, old_loso))
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
