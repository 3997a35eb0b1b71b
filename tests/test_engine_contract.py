"""The planner and the engine are one contract: every kind of option the sweep can recommend (adapter x teacher mode
x teacher precision x recomputation x sharding x one or several nodes) is either run by `distill run` exactly so,
with tiny models on the CPU in several processes, or refused before anything is loaded with the hardware it needs.

Processes are started the three ways a run starts: torchrun-style on one machine (one node x 2), and as a cluster
launcher does it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set by hand) for 2 nodes x 1 and
2 nodes x 2 (hybrid sharding, a 2-D mesh)."""
from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from distill_studio.engine.plan import load_plan  # noqa: E402
from distill_studio.engine.planner import analyse  # noqa: E402
from distill_studio.engine.runs.events import read_events  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

HERE = Path(__file__).parent
PLANS = HERE.parent / "resources" / "plans"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "DISTILL_JOIN_TIMEOUT": "120"}

# What a run reports for each plan sharding on each shape of launch.
KIND = {("none", False): "none", ("all-gpus", False): "full", ("within-node", True): "hybrid",
        ("all-gpus", True): "full", ("none", True): "none"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cases: list[dict], root: Path, nodes: int, per_node: int, name: str) -> dict[str, int]:
    """Start ``nodes x per_node`` processes as a cluster launcher would, each running every case in turn."""
    cases_file = root / f"{name}.json"
    cases_file.write_text(json.dumps(cases))
    port, world = _port(), nodes * per_node
    procs = []
    for rank in range(world):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank % per_node),
               "LOCAL_WORLD_SIZE": str(per_node), "NODE_RANK": str(rank // per_node),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "multiproc_runs.py"), str(cases_file)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-4000:]
    return json.loads(cases_file.with_suffix(".out.json").read_text())


def _case(root: Path, *, adapter: str, mode: str, recompute: str, sharding: str, placement: str = "auto",
          precision: str = "bf16", nodes: int = 1, per_node: int = 2) -> dict:
    name = f"{adapter}-{mode}-rc{recompute}-{sharding}-{placement}-{precision}-{nodes}x{per_node}"
    kind = "seq-kd" if mode == "generate" else "logit-kd"
    plan = tiny.write_plan(
        root, kind=kind, mode=mode, adapter=adapter, steps=2, data_n=16, eval_n=4,
        extra=f"recompute = \"{recompute}\"\ncheckpoint_every = 1\neval_samples = 0",
        hardware=f'gpus = {per_node}\nnodes = {nodes}\nsharding = "{sharding}"',
        teacher=f'precision = "{precision}"\nplacement = "{placement}"', name=f"plan-{name}.toml")
    return {"plan": str(plan), "run_dir": str(root / "runs" / name), "name": name, "adapter": adapter, "mode": mode,
            "recompute": recompute, "sharding": sharding, "placement": placement, "precision": precision,
            "nodes": nodes, "per_node": per_node}


def _check_ran(case: dict, code: int) -> tuple:
    run = Path(case["run_dir"])
    assert code == 0, (case["name"], (run / "logs" / "run.log").read_text()[-3000:] if (run / "logs" / "run.log").exists() else "")
    events = read_events(run / "events.jsonl")
    started = next(e for e in events if e["type"] == "run_started")
    multi = case["nodes"] > 1
    sharding = KIND[(case["sharding"], multi)]
    placement = "replicated" if sharding == "none" or case["placement"] == "replicated" else "sharded"
    assert (started["world_size"], started["nodes"], started["sharding"], started["teacher_placement"]) == \
        (case["nodes"] * case["per_node"], case["nodes"], sharding, placement), case["name"]
    assert started["teacher_mode"] == case["mode"]
    assert started["estimate"]["option"]["adapter"] == case["adapter"]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "succeeded"
    assert [e["step"] for e in events if e["type"] == "metric"] == [1, 2]
    assert all(np.isfinite(e["loss"]) for e in events if e["type"] == "metric")
    assert (run / "student" / "config.json").is_file()
    assert ((run / "student" / "adapter" / "adapter_model.safetensors").is_file() if case["adapter"] == "lora"
            else (run / "student" / "model.safetensors").is_file())
    plan = load_plan(run / "plan.toml")  # the plan as it ran: nothing left to the planner
    assert plan.method.teacher_mode == case["mode"] and plan.hardware.sharding == case["sharding"]
    return (case["adapter"], case["mode"], case["precision"], case["recompute"], started["sharding"], multi)


def _check_refused(case: dict, code: int, needs: str) -> tuple:
    run = Path(case["run_dir"])
    assert code == 2, case["name"]
    events = read_events(run / "events.jsonl")
    assert "metric" not in [e["type"] for e in events] and "run_started" not in [e["type"] for e in events]
    assert events[-1]["status"] == "failed" and needs in events[-1]["message"], events[-1]["message"]
    assert "loading the teacher" not in (run / "logs" / "run.log").read_text()  # refused before loading
    multi = case["nodes"] > 1
    return (case["adapter"], case["mode"], case["precision"], case["recompute"], KIND[(case["sharding"], multi)], multi)


def _recommendable_kinds() -> set[tuple]:
    """Every kind of option the sweep can recommend for the bundled plans' pairs, whatever adapter, teacher
    precision or sharding a plan asks for: every configuration that fits."""
    kinds = set()
    for path in sorted(PLANS.glob("*.toml")):
        a = analyse(load_plan(path), path.parent)
        o = a.sweep.out
        for i in np.flatnonzero(o["fits"]):
            r = a.sweep.row(int(i))
            multi = r["nodes"] > 1
            sharding = {"none": "none", "all-gpus": "full", "within-node": "hybrid" if multi else "full"}[r["sharding"]]
            kinds.add((r["adapter"], r["teacher_mode"], r["teacher_precision"], r["recompute"], sharding, multi))
    return kinds


def _qlora(root: Path, nodes: int, per_node: int) -> list[tuple[dict, str]]:
    """A 4-bit student is never sharded (the sweep keeps it on sharding "none"); here it needs CUDA."""
    return [(_case(root, adapter="qlora", mode=m, recompute=rc, sharding="none", precision=q, nodes=nodes,
                   per_node=per_node), "NVIDIA GPU")
            for m in ("online", "offline-topk", "generate") for rc in ("off", "full", "selective") for q in ("bf16", "int8", "int4")]


@pytest.fixture(scope="module")
def covered(tmp_path_factory) -> set[tuple]:
    root = tmp_path_factory.mktemp("contract")
    tiny.make_models(root)
    axes = list(itertools.product(("full", "lora"), ("online", "offline-topk", "generate"), ("off", "full", "selective")))
    kinds: set[tuple] = set()

    # one machine, 2 processes: DDP, and full sharding with the teacher sharded or replicated
    one = [_case(root, adapter=a, mode=m, recompute=rc, sharding=s, placement=p)
           for a, m, rc in axes for s, p in (("none", "auto"), ("all-gpus", "auto"), ("all-gpus", "replicated"))]
    # what needs a GPU with bitsandbytes is refused before anything loads, whatever the placement
    refused = [(_case(root, adapter=a, mode=m, recompute=rc, sharding=s, precision=q), "NVIDIA GPU")
               for a, m, rc in axes for q in ("int8", "int4") for s in ("none", "all-gpus")]
    refused += _qlora(root, nodes=1, per_node=2)
    codes = _launch(one + [c for c, _ in refused], root, 1, 2, "one-node")
    kinds |= {_check_ran(c, codes[c["run_dir"]]) for c in one}
    kinds |= {_check_refused(c, codes[c["run_dir"]], needs) for c, needs in refused}

    # two nodes of one process: DDP across nodes, full sharding across nodes
    two = [_case(root, adapter=a, mode=m, recompute=rc, sharding=s, nodes=2, per_node=1)
           for a, m, rc in axes for s in ("none", "all-gpus")]
    refused2 = [(_case(root, adapter=a, mode=m, recompute=rc, sharding=s, precision=q, nodes=2, per_node=1),
                 "NVIDIA GPU") for a, m, rc in axes for q in ("int8", "int4") for s in ("none", "all-gpus")]
    refused2 += _qlora(root, nodes=2, per_node=1)
    codes = _launch(two + [c for c, _ in refused2], root, 2, 1, "two-nodes")
    kinds |= {_check_ran(c, codes[c["run_dir"]]) for c in two}
    kinds |= {_check_refused(c, codes[c["run_dir"]], needs) for c, needs in refused2}

    # two nodes of two processes: hybrid sharding (shard in a node, replicate across nodes), teacher both ways
    hybrid = [_case(root, adapter=a, mode=m, recompute=rc, sharding="within-node", placement=p, nodes=2, per_node=2)
              for a, m, rc in axes for p in ("auto", "replicated")]
    refused3 = [(_case(root, adapter=a, mode=m, recompute=rc, sharding="within-node", precision=q, nodes=2,
                       per_node=2), "NVIDIA GPU") for a, m, rc in axes for q in ("int8", "int4")]
    codes = _launch(hybrid + [c for c, _ in refused3], root, 2, 2, "hybrid")
    kinds |= {_check_ran(c, codes[c["run_dir"]]) for c in hybrid}
    kinds |= {_check_refused(c, codes[c["run_dir"]], needs) for c, needs in refused3}
    return kinds


def test_every_recommendable_kind_of_option_is_run_or_refused(covered):
    wanted = _recommendable_kinds()
    assert len(wanted) > 50  # the sweep really spans the axes
    missing = sorted(wanted - covered)
    assert not missing, f"{len(missing)} kinds of option the planner can recommend are neither run nor refused: {missing[:10]}"


def test_the_sweep_offers_every_axis_the_contract_covers(covered):
    """The other direction: the kinds covered here are ones the planner really produces (no dead branches)."""
    wanted = _recommendable_kinds()
    assert {k[4] for k in wanted} == {"none", "full", "hybrid"}
    assert {k[1] for k in wanted} == {"online", "offline-topk", "generate"}
    assert {k[0] for k in wanted} >= {"full", "lora", "qlora"}
    assert {k[2] for k in wanted} == {"bf16", "int8", "int4"}
