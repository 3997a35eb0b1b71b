"""The runs the app knows of, kept across restarts, and the local training processes behind them.

A run is launched with ``QProcess.startDetached`` as ``python -m distill_studio.engine.cli run PLAN --run-dir D``:
a separate process in its own session, which outlives the app. Closing the app therefore never stops training,
and on the next start the run is found again by its folder and process id and watched as before. Everything the
monitor shows comes from the run folder (``events.jsonl``, ``logs/console.log``), never from the process's pipes.

Cancel asks first (SIGTERM to the process group: the engine checkpoints and exits 130) and forces (SIGKILL) only
after a timeout; a run stopped either way can be resumed from its last checkpoint.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...engine.runs import process as _process

from ...engine.catalog.prices import data_dir

CONSOLE_LOG = "logs/console.log"


@dataclass
class RunRecord:
    run_dir: str
    name: str
    plan_path: str = ""
    pid: int = 0                  # the launched process (0: not launched from here, e.g. opened from disk)
    launched_at: float = field(default_factory=time.time)
    target: str = "local"
    resumed_at: float = 0.0       # when this app last resumed it (its old end event is then not its state)

    @property
    def events_path(self) -> Path:
        return Path(self.run_dir) / "events.jsonl"

    @property
    def console_path(self) -> Path:
        return Path(self.run_dir) / CONSOLE_LOG


def store_path() -> Path:
    return data_dir() / "gui" / "runs.json"


class RunStore:
    """The runs list: a JSON file in the user data folder, rewritten atomically on every change."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or store_path()
        self.records: list[RunRecord] = []
        self.warning = ""
        self.load()

    def load(self) -> None:
        self.records = []
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("runs", []), list):
                raise ValueError("expected an object with a list of runs")
            for row in doc.get("runs", []):
                self.records.append(RunRecord(**{k: row[k] for k in RunRecord.__dataclass_fields__ if k in row}))
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            self.warning = f"the runs list {self.path} could not be read ({exc}); it starts empty, the file is kept"
            try:
                self.path.replace(self.path.with_suffix(".json.bad"))
            except OSError:
                pass

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"version": 1, "runs": [asdict(r) for r in self.records]}, indent=2) + "\n",
                       encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, record: RunRecord) -> RunRecord:
        self.load()     # read again first: another window of the app may have added a run since
        key = str(Path(record.run_dir).resolve())
        self.records = [r for r in self.records if str(Path(r.run_dir).resolve()) != key]
        self.records.insert(0, record)
        self.save()
        return record

    def remove(self, run_dir: str) -> None:
        self.load()
        self.records = [r for r in self.records if r.run_dir != run_dir]
        self.save()

    def update(self, run_dir: str, **fields) -> RunRecord | None:
        """Change one run's fields (e.g. the process id of a resumed run), re-reading the file first."""
        self.load()
        r = self.find(run_dir)
        if r is not None:
            for k, v in fields.items():
                setattr(r, k, v)
            self.save()
        return r

    def find(self, run_dir: str) -> RunRecord | None:
        return next((r for r in self.records if r.run_dir == run_dir), None)


def record_from_folder(run_dir: str | Path) -> RunRecord:
    """A run folder from disk (a CLI run, or one from another machine) as a record; raises ValueError if it is not
    a run folder."""
    d = Path(run_dir)
    if not (d / "plan.toml").is_file():
        raise ValueError(f"{d} is not a run folder: it has no plan.toml (a run folder holds plan.toml and "
                         "events.jsonl, as `distill run` writes them)")
    name = d.name
    try:
        from ...engine.plan import load_plan

        name = load_plan(d / "plan.toml").name
    except Exception:  # noqa: BLE001 - the folder name is a fine label for a plan that no longer loads
        pass
    return RunRecord(run_dir=str(d.resolve()), name=name, plan_path=str(d / "plan.toml"), pid=0,
                     target="azure" if (d / "azure.json").is_file() else "local")


# ---- processes ------------------------------------------------------------------------------------------------

def engine_command() -> list[str]:
    """How the app starts the `distill` command: ``python -m distill_studio.engine.cli`` from a Python
    installation; in the packaged app, its second executable, ``distill`` (a console program on Windows too)."""
    if getattr(sys, "frozen", False):
        exe = Path(sys.executable).with_name("distill" + (".exe" if sys.platform == "win32" else ""))
        return [str(exe)]
    return [sys.executable, "-m", "distill_studio.engine.cli"]


