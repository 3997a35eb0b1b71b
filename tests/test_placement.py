"""One placement decision for the estimator and the engine: sharding from the plan, the teacher replicated or
sharded by ``placement.teacher_replicated``, and ``resolve_run`` giving the engine exactly the planner's choice."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill_studio.engine.errors import PlanError, RunError
from distill_studio.engine.estimate.core import TEACHER_BYTES, TEACHER_MODES
from distill_studio.engine.estimate.placement import SHARDINGS, shard_degree, sharding_kind, teacher_replicated
from distill_studio.engine.plan import loads_plan
from distill_studio.engine.planner import analyse, check_world, resolve_run

PLANS = Path(__file__).resolve().parents[1] / "resources" / "plans"
GIB = 1024**3


def test_shard_degree_and_what_a_run_reports():
    assert shard_degree(SHARDINGS.index("none"), 4, 8) == 1
    assert shard_degree(SHARDINGS.index("within-node"), 4, 8) == 8
    assert shard_degree(SHARDINGS.index("all-gpus"), 4, 8) == 32
    assert sharding_kind("within-node", 4, 8) == "hybrid"
    assert sharding_kind("within-node", 1, 8) == "full"   # one node: sharding within it is sharding over all
    assert sharding_kind("all-gpus", 1, 1) == "none"      # one GPU is never sharded
    assert sharding_kind("all-gpus", 2, 1) == "full"


def test_teacher_replicated_follows_the_plan_then_the_memory():
    fits = np.array([True, False])
    assert teacher_replicated(np.array([8, 8]), "auto", True, fits).tolist() == [True, False]
    assert teacher_replicated(np.array([8, 8]), "auto", False, fits).tolist() == [False, False]  # sharding named
    assert teacher_replicated(np.array([8, 8]), "replicated", False, fits).tolist() == [True, True]
    assert teacher_replicated(np.array([1, 8]), "sharded", True, fits).tolist() == [True, False]  # one GPU: whole


@pytest.mark.parametrize("path", sorted(PLANS.glob("*.toml")), ids=lambda p: p.stem)
def test_resolve_run_is_the_planners_recommendation(path):
    from distill_studio.engine.plan import load_plan

    plan = load_plan(path)
    a = analyse(plan, path.parent)
    row = a.sweep.row(a.decision.recommended)
    r = resolve_run(plan, path.parent)
    hw = r.plan.hardware
    assert (hw.sku, hw.nodes, hw.sharding) == (row["sku"], row["nodes"], row["sharding"])
    assert r.plan.method.teacher_mode in (row["teacher_mode"], plan.method.teacher_mode)
    assert r.plan.teacher.placement == row["teacher_placement"]
    assert r.plan.training.recompute == row["recompute"]
    assert r.world_size == row["gpus"] and r.estimate["hours"] == row["hours"]
    assert r.estimate["memory_gib_per_gpu"] == row["memory_gib_per_gpu"]["total"]
    # resolving the resolved plan changes nothing: a resumed run runs the same configuration
    again = resolve_run(r.plan, path.parent)
    assert again.plan == r.plan and again.estimate == r.estimate


def _gemma(sharding: str = "auto", placement: str = "auto", precision: str = "bf16") -> str:
    return f'''name = "g"
[teacher]
model = "google/gemma-3-27b-it"
precision = "{precision}"
placement = "{placement}"
[student]
model = "google/gemma-3-4b-it"
[method]
teacher_mode = "online"
[adapter]
kind = "lora"
[data]
tokens = 100000000
seq_len = 2048
[hardware]
target = "azure"
sku = "Standard_ND96isr_H100_v5"
nodes = 2
sharding = "{sharding}"
'''


def _teacher_memory(text: str) -> tuple[str, float]:
    plan = loads_plan(text)
    a = analyse(plan, None)
    i = int(np.flatnonzero(a.planned & (a.sweep.grid.teacher_mode == TEACHER_MODES.index("online")))[0])
    row = a.sweep.row(i)
    return row["teacher_placement"], row["memory_gib_per_gpu"]["teacher"]


def test_the_estimators_teacher_memory_is_where_the_placement_puts_it():
    whole = 27.4e9 * TEACHER_BYTES["bf16"] / GIB
    placed, gib = _teacher_memory(_gemma())  # sharding left to the planner: a 54 GB teacher fits an 80 GB H100
    assert placed == "replicated" and gib == pytest.approx(whole, rel=0.03)
    placed, gib = _teacher_memory(_gemma(sharding="all-gpus"))  # named: both models sharded over 16 GPUs
    assert placed == "sharded" and gib < whole / 4
    placed, _ = _teacher_memory(_gemma(sharding="all-gpus", placement="replicated"))
    assert placed == "replicated"
    placed, gib = _teacher_memory(_gemma(sharding="all-gpus", precision="int8"))  # bitsandbytes: never sharded
    assert placed == "replicated" and gib == pytest.approx(27.4e9 / GIB, rel=0.03)


def test_plans_the_engine_cannot_shard_are_refused_with_the_field():
    with pytest.raises(PlanError, match="qlora"):
        loads_plan(_gemma(sharding="all-gpus").replace('kind = "lora"', 'kind = "qlora"'))
    with pytest.raises(PlanError, match="teacher.placement"):
        loads_plan(_gemma(placement="sharded", precision="int4"))


def test_a_launch_of_another_size_than_the_plan_is_refused_with_both_numbers():
    r = resolve_run(loads_plan(_gemma(sharding="within-node")), None)
    assert (r.nodes, r.gpus_per_node, r.sharding) == (2, 8, "hybrid")
    check_world(r, 16, "8")
    with pytest.raises(RunError, match=r"runs on 16 process\(es\) \(2 × Standard_ND96isr_H100_v5 with 8 GPU\(s\)"):
        check_world(r, 8, "8")
    with pytest.raises(RunError, match="4 per node"):
        check_world(r, 16, "4")


def test_a_global_batch_that_does_not_split_evenly_runs_as_the_estimator_planned_it():
    plan = loads_plan('''name = "three"
[teacher]
model = "Qwen/Qwen2.5-1.5B-Instruct"
[student]
model = "Qwen/Qwen2.5-0.5B-Instruct"
[data]
tokens = 100000
seq_len = 16
global_batch_tokens = 128
[hardware]
target = "local"
accelerator = "cpu"
gpus = 3
[training]
micro_batch_size = 2
''')
    r = resolve_run(plan, None)
    # 8 sequences over 3 GPUs: 3 each, in micro-batches of 2, is 2 micro-batches each: 12 sequences a step
    assert r.plan.data.global_batch_tokens == 12 * 16 and r.plan.training.micro_batch_size == 2
    assert r.notes and "12 sequences" in r.notes[0]
    unset = resolve_run(plan.model_copy(update={"training": plan.training.model_copy(update={"micro_batch_size": None})}), None)
    # left to the planner: each GPU's whole share (3) in one micro-batch, written into the plan that runs
    assert unset.plan.training.micro_batch_size == 3 and unset.plan.data.global_batch_tokens == 9 * 16
