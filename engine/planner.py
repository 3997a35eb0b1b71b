"""From a plan to an answer: the sweep over hardware, the Pareto front, what meets the budget, the recommendation.

This is what `distill plan` prints and what the planner view draws.

For Azure plans the region's capacity and quota, as last checked (``distill azure capacity --refresh``, cached; never
fetched here), mark the options the subscription cannot get: a size not offered there, or more nodes than its free
quota allows at that priority. Those are never chosen, and their reason says why and what to request.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .catalog.capacity import REFRESH_COMMAND, STALE_DAYS, CapacityTable, load_capacity
from .catalog.hardware import load_accelerators, load_skus, resolve_accelerator, resolve_sku
from .catalog.prices import PriceTable, load_prices
from .catalog.types import Price
from .checks import Pair, check_plan
from .data_scan import TokenCount, count_plan_tokens
from .errors import CatalogError, DistillError, PlanError, RunError
from .estimate.core import ADAPTERS, RECOMPUTE, TEACHER_MODES, Job, accelerator_efficiency, coefficients
from .estimate.placement import SHARDINGS, sharding_kind
from .estimate.shape import lora_params, shape_of
from .estimate.smoke_records import load_records as load_smoke_records, measured_interconnect, measured_text
from .estimate.solve import Decision, decide, hours_text, reason
from .estimate.sweep import Machine, Sweep, run_sweep
from .estimate.ranges import add_ranges
from .estimate.split import add_split_options, stage_hours
from .estimate.watched import calibrate, source_of
from .plan import Plan, TeacherPass

BYTES_PER_TOKEN_ESTIMATE = 4.0  # English text in a BPE tokenizer, for plans that give a file but no token count


@dataclass
class Analysis:
    plan: Plan
    pair: Pair
    sweep: Sweep
    planned: np.ndarray
    decision: Decision
    prices: PriceTable | None
    notes: list[str] = field(default_factory=list)
    capacity: CapacityTable | None = None  # the region's capacity and quota as last checked (Azure plans)
    tokens: TokenCount | None = None  # the plan's tokens and how they were obtained (counted, sampled, estimated)

    def capacity_problem(self, i: int) -> str:
        """Why the region cannot give option ``i`` ("" when it can, or when capacity was never checked)."""
        available = self.sweep.out.get("available")
        if self.capacity is None or available is None or available[i]:
            return ""
        return self.capacity.problem(self.sweep.label("machine", i), int(self.sweep.grid.nodes[i]),
                                     self.sweep.label("priority", i))

    def reason(self, i: int) -> str:
        return reason(self.sweep, i, self.plan.budget.hours, self.plan.budget.usd, self.planned,
                      self.capacity_problem(i), self.plan.budget.confidence)


MAX_SCAN_FILES = 100_000  # a data folder holding more is more likely a wrong path than a dataset


def shown_path(path: Path | str, limit: int = 120) -> str:
    """A path for a message: a very long one is cut in the middle, so the message stays readable."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 2):]}"


def _folder_bytes(path: Path, field: str) -> int:
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            if files > MAX_SCAN_FILES:
                raise PlanError(f"{field}: {shown_path(path)} holds more than {MAX_SCAN_FILES:,} files; is it the "
                                "right folder? Give the data folder itself, or the token count as data.tokens")
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue        # a file gone or unreadable is not counted
    return total


def token_count(plan: Plan, base: Path | None = None) -> TokenCount:
    """The plan's tokens: counted from the data with the tokenizer at hand, as training counts them
    (``engine/data_scan.py``: the student's tokenizer.json, or the teacher's, cached); else ``data.tokens`` as given
    (a plan without data, or one whose data cannot be counted: the wizard's scan writes its count there); else
    estimated from the data's bytes at 4 bytes a token. The note says which, and why a count was not possible."""
    if plan.data.tokens is not None:
        given = TokenCount(float(plan.data.tokens), None, "given", "")
        if not plan.data.train:
            return given
        try:
            counted = count_plan_tokens(plan, base)
        except Exception:  # noqa: BLE001 - the plan's own count stands where the data cannot be counted
            return given
        if counted is None:
            return given
        return replace(counted, note=f"{counted.note} (data.tokens = {plan.data.tokens:,} set aside: the data itself "
                                     "was counted)")
    path = Path(plan.data.train or "")
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        if not path.exists():
            raise PlanError(f"data.train: {shown_path(path)} does not exist; give an existing file or folder, or "
                            "`tokens` instead")
        size = path.stat().st_size if path.is_file() else _folder_bytes(path, "data.train")
    except (OSError, ValueError, RuntimeError) as exc:
        # a name too long for the file system, a NUL byte, a folder that cannot be listed
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PlanError(f"data.train: {shown_path(path)} cannot be read ({reason}); give an existing file or "
                        "folder, or `tokens` instead") from None
    if size == 0:
        raise PlanError(f"data.train: {shown_path(path)} is empty")
    why = "no tokenizer at hand: neither the student nor the teacher is a local folder with a tokenizer.json"
    try:
        counted = count_plan_tokens(plan, base)
    except ImportError as exc:
        why = f"no tokenizer at hand: the `{exc.name or 'tokenizers'}` package is not installed"
    except Exception as exc:  # noqa: BLE001 - never stops planning: the estimate stands, and the note says why
        why = f"not counted with the tokenizer: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    else:
        if counted is not None:
            return counted
    return TokenCount(size / BYTES_PER_TOKEN_ESTIMATE, None, "estimated",
                      f"token count estimated from {size:,} bytes of data at 4 bytes a token ({why})")


