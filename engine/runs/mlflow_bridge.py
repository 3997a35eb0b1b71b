"""A run's events through MLflow, both ways: the training node logs them (Azure ML tracks MLflow natively), and the
desktop turns what it reads back into the same events a local run writes, so the monitor does not care where a
run executes.

The mapping, one place for both directions:

- ``metric`` and ``eval`` events are MLflow metrics at their step, with the event's time as the timestamp:
  ``train/<field>`` and ``eval/<field>`` for every number in them (``train/loss``, ``eval/kl``, ...). That is what
  Azure ML studio charts, and what a reader fetches with ``metrics/get-history``.
- every other event (``run_started``, ``checkpoint``, ``log`` at warning or error, ``run_finished``) is a tag
  ``distill.event.<n>`` holding the event as JSON, numbered in order. ``run_started`` leaves out the plan (the
  desktop has the plan it submitted) so the tag stays well under MLflow's tag length limit.

No MLflow import here except inside :class:`MlflowMirror`, which only a training node builds; the desktop reads
MLflow over its REST API (``engine.azure.watch``), so the app needs no MLflow.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

log = logging.getLogger("distill_studio.run")

MIRROR_ENV = "DISTILL_MLFLOW"            # set to 1 in an Azure ML job: mirror the events to MLflow
TAG_PREFIX = "distill.event."
SERIES = {"metric": "train/", "eval": "eval/"}
# the order of events written in the same millisecond
_RANK = {"run_started": 0, "metric": 1, "eval": 2, "checkpoint": 3, "log": 4, "run_finished": 5}
MAX_TAG_CHARS = 5000


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def to_mlflow(event: dict[str, Any]) -> tuple[dict[str, float], int, int, str | None]:
    """(metrics, step, timestamp in ms, tag JSON or None) for one event."""
    kind = event.get("type")
    ms = int(round(float(event.get("time", 0.0)) * 1000))
    step = int(event.get("step", 0) or 0)
    if kind in SERIES:
        prefix = SERIES[kind]
        metrics = {prefix + k: float(v) for k, v in event.items() if k not in ("v", "time", "type", "step")
                   and _number(v)}
        return metrics, step, ms, None
    body = {k: v for k, v in event.items() if k != "plan"}
    text = json.dumps(body, separators=(",", ":"), allow_nan=False, default=str)
    if len(text) > MAX_TAG_CHARS:  # a very long message: keep what a viewer needs
        body = {k: v for k, v in body.items() if k in ("v", "time", "type", "step", "status", "level",
                                                       "resumed_from_step", "total_steps", "total_tokens", "path")}
        body["message"] = str(event.get("message", ""))[: MAX_TAG_CHARS // 2]
        text = json.dumps(body, separators=(",", ":"), default=str)
    return {}, step, ms, text


def from_mlflow(histories: dict[str, list[dict[str, Any]]], tags: dict[str, str],
                plan: dict[str, Any] | None = None, keys: bool = False) -> list[dict[str, Any]]:
    """Events from MLflow metric histories (``{key: [{"value", "timestamp", "step"}]}``) and a run's tags, in the
    order they were written. ``plan`` is put back into ``run_started``; ``keys``: each tag event keeps the name of
    its tag as ``_tag`` (what a reader remembers to write it once)."""
    grouped: dict[tuple[str, int], dict[str, Any]] = {}
    for key, points in histories.items():
        kind = next((k for k, p in SERIES.items() if key.startswith(p)), None)
        if kind is None:
            continue
        field = key[len(SERIES[kind]):]
        for p in points:
            step = int(p.get("step", 0))
            e = grouped.setdefault((kind, step), {"type": kind, "step": step, "_ms": 0})
            value = float(p["value"])
            e[field] = int(value) if field == "tokens_seen" else value
            e["_ms"] = max(e["_ms"], int(p.get("timestamp", 0)))
    events = []
    for e in grouped.values():
        ms = e.pop("_ms")
        events.append({"v": 1, "time": ms / 1000, **e})
    for key in sorted(k for k in tags if k.startswith(TAG_PREFIX)):
        try:
            e = json.loads(tags[key])
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("type") in _RANK:
            if e["type"] == "run_started" and plan is not None:
                e = {**e, "plan": plan}
            e["_seq"] = key
            events.append(e)
    events.sort(key=lambda e: (float(e.get("time", 0)), _RANK.get(e["type"], 9), e.get("step", 0),
                               e.get("_seq", "")))
    for e in events:
        seq = e.pop("_seq", None)
        if keys and seq is not None:
            e["_tag"] = seq
    return events


class MlflowMirror:
    """Logs each event of a training node to the active MLflow run (rank 0 only). A failure to log is a warning in
    the run's own log, once; it never stops training."""

    def __init__(self) -> None:
        import mlflow

        self._mlflow = mlflow
        self._n = 0
        self._warned = False
        run = mlflow.active_run() or mlflow.start_run()
        self.run_id = run.info.run_id
        # a resumed job (after preemption) is a new MLflow run: number its events after any already there
        existing = mlflow.get_run(self.run_id).data.tags
        self._n = sum(1 for k in existing if k.startswith(TAG_PREFIX))

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("type") == "log" and event.get("level") not in ("warning", "error"):
            return
        metrics, step, ms, tag = to_mlflow(event)
        try:
            if metrics:
                self._mlflow.log_metrics(metrics, step=step, timestamp=ms, synchronous=False)
            if event.get("type") == "run_finished":
                self._mlflow.flush_async_logging()      # every metric is there before the run says it ended
            if tag is not None:
                # structural events are written at once: the desktop orders metrics after their run_started
                self._mlflow.set_tag(f"{TAG_PREFIX}{self._n:06d}", tag)
                self._n += 1
        except Exception as exc:  # noqa: BLE001 — tracking is a view of the run, never a reason to stop it
            if not self._warned:
                self._warned = True
                log.warning("MLflow logging failed (%s: %s); the run goes on, its events.jsonl is complete",
                            type(exc).__name__, exc)


def mirror_from_environment() -> MlflowMirror | None:
    """The MLflow mirror where a job asks for one (``DISTILL_MLFLOW=1`` and a tracking URI, as Azure ML sets)."""
    if os.environ.get(MIRROR_ENV) != "1":
        return None
    try:
        return MlflowMirror()
    except Exception as exc:  # noqa: BLE001 — mlflow missing or the tracking server unreachable
        log.warning("MLflow tracking is not available (%s: %s); the run's events stay in events.jsonl only",
                    type(exc).__name__, exc)
        return None

