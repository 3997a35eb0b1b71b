"""The teacher's weights, staged once: a plan's Hugging Face models as model assets of the workspace, so that every
node of every attempt reads them from the workspace's blob storage instead of downloading them from the hub
(QwQ-32B is about 65 GB). docs/azure.md, "The teacher's weights, staged once".

- **The asset.** ``hf--<org>--<name>`` version :data:`STAGED_VERSION`, a ``custom_model`` whose files are at
  ``azureml://datastores/workspaceblobstore/paths/distill-studio/models/<org>--<name>/<version>/`` (the repository's
  files as on the hub; ``distill-staged.json`` beside them names the hub revision that was staged).
- **Staging** (``distill azure stage-models PLAN``): one small command job per model, on :data:`STAGING_SKU` (a CPU
  VM: downloading needs network and disk, not a GPU), running :func:`stage_on_node` (``huggingface_hub.
  snapshot_download`` into the job's output, the token of a gated model read from Key Vault as a training node reads
  it, ``node.py``); the output is in *upload* mode (written to the VM's local disk, uploaded when the job ends: no
  file is renamed on a blob mount). Once the job completed, the asset is registered from here (the desktop's
  sign-in; the node needs no permission on the workspace). The job's name is fixed per model, so running the
  command again adopts the job rather than sending a second one, and registers the asset once the job is done.
- **Training** (``jobs.submit``): each hub model of the plan is looked up (``ml_client.models.get``); a staged one
  becomes the job's input ``azureml:NAME:VERSION`` in *download* mode, handed to the engine as
  ``--input teacher.model=${{inputs.teacher_model}}`` (``job.build``). Download, not a read-only mount: the engine
  reads every byte of the weights, on every node; downloaded before the engine starts, they are read from storage
  once per node at the storage's full rate and then loaded from the node's local disk, where a mount would stream
  them through blobfuse while the model loads. A model that is not staged is downloaded from the hub as before, and
  ``submit`` says so with the command that stages it (it does not stage by itself: staging is a job of its own,
  minutes to an hour, and the user decides when to run it).
- **The planner** costs the staging of the models not recorded as staged (``catalog/staged_models.py``, filled
  here; ``estimate/core.py``'s ``staging_hours``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..catalog.staged_models import STAGED_VERSION, asset_name, forget_staged, hub_models, record_staged, workspace_key
from ..errors import AzureError

STAGING_SKU = "Standard_D16ds_v5"     # 16 vCPU, 64 GiB, 600 GiB local SSD: room for a 70B model's files
STAGING_CLUSTER = "ds-stage-d16ds"
STAGING_TIMEOUT_S = 6 * 3600
MODELS_PATH = "distill-studio/models"
STAGED_FILE = "distill-staged.json"
# Files a training node never reads: other formats, and the original checkpoints some repositories carry beside
# the transformers weights
IGNORE = ["original/*", "*.gguf", "*.onnx", "onnx/*", "*.msgpack", "*.h5", "*.ckpt", "*.mlmodel", "*.tflite"]


def datastore_path(hub_id: str) -> str:
    from .job import DATASTORE

    return f"azureml://datastores/{DATASTORE}/paths/{MODELS_PATH}/{hub_id.replace('/', '--')}/{STAGED_VERSION}/"


def asset_ref(hub_id: str) -> str:
    """``azureml:hf--Org--Name:1``: how a job's input names the asset."""
    return f"azureml:{asset_name(hub_id)}:{STAGED_VERSION}"


def is_asset_ref(value: str) -> bool:
    return bool(re.match(r"^azureml:(?!//)[^:]+:[^:]+$", value))


def job_input(value: str):
    """The azure-ai-ml ``Input`` of a job input's path or URI: a staged model asset is a ``custom_model``,
    downloaded to every node before the engine starts; a file or folder otherwise."""
    from azure.ai.ml import Input

    if is_asset_ref(value):
        return Input(type="custom_model", path=value, mode="download")
    return Input(type="uri_file" if Path(value).suffix and not value.endswith("/") else "uri_folder", path=value)


def _ws_key(az) -> str:
    return workspace_key(az.ws.subscription_id, az.ws.resource_group, az.ws.workspace)


def plan_models(plan_path: Path, base: Path | None = None):
    """(plan, [(plan field, hub id, bytes)]) of the plan's models a node would download from Hugging Face."""
    from ..checks import check_plan
    from ..plan import load_plan

    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    pair = check_plan(plan, base or plan_path.resolve().parent)
    return plan, hub_models(plan, pair)


