"""``distill azure smoke PLAN``: a short job (at most about 10 minutes on the nodes) on the VM size the planner
resolves for the plan, before a long run pays for it: CUDA and the GPU count, NCCL all-reduce and all-gather bus
bandwidth within a node and (2 nodes for a multi-node plan) across nodes, a gated model's Hugging Face token, the
data mount's read speed and the output's write speed (``smoke_node.py`` does the measuring).

The job is the plan's own job (``job.build``: the same staged code, environment, environment variables, cluster
and training input) with another command, 1 or 2 nodes and its own output folder
(``distill-studio/smoke/<job>/`` on the workspace's blob store). It is costed before anything is created
(nodes × the size's price per node-hour × (the node's 5-10 minutes + provisioning as the estimator counts it), a
P10-P90 range), and sent only once confirmed (``--yes`` for scripts). Then it is followed until it ends, its
``smoke.json`` is downloaded and kept as a calibration record (``estimate/smoke_records.py``), and the results
are printed (``--json``: the results as one JSON document on stdout, what the app reads).

A local folder per smoke job (``data_dir()/smoke/<job>/``, an ``azure.json`` like a run's) lets
``distill azure status``, ``logs`` and ``cancel`` work on it too.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable

from ..errors import AzureError
from .job import DATASTORE, JobSpec, known

SMOKE_ROOT = f"azureml://datastores/{DATASTORE}/paths/distill-studio/smoke"
NODE_MINUTES = (5.0, 10.0)       # the node's own time: the checks take about 5 minutes, at most 10
JOB_TIMEOUT_S = 20 * 60          # Azure ML stops the job after this (image pull and start-up included)
NODE_SECONDS = 420               # the node stops starting new collective sizes after this
WAIT_S = 3 * 3600                # how long the desktop follows it (queue and a first image build included)
DEFAULT_OFFER_USD = 200.0        # Settings › Azure: offer a smoke job before launching plans above this (P80)


def smoke_nodes(plan_nodes: int) -> int:
    """2 nodes for a multi-node plan (the interconnect across nodes is what it must measure), else 1."""
    return 2 if plan_nodes > 1 else 1


# ---- cost ---------------------------------------------------------------------------------------------------------

def _money(value: float, up: bool) -> float:
    """A rounded bound: to $0.10 under $10, to $1 above (a range, never a figure to the cent)."""
    step = 0.1 if value < 10 else 1.0
    return (math.ceil if up else math.floor)(value / step - 1e-9 * (1 if up else -1)) * step


def smoke_cost(sku: str, priority: str, nodes: int, region: str, prices=None) -> dict[str, Any]:
    """What the smoke job costs: nodes × price per node-hour × (the node's minutes + provisioning), P10-P90 of the
    provisioning time as the estimator spreads set-up; ``usd`` None where the size's price is unknown."""
    from ..catalog.prices import load_prices
    from ..estimate.core import coefficients

    c = coefficients()
    prov_h = float(c["time"]["provision_hours"]["low-priority" if priority == "low-priority" else "dedicated"])
    sd = float(c["uncertainty"]["setup_log_sd"])
    z = NormalDist().inv_cdf(0.9)
    prov = (prov_h * math.exp(-z * sd) * 60, prov_h * math.exp(z * sd) * 60)        # minutes
    minutes = (NODE_MINUTES[0] + prov[0], NODE_MINUTES[1] + prov[1])
    prices = prices or load_prices(region)
    price = prices.lookup(sku, priority)
    rate = price.usd_per_hour if price is not None else None
    usd = None
    if rate is not None:
        usd = [_money(nodes * rate * minutes[0] / 60, up=False), _money(nodes * rate * minutes[1] / 60, up=True)]
    return {"sku": sku, "priority": priority, "nodes": nodes, "usd_per_node_hour": rate, "usd": usd,
            "node_minutes": list(NODE_MINUTES), "provision_minutes": [round(prov[0], 1), round(prov[1], 1)],
            "region": region}


def usd_range_text(cost: dict[str, Any]) -> str:
    """"≈ $1.2–$3.5", or "price unknown"."""
    if not cost.get("usd"):
        return "price unknown"
    lo, hi = cost["usd"]
    fmt = (lambda v: f"${v:,.0f}") if hi >= 10 else (lambda v: f"${v:,.1f}")
    return f"≈ {fmt(lo)}–{fmt(hi)}"


def cost_text(cost: dict[str, Any]) -> str:
    where = f"{cost['nodes']} × {cost['sku']} ({cost['priority']})"
    lo, hi = cost["node_minutes"]
    plo, phi = cost["provision_minutes"]
    if cost.get("usd") is None:
        return (f"smoke job on {where}: the price of {cost['sku']} in {cost['region']} is not known (refresh prices "
                f"in the planner); about {lo:.0f}-{hi:.0f} min on the nodes plus {plo:.0f}-{phi:.0f} min provisioning")
    return (f"smoke job on {where}: {usd_range_text(cost)} (P10-P90: ${cost['usd_per_node_hour']:,.2f} a node-hour × "
            f"{cost['nodes']} node{'s' if cost['nodes'] > 1 else ''} × {lo:.0f}-{hi:.0f} min on the nodes plus "
            f"{plo:.0f}-{phi:.0f} min provisioning)")


@dataclass
class SmokePlan:
    """The smoke job of a plan, before anything is built: where it runs and what it costs."""

    sku: str
    nodes: int
    plan_nodes: int
    gpus_per_node: int
    priority: str
    region: str
    cost: dict[str, Any]
    gated: list[str] = field(default_factory=list)
    split: bool = False         # the planner splits the plan: its training size (the longer stage), on its own cluster


def plan_smoke(plan_path: Path, prices=None, base: Path | None = None) -> SmokePlan:
    """The planned size (``resolve_run``; a split plan's training size), its smoke node count and cost. Reads no
    Azure."""
    from ..plan import load_plan
    from ..planner import resolve_run
    from .preflight import gated_models

    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    if plan.hardware.target != "azure":
        raise AzureError(f'hardware.target: this plan runs on "{plan.hardware.target}"; a smoke job is for plans '
                         'with target = "azure"')
    resolved = resolve_run(plan, base or plan_path.resolve().parent, prices)
    hw = resolved.plan.hardware
    nodes = smoke_nodes(resolved.nodes)
    return SmokePlan(sku=hw.sku, nodes=nodes, plan_nodes=resolved.nodes, gpus_per_node=resolved.gpus_per_node,
                     priority=hw.priority, region=hw.region,
                     cost=smoke_cost(hw.sku, hw.priority, nodes, hw.region, prices),
                     gated=[g.split(" ", 1)[1] for g in gated_models(resolved.plan)], split=bool(resolved.split))


def plan_cost_at(plan_path: Path, confidence: float = 0.8, base: Path | None = None) -> float | None:
    """The cost of the option the planner resolves for the plan, at ``confidence`` (P80 by default): what Launch
    compares with the smoke-test threshold. None where the price is unknown."""
    from ..estimate.ranges import at_confidence
    from ..plan import load_plan
    from ..planner import analyse

    plan_path = Path(plan_path)
    a = analyse(load_plan(plan_path), base or plan_path.resolve().parent)
    i = a.decision.recommended if a.decision.recommended is not None else a.decision.fastest   # as resolve_run
    if i is None:
        return None
    cost = float(at_confidence(a.sweep, confidence)[1][i])
    return cost if known(cost) else None


# ---- pre-flight -------------------------------------------------------------------------------------------------------

def smoke_preflight(plan_path: Path, az, sp: SmokePlan, *, data_uri: str | None = None, say=None):
    """Pre-flight (``preflight.py``) of the smoke job itself, before anything is created: may the signed-in identity
    create the job (and the cluster, where it does not exist or is too small), is there quota for the smoke job's
    nodes (1 or 2, not the plan's), does the training input it mounts exist, can a gated model's token be read,
    is the image built. The data's size against the plan's tokens is not checked: the smoke job reads a sample."""
    from ..plan import load_plan
    from . import job as J
    from . import preflight as P
    from .client import quiet_sdk

    quiet_sdk()
    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    base = plan_path.resolve().parent
    report = P.Preflight(plan=f"{plan.name} (smoke job)", workspace=az.ws.workspace)
    name = az.ws.compute if az.ws.compute and not sp.split else J.cluster_name(sp.sku, sp.priority)
    # the cluster as the plan's job has it (grown to the plan's nodes); the smoke job uses 1 or 2 of them
    report.cluster = {"name": name, "sku": sp.sku, "nodes": sp.plan_nodes, "priority": sp.priority}
    found = P.workspace_and_cluster(az, report, name)
    if found is None:
        return report
    ws_doc, compute = found
    big_enough = P.cluster_fits(report, compute, name, sp.sku, sp.plan_nodes)
    P.check_permissions(az, report, big_enough)
    P.check_quota(az, report, [("smoke job: ", sp.sku, sp.nodes, sp.priority)])
    train = data_uri or plan.data.train
    if train:                   # the input the smoke job mounts and reads a sample of: it must exist
        P._one_input(az, report, "data.train", str(train), base, [])
    P.check_token(az, report, plan, ws_doc, compute)
    P.check_environment(az, report)
    return report


# ---- the job --------------------------------------------------------------------------------------------------------

def expected_busbw(sku: str) -> tuple[float, float]:
    """The catalog's link speeds within and across nodes at the estimator's bus efficiency (GB/s): half of it is
    the smoke job's pass mark (a size far below its published interconnect is misconfigured)."""
    from ..catalog.hardware import resolve_sku
    from ..estimate.core import coefficients

    eff = float(coefficients()["communication"]["bus_efficiency"])
    try:
        s = resolve_sku(sku)
    except Exception:  # noqa: BLE001 — a size the catalog does not know: no pass mark, only "> 0"
        return 0.0, 0.0
    intra = s.intra_node_gb_per_s * eff if s.gpus > 1 else 0.0
    return intra, s.inter_node_gb_per_s * eff


def build_smoke(plan_path: Path, name: str, code_dir: Path, *, data_uri: str | None = None, compute: str = "",
                prices=None, hf_token_secret: str = "", key_vault_uri: str = "") -> JobSpec:
    """The smoke job: the plan's job as ``job.build`` makes it (code, environment, variables, cluster, training
    input), with the smoke command, 1 or 2 nodes, one process per GPU, and its own output folder."""
    from azure.ai.ml import Output, PyTorchDistribution, command

    from ..plan import load_plan
    from ..planner import resolve_run
    from . import job as J
    from .preflight import gated_models

    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    split = plan.hardware.target == "azure" and resolve_run(plan, plan_path.resolve().parent, prices).split
    # a split plan: the training job's size (the longer stage); its teacher input is not read
    spec = J.build(plan_path, name, code_dir, data_uri=data_uri, compute=compute, prices=prices, run_key=name,
                   hf_token_secret=hf_token_secret, key_vault_uri=key_vault_uri,
                   stage="student" if split else "all", teacher_uri=f"{SMOKE_ROOT}/{name}/" if split else "")
    nodes = smoke_nodes(spec.nodes)
    data = spec.job.inputs.get("data_train")
    inputs = {"data_train": data._data} if data is not None else {}
    rplan = load_plan(Path(code_dir) / "plan.toml")
    gated = [g.split(" ", 1)[1] for g in gated_models(rplan)]
    intra, inter = expected_busbw(spec.sku)
    args = ["python -m distill_studio.engine.azure.smoke_node --out ${{outputs.smoke}}",
            f"--sku {spec.sku} --nodes {nodes} --gpus-per-node {spec.gpus_per_node}",
            f"--max-seconds {NODE_SECONDS}"]
    if inputs:
        args.append("--data ${{inputs.data_train}}")
    args += [f"--hf-model {repo}" for repo in gated]
    if intra:
        args.append(f"--expect-intra-gb-per-s {intra:.1f}")
    if inter and nodes > 1:
        args.append(f"--expect-inter-gb-per-s {inter:.1f}")
    output_uri = f"{SMOKE_ROOT}/{name}/"
    job = command(
        name=name,
        display_name=f"{rplan.name} (smoke test)",
        experiment_name=J.EXPERIMENT,
        description=f"Distill Studio smoke test of {spec.sku} for {rplan.name}: CUDA, NCCL bandwidth, the Hugging "
                    "Face token, storage speed",
        code=str(code_dir),
        command=" ".join(args),
        environment=spec.job.environment,
        environment_variables=dict(spec.job.environment_variables),
        compute=spec.job.compute,
        instance_count=nodes,
        distribution=PyTorchDistribution(process_count_per_instance=spec.gpus_per_node),
        inputs=inputs,
        outputs={"smoke": Output(type="uri_folder", path=output_uri, mode="rw_mount")},
        shm_size="16g",
        timeout=JOB_TIMEOUT_S,
        tags={"distill-studio": "1", "distill-smoke": "1", "plan": rplan.name},
    )
    notes = [f"smoke test: {nodes} × {spec.sku} ({spec.gpus_per_node} GPU(s) each, {spec.priority}), "
             f"stopped by Azure ML after {JOB_TIMEOUT_S // 60} min at the latest"]
    if gated:
        notes.append(f"gated model{'s' if len(gated) > 1 else ''} {', '.join(gated)}: the token is checked"
                     + ("" if hf_token_secret else " (no token secret in Settings › Azure: the check will fail)"))
    return JobSpec(job=job, cluster=spec.cluster, name=name, output_uri=output_uri, sku=spec.sku, nodes=nodes,
                     gpus_per_node=spec.gpus_per_node, priority=spec.priority, estimate={}, notes=notes)


# ---- running it -----------------------------------------------------------------------------------------------------

class NotConfirmed(AzureError):
    """The cost was not confirmed: nothing was created."""


def smoke_dir(name: str) -> Path:
    from ..catalog.prices import data_dir

    return data_dir() / "smoke" / name


def run_smoke(plan_path: Path, az, *, confirm: Callable[[str], bool], data_uri: str | None = None,
              say: Callable[[str], None] = print, interval: float = 15.0, wait_s: float = WAIT_S,
              should_stop: Callable[[], bool] = lambda: False, prices=None, force: bool = False) -> dict[str, Any]:
    """Cost, pre-flight, confirm, send, follow, download, record. Returns ``{"job", "folder", "cost", "preflight",
    "results", "record"}`` (``results`` the node's ``smoke.json``). A pre-flight failure stops it before anything is
    created, unless ``force`` (the risks are said and kept in the smoke job's ``azure.json``)."""
    from ..plan import load_plan
    from . import jobs as J
    from .client import status_text

    plan_path = Path(plan_path)
    sp = plan_smoke(plan_path, prices)
    text = cost_text(sp.cost)
    say(text)
    report = smoke_preflight(plan_path, az, sp, data_uri=data_uri, say=say)
    say(report.describe().replace("`distill azure submit --force`", "`distill azure smoke --force`"))
    risks = report.risks()
    if risks and not force:
        raise AzureError(f"not submitted: the smoke job's pre-flight found {len(risks)} "
                         f"problem{'s' if len(risks) != 1 else ''} (listed above, each with what to do); nothing "
                         "was created. Fix them and run it again, or add --force to accept the risks")
    if risks:
        say("--force: submitting the smoke job despite " + "; ".join(risks))
    preflight = {"ok": report.ok, "forced": bool(risks), "risks_taken": risks, "checked": time.time()}
    if not confirm(text):
        raise NotConfirmed("not submitted: the smoke job's cost was not confirmed (nothing was created); confirm "
                           "with --yes")
    plan = load_plan(plan_path)
    from .job import job_name

    name = job_name(f"smoke-{plan.name}", time.strftime("%Y%m%d-%H%M%S"))
    folder = smoke_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"job": name, "jobs": [name], "run_key": name, "kind": "smoke",
                            "workspace": az.ws.public(), "plan_path": str(plan_path.resolve()),
                            "created": time.time(), "data_uri": data_uri or "", "cost": sp.cost,
                            "preflight": preflight}
    J.write_meta(folder, meta)                    # the name is kept before anything is sent
    J.check_workspace(az, meta)
    spec = build_smoke(plan_path, name, folder / "azure-code", data_uri=data_uri, compute=az.ws.compute,
                       prices=prices, hf_token_secret=az.ws.hf_token_secret,
                       key_vault_uri=meta.get("key_vault", ""))
    for note in spec.notes:
        say(note)
    meta.update({"output": spec.output_uri, "compute": spec.cluster.name, "sku": spec.sku, "nodes": spec.nodes,
                 "gpus_per_node": spec.gpus_per_node, "priority": spec.priority})
    J.write_meta(folder, meta)
    if should_stop():
        raise J.Stopped("stopped before the smoke job was submitted; nothing runs on Azure")
    J.ensure_cluster(az, spec.cluster, say)
    job = J.send(az, spec.job, meta, say)
    meta.update({"submitted": time.time(), "status": status_text(job)})
    J.write_meta(folder, meta)
    say(f"follow it with `distill azure logs {folder} --follow`; cancel with `distill azure cancel {folder}`")
    status = _follow(az, folder, meta, say, interval, wait_s, should_stop)
    results = download_results(az, spec.output_uri, folder)
    if results is None:
        raise AzureError(f"smoke job {name} ended {status} without results ({spec.output_uri}{RESULTS_NAME}); see "
                         f"`distill azure logs {folder}`")
    from ..estimate.smoke_records import add_record

    record = add_record(results, job=name, plan=plan.name, cost_usd=sp.cost.get("usd"))
    meta["ok"] = bool(results.get("ok"))
    J.write_meta(folder, meta)
    return {"job": name, "folder": str(folder), "status": status, "cost": sp.cost, "preflight": preflight,
            "results": results,
            "record": {k: record[k] for k in ("sku", "recorded", "job")}}


