"""Money is committed only knowingly: what `distill run`, `distill azure submit` and the app's Launch execute when the
planner recommends nothing, an unpriced size, the range a confirmation shows, and the run's own stop at its budget."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from distill_studio.engine.catalog.prices import load_prices
from distill_studio.engine.errors import DistillError, RunError
from distill_studio.engine.plan import load_plan, plan_from_dict
from distill_studio.engine.planner import analyse, check_launch_risks, resolve_run

ROOT = Path(__file__).resolve().parents[1]
PLANS = ROOT / "resources" / "plans"
QWQ = PLANS / "qwq32b-to-qwen7b-3h.toml"


def qwq(**budget) -> object:
    doc = load_plan(QWQ).model_dump(mode="json", exclude_none=True)
    doc["budget"].update(budget)
    return plan_from_dict(doc)


def write(plan, path: Path) -> Path:
    import tomli_w

    path.write_bytes(tomli_w.dumps(plan.model_dump(mode="json", exclude_none=True)).encode())
    return path


def test_a_plan_the_planner_rejects_is_resolved_with_its_risks_named():
    r = resolve_run(qwq(hours=0.3), PLANS)
    assert not r.recommended
    assert any(x.startswith("the planner recommends no option: no option finishes within 0.3 h") for x in r.risks)
    assert any(x.startswith("it misses the deadline:") and "at P80 against 18 min" in x for x in r.risks)
    # a recommended plan has none
    ok = resolve_run(load_plan(QWQ), PLANS)
    assert ok.recommended and ok.risks == []


def test_the_fallback_prefers_a_priced_option_and_says_why():
    """Without the fastest size's price, the fallback is the fastest size WITH a price, never the unpriced one."""
    plan = qwq(hours=0.3)
    full = load_prices("eastus")
    fastest = analyse(plan, PLANS, full)
    f = fastest.decision.fastest
    sku = fastest.sweep.row(f)["sku"]
    prices = replace(full, prices=[p for p in full.prices if p.sku != sku])
    a = analyse(plan, PLANS, prices)
    assert not np.isfinite(a.sweep.out["cost_usd"][a.decision.fastest])   # the fastest is now unpriced
    r = resolve_run(plan, PLANS, prices)
    assert r.plan.hardware.sku != sku and r.estimate["cost_usd"] is not None and not r.unpriced
    assert r.why.startswith("the fastest option with a known price") and "has no price in the region" in r.why


def test_an_unpriced_size_is_priced_only_by_a_confirmed_hourly_price():
    plan = load_plan(QWQ).model_copy(deep=True)
    plan.hardware.sku = "Standard_ND96isr_H200_v5"
    r = resolve_run(plan, PLANS)
    assert r.unpriced and r.estimate["cost_usd"] is None and r.estimate["price"] is None
    assert any("no price is known for Standard_ND96isr_H200_v5" in x for x in r.risks)
    priced = resolve_run(plan, PLANS, usd_per_hour=100.0)
    assert not priced.unpriced and priced.plan.hardware.usd_per_hour == 100.0
    assert priced.plan.hardware.sku == "Standard_ND96isr_H200_v5" and priced.nodes == r.nodes
    price = priced.estimate["price"]
    assert price["usd_per_node_hour"] == 100.0 and price["source"] == "confirmed at launch"
    # the cost follows the price confirmed (set-up the VM is not yet billed for is not counted, so not hours x rate)
    double = resolve_run(plan, PLANS, usd_per_hour=200.0)
    assert priced.estimate["cost_usd"] > 0
    assert double.estimate["cost_usd"] == pytest.approx(2 * priced.estimate["cost_usd"], rel=0.01)
    # a price confirmed for a size the table prices is not taken over the table's
    table = resolve_run(load_plan(QWQ), PLANS, usd_per_hour=1.0)
    assert table.estimate["price"]["usd_per_node_hour"] > 1.0


def test_the_range_a_confirmation_shows():
    r = resolve_run(load_plan(QWQ), PLANS)
    rng = r.estimate["range"]
    h, c = rng["hours"], rng["cost_usd"]
    assert rng["confidence"] == 0.8
    assert h[0] < rng["median_hours"] < h[1] < h[2] and c[0] < rng["median_cost_usd"] < c[1] < c[2]
    assert h[1] <= 3.0 and c[1] <= 3000       # the recommendation meets the budget at its confidence
    assert r.estimate["price"]["usd_per_node_hour"] > 0 and r.estimate["price"]["date"]


def test_risks_stop_a_launch_unless_forced(capsys):
    r = resolve_run(qwq(hours=0.3), PLANS)
    with pytest.raises(RunError, match=r"(?s)not started: the planner does not stand behind.*--force"):
        check_launch_risks(r, False, "distill run")
    check_launch_risks(r, True, "distill run")
    assert "--force: starting on" in capsys.readouterr().err


