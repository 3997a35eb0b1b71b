"""Watching an Azure run from the desktop: the job's status, its MLflow metrics and its log, written into the local
run folder as a local run writes them (``events.jsonl``, ``logs/console.log``), so the monitor plots an Azure run
unchanged, with the same ETA and cost so far.

``distill azure watch RUN`` runs :class:`Watcher` until the job ends; the app starts it as a detached process
(``distill azure submit --watch``), exactly as it starts a local run, and Stop sends it SIGTERM, which it turns
into a cancel of the job: the engine on the node checkpoints and stops, and the watcher records the end.

- **Metrics** are read over MLflow's REST API at the workspace's tracking URI (``runs/get`` for the run's tags,
  ``metrics/get-history`` per metric), with the workspace's credential, through azure-core (retries on 429 and
  5xx with ``Retry-After``). No MLflow package on the desktop.
- **Logs**: the job's log files (the run history's ``logFiles``, read-only SAS URLs) are tailed with ranged GETs.
- **What is written where**: a cursor per job attempt in ``azure.json`` (tags, last metric and eval step, log
  offset), saved after each poll, so a watcher restarted after the app or the machine went down writes each event
  once.
- **The network gone mid-watch** is a line in the console log and a retry with back-off (up to 5 minutes); the
  job keeps running in Azure meanwhile and nothing is lost: the next successful poll catches up.
- **Preemption** of a low-priority job: resubmitted (``jobs.resubmit``), and the new attempt's events (its
  ``run_started`` carries ``resumed_from_step``) continue the same curves.
"""
from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from ..errors import AzureError
from ..runs.events import EventWriter
from ..runs.mlflow_bridge import from_mlflow
from . import jobs as J
from .client import Azure, explain, status_text

POLL_S = 15.0
MAX_BACKOFF_S = 300.0
CANCEL_GRACE_S = 15 * 60      # after a cancel, how long to wait for the engine's last checkpoint before giving up
LOG_NAMES = re.compile(r"^user_logs/std_log(_process_0+)?\.txt$|^user_logs/std_log_node_0+_process_0+\.txt$")
HISTORY_PAGE = 5000


# the hosts of Azure ML's data plane (public cloud, US Government, China): the workspace's token goes nowhere else
TRACKING_HOSTS = (".api.azureml.ms", ".api.ml.azure.us", ".api.ml.azure.cn")


