"""The run's event log, ``events.jsonl``: the one interface between a run and every viewer.

One JSON object per line, flushed per line. Every event carries ``v`` (schema version), ``time`` (Unix seconds,
wall clock) and ``type``:

``run_started``   plan (dict), total_steps, total_tokens; on a resume also ``resumed_from_step``
``metric``        step, tokens_seen, loss, kd_loss, ce_loss, lr, grad_norm, tokens_per_second
``eval``          step, kl (held-out KL to the teacher), perplexity, top1_agreement, task_score
``checkpoint``    step, path
``log``           level, message
``run_finished``  status (succeeded | failed | cancelled), message, step

The log is append-only, so a viewer that tails it by byte offset never sees it shrink. A resumed run repeats the
steps after its last checkpoint; it says so with a second ``run_started`` carrying ``resumed_from_step``, and
:func:`fold_events` drops the superseded events, so the folded history has each step exactly once.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

EVENTS_SCHEMA_VERSION = 1
EVENT_TYPES = ("run_started", "metric", "eval", "checkpoint", "log", "run_finished")
RunStatus = Literal["succeeded", "failed", "cancelled"]


class EventWriter:
    """Appends events to a run's ``events.jsonl``; each line is flushed as it is written.

    Only one process of a run writes (rank 0). ``fsync`` happens on checkpoints and at the end, where losing the
    tail to a power cut would matter; per-line fsync would cost more than a small training step.
    """

    def __init__(self, path: str | Path, mirror: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = Path(path)
        self.mirror = mirror  # also hands each event on (an Azure ML job's MLflow run)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        self._file = open(self.path, "a", encoding="utf-8")

    def _repair_torn_tail(self) -> None:
        # A process killed mid-write leaves a last line without its newline. End it, so the next event starts on
        # a line of its own (readers skip the broken line; it is never mistaken for part of the next event).
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def emit(self, type: str, /, **fields: Any) -> dict[str, Any]:
        return self.write({"v": EVENTS_SCHEMA_VERSION, "time": round(time.time(), 3), "type": type, **fields})

    def write(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append an event as it is, its time included (events read back from where a run executes elsewhere)."""
        type = event.get("type")
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; allowed: {', '.join(EVENT_TYPES)}")
        self._file.write(json.dumps(event, separators=(",", ":"), allow_nan=False, default=_jsonable) + "\n")
        self._file.flush()
        if type in ("checkpoint", "run_finished"):
            os.fsync(self._file.fileno())
        if self.mirror is not None:
            self.mirror(event)
        return event

    def offset(self) -> int:
        """Bytes written so far (a checkpoint records it)."""
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    # numpy and torch scalars; anything else is a bug in the caller
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"event field of type {type(value).__name__} is not JSON")


class EventReader:
    """Tails an ``events.jsonl`` by byte offset.

    ``read_new()`` returns the complete events added since the last call. A last line without its newline is a
    write in progress (or torn by a kill): it is left for the next call, never returned half. A line that is not
    valid JSON, or not an event, is skipped and counted in ``skipped``. If the file shrinks or is replaced, reading
    starts again from the beginning (``restarted`` counts it) so a viewer can reset its curves.
    """

    def __init__(self, path: str | Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self.skipped = 0
        self.restarted = 0
        self._inode: int | None = None

    def read_new(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset:
            self.offset = 0
            self.restarted += 1
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(max_bytes) if max_bytes else f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return []
        events = []
        for line in data[: end + 1].splitlines():
            event = _parse(line)
            if event is None:
                if line.strip():
                    self.skipped += 1
                continue
            events.append(event)
        self.offset += end + 1
        return events


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    return event


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event in the file, in order (a torn last line is left out)."""
    return EventReader(path).read_new()


def fold_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's history with superseded events removed.

    After a ``run_started`` with ``resumed_from_step = S``, the events of steps after ``S`` written before it
    (work the resumed run repeats) are dropped, so each step appears once.
    """
    out: list[dict[str, Any]] = []
    for event in events:
        resumed = event.get("resumed_from_step") if event.get("type") == "run_started" else None
        if resumed is not None:
            out = [e for e in out if not (isinstance(e.get("step"), int) and e["step"] > resumed
                                          and e["type"] in ("metric", "eval", "checkpoint"))]
        out.append(event)
    return out