def lookup(az, hub_id: str):
    """The staged model asset of ``hub_id`` in the workspace, or None when it has none."""
    from azure.core.exceptions import ResourceNotFoundError

    from .client import explain

    name = asset_name(hub_id)
    try:
        return az.fresh_on_401(az.ml.models.get, name=name, version=STAGED_VERSION)
    except ResourceNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 — azure-ai-ml may wrap a 404
        if 404 in (getattr(exc, "status_code", None), getattr(getattr(exc, "inner_exception", None),
                                                                "status_code", None)):
            return None
        raise explain(exc, f"looking up the model asset {name}:{STAGED_VERSION}", az.ws) from None


def staged_inputs(az, plan_path: Path, say: Callable[[str], None] = print,
                  base: Path | None = None) -> dict[str, str]:
    """{plan field: ``azureml:NAME:VERSION``} for the plan's hub models staged in the workspace, each looked up
    (and the local record of staged models brought up to date). A model that is not staged is said, with what it
    costs the job and the command that stages it; a lookup that fails is said too, and the model is downloaded from
    the hub as if not staged (the job still runs)."""
    _, models = plan_models(plan_path, base)
    out: dict[str, str] = {}
    missing = []
    for fld, hub, nbytes in models:
        try:
            found = lookup(az, hub)
        except AzureError as exc:
            say(f"{fld} {hub}: the workspace's staged copy could not be looked up ({exc}); each node downloads it "
                "from Hugging Face")
            continue
        if found is None:
            forget_staged(_ws_key(az), hub)
            missing.append(f"{fld} {hub} (about {nbytes / 1e9:,.0f} GB)")
            continue
        record_staged(_ws_key(az), hub, asset_ref(hub), datastore_path(hub))
        out[fld] = asset_ref(hub)
        say(f"{fld} {hub}: read from the workspace's staged copy {asset_name(hub)}:{STAGED_VERSION} (downloaded to "
            "each node from storage, not from Hugging Face)")
    if missing:
        say(f"not staged in workspace {az.ws.workspace}: {', '.join(missing)}; every node of every attempt downloads "
            f"{'it' if len(missing) == 1 else 'them'} from Hugging Face. Stage once with `distill azure stage-models "
            f"{plan_path}`, then submit")
    return out


# ---- the staging job -------------------------------------------------------------------------------------------

def staging_job_name(hub_id: str, attempt: int = 1) -> str:
    """Fixed per model (and attempt): a second `stage-models` adopts the job instead of sending another."""
    safe = re.sub(r"[^a-z0-9]+", "-", hub_id.lower()).strip("-")[:120]
    return f"distill-stage-{safe}-v{STAGED_VERSION}" + (f"-r{attempt}" if attempt > 1 else "")


@dataclass
class StagingSpec:
    job: object                 # azure.ai.ml.entities.Command
    cluster: object             # azure.ai.ml.entities.AmlCompute
    name: str
    hub_id: str
    output_uri: str
    notes: list[str] = field(default_factory=list)


def build_staging(plan, hub_id: str, name: str, code_dir: Path, *, hf_token_secret: str = "",
                  key_vault_uri: str = "") -> StagingSpec:
    """The command job that stages ``hub_id``: the engine's code (``job.stage_code``), the training node's image
    (already built for the training job, or built once for both), one CPU node, the model's datastore folder as an
    upload-mode output. The token of a gated model is named (its Key Vault secret), never given."""
    from azure.ai.ml import Output, command
    from azure.ai.ml.entities import AmlCompute, IdentityConfiguration

    from .environment import HF_HOME, build_environment
    from .job import EXPERIMENT, stage_code

    stage_code(Path(code_dir), plan)
    env_vars = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HOME": HF_HOME}
    if hf_token_secret:
        from .node import SECRET_ENV, VAULT_ENV

        if not key_vault_uri:
            raise AzureError("a Hugging Face token secret is set (Settings › Azure) but the workspace's Key Vault is "
                             "not known")
        env_vars.update({SECRET_ENV: hf_token_secret, VAULT_ENV: key_vault_uri})   # names, never the token
    output_uri = datastore_path(hub_id)
    job = command(
        name=name,
        display_name=f"stage {hub_id}",
        experiment_name=EXPERIMENT,
        description=f"Distill Studio: {hub_id} from Hugging Face into the workspace's storage, once, for every job",
        code=str(code_dir),
        command=f"python -m distill_studio.engine.azure.models --repo {hub_id} --out ${{{{outputs.model}}}}",
        environment=build_environment(),
        environment_variables=env_vars,
        compute=STAGING_CLUSTER,
        instance_count=1,
        outputs={"model": Output(type="uri_folder", path=output_uri, mode="upload")},
        timeout=STAGING_TIMEOUT_S,
        tags={"distill-studio": "1", "distill-stage": hub_id},
    )
    cluster = AmlCompute(name=STAGING_CLUSTER, size=STAGING_SKU, min_instances=0, max_instances=1, tier="dedicated",
                         idle_time_before_scale_down=300, identity=IdentityConfiguration(type="system_assigned"))
    return StagingSpec(job=job, cluster=cluster, name=name, hub_id=hub_id, output_uri=output_uri)


