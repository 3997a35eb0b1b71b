"""Azure runs: submit a plan as an Azure ML job, and find, cancel, resume and download it later.

An Azure run has a local run folder like a local run (``plan.toml``, ``events.jsonl``, ``logs/console.log``,
``student/`` once downloaded) plus ``azure.json``: the workspace (ids only, never a secret), the job's name, every
attempt's name, the cluster and the output path on the datastore. The watcher (``watch.py``) fills
``events.jsonl`` from the job's MLflow metrics, so the monitor shows an Azure run as it shows a local one.

**Never submitted twice.** The job's name is chosen and written to ``azure.json`` before anything is sent, and
every submission first looks the name up: a job that exists (a submission whose answer was lost to the network,
a second click, a second terminal) is adopted, not sent again. The request carries a client request id too
(``x-ms-client-request-id``, kept in ``azure.json``) so Azure's own logs can tie retries together.

**The code, once per content.** The staged code folder (the engine and the resolved plan) is a code asset named
:data:`CODE_ASSET` whose version is the folder's content hash: a submission whose code is already in the workspace
refers to that version and uploads nothing; only changed code is uploaded.

**Preemption.** A low-priority job whose node was taken back is submitted again as ``<name>-r2`` (``-r3``...),
with the same output path: the engine finds its run folder there and continues from the last checkpoint.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from ..errors import AzureError
from .client import Azure, Workspace, explain, sdk_output, status_text

RUN_FILE = "azure.json"
# NotResponding is not an end: Azure ML says a job can come back from it (and it may still be training)
TERMINAL = ("Completed", "Failed", "Canceled")
MAX_ATTEMPTS = 4               # the first submission and three resubmissions after preemption
PREEMPTED = re.compile(r"preempt|low.?priority node|evicted|spot", re.I)
CODE_ASSET = "distill-studio-code"
JOB_API = "2024-04-01"


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AzureError(f"{run_dir} is not an Azure run folder (it has no {RUN_FILE}); Azure runs are made by "
                         "`distill azure submit` or the app's Launch on an Azure plan") from None
    except ValueError as exc:
        raise AzureError(f"{path} could not be read ({exc})") from None
    if not isinstance(meta, dict) or not meta.get("job"):
        raise AzureError(f"{path} names no job")
    return meta


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """Atomically: a crash never leaves half a file, and the job's name is never lost."""
    from ..files import write_json_atomic

    write_json_atomic(Path(run_dir) / RUN_FILE, meta)


def workspace_of(meta: dict[str, Any], current: Workspace) -> Workspace:
    """The run's workspace with the sign-in of the present settings (the run folder holds no credential)."""
    w = meta.get("workspace", {})
    if w and (w.get("subscription_id"), w.get("resource_group"), w.get("workspace")) != (
            current.subscription_id, current.resource_group, current.workspace):
        return Workspace(subscription_id=w["subscription_id"], resource_group=w["resource_group"],
                         workspace=w["workspace"], region=w.get("region", current.region), sign_in=current.sign_in,
                         tenant_id=current.tenant_id, client_id=current.client_id)
    return current