def run_command(plan_path: str | None, run_dir: str, resume: bool = False, processes: int = 1,
                target: str = "local", extra: list[str] | None = None) -> list[str]:
    """The command a run's process runs; ``extra``: a new run's options the launch confirmed (``--force``,
    ``--usd-per-hour``, ``--stop-at``)."""
    more = [] if resume else list(extra or [])
    if target == "azure":
        # the process submits the job (or a new attempt) and then watches it, writing the run folder as a local
        # run does; SIGTERM (Stop) makes it cancel the job
        cmd = [*engine_command(), "azure"]
        return cmd + (["resume", run_dir, "--watch"] if resume else
                      ["submit", plan_path or "", "--run-dir", run_dir, "--watch", *more])
    cmd = [*engine_command(), "run"]
    cmd += ["--resume", run_dir] if resume else [plan_path or "", "--run-dir", run_dir, *more]
    return cmd + (["--processes", str(processes)] if processes > 1 else [])


def processes_for(plan_path: str) -> int:
    """Processes a local plan runs with: one per GPU of this machine as the plan states it (``hardware.gpus``).
    The engine resolves everything else (teacher mode, sharding) exactly as the planner did and refuses a launch
    that does not match the plan. A plan that cannot be read runs with one process and says why there."""
    from ...engine.errors import DistillError
    from ...engine.plan import load_plan

    try:
        hw = load_plan(plan_path).hardware
    except DistillError:
        return 1
    return hw.gpus if hw.target == "local" else 1


def launch(plan_path: str | None, run_dir: str, resume: bool = False, target: str = "local",
           extra: list[str] | None = None) -> int:
    """Start ``distill run`` (an Azure plan: ``distill azure submit --watch``) detached (``QProcess.startDetached``:
    its own session, it outlives the app), its output appended to the run's console log; returns the process id.
    Raises RuntimeError if it could not start."""
    from PySide6.QtCore import QProcess

    Path(run_dir, "logs").mkdir(parents=True, exist_ok=True)
    console = str(Path(run_dir) / CONSOLE_LOG)
    plan_file = str(Path(run_dir) / "plan.toml") if resume else plan_path
    processes = processes_for(plan_file) if plan_file and Path(plan_file).is_file() and target == "local" else 1
    cmd = run_command(plan_path, run_dir, resume, processes, target, extra)
    workdir = str(Path(plan_path).parent if plan_path and not resume else run_dir)
    if sys.platform == "win32":
        return _launch_windows(cmd, console, workdir)
    args = ["-m", "distill_studio.gui.monitor.logged_exec", console, "--", *cmd]
    ok, pid = QProcess.startDetached(sys.executable, args, workdir)
    if not ok or not pid:
        raise RuntimeError(f"could not start `{' '.join(cmd[2:5])}` with {sys.executable}")
    return int(pid)


def _launch_windows(cmd: list[str], console: str, workdir: str) -> int:
    """Windows has no exec (logged_exec would start a second process with another id): the run is started directly,
    its output into the console log, in a new process group without a console window, so it outlives the app."""
    import subprocess

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(console, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
                                env=env, **_process.detached_popen_kwargs("win32"))
    return int(proc.pid)


def is_alive(pid: int, run_dir: str | None = None) -> bool:
    """Is process ``pid`` running, and is it this run's (not a reused process id)? (engine/runs/process.py)"""
    return _process.is_alive(pid, run_dir)


def send_stop(pid: int, force: bool = False, run_dir: str | None = None) -> bool:
    """Ask the run to checkpoint and stop: its stop file (every platform) and, on Unix, SIGTERM to its process group
    (a multi-process run is reached as a whole); ``force``: SIGKILL (Windows: the process tree is terminated).
    Returns False if the process was gone."""
    return _process.send_stop(pid, run_dir, force=force)


# Runs asked to stop, by process id: when to force them. Kept here, not in a widget, so switching the monitor to
# another run does not drop a pending force.
_FORCE_AT: dict[int, tuple[float, str]] = {}


def schedule_force(pid: int, run_dir: str, after_s: float) -> None:
    _FORCE_AT[pid] = (time.time() + after_s, run_dir)


def force_overdue(now: float | None = None) -> list[int]:
    """SIGKILL every run that was asked to stop and is still alive past its deadline; returns their ids."""
    now = time.time() if now is None else now
    forced = []
    for pid, (deadline, run_dir) in list(_FORCE_AT.items()):
        if not is_alive(pid, run_dir):
            del _FORCE_AT[pid]
        elif now >= deadline:
            send_stop(pid, force=True, run_dir=run_dir)
            del _FORCE_AT[pid]
            forced.append(pid)
    return forced