def staging_cost(nbytes: float) -> tuple[float, float]:
    """(hours, US dollars) of staging ``nbytes``, as the planner counts them (estimate/core.py)."""
    from ..estimate.core import coefficients, staging_hours

    tm = coefficients()["time"]
    hours = staging_hours(nbytes, tm)
    return hours, hours * float(tm["staging_usd_per_hour"])


def register(az, hub_id: str, job_name: str):
    """Register the staged folder of ``hub_id`` as the model asset (no upload: the files are on the datastore)."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    from .client import explain, sdk_output

    model = Model(name=asset_name(hub_id), version=STAGED_VERSION, type=AssetTypes.CUSTOM_MODEL,
                  path=datastore_path(hub_id), description=f"{hub_id} from Hugging Face, staged by Distill Studio",
                  tags={"hub_id": hub_id, "staged_by": job_name})
    try:
        with sdk_output(lambda s: None):
            found = az.ml.models.create_or_update(model)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"registering the model asset {asset_name(hub_id)}:{STAGED_VERSION}", az.ws) from None
    record_staged(_ws_key(az), hub_id, asset_ref(hub_id), datastore_path(hub_id))
    return found


def _current_job(az, hub_id: str):
    """The staging job of ``hub_id`` to follow (name, job or None): the latest attempt that did not fail."""
    from .client import status_text
    from .jobs import get_job

    attempt = 1
    while True:
        name = staging_job_name(hub_id, attempt)
        job = get_job(az, name)
        if job is None or status_text(job) not in ("Failed", "Canceled"):
            return name, job
        attempt += 1


def stage_models(plan_path: Path, az, *, say: Callable[[str], None] = print, wait: bool = True,
                 interval: float = 30.0, wait_s: float = STAGING_TIMEOUT_S + 3600,
                 should_stop: Callable[[], bool] = lambda: False, work_dir: Path | None = None) -> list[dict[str, Any]]:
    """Stage the plan's hub models that the workspace does not have: look each up, adopt or send its staging job,
    and (``wait``) follow it and register the asset once it completed. Returns one record per model:
    ``{"field", "hub_id", "asset", "status", "job"}`` (status: "staged", "running", "failed")."""
    from ..catalog.prices import data_dir
    from .client import status_text
    from .jobs import TERMINAL, check_workspace, ensure_cluster, get_job, job_error, send

    plan, models = plan_models(plan_path)
    if plan.hardware.target != "azure":
        raise AzureError(f'hardware.target: this plan runs on "{plan.hardware.target}"; staging is for plans with '
                         'target = "azure"')
    if not models:
        say("the plan names no Hugging Face model a node would download (local folders or datastore paths only): "
            "nothing to stage")
        return []
    results: list[dict[str, Any]] = []
    pending: dict[str, dict[str, Any]] = {}
    ws_meta: dict[str, Any] = {}
    for fld, hub, nbytes in models:
        rec = {"field": fld, "hub_id": hub, "asset": asset_ref(hub), "job": "", "status": ""}
        results.append(rec)
        if lookup(az, hub) is not None:
            record_staged(_ws_key(az), hub, asset_ref(hub), datastore_path(hub))
            rec["status"] = "staged"
            say(f"{hub}: staged already ({asset_name(hub)}:{STAGED_VERSION})")
            continue
        if hub.lower() in pending:                 # teacher and student the same model: one job
            rec.update(job=pending[hub.lower()]["job"], status="running")
            continue
        name, job = _current_job(az, hub)
        rec["job"] = name
        if job is None:
            if not ws_meta:
                check_workspace(az, ws_meta)       # the Key Vault's URI, for a gated model's token
            hours, usd = staging_cost(nbytes)
            say(f"{hub}: staging about {nbytes / 1e9:,.0f} GB once on 1 × {STAGING_SKU} (about {hours * 60:.0f} min, "
                f"${usd:,.2f} as the planner counts it)")
            if should_stop():
                raise AzureError("stopped before the staging job was submitted; nothing runs on Azure")
            folder = Path(work_dir) if work_dir else data_dir() / "staging" / name
            spec = build_staging(plan, hub, name, folder / "azure-code", hf_token_secret=az.ws.hf_token_secret,
                                 key_vault_uri=ws_meta.get("key_vault", ""))
            ensure_cluster(az, spec.cluster, say)
            job = send(az, spec.job, {"job": name}, say)
        else:
            say(f"{hub}: staging job {name} is {status_text(job)} (adopted, not sent again)")
        rec["status"] = "running"
        pending[hub.lower()] = rec
    end = time.monotonic() + wait_s
    while pending:
        for key, rec in list(pending.items()):
            job = get_job(az, rec["job"])
            status = status_text(job) if job is not None else "gone"
            if status == "Completed":
                register(az, rec["hub_id"], rec["job"])
                say(f"{rec['hub_id']}: staged as {asset_name(rec['hub_id'])}:{STAGED_VERSION}; jobs read it from "
                    "the workspace's storage from now on")
                del pending[key]
            elif status in TERMINAL or job is None:
                why = job_error(job) if job is not None else "the job is not in the workspace any more"
                del pending[key]
                rec["status"] = "failed"
                raise AzureError(f"staging {rec['hub_id']} ended {status}{': ' + why if why else ''}; see the job "
                                 f"{rec['job']} in Azure ML studio, fix it and run `distill azure stage-models "
                                 f"{plan_path}` again (it sends a new attempt)")
        for rec in results:
            if rec["hub_id"].lower() not in pending and rec["status"] == "running":
                rec["status"] = "staged"
        if not pending or not wait:
            break
        if should_stop():
            raise AzureError("stopped while staging: the staging job keeps running in Azure ML; run "
                             f"`distill azure stage-models {plan_path}` again to register the model once it is done")
        if time.monotonic() > end:
            raise AzureError(f"staging has not ended within {wait_s / 3600:.1f} h; run the command again later")
        time.sleep(interval)
    for rec in results:
        if rec["status"] == "running":
            say(f"{rec['hub_id']}: staging job {rec['job']} is running; run `distill azure stage-models {plan_path}` "
                "again once it has completed to register the model")
    return results


def cmd_stage_models(args) -> int:
    from .cli import _StopSignal, _azure, _say

    results = stage_models(args.plan, _azure(), say=_say, wait=not args.no_wait, interval=args.interval,
                           should_stop=_StopSignal())
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


# ---- on the staging node -----------------------------------------------------------------------------------------

def stage_on_node(repo: str, out: Path, revision: str | None = None) -> dict[str, Any]:
    """Download ``repo``'s files into ``out`` (the job's output), as a training node would read them; a gated
    model's token from Key Vault (``node.load_hf_token``). Writes :data:`STAGED_FILE` (the revision staged, the
    files and their bytes) last."""
    from huggingface_hub import HfApi, snapshot_download

    from .node import load_hf_token

    load_hf_token()
    out = Path(out)
    info = HfApi().model_info(repo, revision=revision)
    files = [s.rfilename for s in (info.siblings or [])]
    ignore = list(IGNORE)
    if any(f.endswith(".safetensors") for f in files):       # the same weights as .bin beside them: not read
        ignore += ["*.bin", "*.pt", "*.pth"]
    snapshot_download(repo, revision=info.sha, local_dir=str(out), ignore_patterns=ignore)
    cache = out / ".cache"
    if cache.is_dir():                                         # huggingface_hub's own bookkeeping, not the model
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
    kept = sorted(p for p in out.rglob("*") if p.is_file())
    doc = {"hub_id": repo, "revision": info.sha, "staged": time.time(),
           "files": {p.relative_to(out).as_posix(): p.stat().st_size for p in kept}}
    doc["bytes"] = sum(doc["files"].values())
    (out / STAGED_FILE).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill_studio.engine.azure.models",
                                description="stage a Hugging Face model into this job's output folder")
    p.add_argument("--repo", required=True, help="Hugging Face model id, ORG/NAME")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--revision", default=None)
    args = p.parse_args(argv)
    try:
        doc = stage_on_node(args.repo, args.out, args.revision)
    except Exception as exc:  # noqa: BLE001 — one line a person can act on, never a traceback
        name = type(exc).__name__
        hint = (" (a gated model: accept its licence on huggingface.co and name a token secret in Settings › Azure)"
                if "Gated" in name or "401" in str(exc) or "403" in str(exc) else "")
        print(f"staging {args.repo} failed: {name}: {str(exc).splitlines()[0] if str(exc) else ''}{hint}",
              file=sys.stderr)
        return 1
    print(f"staged {args.repo} at {doc['revision']}: {len(doc['files'])} files, {doc['bytes'] / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    sys.exit(main())