def tokens_per_epoch(plan: Plan, base: Path | None = None) -> tuple[float, str]:
    """One epoch's tokens and the note saying how they were obtained ("" when the plan gives them)."""
    count = token_count(plan, base)
    return count.per_epoch, count.note


def azure_machines(prices: PriceTable, notes: list[str] | None = None,
                   records: list[dict] | None = None) -> list[Machine]:
    """Every Azure size of the catalog, priced for the region (a plan's `sku` narrows the choice, not the sweep).

    A size a smoke job measured (``distill azure smoke``; ``records``: the store's by default) takes the measured
    bus bandwidth within and across nodes, over ``[communication] bus_efficiency`` (the sweep multiplies link speeds
    by it; a bus bandwidth already is the achieved figure), in place of the catalog's link speeds, and the measured
    output write and data read in place of the assumed storage speeds; ``notes`` gains a line for each such size."""
    accs = load_accelerators()
    if records is None:
        try:
            records = load_smoke_records()
        except DistillError as exc:       # an optional calibration file never stops planning
            records = []
            if notes is not None:
                notes.append(f"smoke-job measurements not used: {exc}")
    eff = float(coefficients()["communication"]["bus_efficiency"])
    out = []
    for s in load_skus().values():
        a = accs[s.accelerator]
        usd = {}
        for prio in ("dedicated", "low-priority"):
            p = prices.lookup(s.id, prio)
            if p is not None:
                usd[prio] = p.usd_per_hour
        machine = Machine(
            id=s.id, accelerator=a.id, gpus=s.gpus, peak_tflops=a.bf16_dense_tflops, hbm_gb=s.gpu_memory_gb,
            hbm_gb_per_s=a.hbm_gb_per_s, intra_gb_per_s=s.intra_node_gb_per_s if s.gpus > 1 else 0.0,
            inter_gb_per_s=s.inter_node_gb_per_s, usd_per_hour=usd,
        )
        m = measured_interconnect(s.id, records) if records else None
        out.append(_measured_machine(machine, m, eff, notes) if m is not None else machine)
    return out


def _measured_machine(machine: Machine, m: dict, eff: float, notes: list[str] | None) -> Machine:
    """``machine`` with what a smoke job measured on its size (``smoke_records.measured_interconnect``'s ``m``):
    all-reduce bus bandwidth (all-gather's where only that was measured), output write, data read."""
    intra = m.get("intra_node_busbw_gb_per_s") or m.get("intra_node_allgather_busbw_gb_per_s")
    inter = m.get("inter_node_busbw_gb_per_s") or m.get("inter_node_allgather_busbw_gb_per_s")
    write, read = m.get("output_write_gb_per_s"), m.get("data_read_gb_per_s")
    intra = intra if machine.gpus > 1 else None         # one GPU a node: no link within it
    inter = inter if machine.inter_gb_per_s > 0 else None
    if not (intra or inter or write or read):
        return machine
    changes: dict = {}
    said = []
    if intra:
        changes["intra_gb_per_s"] = intra / eff
        said.append(f"{intra:,.0f} GB/s bus bandwidth within a node (catalog link {machine.intra_gb_per_s:,.0f})")
    if inter:
        changes["inter_gb_per_s"] = inter / eff
        said.append(f"{inter:,.0f} GB/s across nodes (catalog link {machine.inter_gb_per_s:,.0f})")
    if write:
        changes["blob_copy_gb_per_s"] = write
        said.append(f"output write {write:,.2f} GB/s")
    if read:
        said.append(f"data read {read:,.2f} GB/s")
    if write or read:   # a split plan's cache is written by one stage and read by the other: the slower of the two
        changes["cache_transfer_gb_per_s"] = min(x for x in (write, read) if x)
    text = measured_text({**m, "intra_node_busbw_gb_per_s": intra, "inter_node_busbw_gb_per_s": inter})
    if notes is not None:
        notes.append(f"{machine.id.removeprefix('Standard_')}: {text}: {', '.join(said)}; used in place of the "
                     "catalog's link speeds and the assumed storage speeds")
    return replace(machine, **changes, measured=text)


LOCAL_NETWORK_GB_PER_S = 12.5  # machines of a local cluster: 100 Gb/s Ethernet between them


def local_machine(plan: Plan) -> Machine:
    hw = plan.hardware
    try:
        a = resolve_accelerator(hw.accelerator or "")
    except CatalogError as exc:
        raise PlanError(f"hardware.accelerator: {exc}") from None
    usd = {"dedicated": hw.usd_per_hour if hw.usd_per_hour is not None else 0.0}
    nodes = hw.nodes or 1
    return Machine(
        id="local", accelerator=a.id, gpus=hw.gpus, peak_tflops=a.bf16_dense_tflops, hbm_gb=a.hbm_gb,
        hbm_gb_per_s=a.hbm_gb_per_s, intra_gb_per_s=64.0 if hw.gpus > 1 else 0.0,
        inter_gb_per_s=LOCAL_NETWORK_GB_PER_S if nodes > 1 else 0.0,
        usd_per_hour=usd, max_nodes=nodes, priorities=("dedicated",), provision="local",
    )


