"""``distill azure …``: submit, export, watch, status, logs, cancel, resume and download Azure ML runs, and check
capacity and quota. Every failure is one message (an :class:`AzureError`), never a traceback."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import AzureError


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _echo():
    """What the watcher echoes to: the terminal; nothing when the output already goes to the run's console log
    (the app starts the watcher with its output there, and the watcher writes that log itself)."""
    return _say if sys.stderr.isatty() else None


def _azure(run_dir: Path | None = None):
    """The clients for the settings' workspace (or the run's own workspace, signed in as the settings say)."""
    from .client import Azure, workspace_from_settings
    from .jobs import read_meta, workspace_of

    ws = workspace_from_settings()
    if run_dir is not None:
        ws = workspace_of(read_meta(run_dir), ws)
    return Azure(ws)


def _run_dir(plan_name: str) -> Path:
    from ..runs.folders import default_run_dir

    return default_run_dir(plan_name)


class _StopSignal:
    """SIGTERM (the app's Stop) while a submission is under way: remembered, so nothing is sent after it, and a job
    already sent is cancelled by the watcher."""

    def __init__(self, run_dir: Path | None = None) -> None:
        import signal
        import threading

        self.asked = False
        self.run_dir = run_dir
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_):
        self.asked = True

    def __call__(self) -> bool:
        if not self.asked and self.run_dir is not None:
            from ..runs.process import stop_file

            if stop_file(self.run_dir).exists():     # the app's portable stop request (never unsets SIGTERM's)
                self.asked = True
        return self.asked


def _watch_after(run_dir: Path, az, stop: _StopSignal, interval: float) -> int:
    from .watch import Watcher

    w = Watcher(run_dir, az, say=_echo())
    w.stop_requested = stop.asked       # a Stop during the submission: cancel at once
    return w.run(interval)


def _stopped(run_dir: Path, exc) -> int:
    """Stop came before the job was sent: the run ends here, cancelled, with nothing running on Azure."""
    from ..runs.events import EventWriter

    _say(str(exc))
    with EventWriter(Path(run_dir) / "events.jsonl") as events:
        events.emit("run_finished", status="cancelled", step=0, message=str(exc))
    return 130


def cmd_submit(args) -> int:
    from ..plan import load_plan
    from .jobs import Stopped, submit

    plan = load_plan(args.plan)
    run_dir = args.run_dir or _run_dir(plan.name)
    stop = _StopSignal(Path(run_dir))
    new = not (Path(run_dir) / "azure.json").exists()
    # a new run: the planner's word on it first (no Azure needed), then pre-flight, before anything is created
    record = _budget_before_submit(args, plan) if new else None
    az = _azure()
    if new:
        record.update(_preflight_before_submit(args, az))
    print(f"run folder: {run_dir}", file=sys.stderr, flush=True)
    try:
        submit(args.plan, run_dir, az, data_uri=args.data, say=_say, should_stop=stop, record=record,
               usd_per_hour=args.usd_per_hour, stop_at=args.stop_at)
    except Stopped as exc:
        return _stopped(run_dir, exc)
    if args.watch:
        return _watch_after(run_dir, az, stop, args.interval)
    print(f"watch it with `distill azure watch {run_dir}`", file=sys.stderr)
    return 0


def _budget_before_submit(args, plan) -> dict:
    """The planner's word on the run about to be paid for: an option with no known price is never submitted without
    --usd-per-hour; one the planner does not stand behind (no recommendation, a missed deadline or cap at the plan's
    confidence) only with --force. Returns what ``azure.json`` records of it."""
    from ..planner import check_launch_risks, resolve_run

    if args.usd_per_hour is not None and not 0 < args.usd_per_hour <= 10_000:
        raise AzureError(f"--usd-per-hour: {args.usd_per_hour:g} is not a price per node-hour; give one between "
                         "0 and 10,000 US$")
    from ..plan import with_stop_at

    plan = with_stop_at(plan, args.stop_at)
    resolved = resolve_run(plan, Path(args.plan).resolve().parent, usd_per_hour=args.usd_per_hour)
    if resolved.unpriced:
        raise AzureError(f"not submitted: {resolved.risks[-1]}. Find the price per node-hour of "
                         f"{resolved.plan.hardware.sku} ({resolved.plan.hardware.priority}) on Azure's pricing page "
                         "and submit with --usd-per-hour PRICE, or choose a size the price table has "
                         "(distill prices show)")
    check_launch_risks(resolved, args.force, "distill azure submit")
    est = resolved.estimate
    return {"planned": {"why": resolved.why, "recommended": resolved.recommended, "risks_taken": resolved.risks,
                        "range": est.get("range"), "price": est.get("price"),
                        **({"usd_per_hour_confirmed": args.usd_per_hour} if args.usd_per_hour is not None else {})}}


def _preflight_before_submit(args, az) -> dict:
    """Pre-flight (``preflight.py``): its findings are printed; a failure stops the submission unless ``--force``,
    which names the risks taken. Returns what the run's ``azure.json`` records of it."""
    from .preflight import run_preflight

    report = run_preflight(args.plan, az, data_uri=args.data, say=_say)
    _say(report.describe())
    risks = report.risks()
    if risks and not args.force:
        raise AzureError(f"not submitted: pre-flight found {len(risks)} problem{'s' if len(risks) != 1 else ''} "
                         "(listed above, each with what to do); nothing was created or uploaded. Fix them and "
                         "submit again, or submit with --force to accept the risks")
    if risks:
        _say("--force: submitting despite " + "; ".join(risks))
    return {"preflight": {"ok": report.ok, "forced": bool(risks), "risks_taken": risks, "checked": time.time()}}


def cmd_preflight(args) -> int:
    from .preflight import cmd_preflight as run

    return run(args)


def cmd_export(args) -> int:
    from .job import export

    secret = ""
    if args.key_vault_uri:
        from ..settings import load_settings

        secret = load_settings()[0].azure.hf_token_secret
        if not secret:
            raise AzureError("--key-vault-uri: no Hugging Face token secret is named in Settings › Azure")
    written = export(args.plan, args.out, data_uri=args.data, hf_token_secret=secret,
                     key_vault_uri=args.key_vault_uri or "")
    for spec, _, _ in written:
        for note in spec.notes:
            _say(note)
    for spec, job_file, cluster_file in written:
        print(f"job: {job_file} (code in {job_file.with_name(job_file.stem + '.code')})")
        print(f"cluster: {cluster_file}")
        print(f"submit with: az ml compute create -f {cluster_file} && az ml job create -f {job_file}")
    return 0


def cmd_watch(args) -> int:
    from ..runs.process import clear_stop_file

    clear_stop_file(args.run)            # a new watcher: an old stop request must not cancel a running job
    return _watch_after(args.run, _azure(args.run), _StopSignal(Path(args.run)), args.interval)


def cmd_status(args) -> int:
    from .jobs import status

    info = status(_azure(args.run), args.run)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['job']}: {info['status']} (attempt {info['attempt']}, {info['nodes']} × {info['sku']} on "
          f"{info['compute']})")
    if info["error"]:
        print(f"error: {info['error']}")
    if info["studio_url"]:
        print(info["studio_url"])
    return 0


