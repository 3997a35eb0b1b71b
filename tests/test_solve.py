"""The budget solver speaks of one time and one cost: each option's figure at the plan's confidence. The deadline and
the cap are judged on it, and the recommendation, the fastest, the cheapest, the Pareto front and every figure a
message quotes are ranked on it, so "the cheapest" is one option and one number wherever it is said."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from distill_studio.engine.estimate.ranges import at_confidence
from distill_studio.engine.estimate.solve import decide, reason, usd_text
from distill_studio.engine.plan import load_plan
from distill_studio.engine.planner import analyse

PLANS = Path(__file__).resolve().parents[1] / "resources" / "plans"


@pytest.fixture(scope="module")
def gemma():
    os.environ.setdefault("DISTILL_STUDIO_DATA_DIR", "/nonexistent-distill-cache")   # no watched runs
    plan = load_plan(PLANS / "gemma3-27b-to-4b-3h.toml")
    return analyse(plan, PLANS)


def _money(message: str, after: str) -> float:
    m = re.search(re.escape(after) + r" \$([\d,]+(?:\.\d\d)?)", message)
    assert m, message
    return float(m.group(1).replace(",", ""))


def test_the_cheapest_is_one_option_and_one_figure_in_the_recommendation_and_the_cap_message(gemma):
    a = gemma
    assert a.plan.budget.confidence == 0.8 and a.plan.budget.usd is None
    sw, o = a.sweep, a.sweep.out
    hq, cq = at_confidence(sw, 0.8)
    d = decide(sw, a.planned, 3.0, None, 0.8)
    rec = d.recommended
    assert rec is not None and hq[rec] <= 3.0
    # the recommendation is the cheapest at P80 among the options that finish within 3 h at P80
    in_time = np.flatnonzero(d.meets & np.isfinite(o["cost_usd"]))
    assert cq[rec] == pytest.approx(cq[in_time].min())
    # and the figures the decision carries are those P80 figures, not the medians
    assert d.confidence == 0.8
    assert d.cost[rec] == pytest.approx(cq[rec]) and d.hours[rec] == pytest.approx(hq[rec])
    assert d.cost[rec] > o["cost_usd"][rec]
    # a cap just under it: the message names the same option at the same figure
    capped = decide(sw, a.planned, 3.0, float(np.floor(cq[rec])) - 1, 0.8)
    assert capped.recommended is None
    said = _money(capped.impossible, "the cheapest option within 3 h at P80 costs")
    assert usd_text(said) == usd_text(cq[rec]) and f"({sw.hardware(rec)})" in capped.impossible


def test_fastest_cheapest_and_front_are_ranked_at_the_confidence(gemma):
    a = gemma
    sw = a.sweep
    d = decide(sw, a.planned, 3.0, None, 0.8)
    hq, cq = d.hours, d.cost
    cand = np.flatnonzero(d.candidates)
    assert hq[d.fastest] == pytest.approx(hq[cand].min())
    priced = cand[np.isfinite(cq[cand])]
    assert cq[d.cheapest] == pytest.approx(cq[priced].min())
    assert d.fastest_priced is not None and np.isfinite(cq[d.fastest_priced])
    assert hq[d.fastest_priced] == pytest.approx(hq[priced].min())
    # no candidate beats a front point on both figures at P80
    for i in d.pareto:
        if np.isfinite(cq[i]):
            assert not np.any((hq[priced] < hq[i] - 1e-12) & (cq[priced] < cq[i] - 1e-9))
    # at P50 the figures are the model's medians
    d50 = decide(sw, a.planned, 3.0, None, 0.5)
    assert d50.hours is sw.out["total_hours"] and d50.cost is sw.out["cost_usd"]
    assert "P" not in d50.rationale


def test_a_deadline_nothing_meets_says_how_far_the_fastest_is_at_the_confidence(gemma):
    a = gemma
    sw = a.sweep
    hq, _ = at_confidence(sw, 0.8)
    cand = decide(sw, a.planned, None, None, 0.8).candidates
    # a deadline some options meet at their median but none at P80 (the review's "points left of the line")
    deadline = round(float(sw.out["total_hours"][cand].min() + hq[cand].min()) / 2, 2)
    d = decide(sw, a.planned, deadline, None, 0.8)
    assert d.recommended is None
    assert f"no option finishes within {deadline:g} h at P80" in d.impossible
    m = re.search(r"the fastest takes ([\d.]+) h at P80 \((.+?)\)", d.impossible)
    assert m, d.impossible
    assert float(m.group(1)) > deadline and m.group(2) == sw.hardware(d.fastest)
    # what is drawn at P80 is right of the deadline for every option, though some medians are left of it
    assert np.all(d.hours[d.candidates] > deadline)
    assert np.any(sw.out["total_hours"][d.candidates] < deadline)


def test_caps_under_ten_dollars_keep_their_cents(gemma):
    a = gemma
    d = decide(a.sweep, a.planned, None, 0.2, 0.8)
    assert d.recommended is None
    assert "no option costs under $0.20 at P80" in d.impossible, d.impossible
    assert "$0 " not in d.impossible and not d.impossible.endswith("$0")
    i = int(np.flatnonzero(d.candidates & np.isfinite(d.cost))[0])
    text = reason(a.sweep, i, None, 0.2, a.planned, confidence=0.8)
    assert "> $0.20" in text, text
    assert decide(a.sweep, a.planned, None, 5.5, 0.8).impossible.startswith("no option costs under $5.50")
    assert usd_text(0.2) == "$0.20" and usd_text(9.994) == "$9.99" and usd_text(1234.4) == "$1,234"
    assert usd_text(float("nan")) == "price unknown"


def test_a_range_of_cost_follows_its_range_of_time_with_the_staging_at_its_own_price(gemma):
    """Cost at P10, the confidence and P90 is each quantile's node-hours at the nodes' rate plus the models' staging
    at the staging VM's price: the staging time (part of set-up) scales with set-up, so the P10 cost is not cut to a
    few dollars by taking the median staging time off a shorter P10 time."""
    o = gemma.sweep.out
    staged = np.flatnonzero(gemma.planned & np.isfinite(o["cost_usd"]) & (o["staging_hours"] > 0.3 * o["total_hours"]))
    assert staged.size
    lo, mid, hi = o["cost_low"][staged], o["cost_usd"][staged], o["cost_high"][staged]
    assert np.all(lo < mid) and np.all(mid < hi)
    # node time at P10 is at least the P10 share of the median's: the cost may not fall faster than the time does
    nodes_lo = lo - o["staging_usd"][staged]
    nodes_mid = mid - o["staging_usd"][staged]
    share = o["hours_low"][staged] / o["total_hours"][staged]
    assert np.all(nodes_lo / nodes_mid > 0.5 * share), float((nodes_lo / nodes_mid / share).min())
    _, cq = at_confidence(gemma.sweep, 0.8)
    assert np.all(cq[staged] > mid) and np.all(cq[staged] < hi)
