"""The sweep: every hardware option x node count x adapter x teacher mode x recomputation x teacher precision x
sharding x priority, evaluated at once, and the Pareto front of cost versus time."""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

from .placement import SHARDINGS
from .checkpointing import summary as checkpoint_summary
from .core import (ADAPTERS, GB, RECOMPUTE, TEACHER_BYTES, TEACHER_MODES, Grid, Job, accelerator_efficiency,
                   coefficients, evaluate)

MAX_NODES = 16


@dataclass(frozen=True)
class Machine:
    """A node type to sweep over: an Azure VM size, or the local machine."""

    id: str                       # SKU id, or "local"
    accelerator: str              # accelerator id
    gpus: int
    peak_tflops: float
    hbm_gb: float
    hbm_gb_per_s: float
    intra_gb_per_s: float
    inter_gb_per_s: float         # per node; 0 = single node only
    usd_per_hour: dict[str, float]  # priority -> price per node-hour (missing = unknown)
    max_nodes: int = MAX_NODES
    priorities: tuple[str, ...] = ("dedicated", "low-priority")
    provision: str = "azure"      # "azure" | "local"
    # storage as a smoke job measured it on this size (estimate/smoke_records.py); None: the global coefficient,
    # [storage] blob_copy_gb_per_s (a checkpoint's copy to the output datastore) and [time] cache_transfer_gb_per_s
    # (a split option's cache through storage), per node
    blob_copy_gb_per_s: float | None = None
    cache_transfer_gb_per_s: float | None = None
    measured: str = ""            # "interconnect and storage measured by a smoke job on <date>"; "" when none


CALIBRATION_SOURCES = ("extrapolated", "published fit", "corrected here", "measured here")   # codes 0..3


