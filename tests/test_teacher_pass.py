"""The teacher pass's own calibration: the published prefill table, the forward fit core reads, the PCIe/NVL parts,
and the teacher's own range."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from distill_studio.engine.catalog.hardware import load_accelerators
from distill_studio.engine.catalog.models import resolve_model
from distill_studio.engine.estimate.core import TEACHER_MODES, Job, coefficients, evaluate
from distill_studio.engine.estimate.forward_calibration import errors, load_forward_measurements
from distill_studio.engine.estimate.ranges import hours_at, spreads
from distill_studio.engine.estimate.shape import shape_of
from distill_studio.engine.estimate.sweep import Machine, build_grid, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "forward_measurements.csv"


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def rows():
    return load_forward_measurements(TABLE)


def _script():
    path = ROOT / "benchmarks" / "calibrate_teacher_pass.py"
    spec = importlib.util.spec_from_file_location("calibrate_teacher_pass", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- the table ------------------------------------------------------------------------------------------------------

def test_table_loads_and_every_row_names_its_source_and_figure(rows):
    assert len(rows) >= 10 and len({m.source for m in rows}) >= 3
    for m in rows:
        assert m.source_url.startswith("https://"), m.id
        assert m.quoted.strip(), m.id
        assert f"{m.measured_ms:g}" in m.quoted, f"{m.id}: the quoted text must hold the figure {m.measured_ms:g}"
    fitted = [m for m in rows if m.fitted]
    assert len(fitted) >= 5 and {m.precision for m in fitted} <= {"bf16", "fp16"}
    assert all(m.prompt_tokens >= 1024 for m in fitted), "short prompts are latency-bound, not the teacher pass"


def test_a_row_without_its_source_is_refused_by_name(tmp_path):
    lines = TABLE.read_text().splitlines()
    header = lines[0].split(",")
    bad = tmp_path / "bad.csv"
    row = lines[1].split(",")
    row[header.index("source_url")] = "github.com/no-scheme"
    bad.write_text("\n".join([lines[0], ",".join(row)]) + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv line 2 .*source_url must be the source's https:// address"):
        load_forward_measurements(bad)
    row[header.index("source_url")] = ""
    bad.write_text("\n".join([lines[0], ",".join(row)]) + "\n")
    with pytest.raises(ValueError, match=r"'source_url' is empty"):
        load_forward_measurements(bad)


def test_committed_forward_fit_is_what_the_table_gives(rows):
    """[forward_fit] is written by the benchmark from the table: refitting gives the committed figures."""
    mod = _script()
    base = coefficients()
    ratio = mod.fit([m for m in rows if m.fitted], base)
    assert ratio == pytest.approx(base["forward_fit"]["efficiency_ratio"], abs=2e-3)
    _, sd = mod.spread(rows, base)
    assert sd == pytest.approx(base["forward_fit"]["log_sd"]["a100"], abs=2e-3)


def test_bf16_forward_estimate_stays_below_fp8_ceilings_on_one_gpu(rows):
    ceilings = [m for m in rows if m.ceiling and m.gpus == 1]
    assert ceilings
    assert np.all(errors(ceilings) < 0), "a bf16 forward cannot beat fp8 on the same stack"


def test_fitted_rows_within_stated_error(rows):
    fitted = [m for m in rows if m.fitted]
    e = np.abs(errors(fitted))
    assert np.median(e) <= 0.15
    # the spread the planner gives the teacher pass covers the worst fitted row within 1.5 standard deviations
    assert np.log1p(e.max()) <= 1.5 * coefficients()["forward_fit"]["log_sd"]["a100"]


# --- core reads the forward fit --------------------------------------------------------------------------------------

def _machine(acc_id: str, gpus: int = 8) -> Machine:
    a = load_accelerators()[acc_id]
    return Machine(id=acc_id, accelerator=a.id, gpus=gpus, peak_tflops=a.bf16_dense_tflops, hbm_gb=a.hbm_gb,
                   hbm_gb_per_s=a.hbm_gb_per_s, intra_gb_per_s=300.0, inter_gb_per_s=0.0,
                   usd_per_hour={"dedicated": 30.0}, max_nodes=1, priorities=("dedicated",))


def _job(teacher="qwq-32b", student="qwen2.5-7b"):
    return Job(student=shape_of(resolve_model(student)), teacher=shape_of(resolve_model(teacher)), method="logit-kd",
               seq_len=4096, tokens_per_epoch=1e8, epochs=1, global_batch_tokens=1 << 20)


def _eval(acc: str, modes=("none", "online", "offline-topk"), coeffs=None):
    job = _job()
    grid, labels = build_grid([_machine(acc)], has_teacher=True, teacher_modes=modes, nodes=1, coeffs=coeffs)
    out = evaluate(job, grid, coeffs)
    pick = (grid.adapter == 0) & (np.asarray(grid.recompute) == 0) & (grid.extra["teacher_precision"] == 0)
    pick &= grid.sharding == 1          # FSDP over the node's GPUs
    return grid, out, pick


def _at(grid, out, pick, mode):
    i = np.flatnonzero(pick & (grid.teacher_mode == TEACHER_MODES.index(mode)))[0]
    return {k: v[i] for k, v in out.items()}


def test_core_reads_the_forward_fit():
    base = coefficients()
    slow = copy.deepcopy(base)
    slow["forward_fit"]["efficiency_ratio"] = base["forward_fit"]["efficiency_ratio"] / 2
    g, o, p = _eval("a100-80gb-sxm")
    g2, o2, p2 = _eval("a100-80gb-sxm", coeffs=slow)
    # the top-k pass is a forward only: half the forward efficiency, nearly twice its hours (its memory-bound
    # part does not move)
    topk, topk2 = _at(g, o, p, "offline-topk")["prepass_hours"], _at(g2, o2, p2, "offline-topk")["prepass_hours"]
    assert 1.7 * topk < topk2 <= 2.0 * topk
    # online: only the teacher's share of a step slows down; a student alone does not move
    on, on2 = _at(g, o, p, "online"), _at(g2, o2, p2, "online")
    assert on2["train_hours"] > on["train_hours"] * (1 + 0.8 * on["teacher_share"])
    assert _at(g2, o2, p2, "none")["train_hours"] == pytest.approx(_at(g, o, p, "none")["train_hours"])
    assert 0.3 < on["teacher_share"] < 0.9 and _at(g, o, p, "none")["teacher_share"] == 0.0


@pytest.mark.parametrize("pcie, sxm", [("a100-80gb-pcie", "a100-80gb-sxm"), ("h100-nvl", "h100-sxm")])
def test_a_teacher_pass_on_a_pcie_or_nvl_part_is_slower_than_on_sxm(pcie, sxm):
    acc = coefficients()["accelerators"]
    assert acc[pcie]["ratio"] < acc[sxm]["ratio"] and not acc[pcie]["calibrated"]
    slow = _at(*_eval(pcie), "offline-topk")["prepass_hours"]
    fast = _at(*_eval(sxm), "offline-topk")["prepass_hours"]
    assert slow > 1.08 * fast
    # the power-limited ratio is what makes it slower, not only the card's own peak and bandwidth
    same = copy.deepcopy(coefficients())
    same["accelerators"][pcie]["ratio"] = same["accelerators"][sxm]["ratio"]
    assert _at(*_eval(pcie, coeffs=same), "offline-topk")["prepass_hours"] < slow


# --- the teacher's own range -----------------------------------------------------------------------------------------

def test_the_online_teacher_share_takes_the_teacher_pass_spread(monkeypatch):
    sw = run_sweep(_job(), [_machine("a100-80gb-sxm")], teacher_modes=("none", "online", "offline-topk"), nodes=1)
    o, g = sw.out, sw.grid
    sd = spreads(sw)
    online = np.flatnonzero((g.teacher_mode == TEACHER_MODES.index("online")) & np.isfinite(o["total_hours"]))
    alone = np.flatnonzero((g.teacher_mode == TEACHER_MODES.index("none")) & np.isfinite(o["total_hours"]))
    topk = np.flatnonzero((g.teacher_mode == TEACHER_MODES.index("offline-topk")) & np.isfinite(o["total_hours"]))
    i = online[0]
    fam = coefficients()["forward_fit"]["log_sd"]["a100"]
    assert sd["teacher"][i] == pytest.approx(fam) and sd["prepass"][topk[0]] == pytest.approx(fam)
    assert sd["teacher"][i] > sd["train"][i]
    # P90 of the training part: the student's share at the training spread, the teacher's at its own
    z = NormalDist().inv_cdf(0.9)
    share, train = o["teacher_share"][i], o["train_hours"][i]
    others = sum(o[c][i] * np.exp(z * sd[k][i]) for k, c in (("setup", "setup_hours"), ("prepass", "prepass_hours"),
                 ("checkpoint", "checkpoint_hours"), ("transfer", "transfer_hours"), ("failure", "failure_hours")))
    expect = others + train * ((1 - share) * np.exp(z * sd["train"][i]) + share * np.exp(z * sd["teacher"][i]))
    base = sum(o[c][i] for c in ("setup_hours", "prepass_hours", "train_hours", "checkpoint_hours",
                                  "transfer_hours", "failure_hours"))
    assert hours_at(sw, 0.9)[i] == pytest.approx(expect * o["total_hours"][i] / base)
    # a wider teacher spread widens options with a teacher, never a student alone
    before = hours_at(sw, 0.9)
    monkeypatch.setitem(coefficients()["forward_fit"], "log_sd", {"a100": 1.0, "h100": 1.0})
    after = hours_at(sw, 0.9)
    assert np.all(after[online] > before[online]) and np.all(after[topk] > before[topk])
    assert after[alone] == pytest.approx(before[alone])


def test_on_a_cpu_the_teacher_pass_takes_the_cpu_training_spread():
    from distill_studio.engine.estimate.ranges import teacher_log_sd, train_log_sd

    gpu = teacher_log_sd(np.array(["a100"], dtype=object), np.array([True]), np.array([False]))
    assert gpu[0] == pytest.approx(coefficients()["forward_fit"]["log_sd"]["a100"])
    cpu = teacher_log_sd(np.array(["a100"], dtype=object), np.array([False]), np.array([True]))
    assert cpu[0] == pytest.approx(train_log_sd("a100", False, True, False, False)[0])
    # not the forward fit's GPU spread widened twice more: the prefill table says nothing of a CPU
    assert cpu[0] < gpu[0] * coefficients()["uncertainty"]["uncalibrated_accelerator"] * \
        coefficients()["uncertainty"]["cpu"]
