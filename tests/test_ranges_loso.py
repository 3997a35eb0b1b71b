"""The training range comes from out-of-sample error: the spread that benchmarks/calibrate_throughput.py derives from
leave-one-source-out residuals holds 80% of rows it was not derived from, the file it writes is what the planner
reads, the calibration rows are widened exactly as plans are, and `distill estimate --json` carries the range a
plan's option does.

No fit runs here (the benchmark's Nelder-Mead fits take tens of seconds): the mechanism is checked on synthetic
residuals and on a copy of throughput.toml."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import tomllib
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from distill_studio.engine.cli import main
from distill_studio.engine.estimate.core import coefficients
from distill_studio.engine.estimate.ranges import add_ranges, outside_table, spreads, train_log_sd

ROOT = Path(__file__).resolve().parents[1]
COEFFS = ROOT / "engine" / "estimate" / "data" / "throughput.toml"
PLANS = ROOT / "resources" / "plans"
Z = NormalDist().inv_cdf(0.9)


@pytest.fixture(scope="module")
def calib():
    path = ROOT / "benchmarks" / "calibrate_throughput.py"
    spec = importlib.util.spec_from_file_location("calibrate_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rows(calib):
    return [m for m in calib.load_measurements(calib.TABLE) if m.fitted]


# ----------------------------------------------------------------------------------------------------------------
# The spread from residuals


def _inside(r, sd, factor=1.0):
    return np.abs(r) <= Z * sd * factor


def test_the_spread_holds_80_percent_of_new_biased_heavy_tailed_residuals_where_a_standard_deviation_does_not(calib):
    """Over many tables of 40 residuals (as few as a family has), the range holds at least 80% of new rows on
    average, as a conformal quantile promises, and not much more; the standard deviation holds less."""
    rng = np.random.default_rng(7)
    draw = lambda *n: 0.1 + 0.08 * rng.standard_t(5, n)      # noqa: E731  biased (+10%), heavy-tailed
    new = np.sort(np.abs(draw(200_000)))
    held = lambda sd: np.searchsorted(new, Z * sd, side="right") / len(new)      # noqa: E731
    pasts = draw(400, 40)
    by_spread = np.array([held(calib.loso_spread(p, np.ones(len(p)))) for p in pasts])
    by_sd = np.array([held(np.std(p, ddof=1)) for p in pasts])
    assert 0.8 <= by_spread.mean() <= 0.86, by_spread.mean()
    assert by_sd.mean() < 0.78, by_sd.mean()


def test_the_spread_is_judged_after_each_rows_widening(calib):
    """Rows that a plan would widen (outside the table) count by |r| / factor: the same spread then covers both."""
    rng = np.random.default_rng(3)
    factors = np.where(np.arange(400) % 2 == 0, 1.0, 1.5)
    r = rng.normal(0, 0.1, 400) * factors
    sd = calib.loso_spread(r, factors)
    assert sd == pytest.approx(0.1, rel=0.2)
    new_f = np.where(np.arange(100_000) % 2 == 0, 1.0, 1.5)
    new = rng.normal(0, 0.1, 100_000) * new_f
    for f in (1.0, 1.5):
        assert 0.74 <= _inside(new[new_f == f], sd, f).mean() <= 0.88
    with pytest.raises(ValueError, match="no residuals"):
        calib.loso_spread(np.array([]), np.array([]))


def test_coverage_is_nested_a_source_is_judged_by_a_spread_derived_without_it(calib, rows):
    """One source far off: judged by the others' spread, its rows fall outside; the spread written from every
    source, which includes it, covers some of them. A check that let a source into its own spread would not see it."""
    u = coefficients()["uncertainty"]
    family, factors = calib.row_factors(rows, u)
    sources = np.asarray([m.source for m in rows], dtype=object)
    big = max(set(sources), key=lambda s: (sources == s).sum())
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.03, len(rows)) * factors
    r[sources == big] = 0.6 * factors[sources == big] * np.where(rng.random((sources == big).sum()) < 0.5, 1, -1)
    check = calib.coverage_check(rows, r, u)
    others = int((sources != big).sum())
    assert check["loso"]["inside"] <= others                      # none of the far-off source's rows
    assert check["written"]["inside"] > check["loso"]["inside"]
    assert check["loso"]["rows"] == len(rows)
    # the width is that of the spreads used, widened per row
    assert check["written"]["width"] > check["loso"]["width"] > 1.0


def test_rows_outside_the_table_are_widened_as_plans_are(calib, rows):
    u = coefficients()["uncertainty"]
    family, factors = calib.row_factors(rows, u)
    for m, f in zip(rows, factors):
        out = m.seq_len > 8192 or m.shape.params / 1e9 > 70
        assert f == pytest.approx(u["outside_table"] if out else 1.0), m.id
    assert any(f > 1 for f in factors)      # the long-sequence rows
    assert bool(outside_table(7.0, 32768)) and not bool(outside_table(7.0, 4096))


# ----------------------------------------------------------------------------------------------------------------
# What --fit writes is what the planner reads


def test_write_spread_rewrites_only_its_lines_and_ranges_read_them(calib, tmp_path, monkeypatch):
    copy = tmp_path / "throughput.toml"
    shutil.copy(COEFFS, copy)
    monkeypatch.setattr(calib, "COEFFS", copy)
    before = tomllib.loads(copy.read_text())
    calib.write_spread({"a100": 0.321, "h100": 0.456}, {"a100": 3, "h100": 2}, 2)
    calib.write_fit(np.array([0.5, 0.4, 0.7, 400.0]), 5)
    after = tomllib.loads(copy.read_text())
    assert after["uncertainty"]["loso_log_sd"] == {"a100": 0.321, "h100": 0.456}
    assert after["fit"]["matmul_efficiency"] == {"a100": 0.5, "h100": 0.4} and after["fit"]["rows"] == 5
    for section in before:              # every other section, and every other key of these two, as it was
        for key, value in before[section].items():
            if (section, key) not in {("uncertainty", "loso_log_sd"), ("fit", "matmul_efficiency"), ("fit", "rows"),
                                      ("fit", "date"), ("fit", "attention_ratio"),
                                      ("fit", "memory_bytes_per_token_layer_hidden")}:
                assert after[section][key] == value, (section, key)
    # written twice: still one line each
    calib.write_spread({"a100": 0.2, "h100": 0.3}, {"a100": 3, "h100": 2}, 2)
    assert copy.read_text().count("loso_log_sd = {") == 1
    written = tomllib.loads(copy.read_text())["uncertainty"]
    sd = train_log_sd(["a100", "h100", "tpu"], True, False, False, False, written)
    assert sd.tolist() == [0.2, 0.3, 0.3]       # a family it does not name: the widest


def test_the_planner_reads_the_committed_spread_and_widens_it_as_stated(monkeypatch):
    os.environ.setdefault("DISTILL_STUDIO_DATA_DIR", "/nonexistent-distill-cache")   # no watched runs
    from distill_studio.engine.plan import load_plan
    from distill_studio.engine.planner import analyse

    written = tomllib.loads(COEFFS.read_text())["uncertainty"]
    a = analyse(load_plan(PLANS / "phi4-to-phi4mini-3h.toml"), PLANS)
    sw = a.sweep
    sd = spreads(sw)["train"]
    acc = np.asarray(sw.labels["accelerator"], dtype=object)[sw.grid.extra["accelerator"]]
    full = sw.grid.adapter == 0
    assert not bool(outside_table(sw.job.student.params / 1e9, sw.job.seq_len))
    for name, expected in (("h100-sxm", written["loso_log_sd"]["h100"]),
                           ("a100-80gb-sxm", written["loso_log_sd"]["a100"]),
                           ("a100-80gb-pcie", written["loso_log_sd"]["a100"] * written["uncalibrated_accelerator"])):
        sel = (acc == name) & full
        assert sel.any(), name
        assert sd[sel] == pytest.approx(expected), name
    lora = (acc == "h100-sxm") & ~full
    assert sd[lora] == pytest.approx(written["loso_log_sd"]["h100"] * written["lora"])

    # a wider out-of-sample spread widens the range of training time, by exactly its part
    add_ranges(sw)
    hi, lo = sw.out["hours_high"].copy(), sw.out["hours_low"].copy()
    u = coefficients()["uncertainty"]
    monkeypatch.setitem(u, "loso_log_sd", {k: 2 * v for k, v in u["loso_log_sd"].items()})
    add_ranges(sw)
    i = int(np.flatnonzero((acc == "h100-sxm") & full & np.isfinite(sw.out["total_hours"]))[0])
    # (an online teacher's share of the training hours takes the teacher pass's spread, not this one)
    s, t = sd[i], sw.out["train_hours"][i] * (1.0 - sw.out.get("teacher_share", np.zeros(len(sw)))[i])
    assert sw.out["hours_high"][i] - hi[i] == pytest.approx(t * (np.exp(2 * Z * s) - np.exp(Z * s)), rel=1e-6)
    assert lo[i] - sw.out["hours_low"][i] == pytest.approx(t * (np.exp(-Z * s) - np.exp(-2 * Z * s)), rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# distill estimate --json


def _cli(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue()


ESTIMATE = ["estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--gpus", "8", "--seq-len", "8192",
            "--global-batch-tokens", "1048576"]


def test_estimate_json_carries_the_range_a_plan_gives(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path))
    rc, out = _cli([*ESTIMATE, "--json"])
    assert rc == 0
    doc = json.loads(out)
    rng = doc["range"]
    assert set(rng) == {"hours", "cost_usd", "confidence", "at_confidence"}
    assert set(rng["at_confidence"]) == {"hours", "cost_usd"}
    lo, hi = rng["hours"]
    assert lo < doc["hours"]["total"] < rng["at_confidence"]["hours"] < hi
    assert rng["confidence"] == 0.8 and rng["cost_usd"] == [None, None]     # no price: no cost
    # calibrated H100, full training, inside the table: the training part is the committed spread, nothing wider
    s = tomllib.loads(COEFFS.read_text())["uncertainty"]["loso_log_sd"]["h100"]
    train = doc["hours"]["training"]
    assert hi - lo >= train * (np.exp(Z * s) - np.exp(-Z * s)) * 0.999
    rc, out95 = _cli([*ESTIMATE, "--json", "--confidence", "0.95"])
    at95 = json.loads(out95)["range"]
    assert at95["confidence"] == 0.95 and at95["at_confidence"]["hours"] > hi
    rc, text = _cli(ESTIMATE)
    assert rc == 0 and "P10-P90" in text and "P80" in text


def test_estimate_and_plan_json_give_one_range_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path))
    rc, out = _cli(["plan", PLANS / "phi4-to-phi4mini-3h.toml", "--json", "--top", "1"])
    assert rc == 0
    plan_rng = json.loads(out)["recommendation"]["range"]
    est_rng = json.loads(_cli([*ESTIMATE, "--json"])[1])["range"]
    assert set(plan_rng) == set(est_rng) and set(plan_rng["at_confidence"]) == set(est_rng["at_confidence"])
    assert len(plan_rng["hours"]) == len(est_rng["hours"]) == 2


def test_fit_runs_end_to_end_and_writes_what_it_prints(calib, tmp_path, monkeypatch, capsys):
    """`calibrate_throughput.py --fit` on a copy of throughput.toml, with the Nelder-Mead search replaced by the
    committed coefficients (the search is the slow part, not what is checked here): it writes [fit] and the spread,
    prints the coverage lines, and what it writes is the spread it printed."""
    import functools

    copy = tmp_path / "throughput.toml"
    shutil.copy(COEFFS, copy)
    monkeypatch.setattr(calib, "COEFFS", copy)

    @functools.lru_cache(maxsize=1)
    def coeffs():
        return tomllib.loads(copy.read_text())

    monkeypatch.setattr(calib, "coefficients", coeffs)
    f = coeffs()["fit"]
    committed = np.array([f["matmul_efficiency"]["a100"], f["matmul_efficiency"]["h100"], f["attention_ratio"],
                          f["memory_bytes_per_token_layer_hidden"]])
    monkeypatch.setattr(calib, "fit", lambda rows, base: committed)
    assert calib.main(["--fit"]) == 0
    out = capsys.readouterr().out
    assert "leave one source out, spread derived without the source:" in out and "median width" in out
    assert "in sample, the fit's own scatter" in out
    printed = out.split("loso_log_sd = { ")[1].split(" }")[0]
    written = tomllib.loads(copy.read_text())
    assert printed == ", ".join(f"{k} = {v:.3f}" for k, v in written["uncertainty"]["loso_log_sd"].items())
    assert set(written["uncertainty"]["loso_log_sd"]) == {"a100", "h100"}
    assert all(0.01 < v < 1.0 for v in written["uncertainty"]["loso_log_sd"].values())
    assert written["fit"]["matmul_efficiency"]["a100"] == pytest.approx(committed[0], abs=1e-4)
