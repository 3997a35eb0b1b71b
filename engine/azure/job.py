"""A plan as an Azure ML command job, built with azure-ai-ml's own objects (never hand-written YAML).

- **Code**: the engine package as installed (``distill_studio/engine``, no tests, no GUI, no demo data) and the
  plan as the planner resolved it (``plan.toml``: VM size, nodes, sharding, teacher mode, micro-batch fixed),
  staged in a folder that azure-ai-ml uploads (content-hashed, so an unchanged engine is uploaded once).
- **Environment**: ``node_image/``, a Docker build context on :data:`IMAGE` (a curated Azure Container for
  PyTorch image, pinned by version: CUDA, the InfiniBand user-space and OpenMPI the ND-series need), with its own
  Python 3.11 holding ``node_image/requirements.txt``: torch (a CUDA 12 build), transformers, peft, accelerate,
  and mlflow-skinny + azureml-mlflow so the node reports its metrics to the workspace's MLflow (the desktop app
  needs neither). ``environment.py`` says what and why (docs/azure.md, "The node's software").
- **Compute**: an AmlCompute cluster of the plan's VM size, 0 nodes when idle (nothing is paid between runs), at
  most the plan's node count, dedicated or low priority as the plan says; created on first use, reused after.
- **Distribution**: PyTorch, one process per GPU of the VM (``process_count_per_instance``) on ``nodes``
  instances. Azure ML starts every process with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
  ``MASTER_PORT``, the launch contract the engine already follows under torchrun.
- **Inputs**: each local path of the plan (data files, a local model folder) becomes an input that azure-ai-ml
  uploads as a data asset; a datastore URI (``azureml://...``) or an https URL is used where it is.
- **Output**: the run folder, read-write mounted from ``azureml://datastores/workspaceblobstore/paths/
  distill-studio/runs/<run>/``. It outlives the job: a job restarted after preemption (same path) continues from
  the last checkpoint there (``--resume-if-started``), and the student is downloaded from it.
"""
from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AzureError
from ..plan import INPUT_FIELDS, Plan, load_plan, save_plan, with_stop_at