def cmd_logs(args) -> int:
    """The job's log as far as it is written, read from Azure ML; --follow keeps printing it until the job ends.
    It only reads: nothing is written into the run folder (the watcher keeps the run's own copy), and a failed read
    is one message, not retried in a loop."""
    import codecs

    from .client import status_text
    from .jobs import TERMINAL, get_job, read_meta
    from .watch import read_log

    meta = read_meta(args.run)
    name = meta["job"]
    az = _azure(args.run)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    while True:
        job = get_job(az, name)
        if job is None:
            raise AzureError(f"job {name} of {args.run} is not in workspace {az.ws.workspace} (deleted, or another "
                             "workspace: check Settings › Azure)")
        status = status_text(job)
        got = read_log(az, name, offset, az.pipeline(signed=False, retries=False))
        if got is not None:
            data, _ = got
            offset += len(data)
            sys.stdout.write(decoder.decode(data))
            sys.stdout.flush()
        elif offset == 0 and not args.follow:
            _say(f"job {name} is {status}; it has no log yet")
        if status in TERMINAL or not args.follow:
            return 0
        time.sleep(args.interval)


def cmd_cancel(args) -> int:
    from .jobs import cancel

    cancel(_azure(args.run), args.run, _say)
    print("the engine checkpoints and stops; `distill azure status` shows when it has", file=sys.stderr)
    return 0


