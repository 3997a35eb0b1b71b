"""Azure ML: the job built from a plan, submission without double submits, watching (MLflow metrics into the run's
events), cancel, resume after preemption, and every failure, against the real SDK clients (azure-ai-ml,
azure-identity, azure-storage-blob) talking to a fake Azure at the HTTP transport (``tests/azure_fake.py``)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")
import keyring  # noqa: E402

from distill_studio.engine.errors import AzureError  # noqa: E402
from distill_studio.engine.runs.events import fold_events, read_events  # noqa: E402
from distill_studio.engine.settings import Settings  # noqa: E402

import azure_fake as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"
PLANS = sorted((ROOT / "resources" / "plans").glob("*.toml"))
SECRET = "kN8~Q-secret-value-that-must-not-leak.42"


def azure_plan(tmp_path: Path, priority: str = "dedicated", name: str = "demo-on-azure") -> Path:
    """The bundled demo (tiny local models and data) as an Azure plan on one A100 node."""
    text = (DEMO / "plan.toml").read_text()
    text = text.replace('name = "demo-column-addition"', f'name = "{name}"')
    for rel in ("teacher", "student", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'"{rel}"', f'"{(DEMO / rel).as_posix()}"')
    text = text.replace('target = "local"\naccelerator = "cpu"',
                        f'target = "azure"\nsku = "Standard_NC24ads_A100_v4"\nnodes = 1\nregion = "eastus"\n'
                        f'priority = "{priority}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISTILL_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv(F.FAKE_DIR_ENV, str(tmp_path / "azure"))
    from distill_studio.engine.azure import client

    # Azure's back-off would sleep for seconds between retries of a 5xx; the policy is the same, only faster
    monkeypatch.setitem(client.RETRY, "retry_backoff_factor", 0.01)
    before = keyring.get_keyring()
    keyring.set_keyring(F.FileKeyring())
    keyring.set_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}", SECRET)
    yield F.FakeAzure(tmp_path / "azure")
    keyring.set_keyring(before)


def connect(fake, **changes):
    from distill_studio.engine.azure.client import Azure, workspace_from_settings

    doc = F.settings_doc()
    doc["azure"].update(changes)
    ws = workspace_from_settings(Settings.model_validate(doc))
    return Azure(ws, t=F.transport(fake))


def job_puts(fake) -> list[dict]:
    return [r for r in fake.requests() if r["method"] == "PUT" and "/jobs/" in r["url"]]


def demo_events(steps: int = 6, resumed_from: int | None = None, end: str | None = "succeeded",
                t0: float = 1_796_000_000.0) -> list[dict]:
    """Events as the engine writes them for a short run (or its resumed part), one step a second from ``t0``."""
    t0 = float(int(t0))
    first = (resumed_from or 0) + 1
    out = [{"v": 1, "time": t0, "type": "run_started", "total_steps": steps, "total_tokens": 2048 * steps,
            "device": "cuda:0", "processes": 1, "estimate": {
                "hours": {"total": 0.01}, "cost_usd": 0.04, "tokens_per_second_per_gpu": 5000.0,
                "option": {"sku": "Standard_NC24ads_A100_v4", "nodes": 1, "gpus": 1, "adapter": "full",
                           "teacher_mode": "online", "teacher_precision": "bf16", "recompute": False,
                           "sharding": "none"}},
            **({"resumed_from_step": resumed_from} if resumed_from is not None else {})}]
    for s in range(first, steps + 1):
        out.append({"v": 1, "time": t0 + s, "type": "metric", "step": s, "tokens_seen": 2048 * s,
                    "loss": 2.0 / s, "kd_loss": 1.5 / s, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_second": 4096.0,
                    "step_seconds": 0.5})
        if s % 3 == 0:
            out.append({"v": 1, "time": t0 + s + 0.25, "type": "eval", "step": s, "kl": 0.1 / s,
                        "task_score": 0.5 + s / 100})
            out.append({"v": 1, "time": t0 + s + 0.5, "type": "checkpoint", "step": s,
                        "path": f"checkpoints/step-{s:08d}"})
    if end:
        out.append({"v": 1, "time": t0 + steps + 1, "type": "run_finished", "status": end, "step": steps,
                    "message": "student saved to /mnt/azureml/cr/j/x/cap/data-capability/wd/run/student"})
    return out


# ---- the job ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_export_writes_a_job_that_load_job_reads_back_equal(plan, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    from azure.ai.ml import load_job

    from distill_studio.engine.azure.job import export
    from distill_studio.engine.planner import resolve_run
    from distill_studio.engine.plan import load_plan

    out = tmp_path / "job.yaml"
    written = export(plan, out)
    resolved = resolve_run(load_plan(plan), plan.parent)
    if resolved.split:       # two jobs: the teacher's pass, then training reading its output folder
        assert [w[1].name for w in written] == ["job.yaml", "job.student.yaml"]
        student = load_job(written[1][1])
        assert student.inputs["teacher_run"].path == written[0][0].output_uri
        assert "--stage student" in student.command and "--stage teacher" in load_job(out).command
        assert load_compute_size(written[0][2]) == resolved.split["teacher_pass"]["sku"]
        assert load_compute_size(written[1][2]) == resolved.plan.hardware.sku
        resolved = resolve_run(load_plan(plan), plan.parent, stage="student")
        written = written[1:]
        out = written[0][1]
    spec, _, cluster_file = written[0]
    loaded = load_job(out)
    a = json.loads(json.dumps(loaded._to_dict(), default=str))
    b = json.loads(json.dumps(spec.job._to_dict(), default=str))
    # the node's resources are equal; only the built command's inner component repeats them
    a["component"].pop("resources", None), b["component"].pop("resources", None)
    assert a == b
    assert Path(a["component"]["code"]) == out.with_name(out.stem + ".code")
    assert loaded.resources.instance_count == resolved.nodes
    assert loaded.distribution.process_count_per_instance == resolved.gpus_per_node
    assert loaded.compute == spec.cluster.name
    assert loaded.outputs["run"].mode == "rw_mount"
    # the environment is the node's Docker build context: a version-pinned ACPT image and the pinned packages
    build = Path(loaded.environment.build.path)
    assert (build / "Dockerfile").read_text().count("FROM mcr.microsoft.com/azureml/curated/acpt-pytorch") == 1
    assert "torch==" in (build / "requirements.txt").read_text()
    # the code is the engine as installed and the plan as resolved, not the checkout
    code = out.with_name(out.stem + ".code")
    assert (code / "distill_studio" / "engine" / "train" / "__main__.py").is_file()
    assert not (code / "tests").exists() and not (code / "distill_studio" / "gui").exists()
    assert load_plan(code / "plan.toml").hardware.sku == resolved.plan.hardware.sku
    from azure.ai.ml import load_compute

    cluster = load_compute(cluster_file)
    assert (cluster.size, cluster.min_instances, cluster.max_instances) == (resolved.plan.hardware.sku, 0,
                                                                          resolved.nodes)


def load_compute_size(path: Path) -> str:
    from azure.ai.ml import load_compute

    return load_compute(path).size


def test_export_refuses_a_local_plan(tmp_path):
    from distill_studio.engine.azure.job import export

    with pytest.raises(AzureError, match='hardware.target.*target = "azure"'):
        export(DEMO / "plan.toml", tmp_path / "job.yaml")


def test_cli_export_and_missing_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISTILL_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    from distill_studio.engine.cli import main

    assert main(["azure", "export", str(PLANS[0]), "--out", str(tmp_path / "j.yaml"),
                 "--data", "azureml://datastores/workspaceblobstore/paths/mydata/"]) == 0
    text = (tmp_path / "j.yaml").read_text()
    assert "azureml://datastores/workspaceblobstore/paths/mydata/" in text
    assert "az ml job create -f" in capsys.readouterr().out
    # no workspace in the settings: one message saying where to enter it
    assert main(["azure", "submit", str(PLANS[0])]) == 2
    err = capsys.readouterr().err
    assert "Azure is not set up" in err and "Settings › Azure" in err and "Traceback" not in err


# ---- submission ---------------------------------------------------------------------------------------------------

def test_submit_creates_the_cluster_and_the_job_once(fake, tmp_path):
    from distill_studio.engine.azure.jobs import read_meta, submit

    plan = azure_plan(tmp_path)
    run = tmp_path / "run"
    said = []
    meta = submit(plan, run, connect(fake), say=said.append)
    state = fake.state()
    job = state["jobs"][meta["job"]]["properties"]
    assert job["computeId"].endswith(f"/computes/{meta['compute']}")
    assert job["distribution"] == {"distributionType": "PyTorch", "processCountPerInstance": 1}
    assert job["resources"]["instanceCount"] == 1
    assert f"--resume-if-started {meta['job']}" in job["command"]
    assert "--input data.train=${{inputs.data_train}}" in job["command"]
    assert job["outputs"]["run"]["uri"] == meta["output"] and job["outputs"]["run"]["mode"] == "ReadWriteMount"
    assert job["environmentVariables"]["DISTILL_MLFLOW"] == "1"
    cluster = state["computes"][meta["compute"]]["properties"]
    assert cluster["properties"]["vmSize"] == "Standard_NC24ads_A100_v4"
    assert cluster["properties"]["scaleSettings"]["minNodeCount"] == 0
    assert cluster["properties"]["scaleSettings"]["maxNodeCount"] == 1
    assert cluster["properties"]["vmPriority"] == "Dedicated"
    # the local files went up as the job's inputs (uploaded through blob storage), the engine as its code
    blobs = [p.relative_to(fake.dir / "blobs").as_posix() for p in (fake.dir / "blobs").rglob("*") if p.is_file()]
    assert any(b.endswith("distill_studio/engine/train/run.py") for b in blobs)
    assert any(b.endswith("train.jsonl") for b in blobs)
    assert any(b.endswith("teacher/config.json") for b in blobs)
    assert (run / "plan.toml").is_file() and read_meta(run)["status"] == "Queued"
    assert job_puts(fake)[0]["client_request_id"] == read_meta(run)["client_request_id"]
    # a second submission of the same run folder (a second click) adopts the job: no second PUT
    submit(plan, run, connect(fake), say=said.append)
    assert len(job_puts(fake)) == 1
    assert any("not submitting it again" in s for s in said)


def test_an_answer_lost_after_azure_took_the_job_is_not_submitted_twice(fake, tmp_path):
    from distill_studio.engine.azure.jobs import submit

    # the PUT reaches Azure, then the connection drops: the SDK retries the PUT (409, the job exists), and the
    # lookup before any resubmission finds the job
    fake.fail("PUT", r"/jobs/", network=True, after=True)
    meta = submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    assert list(fake.state()["jobs"]) == [meta["job"]]
    assert meta["status"] == "Queued"


def test_throttling_is_retried_honouring_retry_after(fake, tmp_path):
    from distill_studio.engine.azure.jobs import status, submit

    meta = submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    fake.fail("GET", rf"/jobs/{meta['job']}$|/jobs/{meta['job']}\?", status=429, times=2,
              headers={"Retry-After": "1"}, code="TooManyRequests")
    t0 = time.monotonic()
    info = status(connect(fake), tmp_path / "run")
    assert info["status"] == "Queued"
    assert time.monotonic() - t0 >= 2.0            # two waits of Retry-After: 1 s
    gets = [r for r in fake.requests() if r["method"] == "GET" and f"/jobs/{meta['job']}" in r["url"]]
    assert len(gets) >= 3


@pytest.mark.parametrize("case", ["throttled", "server", "signin", "workspace", "forbidden", "network", "quota"])
def test_failures_are_one_clear_message(fake, tmp_path, case):
    from distill_studio.engine.azure.jobs import submit

    expect = {
        "throttled": ("PUT", r"/computes/", dict(status=429, times=20, headers={"Retry-After": "0"}),
                      "kept throttling"),
        "server": ("PUT", r"/computes/", dict(status=503, times=20, code="ServiceUnavailable"),
                   "answered 503"),
        "signin": ("POST", r"oauth2/v2.0/token", dict(status=401, code="invalid_client",
                                                      message="AADSTS7000222: the client secret has expired"),
                   "refused the sign-in"),
        "workspace": (None, None, None, "workspace distill-ws was not found in resource group distill-rg"),
        "forbidden": ("GET", r"/computes/", dict(status=403, code="AuthorizationFailed", message="no access"),
                      "denied access"),
        "network": ("GET", r"/computes/", dict(network=True, times=20), "Could not reach Azure"),
        "quota": ("PUT", r"/jobs/", dict(status=400, code="QuotaExceeded", message="Not enough quota: "
                                         "standardNCADSA100v4Family needs 24 more cores"), "Not enough quota"),
    }[case]
    method, url, kw, message = expect
    if case == "workspace":
        with fake.locked() as s:
            s["workspace"] = False
    else:
        fake.fail(method, url, **kw)
    with pytest.raises(AzureError) as info:
        submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    text = str(info.value)
    assert message in text, text
    assert "Traceback" not in text and SECRET not in text
    # the run folder keeps the job's name, so trying again submits that name, once
    meta = json.loads((tmp_path / "run" / "azure.json").read_text())
    assert meta["job"].startswith("distill-demo-on-azure-")


def test_missing_secret_says_where_to_enter_it(fake, tmp_path):
    keyring.delete_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}")
    with pytest.raises(AzureError, match="No client secret is stored.*OS keyring"):
        connect(fake)


# ---- watching -----------------------------------------------------------------------------------------------------

def watcher(fake, run):
    from distill_studio.engine.azure.watch import Watcher

    return Watcher(run, connect(fake), sleep=lambda s: None)


def comparable(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("plan", "message", "v")} for e in events]


def test_watch_turns_mlflow_metrics_into_the_runs_events(fake, tmp_path):
    from distill_studio.engine.azure.jobs import submit

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    w = watcher(fake, run)
    assert w.poll() is None                       # queued: nothing to read yet
    fake.set_job(meta["job"], "Running")
    sent = demo_events(end=None)
    fake.log_events(meta["job"], sent[:8])
    fake.write_log(meta["job"], "step 1/6 loss 2.0\nstep 2/6 loss 1.0\n")
    assert w.poll() is None
    fake.log_events(meta["job"], sent[8:])
    fake.write_log(meta["job"], "step 3/6 loss 0.6\npartial line without its newline")
    assert w.poll() is None
    got = read_events(run / "events.jsonl")
    assert comparable(got) == comparable(sent)
    assert got[0]["plan"]["name"] == "demo-on-azure"            # the plan put back into run_started
    console = (run / "logs" / "console.log").read_text()
    assert "step 3/6 loss 0.6" in console and "partial line" not in console
    assert console.count("step 1/6") == 1
    # the node saves the student and the job completes: the end is recorded and the student downloaded
    student = meta["output"].split("/paths/", 1)[1] + "student"
    fake.put_blob(f"azureml-blobstore/{student}/config.json", b'{"model_type": "llama"}')
    fake.put_blob(f"azureml-blobstore/{student}/model.safetensors", b"weights")
    measured = {"tokens_per_second_per_device": 4000.0, "steps": 6, "training_seconds": 3.0, "setup_seconds": 40.0,
                "teacher_pass_seconds": 0.0, "peak_memory_bytes_per_rank": [2**30]}
    fake.log_events(meta["job"], [{"v": 1, "time": 1_796_000_010.0, "type": "run_finished", "measured": measured,
                                   "status": "succeeded", "step": 6, "message": "student saved to /mnt/x"}])
    fake.set_job(meta["job"], "Completed")
    assert w.poll() == "succeeded"
    w.close()
    # what the node measured is kept for the planner's estimates of this VM size
    from distill_studio.engine.estimate.watched import load_records

    (rec,) = load_records()
    assert rec["key"][0] == "azure:standard_nc24ads_a100_v4"
    assert rec["measured"]["tokens_per_second_per_device"] == 4000.0 and rec["estimated"]["tokens_per_second_per_gpu"] == 5000.0
    got = read_events(run / "events.jsonl")
    assert [e["type"] for e in got].count("run_finished") == 1
    assert got[-1]["status"] == "succeeded" and "distill azure download" in got[-1]["message"]
    assert (run / "student" / "model.safetensors").read_bytes() == b"weights"
    # one watcher per run at a time; one started again (the app restarted) writes nothing twice
    from distill_studio.engine.azure.watch import AlreadyWatched

    w2 = watcher(fake, run)
    with pytest.raises(AlreadyWatched, match="already being watched"):
        watcher(fake, run)
    assert w2.poll() == "succeeded"
    w2.close()
    assert len(read_events(run / "events.jsonl")) == len(got)


def test_the_monitor_digests_an_azure_run_like_a_local_one(fake, tmp_path):
    from distill_studio.engine.azure.jobs import submit
    from distill_studio.gui.monitor.digest import RunState

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    fake.set_job(meta["job"], "Running")
    sent = demo_events(end=None)
    fake.log_events(meta["job"], sent)
    w = watcher(fake, run)
    w.poll()
    w.close()
    local, remote = RunState(), RunState()
    a, b = local.feed(sent), remote.feed(read_events(run / "events.jsonl"))
    assert a.points.keys() == b.points.keys()
    for k in a.points:
        assert a.points[k][0].tolist() == b.points[k][0].tolist() and a.points[k][1].tolist() == b.points[k][1].tolist()
    assert (remote.step, remote.total_steps, remote.last_checkpoint) == (6, 6, 6)
    assert remote.eta_seconds() == local.eta_seconds()


def test_network_gone_mid_watch_is_retried_and_nothing_is_lost(fake, tmp_path):
    from distill_studio.engine.azure.jobs import submit

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    fake.set_job(meta["job"], "Running")
    fake.log_events(meta["job"], demo_events())
    fake.set_job(meta["job"], "Completed")
    fake.fail("GET", r"/jobs/", network=True, times=14)     # two polls' worth of the SDK's own retries
    w = watcher(fake, run)
    assert w.run(interval=0.01) == 0
    console = (run / "logs" / "console.log").read_text()
    assert "Could not reach Azure" in console and "trying again" in console
    got = read_events(run / "events.jsonl")
    assert comparable(got)[:-1] == comparable(demo_events())[:-1]
    assert got[-1]["type"] == "run_finished" and got[-1]["status"] == "succeeded"


@pytest.mark.parametrize("how", ["signal", "stop file"])
def test_stop_cancels_the_job_and_records_the_end(fake, tmp_path, how):
    """Stop as SIGTERM (Unix) or as the run folder's stop file (every platform, engine/runs/process.py)."""
    import threading

    from distill_studio.engine.runs.process import request_stop_file

    from distill_studio.engine.azure.jobs import read_meta, submit

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    fake.set_job(meta["job"], "Running")
    fake.log_events(meta["job"], demo_events(steps=6, end=None)[:5])
    w = watcher(fake, run)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", w.run(interval=0.05)))
    thread.start()
    F.wait_for(lambda: (run / "events.jsonl").exists() and len(read_events(run / "events.jsonl")) >= 5)
    if how == "signal":
        w.request_stop()                               # what SIGTERM (the app's Stop) does
    else:
        request_stop_file(run)                         # what the app's Stop writes, on Windows too
    F.wait_for(lambda: fake.job(meta["job"])["properties"]["status"] == "CancelRequested")
    # the engine checkpoints, says so, and Azure ML marks the job cancelled
    fake.log_events(meta["job"], [{"v": 1, "time": 1_796_000_100.0, "type": "run_finished", "status": "cancelled",
                                   "step": 2, "message": "stopped by SIGTERM at step 2"}])
    fake.set_job(meta["job"], "Canceled")
    thread.join(30)
    assert result["code"] == 130
    assert any(r["method"] == "POST" and r["url"].split("?")[0].endswith(f"/jobs/{meta['job']}/cancel")
               for r in fake.requests())
    end = read_events(run / "events.jsonl")[-1]
    assert end["status"] == "cancelled" and "distill azure resume" in end["message"]
    assert read_meta(run)["cancel_requested"] > 0