def build_job(plan: Plan, pair: Pair, tokens: float, trained: float | None = None) -> Job:
    """``tokens``: one epoch's; ``trained``: the run's, where they were counted (``token_count``)."""
    from .catalog.staged_models import unstaged_bytes

    kd = plan.method.kind != "ce"
    return Job(
        student=shape_of(pair.student),
        teacher=shape_of(pair.teacher) if kd else None,
        method=plan.method.kind,
        seq_len=plan.data.seq_len,
        tokens_per_epoch=tokens,
        epochs=plan.data.epochs,
        global_batch_tokens=plan.data.global_batch_tokens,
        lora_params=lora_params(pair.student, plan.adapter.rank),
        top_k=plan.method.top_k,
        generated_share=plan.method.generated_share,
        kd_loss=plan.method.loss,
        micro_batch_seqs=plan.training.micro_batch_size,  # the run's, where the plan sets it
        teacher_placement=plan.teacher.placement,
        sharding_auto=plan.hardware.sharding == "auto",
        # the engine trains in fp32 on a CPU; on GPUs, full training keeps fp32 master weights under bf16 autocast
        precision="fp32" if plan.hardware.target == "local" and plan.hardware.accelerator == "cpu" else "bf16-mixed",
        optimizer=plan.training.optimizer,
        cpu=plan.hardware.target == "local" and plan.hardware.accelerator == "cpu",
        max_tokens=(plan.training.max_steps * plan.data.global_batch_tokens if plan.training.max_steps else None),
        counted_train_tokens=trained,
        # "auto": the planner's interval on Azure (estimate/checkpointing.py), only the last checkpoint locally
        checkpoint_every=None if plan.training.checkpoint_every == "auto" else plan.training.checkpoint_every,
        # hub models not staged in the workspace yet: a staging job downloads them once (catalog/staged_models.py)
        staging_bytes=unstaged_bytes(plan, pair),
    )


def capacity_mask(sw: Sweep, capacity: CapacityTable) -> np.ndarray:
    """True for the options the region can give: each (size, nodes, priority) is checked once, then looked up for
    every option of the sweep at once."""
    g = sw.grid
    machine = g.extra["machine"].astype(np.intp)
    nodes = g.nodes.astype(np.intp)
    prio = g.extra["priority"].astype(np.intp)
    names, prios = sw.labels["machine"], sw.labels["priority"]
    top = int(nodes.max()) if nodes.size else 0
    ok = np.ones((len(names), top + 1, len(prios)), dtype=bool)
    for m, name in enumerate(names):
        for p, priority in enumerate(prios):
            for n in range(1, top + 1):
                ok[m, n, p] = not capacity.problem(name, n, priority)
    return ok[machine, nodes, prio]


def capacity_note(sw: Sweep, capacity: CapacityTable, available: np.ndarray) -> str:
    """"capacity and quota checked <date>: N sizes unavailable (…)", and how many more quota limits."""
    machine = sw.grid.extra["machine"]
    names = sw.labels["machine"]
    usable = np.bincount(machine[available], minlength=len(names)) > 0
    blocked = np.bincount(machine[~available], minlength=len(names)) > 0
    none = [names[m] for m in range(len(names)) if not usable[m] and blocked[m]]
    limited = int((usable & blocked).sum())
    text = (f"capacity and quota checked {capacity.checked_on}: {len(none)} size{'' if len(none) == 1 else 's'} "
            "unavailable")
    if none:
        shown = ", ".join(n.removeprefix("Standard_") for n in none[:4]) + (f" and {len(none) - 4} more"
                                                                           if len(none) > 4 else "")
        text += f" ({shown})"
    if limited:
        text += (f"; quota limits {limited} more to fewer nodes or one priority (the reasons name the quota and what "
                 "to request)")
    unknown = capacity.unknown_note([names[m] for m in range(len(names)) if usable[m]], sw.labels["priority"])
    if unknown:
        text += "; " + unknown     # a quota row Azure did not list: its nodes are unknown, not unlimited
    age = capacity.age_days()
    if age is not None and age > STALE_DAYS:
        text += f"; the check is {age} days old: run `{REFRESH_COMMAND}` for today's quota"
    return text


def planned_mask(sw: Sweep, plan: Plan, pinned: bool = False) -> np.ndarray:
    """The options as the plan asks. ``hardware.sku`` and ``hardware.nodes`` are training's hardware; a split
    option's teacher pass (estimate/split.py) must also be on ``[hardware.teacher_pass]`` where the plan names it."""
    m = _stage_mask(sw, plan, pinned)
    pass_row = sw.grid.extra.get("pass_row")
    if pass_row is None:
        return m & (not plan.hardware.split_only)
    split = pass_row >= 0
    if plan.hardware.split == "no":
        m &= ~split
    elif plan.hardware.split_only:
        m &= split
    if split.any():
        m[split] &= pass_mask(sw, plan)[pass_row[split]]
    return m


def pass_mask(sw: Sweep, plan: Plan) -> np.ndarray:
    """Rows whose teacher's pass may run a split option's first stage as the plan asks."""
    g = sw.grid
    m = np.isin(g.teacher_mode, [TEACHER_MODES.index(x) for x in plan.method.teacher_modes()
                                 if x in ("offline-topk", "generate")])
    if plan.method.kind == "logit-kd" and plan.method.teacher_mode == "auto":
        m |= g.teacher_mode == TEACHER_MODES.index("offline-topk")
    if plan.method.kind != "ce":
        m &= g.extra["teacher_precision"] == sw.labels["teacher_precision"].index(plan.teacher.precision)
    m &= g.extra["priority"] == sw.labels["priority"].index(plan.hardware.priority)
    tp = plan.hardware.teacher_pass
    if tp is not None and tp.sku:
        m &= g.extra["machine"] == sw.labels["machine"].index(resolve_sku(tp.sku).id)
    if tp is not None and tp.nodes:
        m &= g.nodes == tp.nodes
    return m & (g.extra.get("pass_row", np.full(len(sw), -1)) < 0)


