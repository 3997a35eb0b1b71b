"""The budget solver: which options meet the deadline and the cost cap, the recommendation, and for each option it
rejects, the reason.

An option the region cannot give (the size is not offered to the subscription, or its quota is short for that many
nodes at that priority) is marked False in ``sw.out["available"]`` by the planner; it is never a candidate, so it is
never recommended, fastest, cheapest or on the Pareto front, and its reason is the capacity problem. Keeping the mask
on the sweep means re-solving the budget over the same sweep (the planner view's controls) keeps it too."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ranges import at_confidence
from .sweep import Sweep, pareto_front

GIB = 1024**3


def hours_text(h: float) -> str:
    """A duration in the unit that reads best: seconds, minutes, hours or days (never "0.0 h")."""
    if not np.isfinite(h):
        return "—"
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.0f} min"
    return f"{h:.1f} h" if h < 100 else f"{h / 24:.1f} d"


def usd_text(v: float) -> str:
    """Dollars as a message gives them: cents below $10 ("$0.20", never "$0"), whole dollars above ("$1,234")."""
    if not np.isfinite(v):
        return "price unknown"
    return f"${v:,.2f}" if abs(v) < 10 else f"${v:,.0f}"


def confidence_text(confidence: float) -> str:
    """" at P80" for a confidence above the median; "" at P50 (the figures are the model's own)."""
    return f" at P{round(confidence * 100)}" if confidence > 0.5 else ""


@dataclass
class Decision:
    candidates: np.ndarray        # bool: as planned, runnable (fits) and available in the region
    meets: np.ndarray             # bool: candidates within the deadline and the cost cap
    pareto: np.ndarray            # indices, fastest first
    recommended: int | None
    rationale: str
    impossible: str = ""          # why no option meets the budget, with the fastest and cheapest
    fastest: int | None = None
    cheapest: int | None = None
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.5       # the quantile every figure below is at
    hours: np.ndarray | None = None   # each option's time at ``confidence`` (the median at 0.5)
    cost: np.ndarray | None = None    # each option's cost at ``confidence``
    fastest_priced: int | None = None   # the fastest candidate whose price is known (``fastest`` may have none)


def _option(sw: Sweep, i: int) -> str:
    return sw.hardware(i)


def reason(sw: Sweep, i: int, hours_cap: float | None, usd_cap: float | None, planned: np.ndarray,
           problem: str = "", confidence: float = 0.5) -> str:
    """Why option ``i`` is not a choice ("" if it is one). ``problem`` is the capacity sentence of an option the
    region cannot give (``sw.out["available"]`` False)."""
    o = sw.out
    if not planned[i]:
        return "not as planned"
    available = o.get("available")
    if available is not None and not available[i]:
        return problem or "not available in this region for this subscription (capacity or quota)"
    if not o["fits_train"][i]:
        return (f"does not fit: needs {o['mem_total'][i] / GIB:.1f} GiB per GPU, "
                f"{o['mem_usable'][i] / GIB:.1f} GiB usable")
    if not o["fits_prepass"][i]:
        return "does not fit: the teacher's own pass (top-k caching or generation) needs more memory than the node has"
    h, usd = float(o["total_hours"][i]), float(o["cost_usd"][i])
    hq, uq = (float(x[i]) for x in at_confidence(sw, confidence)) if confidence > 0.5 else (h, usd)
    at = confidence_text(confidence)
    if hours_cap is not None and hq > hours_cap:
        return f"misses the deadline: {hq:.2f} h{at} > {hours_cap:g} h" + (f" (median {h:.2f} h)" if at else "")
    if usd_cap is not None and np.isfinite(uq) and uq > usd_cap:
        return (f"over budget: {usd_text(uq)}{at} > {usd_text(usd_cap)}"
                + (f" (median {usd_text(usd)})" if at else ""))
    if not np.isfinite(usd):
        return "price unknown in this region"
    return ""


def decide(sw: Sweep, planned: np.ndarray, hours_cap: float | None, usd_cap: float | None,
           confidence: float = 0.5) -> Decision:
    """``confidence`` > 0.5: the deadline and the cost cap must hold at that quantile of each option's range
    (``ranges.py``), not only at the model's median figure; the options are ranked, and named in messages, at that
    quantile too."""
    o = sw.out
    hours, cost = o["total_hours"], o["cost_usd"]
    hq, cq = at_confidence(sw, confidence) if confidence > 0.5 else (hours, cost)
    runnable = planned & o["fits"] & np.isfinite(hours)
    available = o.get("available")
    cand = runnable & available if available is not None else runnable
    priced = cand & np.isfinite(cq)
    in_time = cand & (hq <= hours_cap) if hours_cap is not None else cand.copy()
    in_cost = (np.isfinite(cq) & (cq <= usd_cap)) if usd_cap is not None else np.ones(len(sw), dtype=bool)
    meets = in_time & in_cost
    front = pareto_front(hq, cq, cand)

    def argmin(values: np.ndarray, mask: np.ndarray, tie: np.ndarray) -> int | None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        return int(idx[np.lexsort((tie[idx], values[idx]))[0]])

    cq_or_inf = np.nan_to_num(cq, nan=np.inf)
    fastest = argmin(hq, cand, cq_or_inf)
    cheapest = argmin(cq, priced, hq)
    d = Decision(candidates=cand, meets=meets, pareto=front, recommended=None, rationale="",
                 fastest=fastest, cheapest=cheapest, confidence=confidence, hours=hq, cost=cq,
                 fastest_priced=argmin(hq, priced, cq))

    if not cand.any():
        if runnable.any():
            d.impossible = ("no option as planned that fits in memory is available in the region: the sizes are not "
                            "offered to this subscription or their quota is short")
        else:
            d.impossible = "no option as planned fits in memory" if planned.any() else "no option matches the plan"
        return d
    meets_priced = meets & np.isfinite(cq)
    at = confidence_text(confidence)
    if hours_cap is not None:
        pick = argmin(cq, meets_priced, hq)
        d.rationale = f"the cheapest option that finishes within {hours_cap:g} h" + (
            f" and {usd_text(usd_cap)}" if usd_cap is not None else "") + at
        if pick is None and usd_cap is None:
            pick = argmin(hq, meets, hq)
            d.rationale = (f"the fastest option that finishes within {hours_cap:g} h{at}; no price is known for the "
                           "options in time, so none can be called cheapest")
    elif usd_cap is not None:
        pick = argmin(hq, meets, cq_or_inf)
        d.rationale = f"the fastest option under {usd_text(usd_cap)}{at}"
    else:
        pick = cheapest if cheapest is not None else fastest
        d.rationale = ((f"the cheapest option{at} (no deadline or cost cap in the plan)" if cheapest is not None
                        else "the fastest option (no price is known, and the plan has no deadline or cost cap)"))
    d.recommended = pick
    if pick is None:
        parts = []
        if hours_cap is not None and not in_time.any():
            parts.append(f"no option finishes within {hours_cap:g} h{at}")
            if fastest is not None:      # how far off the deadline is, at the same confidence
                parts.append(f"the fastest takes {hq[fastest]:.2f} h{at} ({_option(sw, fastest)})")
        if usd_cap is not None and not (cand & in_cost).any():
            parts.append(f"no option costs under {usd_text(usd_cap)}{at}")
            if cheapest is not None and hours_cap is None:   # with a deadline: the cheapest in time, below
                parts.append(f"the cheapest costs {usd_text(cq[cheapest])}{at} ({_option(sw, cheapest)})")
        if not parts:
            parts.append("no option meets both the deadline and the cost cap")
        # what each limit alone would allow, so the user sees which to move and by how much
        if hours_cap is not None and usd_cap is not None:
            c = argmin(cq, in_time & np.isfinite(cq), hq)
            f = argmin(hq, cand & in_cost, cq_or_inf)
            if c is not None:
                parts.append(f"the cheapest option within {hours_cap:g} h{at} costs {usd_text(cq[c])}{at} "
                             f"({_option(sw, c)})")
            if f is not None:
                parts.append(f"the fastest under {usd_text(usd_cap)}{at} takes {hq[f]:.2f} h{at} ({_option(sw, f)})")
        d.impossible = "; ".join(parts)
    return d