@dataclass
class Sweep:
    job: Job
    grid: Grid
    out: dict[str, np.ndarray]
    labels: dict[str, list[str]]  # column -> category names, indexed by grid.extra[column]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.grid)

    def label(self, column: str, i: int) -> str:
        return self.labels[column][int(self.grid.extra[column][i])]

    def pass_row(self, i: int) -> int | None:
        """The row whose teacher's pass a split-hardware option uses (estimate/split.py); None when not split."""
        rows = self.grid.extra.get("pass_row")
        return None if rows is None or rows[i] < 0 else int(rows[i])

    def hardware(self, i: int) -> str:
        """"4 × NC24ads_A100_v4", or for a split option "teacher pass 2 × ND96isr_H100_v5, then 4 × NC24ads_A100_v4"."""
        here = f"{int(self.grid.nodes[i])} × {self.label('machine', i).removeprefix('Standard_')}"
        p = self.pass_row(i)
        if p is None:
            return here
        return f"teacher pass {int(self.grid.nodes[p])} × {self.label('machine', p).removeprefix('Standard_')}, " \
               f"then {here}"

    def measured(self, i: int) -> str | None:
        """"interconnect and storage measured by a smoke job on <date>" where option ``i``'s size was (None: the
        catalog's link speeds and the assumed storage speeds)."""
        texts = self.labels.get("measured")
        return (texts[int(self.grid.extra["machine"][i])] or None) if texts else None

    def row(self, i: int) -> dict:
        """One configuration as plain values, for reports and JSON."""
        o = self.out
        mem = {k[4:]: float(o[k][i]) / 1024**3 for k in o if k.startswith("mem_") and k != "mem_usable"}
        cost = float(o["cost_usd"][i])
        return {
            "index": int(i),
            "sku": self.label("machine", i),
            "accelerator": self.label("accelerator", i),
            "nodes": int(self.grid.nodes[i]),
            "gpus": int(o["gpus"][i]),
            "priority": self.label("priority", i),
            "adapter": ADAPTERS[int(self.grid.adapter[i])],
            "teacher_mode": TEACHER_MODES[int(self.grid.teacher_mode[i])],
            "teacher_precision": self.label("teacher_precision", i),
            "recompute": RECOMPUTE[int(self.grid.recompute[i])],   # "off" | "full" | "selective"
            "sharding": SHARDINGS[int(self.grid.sharding[i])],
            "teacher_placement": "replicated" if o["teacher_replicated"][i] else "sharded",
            "tokens_per_second_per_gpu": float(o["tokens_per_second_per_gpu"][i]),
            "mfu": float(o["mfu"][i]),
            "micro_batch_seqs": int(o["micro_batch_seqs"][i]),
            "grad_accum_steps": int(o["grad_accum_steps"][i]),
            "memory_gib_per_gpu": {k: round(v, 3) for k, v in mem.items()},
            "usable_gib_per_gpu": round(float(o["mem_usable"][i]) / 1024**3, 3),
            "fits": bool(o["fits"][i]),
            # P10-P90 of time and cost (estimate/ranges.py); the confidence the budget was checked at is the plan's
            "range": {"hours": [float(o["hours_low"][i]), float(o["hours_high"][i])],
                      "cost_usd": [float(o["cost_low"][i]), float(o["cost_high"][i])]} if "hours_low" in o else None,
            # where the speed comes from: measured here (N runs), corrected here, the published fit, extrapolated
            "calibration": {"source": CALIBRATION_SOURCES[int(o["calibration"][i])] if "calibration" in o
                            else "published fit", "runs": int(o["calibration_runs"][i]) if "calibration" in o else 0,
                            # the size's interconnect and storage as a smoke job measured them; None: the catalog's
                            "smoke": self.measured(i),
                            # the model is far off here: the watched runs' measured/estimated speed is outside bounds
                            **({"far_off": True} if "calibration_far_off" in o and o["calibration_far_off"][i]
                               else {})},
            "hours": {
                "setup": float(o["setup_hours"][i]),
                "teacher_pass": float(o["prepass_hours"][i]),
                "training": float(o["train_hours"][i]),
                "checkpoints": float(o["checkpoint_hours"][i]),
                "failures": float(o["failure_hours"][i]),   # expected loss to failures, with the checkpoints
                "cache_transfer": float(o["transfer_hours"][i]) if "transfer_hours" in o else 0.0,
                "total": float(o["total_hours"][i]),
            },
            "cost_usd": None if np.isnan(cost) else round(cost, 2),
            # the checkpoint interval, what the checkpoints add, the expected loss with and without them
            "checkpointing": checkpoint_summary(o, i, float(self.grid.nodes[i] * self.grid.usd_per_node_hour[i])),
            "split": self._split(i),
        }

    def _split(self, i: int) -> dict | None:
        """A split option's teacher-pass stage (its training stage is the row itself); None when not split."""
        p = self.pass_row(i)
        if p is None:
            return None
        o = self.out
        stage_hours = float(o["pass_stage_hours"][i])
        return {
            "teacher_pass": {
                "sku": self.label("machine", p),
                "accelerator": self.label("accelerator", p),
                "nodes": int(self.grid.nodes[p]),
                "gpus": int(o["gpus"][p]),
                "priority": self.label("priority", p),
                "sharding": SHARDINGS[int(self.grid.sharding[p])],
                "teacher_placement": "replicated" if o["teacher_replicated"][p] else "sharded",
                "hours": stage_hours,
                "cost_usd": round(stage_hours * float(self.grid.nodes[p] * self.grid.usd_per_node_hour[p]), 2),
            },
            "training_hours": float(o["total_hours"][i]) - stage_hours,
            "cache_gb": round(float(o["cache_bytes"][i]) / 1e9, 3),
        }