def cmd_resume(args) -> int:
    """Continue a stopped run: watch its job if it is still going (or has completed: its end and student are
    recorded), submit it again if it failed or was cancelled; the engine continues from its last checkpoint."""
    from .client import status_text
    from .jobs import Stopped, get_job, read_meta, resubmit

    from ..runs.process import clear_stop_file

    clear_stop_file(args.run)            # the stop asked of the attempt before is not for this one
    stop = _StopSignal(Path(args.run))
    az = _azure(args.run)
    meta = read_meta(args.run)
    job = get_job(az, meta["job"])
    status = status_text(job) if job is not None else ""
    if status and status not in ("Failed", "Canceled"):
        _say(f"job {meta['job']} is {status}; watching it" + (" (nothing to resume)" if status == "Completed" else ""))
    else:
        try:
            resubmit(az, args.run, _say, why="resumed", should_stop=stop)
        except Stopped as exc:
            return _stopped(args.run, exc)
    if args.watch:
        return _watch_after(args.run, az, stop, args.interval)
    return 0


def cmd_download(args) -> int:
    from .jobs import download

    download(_azure(args.run), args.run, _say)
    return 0


def cmd_list(args) -> int:
    """The workspace's Distill Studio jobs, newest first."""
    from .client import explain, status_text

    az = _azure()
    try:
        jobs = [j for j in az.ml.jobs.list() if (getattr(j, "tags", None) or {}).get("distill-studio")]
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, "listing jobs", az.ws) from None
    if not jobs:
        print(f"no Distill Studio jobs in workspace {az.ws.workspace}")
    for j in jobs:
        tags = j.tags or {}
        print(f"{j.name:<60} {status_text(j):<16} {tags.get('plan', '')}")
    return 0


def cmd_capacity(args) -> int:
    from . import capacity

    return capacity.cmd_capacity(args)


def cmd_rehearse(args) -> int:
    from .rehearse import cmd_rehearse as run

    return run(args)


def cmd_smoke(args) -> int:
    from .smoke import cmd_smoke as run

    return run(args)


def cmd_stage_models(args) -> int:
    from .models import cmd_stage_models as run

    return run(args)


