"""Plain-text and JSON renderings of an analysis, for the terminal."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .estimate.solve import hours_text, usd_text  # noqa: F401 (hours_text: the app's text helpers read it here)
from .planner import Analysis

GIB = 1024**3


def _money(v: float | None) -> str:
    """Dollars with cents below $10 ("$0.20", "$0.00" for a free local run), whole dollars above."""
    return "unknown" if v is None or not np.isfinite(v) else usd_text(v)


def _usd(v: float | None) -> str:
    """Dollars, with cents below $10 (a checkpoint's cost is often a few cents)."""
    if v is None or not np.isfinite(v):
        return "$?"
    return f"${v:,.2f}" if abs(v) < 10 else f"${v:,.0f}"


def checkpoint_text(row: dict) -> str:
    """The option's checkpointing in one line: "checkpoint every 1.8 h (every 420 steps): +46 s, +$0.70; without:
    expected loss 1.3 h, $70 (with: 2 min, $1.20)"; "" for an option that writes none but the last and has no
    failure model (a local plan's default)."""
    c = row.get("checkpointing")
    if not c:
        return ""
    steps, modelled = c["interval_steps"], c["mtbf_hours"] is not None
    if not steps and not modelled:
        return ""
    if steps:
        head = (f"checkpoint every {hours_text(c['interval_hours'])} (every {steps:,} steps): "
                f"+{hours_text(c['hours'])}, +{_usd(c['cost_usd'])}")
        if c["count"] == 0:
            head += " (the run is shorter than the interval: none but the last)"
    else:
        head = "no checkpoint but the last (training.checkpoint_every = 0)"
    if not modelled:
        return head
    w, wo = c["expected_loss"], c["expected_loss_without"]
    tail = f"; without: expected loss {hours_text(wo['hours'])}, {_usd(wo['cost_usd'])}"
    if steps:
        tail += f" (with: {hours_text(w['hours'])}, {_usd(w['cost_usd'])})"
    return head + tail + f"; the nodes' mean time between failures {hours_text(c['mtbf_hours'])}"


def _option_line(a: Analysis, i: int) -> str:
    r = a.sweep.row(i)
    mode = "" if r["teacher_mode"] == "none" else f", teacher {r['teacher_mode']}"
    if r["teacher_mode"] != "none" and r["teacher_precision"] != "bf16":
        mode += f" ({r['teacher_precision']})"
    cpu = r["accelerator"] == "cpu"
    gpus = (f"CPU, {r['gpus']} process{'es' if r['gpus'] > 1 else ''}" if cpu else
            f"{r['gpus']} {r['accelerator']} GPU{'s' if r['gpus'] > 1 else ''} in all")
    sharding = _SHARDING[r["sharding"]].replace("GPUs", "processes") if cpu else _SHARDING[r["sharding"]]
    where = "this machine" if r["sku"] == "local" else r["sku"]
    split = r.get("split")
    if split:       # the teacher's pass on its own hardware first, then training (without the teacher)
        tp = split["teacher_pass"]
        return (f"teacher pass ({r['teacher_mode']}) on {tp['nodes']} × {tp['sku']} ({tp['gpus']} {tp['accelerator']} "
                f"GPU{'s' if tp['gpus'] > 1 else ''}, teacher {tp['teacher_placement']}), then training on "
                f"{r['nodes']} × {where} ({gpus}), {r['priority']}, {r['adapter']}, "
                f"recompute {r['recompute']}, {sharding}")
    return (f"{r['nodes']} × {where} ({gpus}), {r['priority']}, {r['adapter']}{mode}, "
            f"recompute {r['recompute']}, {sharding}"
            + (f", teacher {r['teacher_placement']}" if r["teacher_mode"] in ("online", "offline-topk", "generate")
               and r["gpus"] > 1 else ""))


_SHARDING = {"none": "no sharding (DDP)", "within-node": "FSDP shards within each node",
             "all-gpus": "FSDP shards across all GPUs"}


_SHARD_SHORT = {"none": "ddp", "within-node": "node", "all-gpus": "all"}
_RC_SHORT = {"off": "off", "full": "full", "selective": "sel"}  # training.recompute in the table


def _tokens(n: float) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def choices(a: Analysis) -> np.ndarray:
    """The options that meet the budget, as the recommendation is drawn from them: within the deadline and the cost
    cap and with a known price; only where no such option has a price (no cost cap, no prices for the region), the
    ones within the deadline. ``Decision.meets`` alone also counts unpriced options when there is no cost cap, while
    :meth:`Analysis.reason` rejects them ("price unknown in this region"); this keeps counts, lists and reasons in
    agreement."""
    meets = a.decision.meets
    priced = meets & np.isfinite(a.sweep.out["cost_usd"])
    return priced if priced.any() else meets.copy()


def summary_dict(a: Analysis, top: int) -> dict:
    sw, d = a.sweep, a.decision
    p = a.plan
    ok = choices(a)
    planned_idx = np.flatnonzero(a.planned)
    options = []

    def row_of(i: int) -> dict:
        row = sw.row(int(i))
        if row.get("range") is not None:
            row["range"]["confidence"] = p.budget.confidence   # the budget was checked at this quantile
            if d.hours is not None:     # the figures at that quantile: what the budget and the ranking use
                c = float(d.cost[int(i)])
                row["range"]["at_confidence"] = {"hours": float(d.hours[int(i)]),
                                                 "cost_usd": round(c, 2) if np.isfinite(c) else None}
        return row

    for i in planned_idx:
        row = row_of(int(i))
        row["meets_budget"] = bool(ok[i])
        row["reason"] = "" if ok[i] else a.reason(int(i))
        options.append(row)
    # cheapest first at the plan's confidence, the figures the budget is judged and the recommendation ranked on
    hq, cq = (d.hours, d.cost) if d.hours is not None else (sw.out["total_hours"], sw.out["cost_usd"])
    options.sort(key=lambda r: (not r["meets_budget"], float(np.nan_to_num(cq[r["index"]], nan=1e18)),
                                float(hq[r["index"]])))
    return {
        "plan": p.name,
        "teacher": {"id": a.pair.teacher.id, "params": a.pair.teacher.params},
        "student": {"id": a.pair.student.id, "params": a.pair.student.params},
        "budget": {"hours": p.budget.hours, "usd": p.budget.usd, "confidence": p.budget.confidence},
        "prices": None if a.prices is None else {
            "region": a.prices.region, "date": a.prices.fetched_on, "origin": a.prices.origin},
        # the capacity check the options were filtered by (an unavailable option's "reason" says why); None: unchecked
        "capacity": None if a.capacity is None else {
            "region": a.capacity.region, "date": a.capacity.checked_on, "subscription_id": a.capacity.subscription_id},
        "configurations_swept": len(sw),
        "options_as_planned": int(a.planned.sum()),
        "options_meeting_budget": int(ok.sum()),
        "recommendation": None if d.recommended is None else {**row_of(d.recommended), "why": d.rationale},
        "impossible": d.impossible or None,
        "fastest": None if d.fastest is None else row_of(d.fastest),
        "cheapest": None if d.cheapest is None else row_of(d.cheapest),
        "pareto": [row_of(int(i)) for i in d.pareto],
        "top": [r for r in options if r["meets_budget"]][:top],
        "options": options,
        "notes": a.notes,
        # the plan's tokens: one epoch's, the run's (null: estimated), and how they were obtained
        "tokens": None if a.tokens is None else {
            "per_epoch": round(a.tokens.per_epoch), "trained": None if a.tokens.trained is None
            else round(a.tokens.trained), "how": a.tokens.how, "note": a.tokens.note},
    }


def render_text(a: Analysis, top: int) -> str:
    sw, d, p = a.sweep, a.decision, a.plan
    t, s = a.pair.teacher, a.pair.student
    o = sw.out
    lines = [f"Plan {p.name}"]
    lines.append(f"  teacher   {t.name} ({t.params / 1e9:.1f}B, {t.tokenizer_family} tokenizer)")
    lines.append(f"  student   {s.name} ({s.params / 1e9:.1f}B)")
    m = p.method
    if m.kind == "logit-kd":
        how = f"logit KD, {m.loss}, T={m.temperature:g}, kd_weight={m.kd_weight:g}, teacher {m.teacher_mode}"
    elif m.kind == "seq-kd":
        how = "sequence-level KD: the teacher writes the training text"
    else:
        how = "cross-entropy only (no teacher)"
    ad = p.adapter
    lines.append(f"  method    {how}; {ad.kind}" + (f" r={ad.rank}" if ad.kind != "full" else ""))
    lines.append(f"  data      {_tokens(sw.job.tokens_per_epoch)} tokens × {p.data.epochs:g} "
                 f"epoch{'' if p.data.epochs == 1 else 's'}, "
                 f"seq {p.data.seq_len:,}, batch {p.data.global_batch_tokens:,} tokens"
                 + (f"; the run trains {_tokens(a.tokens.trained)} in {a.tokens.steps:,} steps ({a.tokens.how})"
                    if a.tokens is not None and a.tokens.trained is not None else ""))
    budget = []
    if p.budget.hours is not None:
        budget.append(f"≤ {p.budget.hours:g} h")
    if p.budget.usd is not None:
        budget.append(f"≤ {usd_text(p.budget.usd)}")
    lines.append("  budget    " + (", ".join(budget) or "none"))
    if a.prices is not None:
        if a.prices.prices:
            lines.append(f"  prices    {a.prices.region}, {a.prices.origin}, from {a.prices.fetched_on}")
        else:
            lines.append(f"  prices    {a.prices.region}: none known, so costs are unknown")
    lines.append("")

    if d.recommended is not None:
        i = d.recommended
        lines.append("Recommendation")
        lines.append("  " + _option_line(a, i))
        lines.append(_figures(a, i))
        ckpt = checkpoint_text(a.sweep.row(i))
        if ckpt:
            lines.append("  " + ckpt)
        lines.append(f"  why: {d.rationale}")
    else:
        lines.append(f"No option meets the budget: {d.impossible}.")
        if d.fastest is not None:
            i = d.fastest
            lines.append(f"  fastest:  {hours_text(o['total_hours'][i])}, cost {_money(o['cost_usd'][i])} — {_option_line(a, i)}")
        if d.cheapest is not None:
            i = d.cheapest
            lines.append(f"  cheapest: {_money(o['cost_usd'][i])}, {hours_text(o['total_hours'][i])} — {_option_line(a, i)}")
        if d.fastest is None:
            need = o["mem_total"][a.planned]
            if need.size:
                lines.append(f"  the smallest memory need as planned is {need.min() / GIB:.1f} GiB per GPU; "
                             "try adapter \"lora\"/\"qlora\", teacher.precision \"int8\"/\"int4\" or an offline teacher")
    lines.append("")

    if d.pareto.size:
        lines.append("Pareto front, cost versus time (as planned)")
        lines.append(_table(a, d.pareto[:12]))
        if d.pareto.size > 12:
            lines.append(f"  … {d.pareto.size - 12} more on the front (--json lists all)")
        lines.append("")

    ok = np.flatnonzero(choices(a))
    lines.append(f"{ok.size:,} of {int(a.planned.sum()):,} options as planned meet the budget "
                 f"({len(sw):,} configurations swept)")
    if ok.size:
        hq, cq = (d.hours, d.cost) if d.hours is not None else (o["total_hours"], o["cost_usd"])
        best = ok[np.lexsort((hq[ok], np.nan_to_num(cq[ok], nan=np.inf)))][:top]
        lines.append(f"Top {best.size} by cost")
        lines.append(_table(a, best))
    reasons = Counter(a.reason(int(i)).split(":")[0] for i in np.flatnonzero(a.planned & ~choices(a)))
    if reasons:
        lines.append("Rejected: " + "; ".join(f"{k} ({v:,})" for k, v in reasons.most_common()))
    if a.notes:
        lines.append("")
        lines.append("Notes")
        lines.extend(f"  - {n}" for n in a.notes)
    return "\n".join(lines)


def _figures(a: Analysis, i: int) -> str:
    r = a.sweep.row(i)
    h = r["hours"]
    mem = r["memory_gib_per_gpu"]
    usable = a.sweep.out["mem_usable"][i] / GIB
    phases = f"setup {hours_text(h['setup'])}"
    if h["teacher_pass"]:
        phases += f", teacher pass {hours_text(h['teacher_pass'])}"
    if h.get("cache_transfer"):
        phases += f", cache {r['split']['cache_gb']:,.1f} GB through storage {hours_text(h['cache_transfer'])}"
    phases += f", training {hours_text(h['training'])}"
    if h.get("checkpoints", 0.0) * 3600 >= 1:
        phases += f", checkpoints {hours_text(h['checkpoints'])}"
    if h.get("failures", 0.0) * 3600 >= 1:
        phases += f", failures (expected) {hours_text(h['failures'])}"
    if r.get("split"):
        tp = r["split"]["teacher_pass"]
        phases += f"; teacher-pass stage {hours_text(tp['hours'])} {_money(tp['cost_usd'])}"
    rng = r.get("range")
    spread = (f"  P10–P90 {hours_text(rng['hours'][0])} to {hours_text(rng['hours'][1])}, "
              f"{_money(rng['cost_usd'][0])} to {_money(rng['cost_usd'][1])}\n") if rng else ""
    d = a.decision
    if rng and d.hours is not None and d.confidence > 0.5:     # the figures the budget is judged on
        spread = (f"  P{round(d.confidence * 100)} {hours_text(float(d.hours[i]))}, {_money(float(d.cost[i]))} "
                  f"(the budget is judged at P{round(d.confidence * 100)});" + spread[1:])
    cal = r["calibration"]
    source = cal["source"] + (f" ({cal['runs']} run{'s' if cal['runs'] != 1 else ''})" if cal["runs"] else "")
    source += f"; {cal['smoke']}" if cal.get("smoke") else ""      # a smoke job measured the size's links, storage
    per = "process" if r["accelerator"] == "cpu" else "GPU"
    return (f"  {hours_text(h['total'])} ({phases}) · {_money(r['cost_usd'])} · "
            f"{mem['total']:.1f} of {usable:.0f} GiB per {per} · {r['tokens_per_second_per_gpu']:,.0f} tokens/s per {per} "
            f"(MFU {r['mfu'] * 100:.0f}%, {source})\n{spread.rstrip()}")


def _nodes_sku(r: dict) -> str:
    """"4×NC24ads_A100_v4"; a split option: "2×ND96isr_H100_v5→4×NC24ads_A100_v4" (teacher pass, then training)."""
    here = f"{r['nodes']}×{r['sku'].removeprefix('Standard_')}"
    tp = (r.get("split") or {}).get("teacher_pass")
    return here if tp is None else f"{tp['nodes']}×{tp['sku'].removeprefix('Standard_')}→{here}"


def _table(a: Analysis, idx) -> str:
    sw, d = a.sweep, a.decision
    # time and cost at the plan's confidence: what the budget is judged and the rows ranked on
    at = f" P{round(d.confidence * 100)}" if d.hours is not None and d.confidence > 0.5 else ""
    hq, cq = (d.hours, d.cost) if d.hours is not None else (sw.out["total_hours"], sw.out["cost_usd"])
    head = f"  {'hours' + at:>9} {'cost' + at:>9}  {'nodes×sku':<30} {'prio':<4} {'adapter':<7} {'teacher':<15} " \
           f"{'rc':<4} " \
           f"{'shard':<6} {'tok/s/GPU':>9} {'GiB/GPU':>8}"
    out = [head]
    for i in idx:
        r = sw.row(int(i))
        teacher = r["teacher_mode"] if r["teacher_precision"] == "bf16" else f"{r['teacher_mode']}/{r['teacher_precision']}"
        out.append(
            f"  {hours_text(float(hq[int(i)])):>9} {_money(float(cq[int(i)])):>9}  "
            f"{_nodes_sku(r):<30} {r['priority'][:4]:<4} "
            f"{r['adapter']:<7} {teacher:<15} {_RC_SHORT[r['recompute']]:<4} "
            f"{_SHARD_SHORT[r['sharding']]:<6} {r['tokens_per_second_per_gpu']:>9,.0f} "
            f"{r['memory_gib_per_gpu']['total']:>8.1f}"
        )
    return "\n".join(out)