def build_grid(
    machines: list[Machine], *, has_teacher: bool, teacher_modes: tuple[str, ...], nodes: int | None = None,
    coeffs: dict | None = None,
) -> tuple[Grid, dict[str, list[str]]]:
    """Every combination of the axes, flattened into columns. Sharding across nodes only exists with >1 node."""
    c = coeffs or coefficients()
    precisions = tuple(TEACHER_BYTES) if has_teacher else ("bf16",)
    priorities = ("dedicated", "low-priority")
    acc_names = sorted({m.accelerator for m in machines})
    # The full product of the axes as index arrays, then the combinations that do not exist are dropped.
    max_nodes = np.asarray([m.max_nodes if m.inter_gb_per_s > 0 else 1 for m in machines])
    node_values = np.asarray([nodes]) if nodes else np.arange(1, int(max_nodes.max()) + 1)
    mode_ids = np.asarray([TEACHER_MODES.index(x) for x in teacher_modes])
    axes = np.meshgrid(
        np.arange(len(machines)), node_values, np.arange(len(ADAPTERS)), mode_ids, np.arange(len(RECOMPUTE)),
        np.arange(len(precisions)), np.arange(len(SHARDINGS)), np.arange(len(priorities)), indexing="ij",
    )
    mi, nn, ad, mode, rc, tp, sa, pr = (a.ravel() for a in axes)
    allowed_prio = np.asarray([[p in m.priorities for p in priorities] for m in machines])
    gpn = np.asarray([m.gpus for m in machines])[mi]
    keep = (nodes is not None) | (nn <= max_nodes[mi])
    # drop shardings that are another one under a second name: all-gpus on one node is within-node, within-node
    # with one GPU a node is none; one GPU in all is none
    keep &= ~((sa == 2) & (nn == 1)) & ~((sa == 1) & (gpn == 1)) & ~((sa != 0) & (nn * gpn == 1))
    keep &= allowed_prio[mi, pr]
    keep &= ~((ad == ADAPTERS.index("qlora")) & (sa != 0))  # 4-bit (bitsandbytes) students are not sharded
    mi, nn, ad, mode, rc, tp, sa, pr = (a[keep] for a in (mi, nn, ad, mode, rc, tp, sa, pr))
    prio = pr.astype(np.int8)

    def per_machine(values) -> np.ndarray:
        return np.asarray(values, dtype=float)[mi]

    eff = per_machine([accelerator_efficiency(m.accelerator, c)[0] for m in machines])
    price = np.full(len(mi), np.nan)
    for k, name in enumerate(priorities):
        p = per_machine([m.usd_per_hour.get(name, np.nan) for m in machines])
        price = np.where(prio == k, p, price)
    hours = c["time"]["provision_hours"]
    is_local = per_machine([m.provision == "local" for m in machines]) > 0
    prov = np.where(is_local, hours["local"], np.where(prio == 0, hours["dedicated"], hours["low-priority"]))
    grid = Grid(
        peak_flops=per_machine([m.peak_tflops * 1e12 for m in machines]),
        hbm_bytes=per_machine([m.hbm_gb * GB for m in machines]),
        hbm_bytes_per_s=per_machine([m.hbm_gb_per_s * GB for m in machines]),
        efficiency=eff,
        gpus_per_node=per_machine([m.gpus for m in machines]),
        nodes=nn.astype(float),
        intra_bytes_per_s=per_machine([m.intra_gb_per_s * GB for m in machines]),
        inter_bytes_per_s=per_machine([m.inter_gb_per_s * GB for m in machines]),
        adapter=ad.astype(np.int8),
        teacher_mode=mode.astype(np.int8),
        recompute=rc.astype(np.int8),
        teacher_bytes_per_param=np.asarray([TEACHER_BYTES[p] for p in precisions])[tp],
        sharding=sa.astype(np.int8),
        provision_hours=prov,
        usd_per_node_hour=price,
        low_priority=prio == 1,
        extra={
            "machine": mi,
            "accelerator": np.asarray([acc_names.index(m.accelerator) for m in machines], dtype=np.int32)[mi],
            "priority": prio,
            "teacher_precision": tp.astype(np.int8),
            "local": is_local,
        },
    )
    labels = {
        "machine": [m.id for m in machines],
        "accelerator": acc_names,
        "priority": list(priorities),
        "teacher_precision": list(precisions),
    }
    # sizes a smoke job measured: their storage speeds per row (NaN: the global coefficient); no columns at all
    # when none was, so an empty calibration store costs nothing
    for key in ("blob_copy_gb_per_s", "cache_transfer_gb_per_s"):
        if any(getattr(m, key) for m in machines):
            grid.extra[key] = per_machine([getattr(m, key) or np.nan for m in machines])
    if any(m.measured for m in machines):
        labels["measured"] = [m.measured for m in machines]
    return grid, labels



def run_sweep(job: Job, machines: list[Machine], teacher_modes: tuple[str, ...], nodes: int | None = None) -> Sweep:
    grid, labels = build_grid(machines, has_teacher=job.teacher is not None, teacher_modes=teacher_modes, nodes=nodes)
    return Sweep(job=job, grid=grid, out=evaluate(job, grid), labels=labels)


def pareto_front(hours: np.ndarray, cost: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the options no other option beats on both time and cost, fastest first."""
    idx = np.flatnonzero((mask if mask is not None else True) & np.isfinite(hours) & np.isfinite(cost))
    if idx.size == 0:
        return idx
    order = idx[np.lexsort((cost[idx], hours[idx]))]
    c = cost[order]
    running_min = np.minimum.accumulate(c)
    keep = np.empty(len(order), dtype=bool)
    keep[0] = True
    keep[1:] = c[1:] < running_min[:-1]
    return order[keep]
