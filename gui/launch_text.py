"""What the app says before a run is launched, from the planner's resolution of the plan (``ResolvedRun``): the
range of time and cost, whether the budget holds and at what confidence, the price and where it comes from, the
calibration, whether capacity was checked, and every risk the planner names. Pure text, no Qt: the launch
confirmation (main_window.py) shows it, and tests read it."""
from __future__ import annotations

from ..engine.estimate.solve import hours_text, usd_text


def usd(v: float | None) -> str:
    """Dollars as the planner gives them (cents below $10 only: an estimate is not exact to the cent)."""
    return "unknown" if v is None else usd_text(v)


def where_text(resolved, sku_label: str = "") -> str:
    hw = resolved.plan.hardware
    if hw.target != "azure":
        return "this machine"
    gpn = resolved.gpus_per_node
    return f"{resolved.nodes} × {sku_label or hw.sku} ({gpn} GPU{'s' if gpn != 1 else ''} each, {hw.priority})"


def range_lines(resolved) -> list[str]:
    """Time and cost at P10, at the plan's confidence and at P90, and the median."""
    rng = resolved.estimate.get("range") or {}
    if not rng:
        return []
    p = round(rng["confidence"] * 100)
    h, c = rng["hours"], rng["cost_usd"]
    lines = [f"Time: {hours_text(h[0])} (P10) · {hours_text(h[1])} (P{p}) · {hours_text(h[2])} (P90); "
             f"median {hours_text(rng['median_hours'])}"]
    if c[1] is None:
        lines.append("Cost: unknown (no price for this size)")
    else:
        lines.append(f"Cost: {usd(c[0])} (P10) · {usd(c[1])} (P{p}) · {usd(c[2])} (P90); "
                     f"median {usd(rng['median_cost_usd'])}")
    return lines


def budget_lines(resolved) -> list[str]:
    """Whether the deadline and the cost cap hold, at the plan's confidence."""
    budget = resolved.plan.budget
    rng = resolved.estimate.get("range") or {}
    if not rng:
        return []
    p = f"P{round(rng['confidence'] * 100)}"
    hq, uq = rng["hours"][1], rng["cost_usd"][1]
    out = []
    if budget.hours is not None:
        ok = hq <= budget.hours
        out.append(f"Deadline {hours_text(budget.hours)}: {'met' if ok else 'MISSED'} at {p} ({hours_text(hq)})"
                   + ("" if ok or rng["hours"][0] > budget.hours else
                      f"; met at P10 ({hours_text(rng['hours'][0])}), so only with luck"))
    if budget.usd is not None:
        if uq is None:
            out.append(f"Cost cap {usd(budget.usd)}: cannot be judged (no price)")
        else:
            out.append(f"Cost cap {usd(budget.usd)}: {'met' if uq <= budget.usd else 'MISSED'} at {p} ({usd(uq)})")
    if not out:
        out.append("No deadline or cost cap in the plan")
    return out


def price_line(resolved) -> str:
    price = resolved.estimate.get("price")
    if price is None:
        if resolved.plan.hardware.target == "azure":
            return "Price: none known for this size and priority in the region: enter one below to submit"
        return "Price: none given for this machine (hardware.usd_per_hour), so cost is counted as $0"
    per_node = price["usd_per_node_hour"]
    nodes = price.get("nodes") or 1
    source = (price.get("source") or "").split(" (")[0].split(": http")[0]
    date = f", {price['date']}" if price.get("date") else ""
    each = f"${per_node:,.2f} per node-hour × {nodes} = " if nodes > 1 else ""
    return f"Price: {each}${per_node * nodes:,.2f} an hour ({source}{date})"


def calibration_line(resolved) -> str:
    cal = resolved.estimate.get("calibration") or {}
    src = cal.get("source") or "the estimator's fit"
    runs = cal.get("runs") or 0
    return f"Throughput estimate: {src}" + (f" ({runs} watched run{'s' if runs != 1 else ''})" if runs else "")


def capacity_line(resolved) -> str:
    cap = resolved.estimate.get("capacity")
    if cap is None:
        return ""
    if not cap.get("checked_on"):
        return ("Capacity and quota: NOT checked for this size in this region (Check capacity, below, signs in "
                "and reads them)")
    return (f"Capacity and quota: checked on {cap['checked_on']}: "
            + (cap["problem"] if cap.get("problem") else "this size and node count fit"))


def confirmation_text(resolved, sku_label: str = "") -> str:
    """The confirmation's body: the risks first, then what runs and why, the range, the budget, the price, the
    estimate's source and the capacity check."""
    parts = []
    if resolved.risks:
        parts.append("The planner does not stand behind this run:\n" + "\n".join(f"• {r}" for r in resolved.risks))
    parts.append(f"Runs on {where_text(resolved, sku_label)}: {resolved.why}.")
    parts.append("\n".join(range_lines(resolved) + budget_lines(resolved)))
    parts.append("\n".join(x for x in (price_line(resolved), calibration_line(resolved), capacity_line(resolved))
                           if x))
    return "\n\n".join(p for p in parts if p)
