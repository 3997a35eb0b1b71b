"""From run events to what the monitor draws: per-series arrays and the run's progress. Pure Python and numpy (no
Qt), so it runs on a worker thread and is tested on its own.

``RunState`` is fed batches of events in order (``feed``) and returns a ``Batch``: new points per series, and
whether the curves must be cut back first because the run resumed from an earlier checkpoint (``truncate_to``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...engine.runs.eta import Eta

METRIC_SERIES = ("loss", "kd_loss", "ce_loss", "lr", "tokens_per_second", "grad_norm")
EVAL_SERIES = ("kl", "perplexity", "top1_agreement", "task_score", "teacher_task_score")


_WARNING = re.compile(r"\b\w*Warning\b|^\s*warnings\.warn|^\[warning\]", re.IGNORECASE)
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt)\b:?\s*(.*)$")


def failure_reason(lines: list[str]) -> str:
    """The run's own error among its console lines: the last ``error: ...`` line the engine prints, else the last
    line of a Python traceback (``ValueError: ...``). Warnings (a numpy RuntimeWarning, the code line under it) are
    never the reason. "" when none is found."""
    found, traceback_end = "", ""
    in_traceback = False
    for raw in lines:
        line = raw.rstrip()
        text = line.strip()
        if text.startswith("error:"):
            found = text[len("error:"):].strip()
        elif not text or _WARNING.search(text):
            continue
        elif text.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and not raw[:1].isspace():
            m = _EXCEPTION.match(text)
            if m:
                traceback_end = text
            in_traceback = False
    return found or traceback_end


@dataclass
class Batch:
    points: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    truncate_to: int | None = None          # drop points with step > this before appending (a resume)
    logs: list[str] = field(default_factory=list)
    events: int = 0
    markers: list[tuple[int, str]] = field(default_factory=list)   # (step, "stopped" | "resumed" | "failed")
    clock: list[tuple[int, float]] = field(default_factory=list)   # (step, seconds since the run began)

    def empty(self) -> bool:
        return not self.points and self.truncate_to is None and not self.logs and not self.markers


@dataclass
class RunState:
    """What is known about a run from its events so far."""

    total_steps: int = 0
    step: int = 0
    tokens_seen: int = 0
    started: bool = False
    status: str = "waiting"                 # waiting | running | succeeded | failed | cancelled
    message: str = ""
    sessions: int = 0
    last_checkpoint: int | None = None
    device: str = ""
    processes: int = 1
    first_time: float | None = None
    active_seconds: float = 0.0             # wall time spent training, summed over sessions (a resume restarts it)
    _session_start: float | None = None
    _last_time: float | None = None
    finished_at: float | None = None        # time of the last run_finished
    estimate: dict | None = None            # the planner's estimate the run started with (its first run_started)
    eta: Eta = field(default_factory=Eta)       # the engine's own ETA computation (engine/runs/eta.py)
    tokens_per_second: float = 0.0
    latest: dict[str, float] = field(default_factory=dict)

    def feed(self, events: list[dict[str, Any]]) -> Batch:
        b = Batch(events=len(events))
        cols: dict[str, tuple[list[float], list[float]]] = {}

        def add(name: str, x: int, y: Any) -> None:
            if isinstance(y, (int, float)) and not isinstance(y, bool):
                xs, ys = cols.setdefault(name, ([], []))
                xs.append(x)
                ys.append(float(y))
                self.latest[name] = float(y)

        for e in events:
            t = e.get("time")
            kind = e.get("type")
            if kind == "run_started":
                if self.estimate is None and isinstance(e.get("estimate"), dict):
                    self.estimate = e["estimate"]
                self._close_session()
                self.sessions += 1
                self.started, self.status, self.message = True, "running", ""
                self.total_steps = int(e.get("total_steps") or self.total_steps)
                self.eta.restart()
                self.eta.total_steps = self.total_steps
                training = (e.get("plan") or {}).get("training") or {}
                self.eta.eval_every = int(training.get("eval_every") or 0)
                self.eta.checkpoint_every = int(training.get("checkpoint_every") or 0)
                self.device = str(e.get("device", ""))
                self.processes = int(e.get("processes") or 1)
                self._session_start = t
                if self.first_time is None:
                    self.first_time = t
                resumed = e.get("resumed_from_step")
                if resumed is not None:
                    resumed = int(resumed)
                    # points of steps after the checkpoint are repeated by the resumed run: cut them
                    for name, (xs, ys) in list(cols.items()):
                        keep = [i for i, x in enumerate(xs) if x <= resumed]
                        cols[name] = ([xs[i] for i in keep], [ys[i] for i in keep])
                    b.truncate_to = resumed if b.truncate_to is None else min(b.truncate_to, resumed)
                    b.clock = [(x, sec) for x, sec in b.clock if x <= resumed]
                    self.step = resumed
                    b.markers.append((resumed, "resumed"))
            elif kind == "metric":
                step = int(e.get("step", 0))
                self.step = step
                self.tokens_seen = int(e.get("tokens_seen", self.tokens_seen))
                for name in METRIC_SERIES:
                    add(name, step, e.get(name))
                if isinstance(e.get("step_seconds"), (int, float)) and t is not None:
                    self.eta.add(step, float(t), float(e["step_seconds"]))
                if isinstance(e.get("tokens_per_second"), (int, float)):
                    self.tokens_per_second = float(e["tokens_per_second"])
                if t is not None and self.first_time is not None:
                    b.clock.append((step, float(t) - self.first_time))
            elif kind == "eval":
                step = int(e.get("step", self.step))
                for name in EVAL_SERIES:
                    add(name, step, e.get(name))
                self.latest["eval_step"] = float(step)      # the step the latest held-out figures are from
            elif kind == "checkpoint":
                self.last_checkpoint = int(e.get("step", 0))
            elif kind == "log":
                b.logs.append(f"[{e.get('level', 'info')}] {e.get('message', '')}")
            elif kind == "run_finished":
                self.status = str(e.get("status", "failed"))
                if self.status in ("cancelled", "failed"):
                    b.markers.append((int(e.get("step", self.step) or self.step),
                                      "stopped" if self.status == "cancelled" else "failed"))
                self.finished_at = t
                self.message = str(e.get("message", ""))
                if t is not None:
                    self._last_time = t
                self._close_session()
            if t is not None and kind != "run_finished":
                self._last_time = t
        b.points = {k: (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
                    for k, (xs, ys) in cols.items() if xs}
        return b

    def _close_session(self) -> None:
        if self._session_start is not None and self._last_time is not None and self._last_time >= self._session_start:
            self.active_seconds += self._last_time - self._session_start
        self._session_start = None

    # ---- derived figures -------------------------------------------------------------------------------------

    def elapsed_seconds(self, now: float | None = None) -> float:
        """Training wall time so far; ``now`` counts the open session up to the present (a live run)."""
        open_part = 0.0
        if self._session_start is not None:
            end = now if (now is not None and self.status == "running") else self._last_time
            if end is not None:
                open_part = max(0.0, end - self._session_start)
        return self.active_seconds + open_part

    def seconds_per_step(self) -> float | None:
        return self.eta.seconds_per_step()

    def eta_range(self) -> tuple[float, float] | None:
        """P10-P90 of the remaining time (the recent steps' spread)."""
        r = self.eta.remaining(self.step)
        return (r[1], r[2]) if r else None

    def eta_seconds(self) -> float | None:
        """Remaining time, as the engine's progress line computes it (``engine/runs/eta.py``); None before the
        first measured step."""
        r = self.eta.remaining(self.step)
        return r[0] if r else None

    def fraction_done(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0