def get_job(az: Azure, name: str):
    """The job, or None when Azure has none of that name."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return az.fresh_on_401(az.ml.jobs.get, name)
    except ResourceNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 — a 404 may also come wrapped by azure-ai-ml
        if getattr(getattr(exc, "inner_exception", None), "status_code", None) == 404 or \
                getattr(exc, "status_code", None) == 404:
            if "workspaces/" in str(exc) and "jobs" not in str(exc):
                raise explain(exc, f"looking up job {name}", az.ws) from None
            return None
        raise explain(exc, f"looking up job {name}", az.ws) from None


def ensure_cluster(az: Azure, cluster, say: Callable[[str], None]) -> None:
    """Create the cluster, or reuse it: same VM size, and at least the plan's node count."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        existing = az.fresh_on_401(az.ml.compute.get, cluster.name)
    except ResourceNotFoundError:
        existing = None
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"looking up compute cluster {cluster.name}", az.ws) from None
    if existing is not None:
        size = (getattr(existing, "size", "") or "").lower()
        if size and size != cluster.size.lower():
            raise AzureError(f"compute cluster {cluster.name} exists with VM size {existing.size}, not "
                             f"{cluster.size}; choose another cluster in Settings › Azure › Compute cluster, or "
                             "leave it empty to use one named after the VM size")
        if (getattr(existing, "max_instances", 0) or 0) >= cluster.max_instances:
            say(f"compute cluster {cluster.name}: {existing.size}, up to {existing.max_instances} nodes (reused)")
            return
        say(f"compute cluster {cluster.name}: raising its maximum to {cluster.max_instances} nodes")
    else:
        say(f"compute cluster {cluster.name}: creating ({cluster.size}, 0 to {cluster.max_instances} nodes, "
            f"{cluster.tier})")
    try:
        az.ml.compute.begin_create_or_update(cluster).result()
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"creating compute cluster {cluster.name}", az.ws) from None


def send(az: Azure, spec_job, meta: dict[str, Any], say: Callable[[str], None]):
    """Submit ``spec_job`` under the name in ``meta`` unless a job of that name exists; returns the job."""
    name = meta["job"]
    found = get_job(az, name)
    if found is not None:
        say(f"job {name} is already in Azure ML ({status_text(found)}); not submitting it again")
        return found
    meta.setdefault("client_request_id", str(uuid.uuid4()))
    code_once(az, spec_job, say)
    try:
        with sdk_output(say):
            job = az.ml_for_request(meta["client_request_id"]).jobs.create_or_update(spec_job)
    except Exception as exc:  # noqa: BLE001
        # the answer may have been lost after Azure took the job: look (one try: the request before has had its
        # retries) before anyone submits again
        try:
            taken = job_exists_once(az, name)
            found = get_job(az, name) if taken else None
        except AzureError:
            found = None
        if found is not None:
            say(f"job {name} was accepted by Azure ML although the answer was lost ({type(exc).__name__})")
            return found
        raise explain(exc, f"submitting job {name}", az.ws) from None
    say(f"job {name} submitted ({status_text(job)})")
    return job


def job_exists_once(az: Azure, name: str) -> bool:
    """Whether Azure ML has a job of that name: one GET, no retries (an :class:`AzureError` when it gets no answer)."""
    from azure.core.rest import HttpRequest

    url = f"https://management.azure.com{az.ws.arm_id}/jobs/{name}?api-version={JOB_API}"
    try:
        resp = az.pipeline(retries=False).send_request(HttpRequest("GET", url))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"looking up job {name}", az.ws) from None
    if resp.status_code == 404:
        return False
    if resp.status_code >= 400:
        raise AzureError(f"looking up job {name}: Azure answered {resp.status_code}")
    return True