def add_parser(sub) -> None:
    az = sub.add_parser("azure", help="run plans on Azure Machine Learning")
    asub = az.add_subparsers(dest="azure_command", required=True)

    s = asub.add_parser("submit", help="submit a plan as an Azure ML job")
    s.add_argument("plan", type=Path)
    s.add_argument("--run-dir", type=Path, help="local folder of the run (default: a new one in the user data folder)")
    s.add_argument("--data", metavar="URI", help="training data on a datastore (azureml://...), instead of data.train")
    s.add_argument("--watch", action="store_true", help="then watch it until it ends (what the app does)")
    s.add_argument("--force", action="store_true",
                   help="submit even when pre-flight finds a problem, the planner recommends no option, or the run "
                        "misses the plan's deadline or cost cap (the risks are printed and recorded)")
    s.add_argument("--usd-per-hour", type=float, metavar="PRICE",
                   help="the price per node-hour of a VM size the region's price table has none for: the run is "
                        "priced with it (required for such a size, --force or not)")
    s.add_argument("--stop-at", choices=["deadline", "cap", "either"],
                   help="the job stops by itself (a checkpoint saved) at the plan's deadline, its cost cap, or either")
    s.add_argument("--interval", type=float, default=15.0, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_submit)

    pf = asub.add_parser("preflight", help="check permissions, quota, data, a gated model's token and the image "
                                           "before submitting (reads only)")
    pf.add_argument("plan", type=Path)
    pf.add_argument("--data", metavar="URI", help="training data on a datastore (azureml://...), instead of data.train")
    pf.add_argument("--create-cluster", action="store_true",
                    help="create the plan's compute cluster (0 nodes when idle) so its identity can be given the "
                         "Key Vault role before the first job")
    pf.add_argument("--json", action="store_true")
    pf.set_defaults(func=cmd_preflight)

    e = asub.add_parser("export", help="write the job as YAML for `az ml job create -f`")
    e.add_argument("plan", type=Path)
    e.add_argument("--out", type=Path, required=True, help="job file to write (.yaml)")
    e.add_argument("--data", metavar="URI", help="training data on a datastore (azureml://...)")
    e.add_argument("--key-vault-uri", metavar="URI",
                   help="the workspace's Key Vault: the job reads the Hugging Face token secret named in Settings "
                        "› Azure from it")
    e.set_defaults(func=cmd_export)

    for name, func, what in (("watch", cmd_watch, "follow a run until it ends, writing its events locally"),
                             ("status", cmd_status, "the job's status"),
                             ("logs", cmd_logs, "the job's log"),
                             ("cancel", cmd_cancel, "cancel the job (the engine checkpoints first)"),
                             ("resume", cmd_resume, "submit a stopped run again; it continues from its checkpoint"),
                             ("download", cmd_download, "download the student into the run folder")):
        p = asub.add_parser(name, help=what)
        p.add_argument("run", type=Path, metavar="RUN_DIR", help="the run's local folder")
        p.add_argument("--interval", type=float, default=15.0, help=argparse.SUPPRESS)
        if name == "status":
            p.add_argument("--json", action="store_true")
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true")
        if name == "resume":
            p.add_argument("--watch", action="store_true")
        p.set_defaults(func=func)

    li = asub.add_parser("list", help="the workspace's Distill Studio jobs")
    li.set_defaults(func=cmd_list)

    c = asub.add_parser("capacity", help="VM sizes offered and quota left in a region (cached)")
    c.add_argument("--region", help="default: the region in Settings › Azure")
    c.add_argument("--refresh", action="store_true", help="sign in and check again")
    c.set_defaults(func=cmd_capacity)

    r = asub.add_parser("rehearse", help="run the plan's exact job on this machine as an Azure ML node would "
                                         "(staged code, the job's environment in a venv, CPU processes for GPUs)")
    r.add_argument("plan", type=Path)
    r.add_argument("--processes", type=int, metavar="N",
                   help="processes per node (default: one per GPU of the job's VM size)")
    r.add_argument("--kill-during-checkpoint", action="store_true",
                   help="stop the node with SIGKILL while a checkpoint is copied to the output, then start the job "
                        "again: it must continue from the last complete checkpoint")
    r.add_argument("--dir", type=Path, help="folder of the rehearsal (default: a new one under the runs folder)")
    r.add_argument("--timeout", type=float, default=3600.0, help=argparse.SUPPRESS)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_rehearse)

    sm = asub.add_parser("smoke", help="a short job (about 10 min) on the plan's VM size: CUDA, NCCL bandwidth, the "
                                       "Hugging Face token, storage speed; costed and confirmed first")
    sm.add_argument("plan", type=Path)
    sm.add_argument("--yes", action="store_true", help="submit without asking (the cost is still printed)")
    sm.add_argument("--data", metavar="URI", help="training data on a datastore (azureml://...), instead of data.train")
    sm.add_argument("--force", action="store_true", help="submit even if its pre-flight (permission, quota, data, "
                                                         "token) finds a problem; the risks are named")
    sm.add_argument("--json", action="store_true", help="print the results as one JSON document")
    sm.add_argument("--interval", type=float, default=15.0, help=argparse.SUPPRESS)
    sm.set_defaults(func=cmd_smoke)

    st = asub.add_parser("stage-models", help="copy the plan's Hugging Face models into the workspace's storage once "
                                              "(model assets): every job's nodes then read them from there")
    st.add_argument("plan", type=Path)
    st.add_argument("--no-wait", action="store_true",
                    help="submit the staging jobs and return; run the command again to register them once done")
    st.add_argument("--json", action="store_true")
    st.add_argument("--interval", type=float, default=30.0, help=argparse.SUPPRESS)
    st.set_defaults(func=cmd_stage_models)


__all__ = ["add_parser", "AzureError"]