def all_modes_mask(sw: Sweep, plan: Plan) -> np.ndarray:
    """The plan's options with every adapter and teacher mode allowed; machine, nodes, priority, teacher precision
    and the split stay as planned (the planner view's comparison of adapters and modes)."""
    m = np.zeros(len(sw), dtype=bool)
    for adapter in ADAPTERS:
        p = plan.model_copy(update={"adapter": plan.adapter.model_copy(update={"kind": adapter})})
        if p.method.kind == "logit-kd":
            p = p.model_copy(update={"method": p.method.model_copy(update={"teacher_mode": "auto"})})
        m |= planned_mask(sw, p)
    return m


def _stage_mask(sw: Sweep, plan: Plan, pinned: bool = False) -> np.ndarray:
    """The options whose training is as the plan asks (the split aside)."""
    g = sw.grid
    m = g.adapter == ADAPTERS.index(plan.adapter.kind)
    modes = [TEACHER_MODES.index(x) for x in plan.method.teacher_modes()]
    m &= np.isin(g.teacher_mode, modes)
    if plan.method.kind != "ce":
        m &= g.extra["teacher_precision"] == sw.labels["teacher_precision"].index(plan.teacher.precision)
    m &= g.extra["priority"] == sw.labels["priority"].index(plan.hardware.priority)
    if plan.hardware.target == "azure" and plan.hardware.sku:
        m &= g.extra["machine"] == sw.labels["machine"].index(resolve_sku(plan.hardware.sku).id)
    if plan.hardware.nodes:
        m &= g.nodes == plan.hardware.nodes
    elif plan.hardware.target == "local":
        m &= g.nodes == 1
    if plan.hardware.sharding != "auto":
        # a sharding that is another one on this hardware (all-gpus on one node is within-node; within-node with
        # one GPU a node is none) matches the row the sweep keeps for it
        want = SHARDINGS.index(plan.hardware.sharding)
        gpn = g.gpus_per_node
        same = g.sharding == want
        if plan.hardware.sharding == "all-gpus":
            same |= (g.sharding == 1) & (g.nodes == 1)
            same |= (g.sharding == 0) & (g.nodes * gpn == 1)
        elif plan.hardware.sharding == "within-node":
            same |= (g.sharding == 0) & (gpn == 1)
        m &= same
    if plan.training.recompute != "off" or pinned:
        # a plan's full or selective recomputation, or a resolved plan's choice of none, stands; "off" unresolved
        # leaves the planner free to recompute (fully or selectively) where memory needs it
        m &= g.recompute == RECOMPUTE.index(plan.training.recompute)
    return m


def add_splits(sw: Sweep, plan: Plan, pinned: bool = False) -> int:
    """Append the plan's split-hardware options to the sweep (none for a local plan, or split = "no")."""
    if plan.hardware.target != "azure" or plan.hardware.split == "no" or plan.method.kind == "ce":
        return 0
    train_ok = np.zeros(len(sw), dtype=bool)
    pass_ok = np.zeros(len(sw), dtype=bool)
    # every adapter and priority, so the planner view's comparison of adapters and its priority control have them
    for priority in ("dedicated", "low-priority"):
        pp = plan.model_copy(update={"hardware": plan.hardware.model_copy(update={"priority": priority})})
        pass_ok |= pass_mask(sw, pp)
        for adapter in ADAPTERS:
            p = pp.model_copy(update={"adapter": plan.adapter.model_copy(update={"kind": adapter})})
            if p.method.kind == "logit-kd":
                p = p.model_copy(update={"method": p.method.model_copy(update={"teacher_mode": "auto"})})
            train_ok |= _stage_mask(sw, p, pinned)
    return add_split_options(sw, pass_ok, train_ok)


def with_confirmed_price(prices: PriceTable, hw, notes: list[str]) -> PriceTable:
    """The region's prices, plus the price per node-hour the user confirmed for ``hw.sku`` (``hardware.usd_per_hour``)
    where the table has none. A published price wins over a confirmed one."""
    if hw.target != "azure" or hw.usd_per_hour is None or not hw.sku:
        return prices
    known = prices.lookup(hw.sku, hw.priority)
    if known is not None:
        notes.append(f"hardware.usd_per_hour (${hw.usd_per_hour:,.2f}) ignored: the region's price table has "
                     f"{hw.sku} {hw.priority} at ${known.usd_per_hour:,.2f} per node-hour")
        return prices
    sku = resolve_sku(hw.sku).id
    notes.append(f"{sku} {hw.priority}: ${hw.usd_per_hour:,.2f} per node-hour, the price confirmed at launch (the "
                 f"region's price table has none)")
    confirmed = Price(sku=sku, region=hw.region, priority=hw.priority, usd_per_hour=float(hw.usd_per_hour),
                      source="confirmed at launch", source_date=time.strftime("%Y-%m-%d"))
    return replace(prices, prices=[*prices.prices, confirmed])