def content_hash(folder: Path) -> str:
    """A hash of the folder's files: their paths relative to it and their bytes."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix().encode()
        h.update(len(rel).to_bytes(8, "little") + rel)
        data = path.read_bytes()
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def code_once(az: Azure, spec_job, say: Callable[[str], None]) -> None:
    """Point the job at the code asset of its staged folder's content, uploading the folder only when the workspace
    has no such version yet."""
    from azure.core.exceptions import ResourceNotFoundError

    folder = getattr(spec_job, "code", None)
    if not isinstance(folder, (str, Path)) or not Path(folder).is_dir():
        return                       # a code asset already, or no code
    version = content_hash(Path(folder))[:24]
    try:
        found = az.fresh_on_401(az.ml._code.get, CODE_ASSET, version)   # MLClient keeps its code operations private
    except ResourceNotFoundError:
        found = None
    except Exception as exc:  # noqa: BLE001
        if not _is_404(exc):
            raise explain(exc, f"looking up the code asset {CODE_ASSET}:{version}", az.ws) from None
        found = None
    if found is not None:
        say(f"the engine and the plan are in the workspace already ({CODE_ASSET}:{version}); not uploaded again")
    else:
        from azure.ai.ml.entities._assets._artifacts.code import Code   # not exported, but what `code=` becomes

        say(f"uploading the engine and the plan ({CODE_ASSET}:{version})")
        try:
            with sdk_output(say):
                found = az.ml._code.create_or_update(Code(name=CODE_ASSET, version=version, path=str(folder)))
        except Exception as exc:  # noqa: BLE001
            raise explain(exc, f"uploading the code asset {CODE_ASSET}:{version}", az.ws) from None
    spec_job.code = found.id


def _is_404(exc: BaseException) -> bool:
    return 404 in (getattr(exc, "status_code", None), getattr(getattr(exc, "inner_exception", None),
                                                                "status_code", None))


class Stopped(AzureError):
    """Stop was asked before the job was sent: nothing runs on Azure."""


def submit(plan_path: Path, run_dir: Path, az: Azure, *, data_uri: str | None = None,
           say: Callable[[str], None] = print, prices=None,
           should_stop: Callable[[], bool] = lambda: False, record: dict[str, Any] | None = None,
           usd_per_hour: float | None = None, stop_at: str | None = None) -> dict[str, Any]:
    """Submit ``plan_path`` as a new Azure run in ``run_dir``; returns the run's ``azure.json`` (``record``: more
    for it, e.g. the pre-flight's result and the risks a forced submission took).

    ``run_dir`` holding an Azure run already (a second click, a retry after an error) is continued as it was
    recorded: its job is adopted if Azure has it, sent as recorded if not; the plan given now is not read again.
    ``should_stop`` is asked before anything is created; once true, :class:`Stopped` is raised. ``usd_per_hour``:
    the price per node-hour confirmed for a size the region's table has none for (the run is pinned to that size,
    its resolved plan records the price). ``stop_at``: the run's ``budget.stop_at``, as the launch asked."""
    from ..plan import load_plan, save_plan
    from . import job as J

    run_dir = Path(run_dir)
    plan_path = Path(plan_path)
    name = ""
    if (run_dir / RUN_FILE).exists():
        meta = read_meta(run_dir)
        found = get_job(az, meta["job"])
        if found is not None:
            say(f"job {meta['job']} is already in Azure ML ({status_text(found)}); not submitting it again")
            return meta
        if (run_dir / "plan.toml").exists():
            return _send_recorded(az, run_dir, meta, say, should_stop)
        name = meta["job"]   # it failed before the job was built (Azure not reached): build it now, same name
        # what the first try recorded (its pre-flight, the risks a --force took) stays with the run
        record = {**({"preflight": meta["preflight"]} if "preflight" in meta else {}), **(record or {})}
    elif (run_dir / "events.jsonl").exists():
        raise AzureError(f"--run-dir: {run_dir} already holds a run; choose a new folder")
    plan = load_plan(plan_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = name or J.job_name(plan.name, time.strftime("%Y%m%d-%H%M%S"))
    meta = {"job": name, "jobs": [name], "run_key": name, "workspace": az.ws.public(),
            "plan_path": str(plan_path.resolve()), "created": time.time(), "data_uri": data_uri or "", **(record or {})}
    write_meta(run_dir, meta)          # the name is kept before anything is sent
    check_workspace(az, meta)
    meta["hf_token_secret"] = az.ws.hf_token_secret
    from ..planner import resolve_run

    # a split plan: two jobs, the teacher's pass first (its own VM size), training when it completed
    split = resolve_run(plan, plan_path.resolve().parent, prices, usd_per_hour=usd_per_hour).split
    if split:
        meta.update({"stage": "teacher", "split": split})
    from .models import staged_inputs

    # hub models staged in the workspace: every attempt and node reads them from storage (models.py)
    meta["model_assets"] = staged_inputs(az, plan_path, say)
    spec = J.build(plan_path, name, run_dir / "azure-code", data_uri=data_uri, compute=az.ws.compute,
                   prices=prices, run_key=name, hf_token_secret=meta["hf_token_secret"],
                   key_vault_uri=meta.get("key_vault", ""), stage="teacher" if split else "all",
                   model_assets=meta["model_assets"], usd_per_hour=usd_per_hour, stop_at=stop_at)
    for note in spec.notes:
        say(note)
    save_plan(load_plan(run_dir / "azure-code" / "plan.toml"), run_dir / "plan.toml")
    (run_dir / "plan.given.toml").write_text(plan_path.read_text(encoding="utf-8"), encoding="utf-8")
    meta.update({"output": spec.output_uri, "compute": spec.cluster.name, "sku": spec.sku, "nodes": spec.nodes,
                 "gpus_per_node": spec.gpus_per_node, "priority": spec.priority,
                 "estimate": {"hours": spec.estimate["hours"]["total"], "cost_usd": spec.estimate["cost_usd"]}})
    write_meta(run_dir, meta)
    return _send_spec(az, run_dir, meta, spec, say, should_stop)


def _send_recorded(az: Azure, run_dir: Path, meta: dict[str, Any], say: Callable[[str], None],
                   should_stop: Callable[[], bool] = lambda: False, attempt: int = 0) -> dict[str, Any]:
    """Send the job recorded in ``meta`` as the run was planned: the resolved plan in the run folder (VM size, nodes
    and sharding fixed, so its checkpoints fit), its relative paths read from where the plan was, the run's own
    output folder."""
    from . import job as J

    spec = J.build(Path(run_dir) / "plan.toml", meta["job"], Path(run_dir) / "azure-code",
                   data_uri=meta.get("data_uri") or None, compute=meta.get("compute", ""),
                   base=Path(meta.get("plan_path", Path(run_dir) / "plan.toml")).parent,
                   run_key=meta.get("run_key", meta["jobs"][0] if meta.get("jobs") else meta["job"]),
                   hf_token_secret=meta.get("hf_token_secret", ""), key_vault_uri=meta.get("key_vault", ""),
                   stage=meta.get("stage", "all"), teacher_uri=meta.get("teacher_output", ""),
                   model_assets=meta.get("model_assets"))
    if meta.get("output"):
        spec.job.outputs["run"].path = meta["output"]   # the first attempt's run folder: its checkpoints
    else:
        meta["output"] = spec.output_uri
    if attempt > 1:
        spec.job.display_name = f"{spec.job.display_name} (attempt {attempt})"
    return _send_spec(az, run_dir, meta, spec, say, should_stop)


def start_student_stage(az: Azure, run_dir: Path, say: Callable[[str], None] = print,
                        should_stop: Callable[[], bool] = lambda: False) -> str:
    """A split run's teacher job completed: submit its training job, reading the teacher's output folder. The new
    job's name is written before it is sent (never sent twice); returns it."""
    meta = read_meta(run_dir)
    if meta.get("stage") != "teacher":
        raise AzureError(f"{run_dir}: the run is not in its teacher stage")
    name = f"{meta['run_key']}-student"
    meta.update({"stage": "student", "teacher_output": meta["output"], "teacher_jobs": meta.get("jobs", []),
                 "job": name, "jobs": [name], "client_request_id": str(uuid.uuid4())})
    meta.pop("output", None)
    meta.pop("cancel_requested", None)
    write_meta(run_dir, meta)
    say(f"the teacher's pass is done; submitting the training job {name}")
    from . import job as J

    spec = J.build(Path(run_dir) / "plan.toml", name, Path(run_dir) / "azure-code",
                   data_uri=meta.get("data_uri") or None, compute=meta.get("compute", ""),
                   base=Path(meta.get("plan_path", Path(run_dir) / "plan.toml")).parent, run_key=meta["run_key"],
                   hf_token_secret=meta.get("hf_token_secret", ""), key_vault_uri=meta.get("key_vault", ""),
                   stage="student", teacher_uri=meta["teacher_output"], model_assets=meta.get("model_assets"))
    meta.update({"output": spec.output_uri, "compute": spec.cluster.name, "sku": spec.sku, "nodes": spec.nodes,
                 "gpus_per_node": spec.gpus_per_node})
    write_meta(run_dir, meta)
    _send_spec(az, run_dir, meta, spec, say, should_stop)
    return name


def _send_spec(az: Azure, run_dir: Path, meta: dict[str, Any], spec, say: Callable[[str], None],
               should_stop: Callable[[], bool]) -> dict[str, Any]:
    _check_capacity(az, spec, say)
    if should_stop():
        raise Stopped("stopped before the job was submitted; nothing runs on Azure")
    ensure_cluster(az, spec.cluster, say)
    if should_stop():
        raise Stopped("stopped before the job was submitted; nothing runs on Azure (the compute cluster is kept; "
                      "it has 0 nodes when idle)")
    say("sending the job; the plan's local files are uploaded where the workspace does not have them yet")
    job = send(az, spec.job, meta, say)
    meta.update({"submitted": time.time(), "status": status_text(job), "studio_url": _studio(job)})
    write_meta(run_dir, meta)
    if meta["studio_url"]:
        say(f"Azure ML studio: {meta['studio_url']}")
    return meta


def check_workspace(az: Azure, meta: dict[str, Any]) -> None:
    """The workspace exists and this sign-in reaches it (one GET, before anything is created); keeps its MLflow
    tracking URI for the watcher and its Key Vault's URI for a job that reads a secret there."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        ws = az.fresh_on_401(az.ml.workspaces.get, az.ws.workspace)
    except ResourceNotFoundError:
        raise AzureError(f"workspace {az.ws.workspace} was not found in resource group {az.ws.resource_group} of "
                         f"subscription {az.ws.subscription_id}; check Settings › Azure (or create it: "
                         f"az ml workspace create -n {az.ws.workspace} -g {az.ws.resource_group})") from None
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading workspace {az.ws.workspace}", az.ws) from None
    uri = getattr(ws, "mlflow_tracking_uri", "") or ""
    if uri:
        meta["mlflow"] = re.sub(r"^azureml://", "https://", uri).rstrip("/")
    from .node import vault_uri

    meta["key_vault"] = vault_uri(getattr(ws, "key_vault", "") or "")


def _check_capacity(az: Azure, spec, say: Callable[[str], None]) -> None:
    """Refuse before submitting a job that cannot get its machines, where the checked capacity says so."""
    try:
        from ..catalog.capacity import load_capacity
    except ImportError:  # pragma: no cover
        return
    table = load_capacity(az.ws.region)
    if table is None:
        say(f"capacity and quota in {az.ws.region} not checked (`distill azure capacity --refresh`)")
        return
    problem = table.problem(spec.sku, spec.nodes, spec.priority)
    if problem:
        raise AzureError(f"{spec.nodes} × {spec.sku} ({spec.priority}): {problem}")
    unknown = table.missing_quota(spec.sku, spec.priority)
    if unknown:
        say(f"quota for {spec.sku} ({spec.priority}) unknown: Azure listed no {', '.join(unknown)} row; "
            "a job short of quota waits in the queue")


def _studio(job) -> str:
    services = getattr(job, "services", None) or {}
    studio = services.get("Studio") if isinstance(services, dict) else None
    return str(getattr(studio, "endpoint", "") or "")


def status(az: Azure, run_dir: Path) -> dict[str, Any]:
    meta = read_meta(run_dir)
    job = get_job(az, meta["job"])
    if job is None:
        raise AzureError(f"job {meta['job']} of {run_dir} is not in workspace {az.ws.workspace} (deleted, or another "
                         "workspace: check Settings › Azure)")
    return {"job": meta["job"], "status": status_text(job), "attempt": len(meta.get("jobs", [])),
            "compute": meta.get("compute"), "nodes": meta.get("nodes"), "sku": meta.get("sku"),
            "studio_url": _studio(job) or meta.get("studio_url", ""), "error": job_error(job)}


def job_error(job) -> str:
    """The job's error message, where Azure gives one."""
    props = getattr(job, "properties", None) or {}
    for key in ("azureml.error", "error"):
        if isinstance(props, dict) and props.get(key):
            return str(props[key])[:500]
    err = getattr(job, "error", None)
    return str(getattr(err, "message", "") or "")[:500] if err else ""


def cancel(az: Azure, run_dir: Path, say: Callable[[str], None] = print) -> str:
    """Ask Azure ML to cancel the run's current job (the engine checkpoints and stops); returns the job's name."""
    meta = read_meta(run_dir)
    name = meta["job"]
    try:
        az.ml.jobs.begin_cancel(name)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"cancelling job {name}", az.ws) from None
    meta["cancel_requested"] = time.time()
    write_meta(run_dir, meta)
    say(f"job {name}: cancel requested")
    return name


