"""How sure an estimate is: a range for every option's time and cost, and the figure at a confidence the user picks.

Each part of an option's time is treated as log-normal around the model's figure, with a spread (log standard
deviation) that says how well that part is known:

- **training**: out-of-sample error, not the fit's own scatter: each source of the published measurements predicted
  by a fit made without it (leave one source out), and the spread set so that P10-P90 holds 80% of those
  predictions, for the accelerator's family (``[uncertainty] loso_log_sd``, written with the fit by
  ``benchmarks/calibrate_throughput.py``); widened where the model extrapolates: an accelerator no measurement
  covers, a CPU, LoRA/QLoRA (the measurements are full training), a model or sequence length outside the table
  (``train_log_sd``, which the calibration's coverage check applies to its rows as the planner does to options);
  narrowed to run-to-run noise where this machine measured it (``estimate/watched.py``);
- **the teacher's pass and generation**, **set-up**, **checkpoints** and the **expected loss to failures**: no
  published calibration; their stated spreads.

The range of the whole is the sum of the parts' quantiles (an upper bound of the sum's quantile: the parts are not
assumed to cancel). ``at_confidence(sw, 0.8)`` is the time and cost the option stays under with that confidence;
the budget solver checks the deadline and the cost cap against it, so a recommendation "meets 3 h at P80".
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from .core import ADAPTERS, TEACHER_MODES, coefficients

RANGE_QUANTILES = (0.1, 0.9)        # the range shown: P10-P90
DEFAULT_CONFIDENCE = 0.8
TABLE_PARAMS_B = (1.0, 70.0)        # the calibration table's model sizes (billions) and sequence lengths
TABLE_SEQ_LEN = (2048, 8192)


def outside_table(params_b, seq_len):
    """Whether a model of ``params_b`` billion parameters at ``seq_len`` tokens lies outside the calibration table
    (arrays or scalars)."""
    return ~((TABLE_PARAMS_B[0] <= np.asarray(params_b)) & (np.asarray(params_b) <= TABLE_PARAMS_B[1])
             & (TABLE_SEQ_LEN[0] <= np.asarray(seq_len)) & (np.asarray(seq_len) <= TABLE_SEQ_LEN[1]))


def train_log_sd(family, calibrated, cpu, lora, outside, uncertainty: dict | None = None) -> np.ndarray:
    """The training part's log spread: the family's out-of-sample spread (``loso_log_sd``; a family it does not
    name takes the widest), times each stated widening that applies. Arrays or scalars, broadcast together.

    The planner's ranges (``spreads``) and the calibration's coverage check (benchmarks/calibrate_throughput.py)
    both call it, so a measurement row outside the table is judged by the same widened range a plan there gets.
    ``uncertainty``: the ``[uncertainty]`` table (default: throughput.toml's), e.g. with a spread fitted without
    one source."""
    u = uncertainty if uncertainty is not None else coefficients()["uncertainty"]
    table = u["loso_log_sd"]
    fam = np.atleast_1d(np.asarray(family, dtype=object))
    sd = np.asarray([float(table.get(f, max(table.values()))) for f in fam.ravel()]).reshape(fam.shape)
    sd = sd * np.where(calibrated, 1.0, u["uncalibrated_accelerator"])
    sd = sd * np.where(cpu, u["cpu"], 1.0)
    sd = sd * np.where(lora, u["lora"], 1.0)
    return sd * np.where(outside, u["outside_table"], 1.0)


def teacher_log_sd(family, calibrated, cpu, uncertainty: dict | None = None) -> np.ndarray:
    """The teacher pass's log spread: ``[forward_fit] log_sd`` of the family (out-of-sample error of the forward fit
    on published prefill measurements, benchmarks/calibrate_teacher_pass.py; a family it does not name takes the
    widest), widened as training's is for an accelerator no measurement covers. The prefill table says nothing of a
    CPU: there the teacher's forward takes the spread a CPU's training has (full training, inside the table)."""
    u = uncertainty if uncertainty is not None else coefficients()["uncertainty"]
    table = coefficients()["forward_fit"]["log_sd"]
    fam = np.atleast_1d(np.asarray(family, dtype=object))
    sd = np.asarray([float(table.get(f, max(table.values()))) for f in fam.ravel()]).reshape(fam.shape)
    sd = sd * np.where(calibrated, 1.0, u["uncalibrated_accelerator"])
    return np.where(cpu, train_log_sd(family, calibrated, True, False, False, u), sd)


def spreads(sw) -> dict[str, np.ndarray]:
    """Log standard deviation of each part of each option's time."""
    u = coefficients()["uncertainty"]
    accs = coefficients()["accelerators"]
    g, o, job = sw.grid, sw.out, sw.job
    names = sw.labels["accelerator"]
    acc = g.extra["accelerator"]
    family = np.asarray([accs.get(a, {}).get("family", "h100") for a in names], dtype=object)[acc]
    calibrated = np.asarray([bool(accs.get(a, {}).get("calibrated", False)) for a in names])[acc]
    cpu = np.asarray([a == "cpu" for a in names])[acc]
    train = train_log_sd(family, calibrated, cpu, g.adapter != ADAPTERS.index("full"),
                         outside_table(job.student.params / 1e9, job.seq_len), u)
    setup = np.full(len(sw), u["setup_log_sd"])
    code = o.get("calibration")
    if code is not None:          # watched runs: measured here, or corrected by them
        # the spread the runs showed here (between them and within them, with a floor), wider for a neighbour and
        # where the model is far off (estimate/watched.py: calibration_log_sd)
        here = o.get("calibration_log_sd")
        if here is None:
            here = np.where(code == 3, u["measured_here_log_sd"], u["corrected_here_log_sd"])
        train = np.where(code >= 2, np.where(np.isfinite(here), here, train), train)
        setup = np.where(code >= 2, u["measured_here_log_sd"] * 2, setup)
    # the teacher's forward (its share of online training, the offline top-k pass): the forward fit's spread
    teacher = teacher_log_sd(family, calibrated, cpu, u)
    mode = g.teacher_mode
    prepass = np.where(mode == TEACHER_MODES.index("generate"), u["generation_log_sd"], teacher)
    if code is not None:          # measured here, or corrected by a run here: the teacher ran in the measured steps
        teacher = np.where(code >= 2, train, teacher)
    return {"setup": setup, "prepass": prepass, "train": train, "teacher": teacher,
            "checkpoint": np.full(len(sw), u["checkpoint_log_sd"]),
            "transfer": np.full(len(sw), u["setup_log_sd"]),   # storage throughput: as uncertain as set-up
            "failure": np.full(len(sw), u["failure_log_sd"])}


