"""`distill azure rehearse`: the plan's exact Azure ML job run here as a node would run it.

The quick tests check each piece against the job that `job.build()` makes (the real azure-ai-ml objects). The end to
end test runs the CLI command as CI does: a venv of the job's pins (built once, then taken from the user cache),
two CPU processes with Azure ML's variables, a SIGKILL of the node during a checkpoint copy, the restart with
`--resume-if-started`, and the watcher's read-back of the MLflow store.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")

from distill_studio.engine.azure import rehearse as R  # noqa: E402
from distill_studio.engine.azure.job import build  # noqa: E402
from distill_studio.engine.errors import AzureError  # noqa: E402
from distill_studio.engine.plan import load_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "resources" / "demo" / "azure-plan.toml"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    node = R.Node(root, "distill-demo-test-0001")
    spec = build(PLAN, node.job, node.code)
    return spec, node


def test_the_demo_azure_plan_plans_as_an_azure_job_of_fixed_size(built):
    spec, _ = built
    plan = load_plan(PLAN)
    assert plan.hardware.target == "azure"
    assert (spec.sku, spec.nodes, spec.gpus_per_node) == ("Standard_NC48ads_A100_v4", 1, 2)
    assert 0 < plan.training.checkpoint_every < plan.training.max_steps // 2   # a kill can fall between two


def test_the_command_line_gets_mount_like_paths_for_every_input_and_the_output(built):
    spec, node = built
    inputs = R.mount_inputs(spec.job, node.wd)
    assert set(inputs) == set(spec.job.inputs)
    assert Path(inputs["data_train"]) == node.wd / "INPUT_data_train" / "train.jsonl"    # a file: inside its folder
    assert (Path(inputs["teacher_model"]) / "config.json").is_file()                     # a folder: the folder
    line = R.command_line(spec.job, inputs, node.output, world=3)
    assert "${{" not in line and str(node.output) in line
    assert "/mnt/azureml/cr/j/distill-demo-test-0001/cap/data-capability/wd/INPUT_data_eval/eval.jsonl" in line
    assert "--resume-if-started distill-demo-test-0001" in line and "--expect-world-size 3" in line


def test_a_command_naming_an_input_the_job_lacks_is_refused(built):
    spec, node = built

    class Job:
        command = "python -m x ${{inputs.nope}}"

    with pytest.raises(AzureError, match="input 'nope'"):
        R.command_line(Job(), {}, node.output)


def test_each_process_gets_azure_mls_variables_and_nothing_else_of_this_shell(built, monkeypatch, tmp_path):
    spec, node = built
    monkeypatch.setenv("DISTILL_SECRET_SENTINEL", "do-not-leak")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    env = R.node_environment(spec.job, node, tmp_path / "venv", tmp_path / "mlruns", "run-id", "1")
    assert "DISTILL_SECRET_SENTINEL" not in env
    assert env["PYTHONPATH"] == str(node.code)                       # the staged code, never the checkout
    assert env["DISTILL_MLFLOW"] == "1" and env["MLFLOW_RUN_ID"] == "run-id"
    for key, value in spec.job.environment_variables.items():        # the job's own variables, as the job sets them
        assert env[key] == value or env[key].startswith(str(node.root))
    ranks = [R.rank_environment(env, rank=r, local_rank=r, node_rank=0, per_node=2, world=2, port=29500)
             for r in range(2)]
    # every AZUREML_* variable the staged engine reads is set
    assert R.read_azureml_names(node.code) <= set(ranks[0])
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"], e["LOCAL_WORLD_SIZE"]) for e in ranks] == \
        [("0", "0", "2", "2"), ("1", "1", "2", "2")]
    assert {e["MASTER_ADDR"] for e in ranks} == {"127.0.0.1"} and {e["MASTER_PORT"] for e in ranks} == {"29500"}


def test_the_staged_plan_becomes_cpu_processes_of_the_same_world_and_the_engine_accepts_it(built, tmp_path):
    import shutil

    from distill_studio.engine.planner import check_world, resolve_run

    spec, node = built
    code = tmp_path / "code"
    shutil.copytree(node.code, code)
    R.cpu_plan(code, spec.nodes, 2, tmp_path / "job" / "plan.toml")
    assert load_plan(tmp_path / "job" / "plan.toml").hardware.sku == spec.sku      # the job's own plan kept
    plan = load_plan(code / "plan.toml")
    assert (plan.hardware.target, plan.hardware.accelerator, plan.hardware.gpus) == ("local", "cpu", 2)
    assert plan.training == load_plan(tmp_path / "job" / "plan.toml").training     # training as the job's
    resolved = resolve_run(plan, ROOT / "resources" / "demo", pinned=True)
    check_world(resolved, 2, "2")                                                    # the launch it gets


def test_a_copy_in_progress_is_seen_only_after_a_complete_checkpoint(tmp_path):
    copying = {"type": "log", "level": "info", "message": "copying checkpoint step 40 to the output (x)"}
    assert R.checkpoint_copy_in_progress(tmp_path, [copying]) is None               # nothing to resume from yet
    done = {"type": "checkpoint", "step": 20}
    assert R.checkpoint_copy_in_progress(tmp_path, [done]) is None
    assert R.checkpoint_copy_in_progress(tmp_path, [done, copying]) == (40, 20)
    assert R.checkpoint_copy_in_progress(tmp_path, [done, copying, {"type": "checkpoint", "step": 40}]) is None


def test_the_watcher_reads_the_store_through_its_own_event_code(tmp_path):
    """The REST documents the store reader serves become events through Watcher._read_events."""
    from distill_studio.engine.azure.jobs import read_meta, write_meta
    from distill_studio.engine.runs.events import read_events
    from distill_studio.engine.runs.mlflow_bridge import TAG_PREFIX, to_mlflow

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_meta(run_dir, {"job": "j1", "jobs": ["j1"]})
    events = [{"v": 1, "time": 1.0, "type": "run_started", "step": 0},
              {"v": 1, "time": 2.0, "type": "metric", "step": 1, "loss": 2.5},
              {"v": 1, "time": 3.0, "type": "eval", "step": 1, "task_score": 0.75},
              {"v": 1, "time": 4.0, "type": "run_finished", "status": "succeeded", "step": 1}]
    history, tags = {}, []
    for n, e in enumerate(events):
        metrics, step, ms, tag = to_mlflow(e)
        for k, v in metrics.items():
            history.setdefault(k, []).append({"key": k, "value": v, "timestamp": ms, "step": step})
        if tag:
            tags.append({"key": f"{TAG_PREFIX}{n:06d}", "value": tag})
    reader = R.StoreReader(Path("unused"), {}, "j1")
    reader.doc = {"run": {"data": {"tags": tags, "metrics": [h[-1] for h in history.values()]}}, "history": history}
    w = R.local_watcher(run_dir, reader, say=None)
    w.meta["mlflow"] = R.MLFLOW_BASE
    try:
        w._read_events("j1")
        w._read_events("j1")            # a second read writes nothing twice (the watcher's cursor)
        write_meta(run_dir, w.meta)
    finally:
        w.close()
    got = read_events(run_dir / "events.jsonl")
    assert [e["type"] for e in got] == ["run_started", "metric", "eval", "run_finished"]
    assert got[2]["task_score"] == 0.75
    assert read_meta(run_dir)["cursor"]["j1"]["eval"] == 1
    with pytest.raises(AzureError, match="not this job"):
        reader.get(f"{R.MLFLOW_BASE}/api/2.0/mlflow/runs/get?run_id=other")


def test_a_bad_process_count_and_a_local_plan_are_refused(tmp_path):
    with pytest.raises(AzureError, match="--processes"):
        R.rehearse(PLAN, processes=0, root=tmp_path / "r")
    with pytest.raises(AzureError, match="hardware.target"):
        R.rehearse(ROOT / "resources" / "demo" / "plan.toml", root=tmp_path / "r2")


def test_the_venv_key_follows_the_requirements():
    a = R.venv_key(["torch==2.13.0", "numpy==2.4.6"])
    assert a == R.venv_key(["torch==2.13.0", "numpy==2.4.6"])
    assert a != R.venv_key(["torch==2.13.0", "numpy==2.4.5"])


def test_rehearse_the_demo_job_killed_during_a_checkpoint_copy(tmp_path):
    """The done-when line of the rehearsal, as CI runs it."""
    work = tmp_path / "rehearsal"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    distill = Path(sys.executable).with_name("distill")
    proc = subprocess.run([str(distill), "azure", "rehearse", str(PLAN),
                           "--processes", "2", "--kill-during-checkpoint", "--dir", str(work), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    tail = proc.stderr[-6000:]
    assert proc.returncode == 0, tail
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 0
    from distill_studio.engine.runs.events import read_events

    output = next((work / "mnt").rglob("cap/data-capability/wd/run"))
    engine = read_events(output / "events.jsonl")
    # the node was killed during a copy, the copy left incomplete, and the restart resumed from the one before
    assert "while checkpoint step" in proc.stderr
    starts = [e for e in engine if e["type"] == "run_started"]
    assert out["resumed_from_step"] is not None and starts[-1]["resumed_from_step"] == out["resumed_from_step"]
    assert any(p.name.endswith("_attempt_2.txt") for p in (work / "logs" / "user_logs").iterdir())
    # the watcher's read-back: the metrics and the final eval, the same task score as the engine's own
    seen = read_events(work / "run" / "events.jsonl")
    steps = {e["step"] for e in seen if e["type"] == "metric"}
    plan = load_plan(PLAN)
    assert max(steps) == plan.training.max_steps and len(steps) >= plan.training.max_steps
    final = [e for e in engine if e["type"] == "eval"][-1]
    assert out["task_score"] == pytest.approx(final["task_score"]) and 0.0 <= out["task_score"] <= 1.0
    # the local demo's result: the student reaches ~94% of the teacher's held-out score in 100 steps
    assert final["task_score"] >= 0.85 * final["teacher_task_score"], final
    assert seen[-1]["type"] == "run_finished" and seen[-1]["status"] == "succeeded"
    assert f"task score: {out['task_score']:.4g}" in tail