def analyse(plan: Plan, base: Path | None = None, prices: PriceTable | None = None,
            capacity: CapacityTable | None = None, pinned: bool = False) -> Analysis:
    """Everything `distill plan` reports, for one plan. ``pinned``: the plan was resolved already (a resumed run, an
    Azure job's plan), so its recomputation choice is kept even where it is off.

    ``capacity`` (Azure plans) is the region's capacity and quota; by default the cached check of the plan's region
    (read from disk only; none cached: a note says how to check)."""
    pair = check_plan(plan, base)
    count = token_count(plan, base)
    tokens, token_note = count.per_epoch, count.note
    notes = list(pair.notes)
    if token_note:
        notes.append(token_note)
    hw = plan.hardware
    if hw.target == "azure":
        if hw.sku:
            try:
                resolve_sku(hw.sku)
            except CatalogError as exc:
                raise PlanError(f"hardware.sku: {exc}") from None
        prices = prices or load_prices(hw.region)
        if prices.note:
            notes.append(prices.note)
        prices = with_confirmed_price(prices, hw, notes)
        machines = azure_machines(prices, notes)
        if capacity is not None and capacity.region != hw.region:
            notes.append(f"the capacity check given is for {capacity.region}, not the plan's region {hw.region}; "
                         "ignored")
            capacity = None
        if capacity is None:
            capacity = load_capacity(hw.region, notes)
        if capacity is None:
            notes.append(f"Azure capacity and quota in {hw.region} not checked: run `distill azure capacity "
                         f"--refresh` (needs sign-in)")
    else:
        prices = None
        capacity = None
        machines = [local_machine(plan)]
        if hw.usd_per_hour is None:
            notes.append("local machine: no hourly cost given (hardware.usd_per_hour), so cost is counted as 0")
    job = build_job(plan, pair, tokens, count.trained)
    modes = ("none",) if plan.method.kind == "ce" else (
        ("generate",) if plan.method.kind == "seq-kd" else ("online", "offline-topk"))
    sw = run_sweep(job, machines, modes)
    watched = calibrate(sw, plan, pair, base)    # the runs this machine watched
    if token_note and count.how == "estimated" and any("as trained by a watched run" in n for n in watched):
        notes.remove(token_note)                 # the run's own count replaces the estimate from bytes
    notes += watched
    if capacity is not None:
        sw.out["available"] = capacity_mask(sw, capacity)
        notes.append(capacity_note(sw, capacity, sw.out["available"]))
    n_split = add_splits(sw, plan, pinned)
    if n_split:
        notes.append(f"{n_split:,} split-hardware options: the teacher's pass on one size, training on another, "
                     "the cache through storage")
    planned = planned_mask(sw, plan, pinned)
    add_ranges(sw)
    decision = decide(sw, planned, plan.budget.hours, plan.budget.usd, plan.budget.confidence)
    if capacity is not None and decision.fastest is None and (planned & sw.out["fits"]).any():
        # every option as planned that fits is one the region cannot give: name what the option it would choose
        # without the check needs (the size, or the quota family, its use and the vCPUs to request), not another's
        unchecked = decide(replace(sw, out={k: v for k, v in sw.out.items() if k != "available"}), planned,
                           plan.budget.hours, plan.budget.usd, plan.budget.confidence)
        i = unchecked.recommended if unchecked.recommended is not None else unchecked.fastest
        rows = [] if i is None else [i] + ([p] if (p := sw.pass_row(i)) is not None else [])
        needs = [n for r in rows if (n := capacity.problem(sw.label("machine", r), int(sw.grid.nodes[r]),
                                                           sw.label("priority", r)))]
        if needs:
            decision.impossible += (f" (the option it would choose, {sw.hardware(i)} {sw.label('priority', i)}: "
                                    + "; ".join(needs) + ")")
    shown = list(decision.pareto) + ([decision.recommended] if decision.recommended is not None else [])
    uncal = sorted({sw.label("accelerator", i) for i in shown
                    if not accelerator_efficiency(sw.label("accelerator", i))[1] and sw.out["calibration"][i] < 2})
    if uncal:
        notes.append("throughput on " + ", ".join(uncal) + " is extrapolated from the A100/H100 fit (no published "
                     "FSDP measurement of it in the calibration table); treat those times as rougher")
    return Analysis(plan=plan, pair=pair, sweep=sw, planned=planned, decision=decision, prices=prices, notes=notes,
                    capacity=capacity, tokens=count)


@dataclass
class ResolvedRun:
    """The configuration a run executes: the plan with every "auto" fixed as the planner chose, where each model
    lives, and the estimate the run can be checked against (``run_started`` carries it)."""

    plan: Plan
    nodes: int
    gpus_per_node: int
    sharding: str            # "full" | "hybrid" | "none", as it runs
    estimate: dict           # the planner's figures for this configuration
    why: str                 # how the configuration was chosen
    notes: list[str] = field(default_factory=list)  # what resolving changed beyond an "auto"
    stage: str = "all"       # "all" | "teacher" (the teacher's pass alone) | "student" (training on its cache)
    split: dict | None = None  # a split-hardware option: Sweep.row's "split" (the teacher pass's hardware)
    recommended: bool = True   # the planner's recommendation (False: its fallback, no option meets the budget)
    # what launching it risks, one sentence each: a missed deadline or cap at the plan's confidence, no
    # recommendation, an unknown price. `distill run` and `distill azure submit` refuse a new run with risks unless
    # --force; an unknown price on Azure needs --usd-per-hour, whatever --force says.
    risks: list[str] = field(default_factory=list)
    unpriced: bool = False     # an Azure option with no price in the region's table nor a confirmed one

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


STAGES = ("all", "teacher", "student")


