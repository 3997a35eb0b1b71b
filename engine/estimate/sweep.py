"""The sweep: every hardware option x node count x adapter x teacher mode x recomputation x teacher precision x
sharding x priority, evaluated at once, and the Pareto front of cost versus time."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np

from .core import ADAPTERS, GB, TEACHER_BYTES, TEACHER_MODES, Grid, Job, accelerator_efficiency, coefficients, evaluate

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

    def row(self, i: int) -> dict:
        """One configuration as plain values, for reports and JSON."""
        o = self.out
        mem = {k[4:]: float(o[k][i]) / 1024**3 for k in o if k.startswith("mem_")}
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
            "recompute": bool(self.grid.recompute[i]),
            "sharding": "all-gpus" if self.grid.shard_all[i] else "within-node",
            "tokens_per_second_per_gpu": float(o["tokens_per_second_per_gpu"][i]),
            "mfu": float(o["mfu"][i]),
            "micro_batch_seqs": int(o["micro_batch_seqs"][i]),
            "grad_accum_steps": int(o["grad_accum_steps"][i]),
            "memory_gib_per_gpu": {("total" if k == "total" else k): round(v, 3) for k, v in mem.items()},
            "fits": bool(o["fits"][i]),
            "hours": {
                "setup": float(o["setup_hours"][i]),
                "teacher_pass": float(o["prepass_hours"][i]),
                "training": float(o["train_hours"][i]),
                "checkpoints": float(o["checkpoint_hours"][i]),
                "total": float(o["total_hours"][i]),
            },
            "cost_usd": None if np.isnan(cost) else round(cost, 2),
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
    cols: dict[str, list] = {k: [] for k in (
        "m", "nodes", "adapter", "mode", "recompute", "tprec", "shard_all", "prio")}
    for mi, m in enumerate(machines):
        node_range = [nodes] if nodes else range(1, (m.max_nodes if m.inter_gb_per_s > 0 else 1) + 1)
        for nn, ad, mode, rc, tp, sa, pr in product(
            node_range, range(len(ADAPTERS)), teacher_modes, (False, True), precisions, (False, True), priorities
        ):
            if (sa and nn == 1) or pr not in m.priorities:
                continue
            cols["m"].append(mi)
            cols["nodes"].append(nn)
            cols["adapter"].append(ad)
            cols["mode"].append(TEACHER_MODES.index(mode))
            cols["recompute"].append(rc)
            cols["tprec"].append(precisions.index(tp))
            cols["shard_all"].append(sa)
            cols["prio"].append(priorities.index(pr))
    mi = np.asarray(cols["m"], dtype=np.int32)
    prio = np.asarray(cols["prio"], dtype=np.int8)

    def per_machine(values) -> np.ndarray:
        return np.asarray(values, dtype=float)[mi]

    eff = per_machine([accelerator_efficiency(m.accelerator, c)[0] for m in machines])
    price = np.full(len(mi), np.nan)
    for k, pr in enumerate(priorities):
        p = per_machine([m.usd_per_hour.get(pr, np.nan) for m in machines])
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
        nodes=np.asarray(cols["nodes"], dtype=float),
        intra_bytes_per_s=per_machine([m.intra_gb_per_s * GB for m in machines]),
        inter_bytes_per_s=per_machine([m.inter_gb_per_s * GB for m in machines]),
        adapter=np.asarray(cols["adapter"], dtype=np.int8),
        teacher_mode=np.asarray(cols["mode"], dtype=np.int8),
        recompute=np.asarray(cols["recompute"], dtype=bool),
        teacher_bytes_per_param=np.asarray([TEACHER_BYTES[p] for p in precisions])[np.asarray(cols["tprec"], int)],
        shard_all=np.asarray(cols["shard_all"], dtype=bool),
        provision_hours=prov,
        usd_per_node_hour=price,
        low_priority=prio == 1,
        extra={
            "machine": mi,
            "accelerator": np.asarray([acc_names.index(m.accelerator) for m in machines], dtype=np.int32)[mi],
            "priority": prio,
            "teacher_precision": np.asarray(cols["tprec"], dtype=np.int8),
        },
    )
    labels = {
        "machine": [m.id for m in machines],
        "accelerator": acc_names,
        "priority": list(priorities),
        "teacher_precision": list(precisions),
    }
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
