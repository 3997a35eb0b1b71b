"""Fit the teacher pass's forward-only efficiency to published prefill measurements and report its error.

    python benchmarks/calibrate_teacher_pass.py          # the committed coefficients' errors, out-of-sample figures
    python benchmarks/calibrate_teacher_pass.py --fit    # refit, write [forward_fit] of
                                                         # engine/estimate/data/throughput.toml

The model is the one the planner uses for the teacher's forward (estimate/core.py, forward_seconds_per_token): 2N
matmul FLOPs and the attention at the forward efficiency, plus the memory-bound third of a training step's traffic at
HBM bandwidth. The attention ratio and the memory term come from the training fit ([fit]); the fit here moves one
number, the forward's matmul efficiency as a ratio of the training fit's (``efficiency_ratio``), by minimising the
squared log error of tokens/s per GPU over the fitted rows (bf16/fp16 prefills of at least 1,024 tokens).

The spread of the teacher pass (``log_sd``) comes from out-of-sample errors: each source left out in turn (and each
model, since a teacher is a model the fit has not seen), fitted on the rest, predicted; the spread is the
split-conformal bound that holds 80% of such predictions (the wider of the two groupings), as the training spread is
derived. H100 has no bf16 prefill row: it carries A100's ratio, and its spread is A100's x [uncertainty]
uncalibrated_accelerator. Needs scipy (a dev dependency).

The ratio is relative to the training fit and uses its attention ratio and memory term: after
`calibrate_throughput.py --fit` changes [fit], run this with --fit too (tests/test_teacher_pass.py fails until then).
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import re
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

from distill_studio.engine.estimate.core import coefficients
from distill_studio.engine.estimate.forward_calibration import errors, load_forward_measurements, predict

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "forward_measurements.csv"
COEFFS = ROOT / "engine" / "estimate" / "data" / "throughput.toml"
FAMILIES = ("a100", "h100")


def with_ratio(base: dict, ratio: float) -> dict:
    c = copy.deepcopy(base)
    c["forward_fit"]["efficiency_ratio"] = float(ratio)
    return c


def fit(rows, base: dict) -> float:
    from scipy.optimize import minimize_scalar

    # the forward's matmul efficiency may not pass the peak on any fitted accelerator
    top = min(1.0 / base["fit"]["matmul_efficiency"][f] for f in FAMILIES)

    def loss(r):
        return float(np.sum(np.log1p(errors(rows, with_ratio(base, r))) ** 2))

    return float(minimize_scalar(loss, bounds=(0.2, top), method="bounded", options={"xatol": 1e-5}).x)


def out_of_sample(rows, base: dict, key) -> tuple[list[str], np.ndarray]:
    """Leave each group (by ``key``) out: fit on the rest, the log errors on the group left out."""
    fitted = [m for m in rows if m.fitted]
    lines, resid = [], []
    for group in sorted({key(m) for m in fitted}):
        train = [m for m in fitted if key(m) != group]
        held = [m for m in fitted if key(m) == group]
        if not train:
            continue
        r = fit(train, base)
        e = np.log1p(errors(held, with_ratio(base, r)))
        resid.extend(e)
        lines.append(f"| {group} | {len(held)} | {r:.4f} | "
                     + ", ".join(f"{x * 100:+.1f}%" for x in np.expm1(e)) + " |")
    return lines, np.array(resid)


def conformal_sd(resid: np.ndarray, coverage: float = 0.8) -> float:
    """The log spread whose central ``coverage`` range holds that share of new rows exchangeable with these
    out-of-sample residuals (split-conformal: the ceil((n+1)·coverage)-th smallest |r|, over the normal quantile),
    as the training spread is derived (benchmarks/calibrate_throughput.py)."""
    r = np.sort(np.abs(resid))
    k = int(np.ceil((len(r) + 1) * coverage))
    if k > len(r):
        raise ValueError(f"{len(r)} out-of-sample residuals cannot bound {coverage:.0%} coverage; add rows")
    return float(r[k - 1] / NormalDist().inv_cdf(0.5 + coverage / 2))


def spread(rows, base: dict) -> tuple[str, float]:
    by_source, r1 = out_of_sample(rows, base, lambda m: m.source)
    by_model, r2 = out_of_sample(rows, base, lambda m: m.model)
    sd1, sd2 = conformal_sd(r1), conformal_sd(r2)
    sd = max(sd1, sd2)
    z = NormalDist().inv_cdf(0.9)
    inside = [float(np.mean(np.abs(r) <= z * sd)) for r in (r1, r2)]
    text = "\n".join([
        "| source left out | rows | ratio fitted on the rest | error on the rows left out |", "|---|---:|---:|---|",
        *by_source, "", "| model left out | rows | ratio fitted on the rest | error on the rows left out |",
        "|---|---:|---:|---|", *by_model, "",
        f"Out-of-sample log spread (split-conformal, 80%): leaving a source out {sd1:.3f}, leaving a model out "
        f"{sd2:.3f}; log_sd = {sd:.3f}. P10-P90 at it holds {inside[0]:.0%} of the left-out-source predictions and "
        f"{inside[1]:.0%} of the left-out-model ones (in sample, RMS log error "
        f"{float(np.sqrt(np.mean(np.log1p(errors([m for m in rows if m.fitted], base)) ** 2))):.3f}).",
    ])
    return text, sd


def report(rows, coeffs: dict) -> str:
    pred = predict(rows, coeffs)
    lines = ["| row | accelerator | precision | GPUs | prompt | measured ms | measured tok/s/GPU | predicted | error |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for m, p in zip(rows, pred):
        tag = "" if m.fitted else (" (fp8 ceiling)" if m.ceiling else " (not fitted)")
        err = p / m.tokens_per_second_per_gpu - 1.0
        lines.append(f"| {m.id}{tag} | {m.accelerator} | {m.precision} | {m.gpus} | {m.prompt_tokens} | "
                     f"{m.measured_ms:g} | {m.tokens_per_second_per_gpu:,.0f} | {p:,.0f} | {err * 100:+.1f}% |")
    fitted = np.array([m.fitted for m in rows])
    e = np.abs(pred / np.array([m.tokens_per_second_per_gpu for m in rows]) - 1.0)
    sources = {m.source for m in rows}
    lines += ["", f"Rows: {len(rows)} from {len(sources)} sources; fitted {fitted.sum()} from "
                  f"{len({m.source for m in rows if m.fitted})}: median |error| {np.median(e[fitted]) * 100:.1f}%, "
                  f"max {e[fitted].max() * 100:.1f}%"]
    ceil = np.array([m.ceiling for m in rows])
    if ceil.any():
        below = int((pred[ceil] < np.array([m.tokens_per_second_per_gpu for m in rows])[ceil]).sum())
        lines.append(f"fp8 ceilings: the bf16 estimate is below {below} of {ceil.sum()} (a bf16 forward should be "
                     f"slower than fp8 on the same stack)")
    f = coeffs["fit"]["matmul_efficiency"]
    r = coeffs["forward_fit"]["efficiency_ratio"]
    lines.append("Forward matmul efficiency (share of dense bf16 peak): "
                 + ", ".join(f"{fam} {f[fam] * r:.4f}" for fam in FAMILIES)
                 + f" (training fit x {r:.4f}; h100 carries the ratio fitted on a100, no bf16 H100 prefill row)")
    return "\n".join(lines)


def write_fit(ratio: float, sd: dict[str, float], rows) -> None:
    fitted = [m for m in rows if m.fitted]
    text = COEFFS.read_text()
    block = (
        "[forward_fit]\n"
        "# The teacher's forward-only pass (online during training, the offline top-k pass, generation's compute):\n"
        "# written by `python benchmarks/calibrate_teacher_pass.py --fit` from tests/data/forward_measurements.csv;\n"
        "# do not edit by hand.\n"
        f"date = \"{dt.date.today().isoformat()}\"\n"
        f"rows = {len(fitted)}\n"
        "# The forward's matmul (and attention) efficiency as a ratio of the training fit's [fit] matmul_efficiency.\n"
        f"efficiency_ratio = {ratio:.4f}\n"
        "# Spread (log standard deviation) of the teacher's pass per family: split-conformal 80% bound of the\n"
        "# out-of-sample log errors (a source or a model left out); h100 has no bf16 prefill row, so its spread is\n"
        "# a100's x [uncertainty] uncalibrated_accelerator.\n"
        f"log_sd = {{ a100 = {sd['a100']:.3f}, h100 = {sd['h100']:.3f} }}\n"
    )
    text = re.sub(r"\[forward_fit\]\n.*?(?=\n\[communication\])", block, text, flags=re.S)
    COEFFS.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", action="store_true", help="refit and write [forward_fit]")
    args = ap.parse_args(argv)
    rows = load_forward_measurements(TABLE)
    base = coefficients()
    text, sd = spread(rows, base)
    if args.fit:
        ratio = fit([m for m in rows if m.fitted], base)
        print(f"fitted: efficiency_ratio = {ratio:.4f}", file=sys.stderr)
        write_fit(ratio, {"a100": sd, "h100": sd * base["uncertainty"]["uncalibrated_accelerator"]}, rows)
        coefficients.cache_clear()
        base = coefficients()
    print(report(rows, base))
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
