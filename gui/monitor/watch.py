"""Reading one run folder as it grows: new events digested into chart points, new console lines, and whether the
process still lives. ``Watch.poll`` runs on a worker thread (never two at once for one watch); it returns plain
data that the monitor applies on the GUI thread."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ...engine.runs.events import EventReader
from .digest import Batch, RunState
from .runs import RunRecord, is_alive

MAX_LOG_BYTES = 256 * 1024
RECENT_S = 120     # a run opened from disk whose events changed this recently is taken to be training elsewhere  # per poll: a huge console log is caught up over a few polls, never in one freeze


@dataclass
class Snapshot:
    status: str  # waiting starting running stopping succeeded failed cancelled stopped elsewhere missing
    step: int
    total_steps: int
    fraction: float
    eta_seconds: float | None
    elapsed_seconds: float
    tokens_per_second: float
    seconds_per_step: float | None
    message: str
    last_checkpoint: int | None
    alive: bool
    latest: dict[str, float]
    device: str
    remote: str = ""            # an Azure run: the job's status as its watcher last read it ("Queued", ...)
    eta_range: tuple[float, float] | None = None   # P10-P90 of the remaining time
    planned: dict | None = None  # the planner's estimate the run started with (run_started's "estimate")


class Watch:
    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.reader = EventReader(record.events_path)
        self.state = RunState()
        self._log_offset = 0

    def poll(self) -> tuple[Batch, Snapshot]:
        before = self.reader.restarted
        events = self.reader.read_new()
        if self.reader.restarted != before:     # the file was replaced: start the curves again
            self.state = RunState()
            batch = self.state.feed(events)
            batch.truncate_to = -1
        else:
            batch = self.state.feed(events)
        console = self._read_console()
        # the console holds everything the run prints, its log messages included; log events are shown only for
        # a run without a console log (started elsewhere)
        if console or self.record.console_path.exists():
            batch.logs = console
        return batch, self.snapshot()

    def _read_console(self) -> list[str]:
        path = self.record.console_path
        try:
            size = path.stat().st_size
        except OSError:
            return []
        if size < self._log_offset:
            self._log_offset = 0
        if size == self._log_offset:
            return []
        with open(path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read(MAX_LOG_BYTES)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) < MAX_LOG_BYTES:
                return []           # a line still being written
            end = max(data.rfind(b"\r"), len(data) - 1)   # a full chunk without a newline: take it anyway
        self._log_offset += end + 1
        text = data[: end + 1].decode("utf-8", errors="replace")
        # progress lines rewrite themselves with \r on a terminal; keep only the last state of each line
        return [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()]

    def snapshot(self) -> Snapshot:
        s = self.state
        alive = is_alive(self.record.pid, self.record.run_dir)
        elsewhere = False
        if self.record.pid <= 0 and s.status == "running":
            # opened from disk: no process id to check. Events written lately mean it is training somewhere else;
            # it must not be resumed (two trainers in one folder) nor can it be stopped from here.
            try:
                elsewhere = time.time() - self.record.events_path.stat().st_mtime < RECENT_S
            except OSError:
                elsewhere = False
        status = s.status
        if elsewhere:
            status = "elsewhere"
        elif status == "running" and not alive:
            status = "stopped"          # killed or crashed without a last event: resumable from its checkpoint
        elif status == "waiting":
            status = "starting" if alive else ("stopped" if Path(self.record.run_dir).exists() else "missing")
        elif status in ("succeeded", "failed", "cancelled") and alive:
            resumed = self.record.resumed_at and (s.finished_at or 0) < self.record.resumed_at
            # resumed here after that end: starting again, not stopping; else the process is saving and exiting
            status = "resuming" if resumed else "stopping"
        elif status == "running" and alive and s.total_steps and s.step >= s.total_steps:
            status = "finishing"        # the last step is done: the final evaluation and the student's save
        return Snapshot(remote=self._remote_status(), status=status, step=s.step, total_steps=s.total_steps,
                        fraction=s.fraction_done(),
                        eta_seconds=s.eta_seconds() if status in ("running", "elsewhere") else None,
                        eta_range=s.eta_range() if status in ("running", "elsewhere") else None,
                        elapsed_seconds=self._elapsed(s, status, alive),
                        tokens_per_second=s.tokens_per_second,
                        seconds_per_step=s.seconds_per_step(), message=s.message, last_checkpoint=s.last_checkpoint,
                        alive=alive, latest=dict(s.latest), device=s.device, planned=s.estimate)


    def _elapsed(self, s, status: str, alive: bool) -> float:
        """Training time from the events; while a launched run loads (no step yet), the time since its launch, so
        "elapsed" moves from the first second."""
        if alive and status in ("starting", "resuming"):
            since = self.record.resumed_at or self.record.launched_at
            if since:
                return s.elapsed_seconds(None) + max(0.0, time.time() - since)
        return s.elapsed_seconds(time.time() if alive else None)

    def _remote_status(self) -> str:
        if self.record.target != "azure":
            return ""
        import json

        try:
            return str(json.loads((Path(self.record.run_dir) / "azure.json").read_text()).get("status", ""))
        except (OSError, ValueError, AttributeError):
            return ""


def read_whole(record: RunRecord) -> Batch:
    """Every point of a run at once (for comparing runs), resumes folded."""
    w = Watch(record)
    batch = w.state.feed(w.reader.read_new())
    return batch


def quick_status(record: RunRecord) -> str:
    """A run's status for the runs list without reading the whole file: the last 8 KiB of events."""
    path = record.events_path
    alive = is_alive(record.pid, record.run_dir)
    try:
        size = path.stat().st_size
    except OSError:
        return "starting" if alive else "no events"
    import json

    with open(path, "rb") as f:
        f.seek(max(0, size - 8192))
        tail = f.read().splitlines()
    for line in reversed(tail):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("type") == "run_finished":
            return str(e.get("status", "finished"))
        if isinstance(e, dict) and isinstance(e.get("step"), int):
            return f"running · step {e['step']}" if alive else f"stopped at step {e['step']}"
    return "running" if alive else "stopped"
