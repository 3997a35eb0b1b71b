"""Pre-flight of Azure plans against the fake Azure at the HTTP transport (tests/azure_fake.py): permission (ARM's
permissions API), quota (the region's sizes and quota read live), data (the datastore listed through its storage
account, or the local file), a gated model's token (secret, cluster identity, Key Vault role), the environment's
image; and ``submit`` stopping on what it finds before any PUT or upload, unless ``--force``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")

import azure_fake as F  # noqa: E402
from test_azure import PLANS, azure_plan, connect, fake  # noqa: E402,F401  (fake: the fixture)

from distill_studio.engine.azure.preflight import (  # noqa: E402
    COMPUTES_WRITE, JOBS_WRITE, allowed, gated_models, run_preflight,
)
from distill_studio.engine.cli import main  # noqa: E402
from distill_studio.engine.plan import load_plan  # noqa: E402
from distill_studio.engine.planner import resolve_run  # noqa: E402

AZURE_PLANS = [p for p in PLANS if load_plan(p).hardware.target == "azure"]
DATA_SCIENTIST = {   # the built-in role AzureML Data Scientist, as ARM's permissions API returns it
    "actions": ["Microsoft.MachineLearningServices/workspaces/*/read",
                "Microsoft.MachineLearningServices/workspaces/*/action",
                "Microsoft.MachineLearningServices/workspaces/*/delete",
                "Microsoft.MachineLearningServices/workspaces/*/write"],
    "notActions": ["Microsoft.MachineLearningServices/workspaces/delete",
                   "Microsoft.MachineLearningServices/workspaces/write",
                   "Microsoft.MachineLearningServices/workspaces/computes/*/write",
                   "Microsoft.MachineLearningServices/workspaces/computes/*/delete",
                   "Microsoft.MachineLearningServices/workspaces/computes/listKeys/action",
                   "Microsoft.MachineLearningServices/workspaces/listKeys/action"]}


@pytest.fixture
def cli_env(fake, tmp_path, monkeypatch):
    """The settings of the fake workspace, and `distill azure ...` pointed at the fake's transport."""
    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    return fake


def set_hf_secret(tmp_path: Path, name: str = "hf-token") -> None:
    path = tmp_path / "config" / "settings.json"
    doc = json.loads(path.read_text())
    doc["azure"]["hf_token_secret"] = name
    path.write_text(json.dumps(doc))


def serve_exhausted_quota(fake) -> None:
    """The region's sizes and quota (the shapes test_azure_capacity serves): NC A100 family 24 of 48 vCPUs free,
    ND A100 v4 with no quota, NC H100 not offered in any zone."""
    from test_azure_capacity import aml_usages, sku_pages, vm_usages

    page1, page2 = sku_pages()
    fake.serve("GET", r"/providers/Microsoft\.Compute/skus\?", page1)
    fake.serve("GET", r"/providers/Microsoft\.Compute/skus\?.*skiptoken=page2", page2)
    fake.serve("GET", r"/providers/Microsoft\.Compute/locations/eastus/usages\?", vm_usages())
    fake.serve("GET", r"/providers/Microsoft\.MachineLearningServices/locations/eastus/usages\?", aml_usages())


def nothing_created(fake) -> None:
    """No PUT (cluster, job, asset) and no upload reached Azure."""
    writes = [(r["method"], r["url"]) for r in fake.requests() if r["method"] in ("PUT", "POST", "PATCH", "DELETE")
              and not r["url"].endswith("/oauth2/v2.0/token") and "/listSecrets" not in r["url"]]
    assert writes == []


def checks(doc: dict, what: str, status: str = "fail") -> list[str]:
    return [c["text"] + " → " + c["fix"] for c in doc["checks"] if c["what"] == what and c["status"] == status]


# ---- ARM's permission patterns ----------------------------------------------------------------------------------