def test_distill_run_refuses_a_rejected_plan_before_anything_starts(tmp_path):
    demo = load_plan(ROOT / "resources" / "demo" / "plan.toml").model_dump(mode="json", exclude_none=True)
    demo["budget"] = {"hours": 0.0001}
    for key in ("teacher", "student"):
        demo[key]["model"] = str(ROOT / "resources" / "demo" / demo[key]["model"])
    for key in ("train", "eval", "prompts"):
        if isinstance(demo["data"].get(key), str):
            demo["data"][key] = str(ROOT / "resources" / "demo" / demo["data"][key])
    plan = write(plan_from_dict(demo), tmp_path / "demo-fast.toml")
    out = subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", "run", str(plan), "--run-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "not started: the planner does not stand behind this run on this machine" in out.stderr
    assert "it misses the deadline" in out.stderr and "--force" in out.stderr
    assert not (tmp_path / "run" / "events.jsonl").exists()


def test_azure_submit_refuses_an_unpriced_size_even_forced_and_a_rejected_plan_unless_forced(tmp_path):
    """Checked before Azure is reached: this machine has no Azure, and nothing is created."""
    plan = load_plan(QWQ).model_copy(deep=True)
    plan.hardware.sku = "Standard_ND96isr_H200_v5"
    path = write(plan, tmp_path / "h200.toml")
    cmd = [sys.executable, "-m", "distill_studio.engine.cli", "azure", "submit", str(path), "--run-dir",
           str(tmp_path / "run")]
    out = subprocess.run(cmd + ["--force"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "no price is known for Standard_ND96isr_H200_v5" in out.stderr
    assert "--usd-per-hour" in out.stderr and not (tmp_path / "run" / "azure.json").exists()
    late = write(qwq(hours=0.3), tmp_path / "late.toml")
    out = subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", "azure", "submit", str(late),
                          "--run-dir", str(tmp_path / "run2")], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "not started: the planner does not stand behind" in out.stderr
    out = subprocess.run(cmd + ["--usd-per-hour", "-3"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "--usd-per-hour: -3 is not a price" in out.stderr


# ---- budget.stop_at ---------------------------------------------------------------------------------------------

def test_stop_at_needs_its_limit():
    with pytest.raises(DistillError, match="needs budget.hours"):
        qwq(hours=None, stop_at="deadline")
    with pytest.raises(DistillError, match="needs budget.usd"):
        qwq(usd=None, stop_at="cap")
    assert qwq(stop_at="either").budget.stop_at == "either"


def test_the_budget_stop_counts_the_earlier_sessions_and_the_nearer_limit(tmp_path):
    from distill_studio.engine.train.run import StopFlag, budget_stop, prior_active_seconds

    events = tmp_path / "events.jsonl"
    rows = [{"time": 100.0, "type": "run_started"}, {"time": 160.0, "type": "metric"},
            {"time": 1000.0, "type": "run_started"}, {"time": 1030.0, "type": "metric"}]
    events.write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn")
    assert prior_active_seconds(events) == pytest.approx(90.0)
    r = resolve_run(load_plan(QWQ), PLANS)
    rate = r.estimate["price"]["usd_per_node_hour"] * r.estimate["price"]["nodes"]
    plan = qwq(hours=3.0, usd=rate * 1.0, stop_at="either")       # the cap is reached after 1 h, the deadline at 3
    seconds, why = budget_stop(plan, r, events)
    assert seconds == pytest.approx(3600 - 90) and why.startswith("the cost cap")
    seconds, why = budget_stop(qwq(hours=3.0, stop_at="deadline"), r, events)
    assert seconds == pytest.approx(3 * 3600 - 90) and why.startswith("the deadline (3.0 h)")
    assert budget_stop(qwq(), r, events) is None
    flag = StopFlag()
    flag.until(0.0, why)           # already past: the loop's next check stops the run, saying why
    assert flag() and flag.signal == why


def test_stop_at_chosen_at_launch_is_checked_and_kept(tmp_path):
    from distill_studio.engine.plan import with_stop_at

    assert with_stop_at(qwq(), "either").budget.stop_at == "either"
    with pytest.raises(DistillError, match=r"(?s)--stop-at.*needs budget.usd"):
        with_stop_at(qwq(usd=None), "cap")
    # the Azure job's staged plan carries it (the node's engine stops by it)
    from distill_studio.engine.azure.job import build

    spec = build(QWQ, "job-x", tmp_path / "code", stop_at="deadline")
    assert load_plan(tmp_path / "code" / "plan.toml").budget.stop_at == "deadline"
    assert spec.estimate["range"]["hours"][1] <= 3.0