def _trusted(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "https" and (parts.hostname or "").endswith(TRACKING_HOSTS)


class JobGone(AzureError):
    """The run's job is not in the workspace any more."""


def tracking_base(az: Azure, meta: dict[str, Any]) -> str:
    """The workspace's MLflow REST base (https), looked up once and kept in ``azure.json``. Only an Azure ML host
    is used: a run folder from elsewhere must not send this workspace's token to another host."""
    if meta.get("mlflow") and _trusted(meta["mlflow"]):
        return meta["mlflow"]
    try:
        ws = az.fresh_on_401(az.ml.workspaces.get, az.ws.workspace)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading workspace {az.ws.workspace}", az.ws) from None
    uri = getattr(ws, "mlflow_tracking_uri", "") or ""
    if not uri:
        uri = (f"azureml://{az.ws.region}.api.azureml.ms/mlflow/v1.0{az.ws.arm_id}")
    base = re.sub(r"^azureml://", "https://", uri).rstrip("/")
    if not _trusted(base):
        raise AzureError(f"the workspace's MLflow tracking URI ({base}) is not an Azure ML address")
    meta["mlflow"] = base
    return base


class AlreadyWatched(AzureError):
    """Another process watches this run (the app's watcher, or a `distill azure watch` in another terminal)."""


def _take(run_dir: Path):
    """One watcher per run folder: two would write each event twice."""
    from ..runs.lock import hold

    f, holder = hold(run_dir / ".watch.lock")
    if holder is not None:
        raise AlreadyWatched(f"{run_dir} is already being watched{f' (process {holder})' if holder else ''}; its "
                             "console log and events are up to date")
    return f


class Watcher:
    def __init__(self, run_dir: Path, az: Azure, say: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.run_dir = Path(run_dir)
        self.az = az
        self.meta = J.read_meta(self.run_dir)
        self._lock = _take(self.run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.console = open(self.run_dir / "logs" / "console.log", "a", encoding="utf-8")
        self._say = say
        self.sleep = sleep
        self.events = EventWriter(self.run_dir / "events.jsonl")
        self.stop_requested = False
        self._cancel_sent = 0.0
        self._cancel_next = 0.0       # when to try the cancel again after a failure
        self._log_warned = False
        self._status = ""
        self._pipeline = None
        self._logs_pipeline = None
        from ..plan import load_plan

        try:
            self.plan = load_plan(self.run_dir / "plan.toml").model_dump(mode="json", exclude_none=True)
        except Exception:  # noqa: BLE001 — the plan only decorates run_started
            self.plan = None

    # ---- output ------------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.console.write(text.rstrip("\n") + "\n")
        self.console.flush()
        if self._say is not None:
            self._say(text)

    def _cursor(self) -> dict[str, Any]:
        return self.meta.setdefault("cursor", {}).setdefault(self.meta["job"],
                                                              {"tags": [], "metric": -1, "eval": -1, "log": 0})

    # ---- one poll ----------------------------------------------------------------------------------------------
    def poll(self) -> str | None:
        """Read the job once; returns its end (succeeded | failed | cancelled) or None while it goes on."""
        name = self.meta["job"]
        job = J.get_job(self.az, name)
        if job is None:
            raise JobGone(f"job {name} is not in workspace {self.az.ws.workspace} any more (deleted?)")
        status = status_text(job)
        if status != self._status:
            self._status = status
            self.meta["status"] = status
            self.say(f"job {name}: {status}" + (f" ({self.meta.get('nodes')} × {self.meta.get('sku')})"
                                                  if status in ("Queued", "Preparing") else ""))
        if status not in ("NotStarted", "Queued", "Preparing", "Starting", "Provisioning"):
            self._read_events(name)
            try:
                self._read_logs(name)
            except Exception as exc:  # noqa: BLE001 — the log is a view; the run's end must still be recorded
                if not self._log_warned:
                    self._log_warned = True
                    self.say(f"the job's log could not be read ({type(exc).__name__}: {exc}); the metrics go on")
        end = self._end(job, status) if status in J.TERMINAL else None
        J.write_meta(self.run_dir, self.meta)
        return end

    def _get_json(self, url: str) -> dict[str, Any]:
        from azure.core.rest import HttpRequest

        if self._pipeline is None:
            self._pipeline = self.az.pipeline()

        def get():
            resp = self._pipeline.send_request(HttpRequest("GET", url))
            resp.raise_for_status()
            return resp.json()

        try:
            return self.az.fresh_on_401(get)
        except Exception as exc:  # noqa: BLE001
            raise explain(exc, "reading the run's metrics", self.az.ws) from None

    def _read_events(self, name: str) -> None:
        base = tracking_base(self.az, self.meta)
        run = self._get_json(f"{base}/api/2.0/mlflow/runs/get?run_id={quote(name)}").get("run", {})
        data = run.get("data", {})
        tags = {t["key"]: t["value"] for t in data.get("tags", []) if "key" in t}
        latest = {m["key"]: int(m.get("step", 0)) for m in data.get("metrics", []) if "key" in m}
        cur = self._cursor()
        # A step's metrics are logged in one batch, so every step up to the newest one this snapshot shows is
        # complete; later steps may be half-read by the per-metric fetches below and wait for the next poll.
        upto = {kind: max((step for key, step in latest.items() if key.startswith(prefix)), default=-1)
                for kind, prefix in (("metric", "train/"), ("eval", "eval/"))}
        histories: dict[str, list] = {}
        for key, step in latest.items():
            kind = "metric" if key.startswith("train/") else "eval" if key.startswith("eval/") else None
            if kind is None or step <= cur[kind]:
                continue
            histories[key] = self._history(base, name, key)
        for e in from_mlflow(histories, tags, plan=self.plan, keys=True):
            kind = e["type"]
            if kind in ("metric", "eval"):
                if e["step"] <= cur[kind] or e["step"] > upto[kind]:
                    continue
                cur[kind] = e["step"]
            else:
                key = e.pop("_tag", None) or _event_key(e)
                if key in cur["tags"]:
                    continue
                cur["tags"].append(key)
                e = self._localise(e)
            self.events.write(e)

    def _history(self, base: str, name: str, key: str) -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = []
        token = ""
        for _ in range(1000):
            url = (f"{base}/api/2.0/mlflow/metrics/get-history?run_id={quote(name)}&metric_key={quote(key)}"
                   f"&max_results={HISTORY_PAGE}" + (f"&page_token={quote(token)}" if token else ""))
            doc = self._get_json(url)
            points += doc.get("metrics", [])
            token = doc.get("next_page_token", "")
            if not token:
                break
        return points

    def _localise(self, e: dict[str, Any]) -> dict[str, Any]:
        """The engine's end message speaks of paths on the node; say what to do from here."""
        if e["type"] != "run_finished":
            return e
        run = self.run_dir
        if self.meta.get("stage") == "teacher" and e.get("status") == "succeeded":
            # a split run's first job: the run goes on with its training job
            return {"v": e.get("v", 1), "time": e.get("time"), "type": "log", "level": "info",
                    "message": f"the teacher's pass finished on {self.meta.get('nodes')} × {self.meta.get('sku')}; "
                               "its cache is kept on the datastore for the training job"}
        if e.get("status") == "cancelled":
            e = {**e, "message": f"cancelled at step {e.get('step', 0)}; the last checkpoint is kept on the datastore "
                                 f"(resume with `distill azure resume {run}`)"}
        elif e.get("status") == "succeeded":
            e = {**e, "message": f"student saved to {self.meta.get('output', '')}student "
                                 f"(download with `distill azure download {run}`)"}
        return e

    def _read_logs(self, name: str) -> None:
        cur = self._cursor()
        if self._logs_pipeline is None:
            self._logs_pipeline = self.az.pipeline(signed=False)     # a SAS URL: no bearer token on it
        got = read_log(self.az, name, cur["log"], self._logs_pipeline)
        if got is None:
            return
        data, _ = got
        end = data.rfind(b"\n")
        if end < 0:
            return
        text = data[: end + 1].decode("utf-8", errors="replace")
        self.console.write(text)
        self.console.flush()
        cur["log"] += end + 1

    # ---- the end -----------------------------------------------------------------------------------------------
    def _engine_end(self) -> dict[str, Any] | None:
        from ..runs.events import read_events

        found = [e for e in read_events(self.events.path) if e.get("type") in ("run_started", "run_finished")]
        return found[-1] if found and found[-1]["type"] == "run_finished" else None

    def _remember(self) -> None:
        """What the node measured, for the planner's next estimates of this VM size (``estimate/watched.py``)."""
        from ..estimate.watched import record_from_events

        try:
            base = Path(self.meta.get("plan_path", self.run_dir / "plan.toml")).parent
            if record_from_events(self.run_dir, base) is not None:
                self.say("the run's measured speed is kept for the planner's next estimates")
        except Exception as exc:  # noqa: BLE001 — never a reason to fail the watch
            self.say(f"the run's measurements could not be kept ({type(exc).__name__}: {exc})")

    def _end(self, job, status: str) -> str | None:
        recorded = self._engine_end()
        if recorded is not None and recorded.get("measured"):
            self._remember()
        if status == "Completed" and self.meta.get("stage") == "teacher" and not self.stop_requested:
            J.write_meta(self.run_dir, self.meta)
            J.start_student_stage(self.az, self.run_dir, self.say)
            self.meta = J.read_meta(self.run_dir)
            self._status = ""
            return None
        if status == "Completed":
            if recorded is None:
                self.events.emit("run_finished", status="succeeded", step=self._last_step(),
                                 message=f"job {self.meta['job']} completed; student in {self.meta.get('output', '')}")
            self._download()
            return "succeeded"
        if status == "Canceled":
            if recorded is None:
                self.events.emit("run_finished", status="cancelled", step=self._last_step(),
                                 message=f"job {self.meta['job']} was cancelled; resume with "
                                         f"`distill azure resume {self.run_dir}`")
            return "cancelled"
        # Failed or NotResponding
        if (J.preempted(job) and self.meta.get("priority") == "low-priority" and not self.stop_requested
                and len(self.meta.get("jobs", [])) < J.MAX_ATTEMPTS):
            self.say(f"job {self.meta['job']}: its low-priority node was preempted")
            self.events.emit("log", level="warning", message="the low-priority node was preempted; the run is "
                                                            "submitted again and continues from its last checkpoint")
            J.write_meta(self.run_dir, self.meta)
            J.resubmit(self.az, self.run_dir, self.say, why="preempted", automatic=True)
            self.meta = J.read_meta(self.run_dir)
            self._status = ""
            return None
        if recorded is None or recorded.get("status") != "failed":
            why = J.job_error(job) or f"the job ended {status}"
            self.events.emit("run_finished", status="failed", step=self._last_step(),
                             message=f"job {self.meta['job']} failed: {why}; the last checkpoint is kept on the "
                                     f"datastore (resume with `distill azure resume {self.run_dir}`)")
        return "failed"

    def _last_step(self) -> int:
        return max(self._cursor()["metric"], 0)

    def _download(self) -> None:
        if (self.run_dir / "student").exists():
            return
        try:
            J.download(self.az, self.run_dir, self.say)
        except AzureError as exc:
            self.say(f"the student could not be downloaded yet ({exc}); `distill azure download {self.run_dir}`")

    # ---- the loop ----------------------------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self.stop_requested = True

    def run(self, interval: float = POLL_S) -> int:
        """Poll until the job ends; returns 0 (succeeded), 1 (failed) or 130 (cancelled)."""
        import threading

        main = threading.current_thread() is threading.main_thread()    # signals reach the main thread only
        previous = signal.signal(signal.SIGTERM, self.request_stop) if main else None
        backoff, cancel_backoff = interval, interval
        try:
            while True:
                if self._cancel_due():
                    try:
                        J.write_meta(self.run_dir, self.meta)
                        J.cancel(self.az, self.run_dir, self.say)
                        self._cancel_sent = self.meta["cancel_requested"] = time.time()
                    except AzureError as exc:
                        self.say(f"could not cancel yet: {exc}; trying again in {cancel_backoff:.0f} s")
                        self._cancel_next = time.time() + cancel_backoff
                        cancel_backoff = min(MAX_BACKOFF_S, cancel_backoff * 2)
                failed = False
                try:
                    end = self.poll()
                    backoff = interval
                except JobGone as exc:
                    self.say(str(exc))
                    if self._engine_end() is None:
                        self.events.emit("run_finished", status="failed", step=self._last_step(), message=str(exc))
                    return 1
                except AzureError as exc:
                    self.say(f"{exc}; trying again in {backoff:.0f} s (the job goes on in Azure)")
                    J.write_meta(self.run_dir, self.meta)
                    end, failed = None, True
                if end is not None:
                    return {"succeeded": 0, "cancelled": 130}.get(end, 1)
                if self._cancel_sent and time.time() - self._cancel_sent > CANCEL_GRACE_S:
                    self.say("the job did not end within 15 minutes of the cancel; it is left to Azure ML")
                    return 130
                self._wait(backoff if failed else interval)
                if failed:
                    backoff = min(MAX_BACKOFF_S, backoff * 2)
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
            self.close()

    def _cancel_due(self) -> bool:
        if not self.stop_requested:
            from ..runs.process import stop_file

            if stop_file(self.run_dir).exists():     # the app's portable stop request (never unsets a signal's)
                self.stop_requested = True
        return self.stop_requested and not self._cancel_sent and time.time() >= self._cancel_next

    def _wait(self, seconds: float) -> None:
        """Sleep, waking early when a stop comes in (its cancel is sent at once)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._cancel_due():
            self.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        self.events.close()
        self.console.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def log_url(az: Azure, name: str) -> str | None:
    """The read-only (SAS) URL of the job's main log file, or None while the job has none."""
    try:
        details = az.fresh_on_401(az.ml.jobs._runs_operations.get_run_details, name)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, "reading the job's log", az.ws) from None
    files = getattr(details, "log_files", None) or {}
    names = sorted(k for k in files if LOG_NAMES.match(k))
    return files[names[0]] if names else None


def read_log(az: Azure, name: str, offset: int = 0, pipeline=None) -> tuple[bytes, str] | None:
    """The job's log from byte ``offset`` on (one ranged GET), and its URL; None while it has no log or nothing
    new. Writes nothing anywhere."""
    from azure.core.rest import HttpRequest

    url = log_url(az, name)
    if url is None:
        return None
    pipeline = pipeline if pipeline is not None else az.pipeline(signed=False)
    try:
        resp = pipeline.send_request(HttpRequest("GET", url, headers={"Range": f"bytes={offset}-"}))
        if resp.status_code == 416:
            return None
        resp.raise_for_status()
        data = resp.read()
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, "reading the job's log", az.ws) from None
    if resp.status_code == 200:        # the whole file: skip what was read already
        data = data[offset:]
    return data, url


def _event_key(e: dict[str, Any]) -> str:
    return f"{e.get('type')}:{e.get('time')}:{e.get('step', '')}"