def test_a_preempted_low_priority_job_resumes_from_its_checkpoint(fake, tmp_path):
    from distill_studio.engine.azure.jobs import read_meta, submit

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path, priority="low-priority"), run, connect(fake), say=lambda s: None)
    assert fake.state()["computes"][meta["compute"]]["properties"]["properties"]["vmPriority"] == "LowPriority"
    first = meta["job"]
    fake.set_job(first, "Running")
    fake.log_events(first, demo_events(steps=6, end=None)[:9])   # up to step 4, checkpoint at 3
    w = watcher(fake, run)
    w.poll()
    fake.set_job(first, "Failed", error="The low priority node was preempted by Azure")
    assert w.poll() is None                      # resubmitted, not ended
    meta2 = read_meta(run)
    second = meta2["job"]
    assert second == f"{first}-r2" and meta2["jobs"] == [first, second]
    job2 = fake.job(second)["properties"]
    assert job2["outputs"]["run"]["uri"] == meta["output"]     # the same run folder: its checkpoints
    assert job2["command"] == fake.job(first)["properties"]["command"]
    fake.set_job(second, "Running")
    fake.log_events(second, demo_events(steps=6, resumed_from=3))
    fake.set_job(second, "Completed")
    assert w.poll() == "succeeded"
    w.close()
    folded = fold_events(read_events(run / "events.jsonl"))
    steps = [e["step"] for e in folded if e["type"] == "metric"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert any(e["type"] == "log" and "preempted" in e["message"] for e in folded)


def split_plan(tmp_path: Path) -> Path:
    """The demo as a split Azure plan: the teacher's top-k pass on an ND H100 node, training on an NC A100."""
    path = azure_plan(tmp_path, name="demo-split")
    text = path.read_text().replace('teacher_mode = "online"', 'teacher_mode = "offline-topk"')
    text = text.replace('priority = "dedicated"', 'priority = "dedicated"\nsplit = "yes"\n'
                        '[hardware.teacher_pass]\nsku = "Standard_ND96isr_H100_v5"\nnodes = 1')
    path.write_text(text)
    return path


def test_a_split_plan_runs_as_two_jobs_the_second_reading_the_firsts_output(fake, tmp_path):
    from distill_studio.engine.azure.jobs import read_meta, submit

    run = tmp_path / "run"
    meta = submit(split_plan(tmp_path), run, connect(fake), say=lambda s: None)
    first = meta["job"]
    assert meta["stage"] == "teacher" and meta["sku"] == "Standard_ND96isr_H100_v5" and meta["gpus_per_node"] == 8
    job1 = fake.job(first)["properties"]
    assert "--stage teacher" in job1["command"] and "--expect-world-size 8" in job1["command"]
    assert job1["outputs"]["run"]["uri"].endswith(f"/{first}-teacher/")
    sizes = {c["properties"]["properties"]["vmSize"] for c in fake.state()["computes"].values()}
    assert sizes == {"Standard_ND96isr_H100_v5"}          # the training cluster is made when training starts
    w = watcher(fake, run)
    fake.set_job(first, "Running")
    teacher = [{"v": 1, "time": 1_796_000_000.0, "type": "run_started", "total_steps": 0, "total_tokens": 0,
                "stage": "teacher", "teacher_mode": "offline-topk"},
               {"v": 1, "time": 1_796_000_050.0, "type": "run_finished", "status": "succeeded", "step": 0,
                "message": "teacher pass kept in /mnt/azureml/x for the student stage"}]
    fake.log_events(first, teacher)
    fake.set_job(first, "Completed")
    assert w.poll() is None                                # the run goes on: its training job
    meta2 = read_meta(run)
    second = meta2["job"]
    assert second == f"{first}-student" and meta2["stage"] == "student" and meta2["teacher_jobs"] == [first]
    assert meta2["sku"] == "Standard_NC24ads_A100_v4" and meta2["teacher_output"] == meta["output"]
    job2 = fake.job(second)["properties"]
    assert "--stage student --teacher-run ${{inputs.teacher_run}}" in job2["command"]
    assert job2["inputs"]["teacher_run"]["uri"] == meta["output"]     # the teacher job's output folder
    assert job2["outputs"]["run"]["uri"].endswith(f"/{first}/")
    assert {c["properties"]["properties"]["vmSize"] for c in fake.state()["computes"].values()} == {
        "Standard_ND96isr_H100_v5", "Standard_NC24ads_A100_v4"}
    folded = fold_events(read_events(run / "events.jsonl"))
    assert not [e for e in folded if e["type"] == "run_finished"]     # the teacher's end is not the run's
    assert any(e["type"] == "log" and "teacher's pass finished" in e["message"] for e in folded)
    fake.set_job(second, "Running")
    fake.log_events(second, demo_events(steps=6, t0=1_796_000_100.0))
    fake.set_job(second, "Completed")
    assert w.poll() == "succeeded"
    w.close()
    ends = [e for e in read_events(run / "events.jsonl") if e["type"] == "run_finished"]
    assert [e["status"] for e in ends] == ["succeeded"]
    assert len([r for r in job_puts(fake)]) == 2


# ---- the node's side: the engine's events into MLflow and back ----------------------------------------------------

def test_engine_events_go_through_mlflow_and_come_back_the_same(tmp_path, monkeypatch):
    """The demo trained for a few steps with the MLflow mirror on (as in an Azure ML job, here into a local MLflow
    store): what the desktop reads back from MLflow is the run's own events.jsonl."""
    pytest.importorskip("mlflow")
    pytest.importorskip("torch")
    import mlflow

    from distill_studio.engine.runs.mlflow_bridge import from_mlflow
    from distill_studio.engine.train.run import execute

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("DISTILL_MLFLOW", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = tmp_path / "plan.toml"
    text = (DEMO / "plan.toml").read_text().replace("max_steps = 100", "max_steps = 6").replace(
        "eval_every = 50", "eval_every = 3").replace("checkpoint_every = 50", "checkpoint_every = 3").replace(
        "eval_samples = 200", "eval_samples = 8")
    for rel in ("teacher", "student", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'"{rel}"', f'"{(DEMO / rel).as_posix()}"')
    plan.write_text(text)
    assert execute(plan, tmp_path / "run", resume=False) == 0
    run_id = mlflow.last_active_run().info.run_id
    mlflow.end_run()
    client = mlflow.MlflowClient()
    data = client.get_run(run_id).data
    histories = {k: [{"value": m.value, "timestamp": m.timestamp, "step": m.step}
                     for m in client.get_metric_history(run_id, k)] for k in data.metrics}
    back = from_mlflow(histories, data.tags)
    local = read_events(tmp_path / "run" / "events.jsonl")
    kept = [e for e in local if e["type"] != "log" or e.get("level") in ("warning", "error")]

    def norm(events):
        return [{k: (round(v, 9) if isinstance(v, float) else v) for k, v in e.items() if k not in ("plan",)}
                for e in events]
    assert norm(back) == norm(kept)
    assert [e["type"] for e in back][:2] == ["run_started", "eval"] and back[-1]["type"] == "run_finished"


def test_cli_commands_on_a_run_folder(fake, tmp_path, monkeypatch, capsys):
    """`distill azure submit|list|status|logs|cancel|resume|download`, each through the app's settings and the real
    SDK clients; failures are one line, never a traceback."""
    from distill_studio.engine.cli import main

    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    run = tmp_path / "run"
    assert main(["azure", "submit", str(azure_plan(tmp_path)), "--run-dir", str(run)]) == 0
    name = json.loads((run / "azure.json").read_text())["job"]
    assert main(["azure", "list"]) == 0
    assert name in capsys.readouterr().out
    fake.set_job(name, "Running")
    fake.log_events(name, demo_events(end=None))
    fake.write_log(name, "step 6/6 loss 0.33\n")
    assert main(["azure", "status", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "Running"
    assert main(["azure", "logs", str(run)]) == 0
    assert "step 6/6 loss 0.33" in capsys.readouterr().out
    assert main(["azure", "cancel", str(run)]) == 0
    assert fake.job(name)["properties"]["status"] == "CancelRequested"
    fake.set_job(name, "Canceled")
    assert main(["azure", "resume", str(run)]) == 0            # a new attempt, same run folder
    assert json.loads((run / "azure.json").read_text())["job"] == f"{name}-r2"
    assert main(["azure", "download", str(run)]) == 2          # nothing saved yet: one message
    err = capsys.readouterr().err
    assert "holds no student yet" in err and "Traceback" not in err
    assert main(["azure", "status", str(tmp_path)]) == 2       # not an Azure run folder
    assert "not an Azure run folder" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["not-offered", "no-quota"])
def test_submit_is_refused_up_front_where_the_region_cannot_give_the_machines(fake, tmp_path, case):
    from distill_studio.engine.catalog.capacity import CapacityTable, Quota, SkuOffer, save_capacity as _write_cache

    sku = "Standard_NC24ads_A100_v4"
    offer = SkuOffer(sku=sku, offered=case != "not-offered", reason="NotAvailableForSubscription" if
                     case == "not-offered" else "", scope="location", family="standardNCADSA100v4Family", vcpus=24)
    quota = Quota(name="standardNCADSA100v4Family", label="Standard NCADSA100v4 Family vCPUs", used=0,
                  limit=0 if case == "no-quota" else 96)
    _write_cache(CapacityTable(region="eastus", subscription_id=F.SUB, checked_on="2026-12-01",
                               skus={sku.lower(): offer}, quotas=[quota, Quota("cores", "Total Regional vCPUs", 0, 400)]))
    from distill_studio.engine.errors import DistillError

    with pytest.raises(DistillError) as info:     # the planner's own refusal (RunError), before any job is built
        from distill_studio.engine.azure.jobs import submit

        submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    text = str(info.value)
    if case == "not-offered":
        assert "not offered in eastus" in text
    else:
        assert "request 24 more vCPUs for standardNCADSA100v4Family" in text, text
    assert not [r for r in fake.requests() if r["method"] in ("PUT", "POST") and "management.azure.com" in r["url"]]



def test_only_steps_complete_in_the_snapshot_are_written(fake, tmp_path):
    """A step logged between the run's snapshot and the per-metric reads waits for the next poll, so no step is
    written with some of its metrics missing; two warnings in the same millisecond are both kept."""
    from distill_studio.engine.azure.jobs import submit

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    fake.set_job(meta["job"], "Running")
    events = [e for e in demo_events(steps=3, end=None) if e["type"] in ("run_started", "metric")]
    warn = [{"v": 1, "time": 1_796_000_001.5, "type": "log", "level": "warning", "message": m} for m in ("a", "b")]
    fake.log_events(meta["job"], events + warn)
    with fake.locked() as s:
        s["snapshot_lag"] = 1
    w = watcher(fake, run)
    w.poll()
    assert [e["step"] for e in read_events(run / "events.jsonl") if e["type"] == "metric"] == [1, 2]
    with fake.locked() as s:
        s["snapshot_lag"] = 0
    w.poll()
    w.close()
    got = read_events(run / "events.jsonl")
    assert [e["step"] for e in got if e["type"] == "metric"] == [1, 2, 3]
    step3 = next(e for e in got if e["type"] == "metric" and e["step"] == 3)
    assert set(step3) >= {"loss", "kd_loss", "lr", "grad_norm", "tokens_per_second", "tokens_seen"}
    assert [e["message"] for e in got if e["type"] == "log"] == ["a", "b"]


def test_not_responding_is_not_an_end_and_a_deleted_job_is(fake, tmp_path):
    from distill_studio.engine.azure.jobs import submit

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    fake.set_job(meta["job"], "NotResponding")
    w = watcher(fake, run)
    assert w.poll() is None                       # it may come back, and may still be training
    with fake.locked() as s:
        del s["jobs"][meta["job"]]
    assert w.run(interval=0.01) == 1              # gone: recorded as failed, not polled for ever
    end = read_events(run / "events.jsonl")[-1]
    assert end["type"] == "run_finished" and end["status"] == "failed" and "not in workspace" in end["message"]


def test_resume_submits_again_only_what_ended_without_completing(fake, tmp_path, monkeypatch):
    from distill_studio.engine.azure.jobs import MAX_ATTEMPTS, read_meta, resubmit, submit
    from distill_studio.engine.cli import main

    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    fake.set_job(meta["job"], "Completed")
    assert main(["azure", "resume", str(run)]) == 0          # completed: nothing to resume, no new job
    assert list(fake.state()["jobs"]) == [meta["job"]]
    # a resume by hand is not limited by the preemption retries; an automatic one is
    for _ in range(MAX_ATTEMPTS):
        fake.set_job(read_meta(run)["job"], "Failed", error="preempted")
        resubmit(connect(fake), run, say=lambda s: None, automatic=False)
    assert len(read_meta(run)["jobs"]) == MAX_ATTEMPTS + 1
    with pytest.raises(AzureError, match="preempted .* times"):
        resubmit(connect(fake), run, say=lambda s: None, automatic=True)
    # an attempt whose submission failed is sent again under its own name, not a new one
    fake.fail("PUT", r"/jobs/", status=500, times=20)
    fake.set_job(read_meta(run)["job"], "Canceled")
    with pytest.raises(AzureError):
        resubmit(connect(fake), run, say=lambda s: None)
    lost = read_meta(run)["job"]
    assert lost not in fake.state()["jobs"]
    with fake.locked() as s:
        s["faults"] = []
    assert resubmit(connect(fake), run, say=lambda s: None) == lost
    assert lost in fake.state()["jobs"]
    # every attempt writes to the first attempt's run folder
    outputs = {j["properties"]["outputs"]["run"]["uri"] for j in fake.state()["jobs"].values()}
    assert outputs == {meta["output"]}


def test_stop_during_submission_sends_nothing(fake, tmp_path):
    from distill_studio.engine.azure.jobs import Stopped, submit

    asked = iter([False, True])
    with pytest.raises(Stopped, match="nothing runs on Azure"):
        submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None,
               should_stop=lambda: next(asked))
    assert not job_puts(fake)


def test_a_run_folder_from_elsewhere_cannot_send_the_token_to_another_host(fake, tmp_path):
    from distill_studio.engine.azure.jobs import read_meta, submit, write_meta

    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    fake.set_job(meta["job"], "Running")
    fake.log_events(meta["job"], demo_events(end=None))
    doc = read_meta(run)
    doc["mlflow"] = "https://collector.example.com/mlflow"
    write_meta(run, doc)
    w = watcher(fake, run)
    w.poll()
    w.close()
    assert not [r for r in fake.requests() if "example.com" in r["url"]]
    assert read_meta(run)["mlflow"].startswith(f"https://{F.REGION}.api.azureml.ms/")
    assert len([e for e in read_events(run / "events.jsonl") if e["type"] == "metric"]) == 6


def test_browser_sign_in_needs_no_stored_secret(tmp_path):
    from azure.identity import InteractiveBrowserCredential

    from distill_studio.engine.azure.client import credential, workspace_from_settings

    doc = F.settings_doc("browser")
    doc["azure"].update(tenant_id="", client_id="")
    ws = workspace_from_settings(Settings.model_validate(doc))
    assert isinstance(credential(ws), InteractiveBrowserCredential)    # no keyring needed, nothing prompted yet


def test_the_engine_continues_only_its_own_run_folder(tmp_path, monkeypatch):
    """What a job submitted again after preemption runs: `--resume-if-started KEY` continues the run of that key
    in the mounted run folder, with the inputs at their (new) mount paths; a folder of another run is refused."""
    pytest.importorskip("torch")
    from distill_studio.engine.train.__main__ import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = (DEMO / "plan.toml").read_text().replace("max_steps = 100", "max_steps = 4").replace(
        "eval_every = 50", "eval_every = 0").replace("checkpoint_every = 50", "checkpoint_every = 2").replace(
        "eval_samples = 200", "eval_samples = 4")
    for rel in ("teacher", "student", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'"{rel}"', f'"{(DEMO / rel).as_posix()}"')
    text = text.replace('"train.jsonl"', '"/mnt/nowhere/train.jsonl"')      # only the node's input path exists
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    run = tmp_path / "run"
    args = [str(plan), "--run-dir", str(run), "--input", f"data.train={DEMO / 'train.jsonl'}"]
    assert main([*args, "--resume-if-started", "job-1"]) == 0
    assert json.loads((run / "run.json").read_text())["run_key"] == "job-1"
    assert main([*args, "--resume-if-started", "job-1"]) == 0            # the second attempt continues it
    starts = [e for e in read_events(run / "events.jsonl") if e["type"] == "run_started"]
    assert len(starts) == 2 and starts[1]["resumed_from_step"] == 4
    assert main([*args, "--resume-if-started", "job-2"]) == 2            # another run's folder: refused
    assert len([e for e in read_events(run / "events.jsonl") if e["type"] == "run_started"]) == 2



def test_gated_models_read_the_hugging_face_token_from_key_vault_on_the_node(fake, tmp_path, monkeypatch):
    """The job names the Key Vault secret, never the token; on the node the token is read with the cluster's
    identity and set for the training process only."""
    from azure.core.credentials import AccessToken

    from distill_studio.engine.azure import node
    from distill_studio.engine.azure.jobs import submit

    token = "hf_secret_token_value_123"
    with fake.locked() as s:
        s["vault"] = {"hf-token": token}
    az = connect(fake, hf_token_secret="hf-token")
    meta = submit(azure_plan(tmp_path), tmp_path / "run", az, say=lambda s: None)
    job = fake.job(meta["job"])["properties"]
    env = job["environmentVariables"]
    assert env[node.SECRET_ENV] == "hf-token" and env[node.VAULT_ENV] == f"https://{F.VAULT}.vault.azure.net/"
    assert token not in json.dumps(fake.state()["jobs"]) and token not in (tmp_path / "run" / "azure.json").read_text()
    cluster = fake.state()["computes"][meta["compute"]]
    assert cluster["identity"]["type"].lower().startswith("systemassigned")

    # the node: the job's environment, the cluster's identity (a credential), the vault through the transport
    class NodeIdentity:
        scopes = []

        def get_token(self, *scopes, **kw):
            self.scopes += scopes
            return AccessToken("node-identity-token", int(time.time()) + 3600)

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    identity = NodeIdentity()
    assert node.load_hf_token(credential=identity, transport=F.transport(fake)) is True
    assert os.environ["HF_TOKEN"] == token
    assert identity.scopes == ["https://vault.azure.net/.default"]
    # a missing secret stops the run with what to create or grant
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv(node.SECRET_ENV, "missing")
    from distill_studio.engine.errors import RunError

    with pytest.raises(RunError, match="Key Vault Secrets User"):
        node.load_hf_token(credential=identity, transport=F.transport(fake))