def resolve_run(plan: Plan, base: Path | None = None, prices: PriceTable | None = None,
                pinned: bool = False, stage: str = "all", usd_per_hour: float | None = None) -> ResolvedRun:
    """The planner's choice for ``plan``, as ``distill run`` and the app's Launch both execute it.

    The recommendation when the plan has one; otherwise (no option meets the budget) the fastest option as planned
    that fits. A plan with no option that fits in memory is refused here, before anything is loaded, with the
    estimator's figures. ``pinned``: see :func:`analyse` (a resumed run must run the configuration its checkpoints
    were written by, even if the watched runs since make another look faster).

    ``stage``: "teacher" resolves the teacher's pass alone (on a split option: its own hardware, nodes and
    placement, and the pass stage's estimate), "student" the training on that pass's cache; both need a teacher
    pass (offline top-k or generation).

    With no recommendation, the fallback is the fastest option with a known price (the fastest overall only where
    none has one), and ``why`` says so. ``usd_per_hour``: the price per node-hour the user confirmed for an Azure
    option the region's table has no price for; the run is then pinned to that option (its size and nodes) and
    priced with it. ``risks`` lists what launching the result risks."""
    if usd_per_hour is not None and plan.hardware.target == "azure":
        first = resolve_run(plan, base, prices, pinned=pinned, stage=stage)
        if first.unpriced:
            if first.split:
                raise RunError("--usd-per-hour: the option chosen runs on two sizes (a split teacher pass); a "
                               "price confirmed at launch prices one size. Set hardware.split = \"no\", or choose a "
                               "hardware.sku the region's price table has")
            hw = first.plan.hardware
            plan = plan.model_copy(update={"hardware": plan.hardware.model_copy(update={
                "sku": hw.sku, "nodes": hw.nodes, "split": "no", "teacher_pass": None,
                "usd_per_hour": float(usd_per_hour)})})
        else:
            return first       # priced already: the table's price stands
    if stage not in STAGES:
        raise RunError(f"--stage: {stage!r} is not a stage; allowed: {', '.join(STAGES)}")
    if stage != "all" and (plan.method.kind == "ce" or plan.method.teacher_mode == "online"):
        raise RunError(f"--stage {stage}: the plan's teacher has no pass of its own (method.kind "
                       f"\"{plan.method.kind}\", teacher_mode \"{plan.method.teacher_mode}\"); stages need "
                       'method.teacher_mode = "offline-topk" (or "auto") or method.kind = "seq-kd"; or run without '
                       "--stage")
    if stage != "all" and plan.method.kind == "logit-kd" and plan.method.teacher_mode == "auto":
        plan = plan.model_copy(update={"method": plan.method.model_copy(update={"teacher_mode": "offline-topk"})})
    a = analyse(plan, base, prices, pinned=pinned)
    sw, o = a.sweep, a.sweep.out
    i = a.decision.recommended
    why = a.decision.rationale
    if i is None:
        i, why = fallback_option(a)
    if i is None:
        planned = np.flatnonzero(a.planned)
        if planned.size == 0:
            raise RunError("hardware: no configuration matches the plan (check hardware.sku, hardware.nodes and "
                           "hardware.sharding)")
        if "available" in o and (a.planned & o["fits"]).any():
            raise RunError(f"hardware: {a.decision.impossible}. Request the quota named, choose another "
                           f"hardware.sku, hardware.region or hardware.priority, or re-check with `distill azure "
                           f"capacity --refresh` if quota was freed or granted since "
                           f"{a.capacity.checked_on if a.capacity else 'the last check'}")
        j = int(planned[np.argmin(o["mem_total"][planned])])
        r = sw.row(j)
        need = r["memory_gib_per_gpu"]["total"]
        cpu = r["accelerator"] == "cpu"
        unit, more = ("process", "more memory (another machine)") if cpu else ("GPU", "more GPUs or nodes")
        raise RunError(
            f"hardware: the plan fits no {'configuration of this machine' if cpu else 'GPU it can use'}: its smallest "
            f"configuration ({r['gpus']} × {r['accelerator']}, {r['adapter']}, teacher {r['teacher_mode']} "
            f"{r['teacher_placement']}, sharding {r['sharding']}) needs {need:.1f} GiB per {unit} (teacher "
            f"{r['memory_gib_per_gpu']['teacher']:.1f} GiB) of {r['usable_gib_per_gpu']:.1f} GiB usable; use {more}, "
            'teacher.precision int8/int4, method.teacher_mode = "offline-topk", or a smaller teacher')
    row = sw.row(i)
    hw = plan.hardware
    split = row["split"]
    changes: dict = {"sharding": row["sharding"] if hw.sharding == "auto" else hw.sharding}
    if hw.target == "azure":
        changes.update(sku=row["sku"], nodes=row["nodes"])
        # the choice of splitting, pinned: a re-resolution on the node (or a resume) picks this option again
        changes.update(split="yes", teacher_pass=TeacherPass(sku=split["teacher_pass"]["sku"],
                                                             nodes=split["teacher_pass"]["nodes"])) \
            if split else changes.update(split="no", teacher_pass=None)
    gpn = row["gpus"] // row["nodes"]
    notes = []
    # the global batch as planned: a whole number of micro-batches on every GPU (the estimator rounds up)
    asked = plan.training.micro_batch_size
    if asked is not None and asked != row["micro_batch_seqs"]:
        notes.append(f"training.micro_batch_size: {asked} -> {row['micro_batch_seqs']} (the share of the global "
                     f"batch each of {row['gpus']} GPUs trains on per step)")
    seqs = row["grad_accum_steps"] * row["micro_batch_seqs"] * row["gpus"]
    data = plan.data
    if seqs * plan.data.seq_len != plan.data.global_batch_tokens:
        data = plan.data.model_copy(update={"global_batch_tokens": seqs * plan.data.seq_len})
        notes.append(f"data.global_batch_tokens: {plan.data.global_batch_tokens:,} -> {seqs * plan.data.seq_len:,} "
                     f"({seqs} sequences: {row['grad_accum_steps']} micro-batches of {row['micro_batch_seqs']} on "
                     f"each of {row['gpus']} GPUs, as planned)")
    resolved = plan.model_copy(update={
        "data": data,
        "hardware": hw.model_copy(update=changes),
        "method": plan.method.model_copy(update={"teacher_mode": row["teacher_mode"]
                                                 if plan.method.kind == "logit-kd" else plan.method.teacher_mode}),
        # a split option's training has no teacher: its placement is the teacher pass's
        "teacher": plan.teacher.model_copy(update={"placement": split["teacher_pass"]["teacher_placement"]
                                                   if split else row["teacher_placement"]}),
        # the planner recomputes activations where memory needs it; the engine then does too
        "training": plan.training.model_copy(update={"recompute": row["recompute"],
                                                     "micro_batch_size": row["micro_batch_seqs"],
                                                     "checkpoint_every": checkpoint_steps(plan, row)}),
    })
    estimate = {
        "tokens_per_second_per_gpu": row["tokens_per_second_per_gpu"],
        "model_tokens_per_second_per_gpu": float(o.get("model_tokens_per_second_per_gpu",
                                                       o["tokens_per_second_per_gpu"])[i]),
        "calibration": source_of(sw, i),
        "memory_gib_per_gpu": row["memory_gib_per_gpu"]["total"],
        "memory_breakdown_gib": row["memory_gib_per_gpu"],
        "usable_gib_per_gpu": row["usable_gib_per_gpu"],
        "hours": row["hours"],
        "cost_usd": row["cost_usd"],
        "mfu": row["mfu"],
        "checkpointing": row["checkpointing"],
        "option": {k: row[k] for k in ("sku", "accelerator", "nodes", "gpus", "adapter", "teacher_mode",
                                       "teacher_precision", "recompute", "sharding", "teacher_placement")},
    }
    nodes, sharding = row["nodes"], row["sharding"]
    if split and stage == "teacher":    # the pass runs on its own hardware, placed as the planner chose for it
        tp = split["teacher_pass"]
        nodes, gpn, sharding = tp["nodes"], tp["gpus"] // tp["nodes"], tp["sharding"]
        estimate["option"].update({k: tp[k] for k in ("sku", "accelerator", "nodes", "gpus", "sharding",
                                                      "teacher_placement")})
    if split or stage != "all":
        estimate["stage"] = stage
        if split:
            estimate["split"] = split
            if stage != "all":
                by_stage = stage_hours(sw, i)[stage]
                estimate["hours"] = by_stage
                estimate["cost_usd"] = (split["teacher_pass"]["cost_usd"] if stage == "teacher" else
                                        None if row["cost_usd"] is None else
                                        round(row["cost_usd"] - split["teacher_pass"]["cost_usd"], 2))
            else:
                notes.append(f"the plan runs the teacher's pass on {tp_text(split)} apart from training; run here "
                             "in one process group, both stages use this launch's hardware (`--stage teacher` then "
                             "`--stage student` run them apart)")
    estimate["range"] = option_range(sw, i, plan.budget.confidence)
    estimate["price"] = option_price(a, row)
    if plan.hardware.target == "azure":     # the region's capacity and quota for this option: checked or not
        cap = a.capacity
        estimate["capacity"] = {"checked_on": cap.checked_on if cap else "",
                                "problem": (cap.problem(sw.label("machine", i), int(sw.grid.nodes[i]),
                                                        sw.label("priority", i)) or "") if cap else ""}
    risks, unpriced = launch_risks(a, i, estimate)
    return ResolvedRun(plan=resolved, nodes=nodes, gpus_per_node=gpn,
                       sharding=sharding_kind(sharding, nodes, gpn), estimate=estimate, why=why,
                       notes=notes, stage=stage, split=split, recommended=a.decision.recommended is not None,
                       risks=risks, unpriced=unpriced)