def test_permission_patterns_match_as_arm_matches_them():
    assert allowed(JOBS_WRITE, [DATA_SCIENTIST]) and not allowed(COMPUTES_WRITE, [DATA_SCIENTIST])
    assert allowed(COMPUTES_WRITE, [{"actions": ["*"]}])
    assert allowed(COMPUTES_WRITE, [{"actions": ["microsoft.machinelearningservices/*"]}])   # case-insensitive
    assert not allowed(JOBS_WRITE, [{"actions": ["*/read"]}])
    assert not allowed(JOBS_WRITE, [{"actions": ["*"], "notActions": ["Microsoft.MachineLearningServices/*"]}])
    # one entry allowing is enough; a not-action only removes from its own entry
    assert allowed(JOBS_WRITE, [{"actions": ["*/read"]}, {"actions": [JOBS_WRITE]}])


def test_gated_models_are_gemma_and_llama():
    assert gated_models(load_plan(PLANS[0])) == ["teacher google/gemma-3-27b-it", "student google/gemma-3-4b-it"]
    assert gated_models(load_plan(next(p for p in PLANS if p.stem.startswith("qwq")))) == []


# ---- every bundled Azure plan: every missing piece named, nothing created -----------------------------------------

@pytest.mark.parametrize("plan", AZURE_PLANS, ids=[p.stem for p in AZURE_PLANS])
def test_preflight_of_each_bundled_plan_names_every_missing_piece(plan, cli_env, tmp_path, capsys):
    fake = cli_env
    fake.set_permissions(DATA_SCIENTIST["actions"], DATA_SCIENTIST["notActions"])
    serve_exhausted_quota(fake)
    set_hf_secret(tmp_path)              # named in Settings, but not in the vault
    assert main(["azure", "preflight", str(plan), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert not doc["ok"]
    name = load_plan(plan).name
    # permission: computes may not be created, and the plan's cluster does not exist
    perm = checks(doc, "permission")
    assert len(perm) == 1 and COMPUTES_WRITE in perm[0] and "AzureML Compute Operator" in perm[0]
    # quota: the size's family or why the size is out, with what to request
    quota = checks(doc, "quota")
    assert quota and all("request" in q or "not offered" in q for q in quota), quota
    # data: the datastore folder the plan reads is empty, said with the URI and how to upload
    data = checks(doc, "data")
    assert len(data) == 1 and f"distill-studio/data/{name}/" in data[0] and "upload" in data[0]
    token = checks(doc, "token")
    if gated_models(load_plan(plan)):
        assert any("has no secret 'hf-token'" in t and "az keyvault secret set" in t for t in token), token
        assert any("--create-cluster" in t for t in token), token
    else:
        assert token == []
    assert checks(doc, "environment", "note") and "10-20 minutes" in checks(doc, "environment", "note")[0]
    nothing_created(fake)


def test_the_quota_failure_names_the_family_and_the_vcpus_to_request(cli_env, tmp_path, capsys):
    serve_exhausted_quota(cli_env)
    plan = next(p for p in AZURE_PLANS if p.stem == "gemma3-27b-to-4b-3h")     # N × an A100 size
    resolved = resolve_run(load_plan(plan), plan.parent)
    nodes, sku = resolved.nodes, resolved.plan.hardware.sku
    assert nodes > 1
    assert main(["azure", "preflight", str(plan)]) == 1
    out = capsys.readouterr().out
    # N nodes × the size's vCPUs against what its family has free: NC A100 24 of 48 in Azure ML's quota, ND A100 none
    free, vcpus, family = {"Standard_NC24ads_A100_v4": (24, 24, "standardNCADSA100v4Family"),
                           "Standard_ND96asr_v4": (0, 96, "standardNDASv4_A100Family")}[sku]
    assert f"FAIL quota: {nodes} × {sku} (dedicated)" in out
    assert f"request {nodes * vcpus - free} more vCPUs for {family}" in out


# ---- submit stops on them, or --force names the risks -------------------------------------------------------------

def test_submit_stops_before_any_put_or_upload(cli_env, tmp_path, capsys):
    fake = cli_env
    fake.set_permissions(["*/read"])
    plan = next(p for p in AZURE_PLANS if p.stem == "gemma3-27b-to-4b-3h")
    run = tmp_path / "run"
    assert main(["azure", "submit", str(plan), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "not submitted: pre-flight found" in err and "--force" in err
    assert f"may not create jobs in workspace {F.WS}" in err and "AzureML Data Scientist" in err
    assert "no token secret is named in Settings › Azure" in err
    assert "nothing on datastore workspaceblobstore under distill-studio/data/" in err
    nothing_created(fake)
    assert not (run / "azure.json").exists()
    assert not any("blob.core.windows.net" in r["url"] and r["method"] == "PUT" for r in fake.requests())


def test_submit_force_takes_the_risks_it_names_and_records_them(cli_env, tmp_path, capsys):
    fake = cli_env
    plan = azure_plan(tmp_path)
    text = plan.read_text().replace("[data]", "[data]\ntokens = 100_000_000", 1)
    plan.write_text(text)        # far more tokens than the demo's small file holds
    run = tmp_path / "run"
    assert main(["azure", "submit", str(plan), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "bytes per token" in err and "data.tokens" in err
    nothing_created(fake)
    assert main(["azure", "submit", str(plan), "--run-dir", str(run), "--force"]) == 0
    err = capsys.readouterr().err
    assert "--force: submitting despite data:" in err
    meta = json.loads((run / "azure.json").read_text())
    assert meta["preflight"]["forced"] and meta["preflight"]["risks_taken"][0].startswith("data: data.train holds")
    assert len([r for r in fake.requests() if r["method"] == "PUT" and "/jobs/" in r["url"]]) == 1


def test_a_clean_plan_passes_and_the_second_job_finds_its_environment_built(cli_env, tmp_path, capsys):
    fake = cli_env
    plan = azure_plan(tmp_path)
    az = connect(fake)
    first = run_preflight(plan, az)
    assert first.ok, first.describe()
    assert [c.status for c in first.checks if c.what == "environment"] == ["note"]
    assert any(c.what == "data" and c.status == "ok" and "uploaded at submission" in c.text for c in first.checks)
    assert main(["azure", "submit", str(plan), "--run-dir", str(tmp_path / "run")]) == 0
    again = run_preflight(plan, az)
    assert [c.status for c in again.checks if c.what == "environment"] == ["ok"], again.describe()


# ---- data on a datastore ----------------------------------------------------------------------------------------

def test_data_on_the_datastore_is_listed_and_its_size_compared_with_the_tokens(fake, tmp_path):
    plan = azure_plan(tmp_path)
    plan.write_text(plan.read_text().replace("[data]", "[data]\ntokens = 1_000", 1))
    uri = "azureml://datastores/workspaceblobstore/paths/corpus/v1/"
    fake.put_blob("azureml-blobstore/corpus/v1/part-0.jsonl", b"x" * 2500)
    fake.put_blob("azureml-blobstore/corpus/v1/part-1.jsonl", b"x" * 1500)
    fake.put_blob("azureml-blobstore/corpus/v10/other.jsonl", b"x" * 99)      # a sibling prefix: not counted
    report = run_preflight(plan, connect(fake), data_uri=uri)
    data = [c for c in report.checks if c.what == "data"]
    assert data[0].status == "ok" and "2 files, 4.0 KB at " + uri in data[0].text
    assert data[1].status == "ok" and "4.00 bytes per token" in data[1].text
    report = run_preflight(plan, connect(fake), data_uri="azureml://datastores/workspaceblobstore/paths/nope/")
    train = [c for c in report.checks if c.what == "data" and c.text.startswith("data.train")]
    assert [c.status for c in train] == ["fail"] and "nothing at azureml://" in train[0].text
    nothing_created(fake)


def test_data_the_sign_in_may_not_read_is_a_warning_not_a_stop(fake, tmp_path):
    """AzureML Data Scientist may neither read a datastore's key nor list its blobs; the job reads the data with the
    workspace's own credentials, so pre-flight warns instead of stopping the submission."""
    plan = azure_plan(tmp_path)
    uri = "azureml://datastores/workspaceblobstore/paths/corpus/v1/"
    fake.put_blob("azureml-blobstore/corpus/v1/part-0.jsonl", b"x" * 2500)
    fake.fail("POST", r"/datastores/workspaceblobstore/listSecrets", status=403, times=5,
              code="AuthorizationFailed", message="no listSecrets right")
    fake.fail("GET", r"\.blob\.core\.windows\.net/azureml-blobstore\?.*comp=list", status=403, times=5,
              code="AuthorizationPermissionMismatch", message="not authorized")
    report = run_preflight(plan, connect(fake), data_uri=uri)
    train = [c for c in report.checks if c.what == "data" and c.text.startswith("data.train")]
    assert [c.status for c in train] == ["warn"], train
    assert "Storage Blob Data Reader" in train[0].text and "workspace's own credentials" in train[0].fix
    assert not [c for c in report.checks if c.what == "data" and c.status == "fail"]


# ---- a gated model: the order that works for the first job ---------------------------------------------------------

def test_gated_model_token_steps_in_an_order_that_works(cli_env, tmp_path, capsys):
    fake = cli_env
    plan = next(p for p in AZURE_PLANS if p.stem == "gemma3-27b-to-4b-3h")
    set_hf_secret(tmp_path)
    fake.set_secret("hf-token", "hf_not_a_real_token")
    # 1. the cluster does not exist: no identity to grant yet; the step is to create it
    assert main(["azure", "preflight", str(plan), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    token = checks(doc, "token")
    assert len(token) == 1 and "does not exist yet" in token[0] and "--create-cluster" in token[0]
    assert checks(doc, "token", "ok") == ["secret 'hf-token' is in Key Vault distillkv → "]
    nothing_created(fake)
    # 2. --create-cluster: only the cluster (0 nodes, with its identity); the role to grant, to whom, on which vault
    assert main(["azure", "preflight", str(plan), "--json", "--create-cluster"]) == 1
    doc = json.loads(capsys.readouterr().out)
    principal = doc["cluster"]["principal_id"]
    assert principal
    puts = [r["url"] for r in fake.requests() if r["method"] == "PUT"]
    assert len(puts) == 1 and f"/computes/{doc['cluster']['name']}" in puts[0]
    token = checks(doc, "token")
    assert len(token) == 1 and "was just created" in token[0]
    assert (f'--role "Key Vault Secrets User" --assignee-object-id {principal}' in token[0]
            and "/providers/Microsoft.KeyVault/vaults/distillkv" in token[0])
    # 3. the role granted: the token check passes
    fake.grant(principal)
    assert main(["azure", "preflight", str(plan), "--json"]) == 1      # quota/data still missing in this fake
    doc = json.loads(capsys.readouterr().out)
    assert checks(doc, "token") == []
    assert any(f"identity ({principal}) may read secrets" in t for t in checks(doc, "token", "ok"))
    assert not any(c["what"] == "permission" and c["status"] == "fail" for c in doc["checks"])


def test_a_gated_model_staged_in_the_workspace_needs_no_token(cli_env, tmp_path, capsys):
    """The nodes read a staged model from workspace storage: no token secret is needed for it."""
    from distill_studio.engine.catalog.staged_models import STAGED_VERSION, asset_name

    fake = cli_env
    plan = next(p for p in AZURE_PLANS if p.stem == "gemma3-27b-to-4b-3h")
    assert main(["azure", "preflight", str(plan), "--json"]) == 1
    assert checks(json.loads(capsys.readouterr().out), "token")          # not staged, no secret: a failure
    for hub in ("google/gemma-3-27b-it", "google/gemma-3-4b-it"):
        fake.add_model(asset_name(hub), STAGED_VERSION, f"azureml://datastores/workspaceblobstore/paths/m/{hub}")
    main(["azure", "preflight", str(plan), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert checks(doc, "token") == []
    assert any("staged in the workspace" in t and "no Hugging Face token" in t for t in checks(doc, "token", "note"))


def test_a_split_plan_checks_and_creates_the_cluster_of_each_job(fake, tmp_path):
    """The teacher's pass (the first job, the one that downloads the teacher) runs on its own size's cluster:
    pre-flight looks at both and --create-cluster creates both."""
    from test_azure import split_plan

    from distill_studio.engine.azure.job import cluster_name

    plan = split_plan(tmp_path)
    report = run_preflight(plan, connect(fake), create_cluster=True)
    made = set(fake.state()["computes"])
    teacher = cluster_name("Standard_ND96isr_H100_v5", "dedicated")
    assert teacher in made and len(made) == 2, made
    assert report.cluster["name"] == teacher and report.cluster["sku"] == "Standard_ND96isr_H100_v5"
