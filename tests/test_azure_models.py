"""The teacher's weights, staged once (engine/azure/models.py): the staging job as built, `stage-models` through the
fake Azure at the HTTP transport (sent once, adopted, the asset registered when it completed), `submit` adopting a
staged asset as the job's teacher input (and the exported job loading back), a missing asset leading to the message
that says how to stage it, and the planner's set-up with and without staging."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("azure.ai.ml")

import azure_fake as F  # noqa: E402
from test_azure import ROOT, connect, fake, job_puts  # noqa: E402,F401  (fake: the fixture)

from distill_studio.engine.azure import models as M  # noqa: E402
from distill_studio.engine.catalog import staged_models as S  # noqa: E402

QWQ_PLAN = ROOT / "resources" / "plans" / "qwq32b-to-qwen7b-3h.toml"
TEACHER, STUDENT = "Qwen/QwQ-32B", "Qwen/Qwen2.5-7B-Instruct"
TOKEN_VALUE = "hf_tokenvalue-that-must-never-be-in-a-request-9f3"


def plan_copy(tmp_path: Path) -> Path:
    path = tmp_path / QWQ_PLAN.name
    path.write_text(QWQ_PLAN.read_text())
    return path


def ws_key() -> str:
    return S.workspace_key(F.SUB, F.RG, F.WS)


def staging_puts(fake) -> list[dict]:
    return [r for r in job_puts(fake) if "/jobs/distill-stage-" in r["url"]]


# ---- names and the job -------------------------------------------------------------------------------------------

def test_asset_names_and_paths():
    assert S.asset_name(TEACHER) == "hf--Qwen--QwQ-32B"
    assert M.asset_ref(TEACHER) == "azureml:hf--Qwen--QwQ-32B:1"
    assert M.datastore_path(TEACHER) == \
        "azureml://datastores/workspaceblobstore/paths/distill-studio/models/Qwen--QwQ-32B/1/"
    with pytest.raises(ValueError, match="not a Hugging Face model id"):
        S.asset_name("../etc/passwd")
    assert M.is_asset_ref(M.asset_ref(TEACHER)) and not M.is_asset_ref(M.datastore_path(TEACHER))
    inp = M.job_input(M.asset_ref(TEACHER))
    assert (inp.type, inp.mode, inp.path) == ("custom_model", "download", M.asset_ref(TEACHER))
    assert M.job_input("azureml://datastores/x/paths/data/").type == "uri_folder"


def test_staging_job_is_built_to_download_into_its_output(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    from azure.ai.ml import load_job

    from distill_studio.engine.azure.environment import CONTEXT_DIR
    from distill_studio.engine.plan import load_plan

    spec = M.build_staging(load_plan(QWQ_PLAN), TEACHER, "distill-stage-x", tmp_path / "code",
                           hf_token_secret="hf-token", key_vault_uri="https://kv.vault.azure.net/")
    job = spec.job
    assert job.command == "python -m distill_studio.engine.azure.models --repo Qwen/QwQ-32B --out ${{outputs.model}}"
    out = job.outputs["model"]
    assert (out.type, out.mode, out.path) == ("uri_folder", "upload", M.datastore_path(TEACHER))
    assert job.compute == M.STAGING_CLUSTER == spec.cluster.name
    assert spec.cluster.size == M.STAGING_SKU and spec.cluster.max_instances == 1 and spec.cluster.min_instances == 0
    assert job.resources.instance_count == 1 and job.distribution is None
    assert Path(job.environment.build.path) == CONTEXT_DIR          # the training node's image
    assert job.environment_variables["DISTILL_HF_TOKEN_SECRET"] == "hf-token"      # the secret's name only
    assert job.limits.timeout == M.STAGING_TIMEOUT_S
    assert (tmp_path / "code" / "distill_studio" / "engine" / "azure" / "models.py").is_file()
    path = tmp_path / "stage.yaml"
    job._to_job().dump(path)
    back = load_job(path)
    assert back.outputs["model"].path == M.datastore_path(TEACHER) and back.outputs["model"].mode == "upload"
    assert "hf_" not in path.read_text().replace("hf-token", "")     # no token value, only the secret's name


# ---- stage-models through the fake ---------------------------------------------------------------------------------

def test_stage_models_sends_once_adopts_and_registers(fake, tmp_path):
    fake.set_secret("hf-token", TOKEN_VALUE)
    plan = plan_copy(tmp_path)
    said: list[str] = []
    az = connect(fake, hf_token_secret="hf-token")
    first = M.stage_models(plan, az, say=said.append, wait=False, work_dir=tmp_path / "work")
    assert [(r["hub_id"], r["status"]) for r in first] == [(TEACHER, "running"), (STUDENT, "running")]
    puts = staging_puts(fake)
    assert len(puts) == 2                                      # one job per model
    state = fake.state()
    teacher_job = state["jobs"][M.staging_job_name(TEACHER)]["properties"]
    assert teacher_job["outputs"]["model"]["uri"] == M.datastore_path(TEACHER)
    assert teacher_job["outputs"]["model"]["mode"] == "Upload"
    assert teacher_job["computeId"].endswith(f"/computes/{M.STAGING_CLUSTER}")
    assert teacher_job["environmentVariables"]["DISTILL_HF_TOKEN_SECRET"] == "hf-token"
    cluster = state["computes"][M.STAGING_CLUSTER]["properties"]["properties"]
    assert cluster["vmSize"] == M.STAGING_SKU
    assert any("about 66 GB once" in s and M.STAGING_SKU in s for s in said), said
    # the token is read on the node, never sent from here
    assert not any(TOKEN_VALUE in json.dumps(r) for r in fake.requests() if "vault.azure.net" not in r["url"])
    assert not S.is_staged(TEACHER, ws_key())

    # again while the jobs run: adopted, not sent twice
    said.clear()
    M.stage_models(plan, az, say=said.append, wait=False)
    assert len(staging_puts(fake)) == 2
    assert any("adopted, not sent again" in s for s in said)

    # completed: the assets are registered (the datastore folder, no upload) and recorded for the planner
    fake.set_job(M.staging_job_name(TEACHER), "Completed")
    fake.set_job(M.staging_job_name(STUDENT), "Completed")
    done = M.stage_models(plan, az, say=said.append, wait=True, interval=0.01)
    assert [r["status"] for r in done] == ["staged", "staged"]
    asset = fake.state()["assets"]["models/hf--Qwen--QwQ-32B/1"]["properties"]
    assert asset["modelType"] == "custom_model"
    assert asset["modelUri"].endswith("/datastores/workspaceblobstore/paths/distill-studio/models/Qwen--QwQ-32B/1/")
    assert S.is_staged(TEACHER, ws_key()) and S.is_staged(STUDENT, ws_key())
    assert len(staging_puts(fake)) == 2
    assert not fake.blob_puts("/azureml-blobstore/distill-studio/models")   # registered in place

    # a failed staging job: the next run sends a new attempt under its own name
    fake.add_model("unused", "1", "x")
    with fake.locked() as s:
        del s["assets"]["models/hf--Qwen--Qwen2.5-7B-Instruct/1"]
    fake.set_job(M.staging_job_name(STUDENT), "Failed", error="disk full")
    M.stage_models(plan, az, say=said.append, wait=False)
    assert M.staging_job_name(STUDENT, 2) in fake.state()["jobs"]


def test_a_failed_staging_job_is_one_message(fake, tmp_path):
    from distill_studio.engine.errors import AzureError

    plan = plan_copy(tmp_path)
    fake.start_jobs_as("Failed")
    with pytest.raises(AzureError, match=r"staging Qwen/QwQ-32B ended Failed.*distill-stage-qwen-qwq-32b-v1.*"
                                         r"stage-models .* again"):
        M.stage_models(plan, connect(fake), say=lambda s: None, interval=0.01)
    assert not S.is_staged(TEACHER, ws_key())
    assert "models/hf--Qwen--QwQ-32B/1" not in fake.state()["assets"]


# ---- submit ------------------------------------------------------------------------------------------------------------

def test_submit_reads_a_staged_teacher_from_its_asset(fake, tmp_path):
    from azure.ai.ml import load_job

    from distill_studio.engine.azure import job as J
    from distill_studio.engine.azure.jobs import read_meta, submit

    fake.add_model("hf--Qwen--QwQ-32B", "1", M.datastore_path(TEACHER))
    said: list[str] = []
    meta = submit(plan_copy(tmp_path), tmp_path / "run", connect(fake), say=said.append)
    assert meta["model_assets"] == {"teacher.model": M.asset_ref(TEACHER)}
    assert read_meta(tmp_path / "run")["model_assets"] == meta["model_assets"]     # resubmissions read the same
    job = fake.job(meta["job"])["properties"]
    teacher = job["inputs"]["teacher_model"]
    assert teacher["jobInputType"] == "custom_model" and teacher["mode"] == "Download"
    assert teacher["uri"].endswith("/models/hf--Qwen--QwQ-32B/versions/1")     # the asset, as its ARM id
    assert "--input teacher.model=${{inputs.teacher_model}}" in job["command"]
    assert "student_model" not in job["inputs"]                  # not staged: the node downloads it from the hub
    assert any("student.model Qwen/Qwen2.5-7B-Instruct" in s and "stage-models" in s for s in said), said
    assert any("read from the workspace's staged copy" in s for s in said)
    assert not staging_puts(fake)                                # submit never stages by itself
    assert S.is_staged(TEACHER, ws_key()) and not S.is_staged(STUDENT, ws_key())
    # the job as exported loads back with azure-ai-ml, its teacher input the asset
    spec = J.build(tmp_path / "run" / "plan.toml", "exported", tmp_path / "code", run_key="exported",
                   stage=meta.get("stage", "all"), teacher_uri="azureml://datastores/workspaceblobstore/paths/t/",
                   model_assets=meta["model_assets"])
    path = tmp_path / "job.yaml"
    spec.job._to_job().dump(path)
    back = load_job(path)
    assert back.inputs["teacher_model"].type == "custom_model"
    assert back.inputs["teacher_model"].path.removeprefix("azureml:") == "hf--Qwen--QwQ-32B:1"
    assert back.inputs["teacher_model"].mode == "download"


def test_submit_without_staged_models_says_how_to_stage(fake, tmp_path):
    from distill_studio.engine.azure.jobs import submit

    said: list[str] = []
    meta = submit(plan_copy(tmp_path), tmp_path / "run", connect(fake), say=said.append)
    assert meta["model_assets"] == {}
    job = fake.job(meta["job"])["properties"]
    assert "teacher_model" not in job["inputs"] and "--input teacher.model" not in job["command"]
    note = next(s for s in said if "not staged in workspace" in s)
    assert TEACHER in note and STUDENT in note and f"distill azure stage-models {tmp_path / QWQ_PLAN.name}" in note
    assert not staging_puts(fake) and len(job_puts(fake)) == 1


# ---- the planner ---------------------------------------------------------------------------------------------------

def sweep_for(plan, staged: set[str], tmp_path: Path):
    """The plan's sweep on one Azure size, with ``staged`` recorded as staged in the settings' workspace."""
    from distill_studio.engine.catalog.prices import load_prices
    from distill_studio.engine.checks import check_plan
    from distill_studio.engine.estimate.sweep import run_sweep
    from distill_studio.engine.planner import azure_machines, build_job

    for hub in staged:
        S.record_staged(ws_key(), hub, M.asset_ref(hub))
    pair = check_plan(plan, tmp_path)
    job = build_job(plan, pair, 3e8)
    machines = [m for m in azure_machines(load_prices("eastus")) if m.id == "Standard_ND96isr_H100_v5"]
    return job, run_sweep(job, machines, ("online",), nodes=2)


def test_planner_costs_the_staging_once_and_reads_weights_from_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISTILL_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    from distill_studio.engine.estimate.core import GB, coefficients
    from distill_studio.engine.plan import load_plan
    from distill_studio.engine.settings import Settings, save_settings

    save_settings(Settings.model_validate(F.settings_doc()))
    assert S.settings_workspace_key() == ws_key()
    plan = load_plan(QWQ_PLAN)
    tm = coefficients()["time"]
    job0, before = sweep_for(plan, set(), tmp_path)
    job1, after = sweep_for(plan, {TEACHER, STUDENT}, tmp_path)
    t_bytes = 2.0 * job0.teacher.params
    s_bytes = 2.0 * job0.student.params
    assert job0.staging_bytes == pytest.approx(t_bytes + s_bytes) and job1.staging_bytes == 0.0
    expected_h = tm["staging_provision_hours"] + (t_bytes + s_bytes) / GB * (
        1.0 / tm["hub_download_gb_per_s"] + 1.0 / tm["staging_upload_gb_per_s"]) / 3600.0
    assert 0.4 < expected_h < 0.6                                  # ~66 GB: minutes, not hours
    a, b = before.out, after.out
    fin = np.isfinite(a["total_hours"])
    assert fin.any()
    assert np.allclose(a["setup_hours"][fin] - b["setup_hours"][fin], expected_h)
    assert np.allclose(a["total_hours"][fin] - b["total_hours"][fin], expected_h)
    assert np.allclose(a["staging_hours"][fin], expected_h) and (b["staging_hours"] == 0).all()
    # the staging VM's price, not the GPU nodes'
    priced = fin & np.isfinite(a["cost_usd"])
    assert priced.any()
    assert np.allclose(a["cost_usd"][priced] - b["cost_usd"][priced], expected_h * tm["staging_usd_per_hour"])
    # each node reads the weights from storage at the storage's rate
    load_h = (t_bytes + s_bytes) / (tm["storage_read_gb_per_s"] * GB) / 3600.0
    assert np.allclose(b["setup_hours"][fin], after.grid.provision_hours[fin] + load_h)
    # a local plan stages nothing
    local = load_plan(ROOT / "resources" / "demo" / "plan.toml")
    from distill_studio.engine.checks import check_plan

    assert S.unstaged_bytes(local, check_plan(local, ROOT / "resources" / "demo")) == 0.0


def test_cache_is_per_workspace_and_forgets(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISTILL_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    assert S.staged_models() == {}                      # no workspace in the settings: nothing staged
    S.record_staged("a/b/c", TEACHER, M.asset_ref(TEACHER))
    assert S.is_staged(TEACHER.lower(), "A/B/C") and not S.is_staged(TEACHER, "a/b/other")
    S.forget_staged("a/b/c", TEACHER)
    assert not S.is_staged(TEACHER, "a/b/c")
    S.cache_path().write_text("{not json")
    assert S.staged_models("a/b/c") == {}                # an unreadable cache: not staged