def fallback_option(a: Analysis) -> tuple[int | None, str]:
    """The option a plan with no recommendation runs, and why: the fastest with a known price, so a launch never
    takes an unpriced size where a priced one exists; the fastest overall only where no option has a price."""
    d, o = a.decision, a.sweep.out
    i = d.fastest
    if i is None:
        return None, d.impossible or "none meets the budget"
    cost = o["cost_usd"]
    if np.isfinite(cost[i]):
        return i, "the fastest option as planned, as no option meets the budget"
    j = d.fastest_priced          # ranked at the plan's confidence, as the fastest is
    if j is None:
        return i, "the fastest option as planned, as no option meets the budget (and none has a known price)"
    from .estimate.ranges import at_confidence

    hq = float(at_confidence(a.sweep, a.plan.budget.confidence)[0][i])
    return int(j), (f"the fastest option with a known price, as no option meets the budget; the fastest overall, "
                    f"{a.sweep.hardware(i)} at {hours_text(hq)} at P{round(a.plan.budget.confidence * 100)}, has no "
                    "price in the region")


def option_range(sw: Sweep, i: int, confidence: float) -> dict:
    """Option ``i``'s time (hours) and cost (US$) at P10, at the plan's confidence and at P90 (cost None where
    unknown), as the confirmation before a launch shows them."""
    from .estimate.ranges import at_confidence

    o = sw.out
    hq, uq = (float(x[i]) for x in at_confidence(sw, confidence))

    def usd(v: float) -> float | None:
        return round(v, 2) if np.isfinite(v) else None

    return {"confidence": confidence,
            "hours": [float(o["hours_low"][i]), hq, float(o["hours_high"][i])],
            "cost_usd": [usd(float(o["cost_low"][i])), usd(uq), usd(float(o["cost_high"][i]))],
            "median_hours": float(o["total_hours"][i]), "median_cost_usd": usd(float(o["cost_usd"][i]))}