_PARTS = (("setup", "setup_hours"), ("prepass", "prepass_hours"), ("train", "train_hours"),
          ("checkpoint", "checkpoint_hours"), ("transfer", "transfer_hours"), ("failure", "failure_hours"))


def hours_at(sw, q: float, sd: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Each option's time at quantile ``q`` (0.5: the model's own figure)."""
    o = sw.out
    sd = sd or spreads(sw)
    z = NormalDist().inv_cdf(q)
    zero = np.zeros(len(sw))
    # the online teacher's share of the training hours (core: teacher_share) takes the teacher pass's spread
    share = o.get("teacher_share", zero)
    parts = sum(o.get(col, zero) * (np.exp(z * sd[key]) if key != "train" else (1.0 - share) * np.exp(z * sd[key])
                                    + share * np.exp(z * sd.get("teacher", sd[key]))) for key, col in _PARTS)
    # what the model adds beyond its parts (none today) scales with them
    base = sum(o.get(col, zero) for _, col in _PARTS)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(base > 0, o["total_hours"] / base, 1.0)
    return np.where(np.isfinite(o["total_hours"]), parts * factor, o["total_hours"])


def cost_for(sw, hours: np.ndarray, staging_scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Cost at ``hours``: node-hours at the option's price (a split option's two stages: their blended rate).
    ``staging_scale``: how the models' staging time (part of set-up, on the staging VM at its own price) scales at
    the quantile ``hours`` is at, so that time is never counted at the nodes' rate, nor its removal cut their hours."""
    rate = sw.out.get("usd_per_hour")
    rate = rate if rate is not None else sw.grid.nodes * sw.grid.usd_per_node_hour
    staging = sw.out.get("staging_hours")      # on the staging VM, at its own price (estimate/core.py)
    if staging is None:
        return hours * rate
    return (hours - staging * staging_scale) * rate + sw.out["staging_usd"] * staging_scale


def _staging_scale(sw, q: float, sd: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The factor the staging time takes at quantile ``q``: set-up's, which it is part of (``hours_at``)."""
    sd = sd or spreads(sw)
    return np.exp(NormalDist().inv_cdf(q) * sd["setup"])


def at_confidence(sw, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(hours, cost) each option stays under with probability ``confidence``.

    Kept on the sweep for as long as its times are the same arrays (whatever recomputes them replaces them), so
    asking why each of thousands of options was rejected costs one evaluation, not one per option."""
    key = (float(confidence), sw.out["total_hours"], sw.out.get("cost_usd"))
    cached = sw.__dict__.get("_at_confidence")
    if cached is not None and cached[0][0] == key[0] and cached[0][1] is key[1] and cached[0][2] is key[2]:
        return cached[1]
    sd = spreads(sw)
    h = hours_at(sw, confidence, sd)
    result = (h, cost_for(sw, h, _staging_scale(sw, confidence, sd)))
    sw.__dict__["_at_confidence"] = (key, result)
    return result


def add_ranges(sw) -> None:
    """The P10-P90 range of every option's time and cost, in ``sw.out`` (``hours_low`` ... ``cost_high``)."""
    sd = spreads(sw)
    for name, q in zip(("low", "high"), RANGE_QUANTILES):
        h = hours_at(sw, q, sd)
        sw.out[f"hours_{name}"], sw.out[f"cost_{name}"] = h, cost_for(sw, h, _staging_scale(sw, q, sd))