def preempted(job) -> bool:
    text = " ".join((job_error(job), status_text(job)))
    return bool(PREEMPTED.search(text))


def resubmit(az: Azure, run_dir: Path, say: Callable[[str], None] = print, why: str = "",
             automatic: bool = False, should_stop: Callable[[], bool] = lambda: False) -> str:
    """A new attempt of the run (after preemption, or a resume of a stopped run): same code, plan and output path,
    a new job name. Returns the name sent. ``automatic`` (after preemption) is limited to :data:`MAX_ATTEMPTS`; a
    resume asked for by hand is not."""
    meta = read_meta(run_dir)
    attempts = meta.get("jobs", [meta["job"]])
    if get_job(az, meta["job"]) is None:
        # the recorded attempt never reached Azure (a failed submission): send it under its own name
        _send_recorded(az, run_dir, meta, say, should_stop, attempt=len(attempts))
        return meta["job"]
    if automatic and len(attempts) >= MAX_ATTEMPTS:
        raise AzureError(f"{run_dir}: the run was preempted {len(attempts)} times; resume it with "
                         f"`distill azure resume {run_dir}` once capacity is back, or use dedicated nodes")
    name = f"{attempts[0]}-r{len(attempts) + 1}"
    meta.update({"job": name, "jobs": [*attempts, name], "client_request_id": str(uuid.uuid4())})
    meta.pop("cancel_requested", None)
    write_meta(run_dir, meta)   # the new name first: never two submissions of it
    _send_recorded(az, run_dir, meta, say, should_stop, attempt=len(attempts) + 1)
    say(f"job {name} submitted to continue the run from its last checkpoint" + (f" ({why})" if why else ""))
    return name


def download(az: Azure, run_dir: Path, say: Callable[[str], None] = print) -> Path:
    """The student from the run's output folder on the datastore into ``run_dir/student`` (only the student: the
    checkpoints beside it stay on the datastore)."""
    import shutil
    import tempfile

    from azure.ai.ml._artifacts._artifact_utilities import download_artifact_from_aml_uri

    meta = read_meta(run_dir)
    out = Path(run_dir) / "student"
    uri = meta["output"].rstrip("/") + "/student/"
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        try:
            with sdk_output():         # its progress bars and colour codes are dropped
                download_artifact_from_aml_uri(uri=uri, destination=tmp, datastore_operation=az.ml.datastores)
        except Exception as exc:  # noqa: BLE001
            raise explain(exc, f"downloading the student from {uri}", az.ws) from None
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        if not files:
            raise AzureError(f"{uri} holds no student yet (the run has not finished, or it failed before saving "
                             f"it); see `distill azure logs {run_dir}`")
        top = Path(tmp)
        while len(list(top.iterdir())) == 1 and next(top.iterdir()).is_dir() and not (top / "config.json").exists():
            top = next(top.iterdir())
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(top), out)
    say(f"student saved to {out}")
    return out