from .environment import ENVIRONMENT_FILE, IMAGE  # noqa: F401  (the node's image and pins: environment.py)
EXPERIMENT = "distill-studio"
DATASTORE = "workspaceblobstore"
OUTPUT_ROOT = f"azureml://datastores/{DATASTORE}/paths/distill-studio/runs"
DATA_ROOT = f"azureml://datastores/{DATASTORE}/paths/distill-studio/data"
REMOTE = re.compile(r"^(azureml|https?|wasbs?|abfss?)://")
JOB_ENV = {"DISTILL_MLFLOW": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class JobSpec:
    """What is submitted for one run: the command job, its cluster, and what a person should know about it."""

    job: object                 # azure.ai.ml.entities.Command
    cluster: object             # azure.ai.ml.entities.AmlCompute
    name: str
    output_uri: str
    sku: str
    nodes: int
    gpus_per_node: int
    priority: str
    estimate: dict
    notes: list[str] = field(default_factory=list)


def known(value) -> bool:
    """A finite number (a cost where the price is known)."""
    return isinstance(value, (int, float)) and value == value and value not in (float("inf"), float("-inf"))


def job_name(plan_name: str, stamp: str) -> str:
    """A job name Azure ML accepts (letters, digits, '-' and '_', at most 255), unique per run: it is also the key
    that prevents a second submission of the same run."""
    import uuid

    safe = re.sub(r"[^a-z0-9]+", "-", plan_name.lower()).strip("-")[:40] or "run"
    return f"distill-{safe}-{stamp}-{uuid.uuid4().hex[:4]}"  # two submissions in one second stay two jobs


def cluster_name(sku: str, priority: str) -> str:
    """One cluster per VM size and priority (AmlCompute names: 2-16 letters, digits and '-', a letter first)."""
    short = re.sub(r"[^a-z0-9]", "", sku.lower().removeprefix("standard_"))
    tag = hashlib.sha1(f"{sku}|{priority}".encode()).hexdigest()[:4]
    return f"ds-{short[:7]}{'l' if priority == 'low-priority' else 'd'}{tag}"[:16]


def stage_code(dest: Path, plan: Plan) -> Path:
    """The job's code folder: the installed engine package and the resolved plan. Replaced if it exists."""
    from .. import __file__ as engine_init

    engine_dir = Path(engine_init).parent
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(engine_dir, dest / "distill_studio" / "engine",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    save_plan(plan, dest / "plan.toml")
    return dest


def _inputs(plan: Plan, base: Path, data_uri: str | None, notes: list[str]) -> dict[str, tuple[str, str]]:
    """{input name: (plan field, path or URI)} for every plan field the node must read from elsewhere."""
    out: dict[str, tuple[str, str]] = {}
    for key in INPUT_FIELDS:
        section, name = key.split(".")
        value = getattr(getattr(plan, section), name)
        if key == "data.train" and data_uri:
            value = data_uri
        if not value:
            continue
        if REMOTE.match(value):
            out[key.replace(".", "_")] = (key, value)
            continue
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base / path
        if path.exists():
            out[key.replace(".", "_")] = (key, str(path.resolve()))
        elif section == "data":
            raise AzureError(f"{key}: {path} does not exist; give an existing file or folder, or a datastore URI "
                             "(azureml://datastores/NAME/paths/...)")
        # a model id that is not a local folder is a Hugging Face id: the node downloads it
    if "data_train" not in out:
        uri = f"{DATA_ROOT}/{re.sub(r'[^A-Za-z0-9_.-]+', '-', plan.name)}/"
        out["data_train"] = ("data.train", uri)
        notes.append(f"the plan names no training data (data.train); the job reads it from {uri}: upload it there "
                     "(az storage blob upload-batch, or Azure ML studio's Data page), or pass --data URI")
    return out


def build(plan_path: Path, name: str, code_dir: Path, *, data_uri: str | None = None, compute: str = "",
          prices=None, base: Path | None = None, run_key: str | None = None, hf_token_secret: str = "",
          key_vault_uri: str = "", stage: str = "all", teacher_uri: str = "",
          model_assets: dict[str, str] | None = None, usd_per_hour: float | None = None,
          stop_at: str | None = None) -> JobSpec:
    """The job for ``plan_path`` as the planner resolves it, its code staged in ``code_dir``. ``base``: the folder
    the plan's relative paths are read from (default: the plan's own). ``run_key`` names the run across attempts
    (default ``name``): the engine continues a run folder only if it holds that run. ``hf_token_secret``: the name
    of the Key Vault secret (in ``key_vault_uri``) the node reads a Hugging Face token from (``node.py``).

    ``stage``: "teacher" builds a split plan's first job (the teacher's pass on its own VM size and nodes, its
    output folder ``<run>-teacher/``), "student" its second (training, reading ``teacher_uri``, the first job's
    output folder, as an input); "all" the one job of a plan that is not split."""
    from azure.ai.ml import Input, Output, PyTorchDistribution, command
    from azure.ai.ml.entities import AmlCompute

    from .environment import build_environment, node_env

    from ..planner import resolve_run
    from .client import quiet_sdk

    quiet_sdk()

    plan_path = Path(plan_path)
    plan = with_stop_at(load_plan(plan_path), stop_at)
    if plan.hardware.target != "azure":
        raise AzureError(f'hardware.target: this plan runs on "{plan.hardware.target}"; an Azure ML job needs '
                         'target = "azure" (run it here with `distill run`)')
    base = Path(base) if base is not None else plan_path.resolve().parent
    resolved = resolve_run(plan, base, prices, pinned=stage != "all" and plan.hardware.split_only, stage=stage,
                           usd_per_hour=usd_per_hour)
    rplan = resolved.plan
    hw = rplan.hardware
    if resolved.split and stage == "all":
        raise AzureError("this plan runs the teacher's pass on other hardware than training: it is submitted as two "
                         "jobs (`distill azure submit` does that)")
    sku = resolved.split["teacher_pass"]["sku"] if resolved.split and stage == "teacher" else hw.sku
    what = {"teacher": "the teacher's pass", "student": "training on the teacher's pass"}.get(stage, "")
    notes = [f"{what + ': ' if what else ''}{resolved.nodes} × {sku} ({resolved.gpus_per_node} GPU(s) each), "
             f"{hw.priority}: {resolved.why}", *resolved.notes]
    inputs = _inputs(rplan, base, data_uri, notes)
    # hub models staged in the workspace (models.py): {plan field: azureml:NAME:VERSION}, read from storage
    inputs.update({key.replace(".", "_"): (key, asset) for key, asset in (model_assets or {}).items()})
    stage_code(code_dir, rplan)
    world = resolved.nodes * resolved.gpus_per_node
    run_key = run_key or name
    args = ["python -m distill_studio.engine.train plan.toml --run-dir ${{outputs.run}}",
            f"--resume-if-started {run_key} --expect-world-size {world}",
            "--checkpoint-local auto"]   # the output is a blob mount: checkpoints go through the node's disk
    args += [f"--input {key}=${{{{inputs.{iname}}}}}" for iname, (key, _) in inputs.items()]
    from .models import job_input

    job_inputs = {iname: job_input(v) for iname, (_, v) in inputs.items()}
    output_uri = f"{OUTPUT_ROOT}/{run_key}/"
    if stage == "teacher":
        args.append("--stage teacher")
        output_uri = f"{OUTPUT_ROOT}/{run_key}-teacher/"
    elif stage == "student":
        if not teacher_uri:
            raise AzureError("the student stage reads the teacher stage's output folder, and none is recorded")
        args.append("--stage student --teacher-run ${{inputs.teacher_run}}")
        job_inputs["teacher_run"] = Input(type="uri_folder", path=teacher_uri, mode="ro_mount")
    # a split plan's stages run on their own sizes: one cluster per size (a cluster given in Settings is for one)
    cluster = cluster_name(sku, hw.priority) if not compute or stage != "all" else compute
    env = build_environment()
    env_vars = {**JOB_ENV, **node_env(sku)}     # the Hugging Face cache on the node's disk; NCCL on ND sizes
    if hf_token_secret:
        from .node import SECRET_ENV, VAULT_ENV

        if not key_vault_uri:
            raise AzureError("a Hugging Face token secret is set (Settings › Azure) but the workspace's Key Vault is "
                             "not known; give it with --key-vault-uri https://NAME.vault.azure.net/")
        env_vars.update({SECRET_ENV: hf_token_secret, VAULT_ENV: key_vault_uri})   # names, never the token
    est = resolved.estimate
    job = command(
        name=name,
        display_name=rplan.name + {"teacher": " (teacher pass)", "student": " (training)"}.get(stage, ""),
        experiment_name=EXPERIMENT,
        description=rplan.description or f"Distill Studio run of {rplan.name}",
        code=str(code_dir),
        command=" ".join(args),
        environment=env,
        compute=cluster,
        instance_count=resolved.nodes,
        distribution=PyTorchDistribution(process_count_per_instance=resolved.gpus_per_node),
        environment_variables=env_vars,
        inputs=job_inputs,
        outputs={"run": Output(type="uri_folder", path=output_uri, mode="rw_mount")},
        shm_size="16g",
        tags={"distill-studio": "1", "plan": rplan.name, "estimate_hours": f"{est['hours']['total']:.3f}",
              "estimate_usd": f"{est['cost_usd']:.2f}" if known(est.get("cost_usd")) else "unknown"},
    )
    from azure.ai.ml.entities import IdentityConfiguration

    # a system-assigned identity: what the job uses to read a Key Vault secret (a Hugging Face token)
    amlc = AmlCompute(name=cluster, size=sku, min_instances=0, max_instances=resolved.nodes,
                      tier="low_priority" if hw.priority == "low-priority" else "dedicated",
                      idle_time_before_scale_down=600, identity=IdentityConfiguration(type="system_assigned"))
    return JobSpec(job=job, cluster=amlc, name=name, output_uri=output_uri, sku=sku, nodes=resolved.nodes,
                   gpus_per_node=resolved.gpus_per_node, priority=hw.priority, estimate=est, notes=notes)


def export(plan_path: Path, out: Path, *, data_uri: str | None = None, compute: str = "", hf_token_secret: str = "",
           key_vault_uri: str = "") -> list[tuple[JobSpec, Path, Path]]:
    """Write the job as YAML for ``az ml job create -f``, its code folder beside it, and the cluster's YAML for
    ``az ml compute create -f``. A split plan is two jobs: ``out`` runs the teacher's pass, ``<out>.student.yaml``
    trains on its output once it completed. Returns (spec, job file, cluster file) for each, in order."""
    import time

    from ..planner import resolve_run

    out = Path(out)
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise AzureError(f"--out: {out} should end in .yaml (a job file for `az ml job create -f`)")
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = load_plan(plan_path)
    if plan.hardware.target != "azure":
        build(plan_path, "check", out.with_name(out.stem + ".code"))      # says why not, clearly
    name = job_name(plan.name, time.strftime("%Y%m%d-%H%M%S"))
    split = resolve_run(plan, Path(plan_path).resolve().parent).split
    stages = [("teacher", out), ("student", out.with_name(out.stem + ".student" + out.suffix))] if split else \
        [("all", out)]
    written = []
    teacher_uri = ""
    for stage, path in stages:
        code = path.with_name(path.stem + ".code")
        spec = build(plan_path, name if stage != "student" else f"{name}-student", code, data_uri=data_uri,
                     compute=compute, hf_token_secret=hf_token_secret, key_vault_uri=key_vault_uri, stage=stage,
                     run_key=name, teacher_uri=teacher_uri)
        teacher_uri = spec.output_uri
        spec.job._to_job().dump(path)
        # the code folder relative to the file, so the two move together; and the schema, for editors
        import yaml

        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc["code"] = f"./{code.name}"
        doc = {"$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json", **doc}
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120), encoding="utf-8")
        cluster_file = path.with_name(path.stem + ".compute.yaml")
        spec.cluster.dump(cluster_file)
        written.append((spec, path, cluster_file))
    if split:
        written[0][0].notes.append(f"this plan is split: submit {stages[1][1].name} once {out.name} has completed "
                                   "(it reads that job's output folder)")
    return written