def option_price(a: Analysis, row: dict) -> dict | None:
    """The price the option's cost comes from: per node-hour, its source and date (None where unknown)."""
    hw = a.plan.hardware
    if hw.target != "azure":
        if hw.usd_per_hour is None:
            return None
        return {"usd_per_node_hour": hw.usd_per_hour, "nodes": row["nodes"], "source": "the plan (this machine)",
                "date": ""}
    price = a.prices.lookup(row["sku"], a.plan.hardware.priority) if a.prices is not None and row.get("sku") else None
    if price is None:
        return None
    return {"usd_per_node_hour": price.usd_per_hour, "nodes": row["nodes"],
            "source": price.source or a.prices.origin, "date": price.source_date or a.prices.fetched_on}


def launch_risks(a: Analysis, i: int, estimate: dict) -> tuple[list[str], bool]:
    """What launching option ``i`` risks, one sentence each, and whether its price is unknown (Azure)."""
    budget, hw = a.plan.budget, a.plan.hardware
    rng = estimate["range"]
    at = f"P{round(budget.confidence * 100)}"
    hq, uq = rng["hours"][1], rng["cost_usd"][1]
    risks = []
    if a.decision.recommended is None:
        risks.append(f"the planner recommends no option: {a.decision.impossible or 'none meets the budget'}")
    if budget.hours is not None and hq > budget.hours:
        risks.append(f"it misses the deadline: {hours_text(hq)} at {at} against {hours_text(budget.hours)}")
    unpriced = hw.target == "azure" and estimate.get("cost_usd") is None
    if budget.usd is not None:
        if uq is None:
            risks.append(f"its cost cannot be held to the ${budget.usd:,.2f} cap: no price is known")
        elif uq > budget.usd:
            risks.append(f"it goes over the cost cap: ${uq:,.2f} at {at} against ${budget.usd:,.2f}")
    if unpriced:
        opt = estimate["option"]
        risks.append(f"no price is known for {opt['sku']} ({hw.priority}) in {hw.region}: its cost is unknown "
                     "until an hourly price is confirmed")
    return risks, unpriced


def check_launch_risks(resolved: ResolvedRun, force: bool, command: str) -> None:
    """A new run the planner does not stand behind (no recommendation, a missed deadline or cost cap at the plan's
    confidence) starts only with --force, which prints the risks it takes (``distill run``, ``distill azure
    submit``)."""
    if not resolved.risks:
        return
    listed = "\n".join(f"  - {r}" for r in resolved.risks)
    what = (f"{resolved.nodes} × {resolved.plan.hardware.sku}" if resolved.plan.hardware.target == "azure" else
            "this machine")
    if not force:
        raise RunError(f"not started: the planner does not stand behind this run on {what}:\n{listed}\n"
                       f"Change the plan (budget.hours, budget.usd, the hardware), or run `{command} ... --force` "
                       "to accept these risks")
    print(f"--force: starting on {what} ({resolved.why}) despite:\n{listed}", file=sys.stderr, flush=True)


def checkpoint_steps(plan: Plan, row: dict) -> int:
    """training.checkpoint_every as the run uses it: the plan's own number of steps, or for "auto" the planner's
    interval on Azure (Young–Daly, estimate/checkpointing.py) and only the last checkpoint locally."""
    every = plan.training.checkpoint_every
    if every != "auto":
        return every
    return int(row["checkpointing"]["interval_steps"]) if plan.hardware.target == "azure" else 0


def tp_text(split: dict) -> str:
    tp = split["teacher_pass"]
    return f"{tp['nodes']} × {tp['sku']}"


def check_world(resolved: ResolvedRun, world: int, local_world: str | None) -> None:
    """The processes launched must be the GPUs the plan was planned for: anything else runs another configuration
    than the one estimated (or, sharded, cannot form its device mesh)."""
    plan = resolved.plan
    if resolved.world_size == world and (not local_world or int(local_world) == resolved.gpus_per_node
                                         or world == 1):
        return
    where = (f"{resolved.nodes} × {plan.hardware.sku} with {resolved.gpus_per_node} GPU(s) each"
             if plan.hardware.target == "azure" else
             f"{resolved.nodes} machine(s) × {resolved.gpus_per_node} (hardware.nodes × hardware.gpus)")
    got = f"{world} process(es)" + (f", {local_world} per node" if local_world else "")
    raise RunError(f"hardware: the plan runs on {resolved.world_size} process(es) ({where}), but {got} were "
                   f"launched; launch {resolved.world_size} (`distill run --processes {resolved.world_size}` on one "
                   f"machine), or change the plan's hardware to match")