RESULTS_NAME = "smoke.json"


def _follow(az, folder: Path, meta: dict[str, Any], say, interval: float, wait_s: float, should_stop) -> str:
    """Poll the job until it ends; a stop request cancels it. Returns its last status."""
    from . import jobs as J
    from .client import status_text

    end = time.monotonic() + wait_s
    last = ""
    cancelled = False
    while True:
        if should_stop() and not cancelled:
            J.cancel(az, folder, say)
            cancelled = True
        found = J.get_job(az, meta["job"])
        if found is None:
            raise AzureError(f"smoke job {meta['job']} is not in workspace {az.ws.workspace} any more")
        status = status_text(found)
        if status != last:
            say(f"smoke job {meta['job']}: {status}")
            last = status
            meta["status"] = status
            J.write_meta(folder, meta)
        if status in J.TERMINAL:
            if status == "Failed" and J.job_error(found):
                say(f"smoke job {meta['job']} failed: {J.job_error(found)}")
            return status
        if time.monotonic() > end:
            raise AzureError(f"smoke job {meta['job']} has not ended within {wait_s / 3600:.1f} h ({status}); it is "
                             f"left to Azure ML (`distill azure status {folder}`, `distill azure cancel {folder}`)")
        time.sleep(interval)


def download_results(az, output_uri: str, folder: Path) -> dict[str, Any] | None:
    """The node's ``smoke.json`` from the job's output folder (None when the job wrote none)."""
    import tempfile

    from azure.ai.ml._artifacts._artifact_utilities import download_artifact_from_aml_uri

    from .client import explain

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        try:
            download_artifact_from_aml_uri(uri=output_uri.rstrip("/") + "/" + RESULTS_NAME, destination=tmp,
                                           datastore_operation=az.ml.datastores)
        except Exception as exc:  # noqa: BLE001
            if "404" in str(exc) or "not found" in str(exc).lower() or "No such" in str(exc):
                return None
            raise explain(exc, f"downloading {output_uri}{RESULTS_NAME}", az.ws) from None
        found = [p for p in Path(tmp).rglob(RESULTS_NAME) if p.is_file()]
        if not found:
            return None
        text = found[0].read_text(encoding="utf-8")
    try:
        results = json.loads(text)
    except ValueError as exc:
        raise AzureError(f"{output_uri}{RESULTS_NAME} is not JSON ({exc})") from None
    (folder / RESULTS_NAME).write_text(text, encoding="utf-8")
    return results


def results_text(results: dict[str, Any]) -> str:
    lines = []
    for c in results.get("checks", []):
        mark = "SKIP" if c.get("ok") is None else "PASS" if c.get("ok") else "FAIL"
        lines.append(f"{mark} {c.get('name')}: {c.get('text')}")
    lines.append("smoke test passed" if results.get("ok") else "smoke test FAILED: a long run on this size would "
                 "fail or run below its estimate; fix what the FAIL lines say before launching")
    return "\n".join(lines)


def cmd_smoke(args) -> int:
    """The CLI: show the cost, ask (or --yes), run, print the results (--json: one JSON document on stdout)."""
    from .cli import _StopSignal, _azure, _say

    def confirm(text: str) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            return False
        answer = input("Submit the smoke job? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    stop = _StopSignal()
    az = _azure()
    out = run_smoke(args.plan, az, confirm=confirm, data_uri=args.data, say=_say, interval=args.interval,
                    should_stop=stop, force=getattr(args, "force", False))
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(results_text(out["results"]))
        print(f"kept for the planner's estimates of {out['results'].get('sku')}; folder: {out['folder']}")
    return 0 if out["results"].get("ok") else 1
