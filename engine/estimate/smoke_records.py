"""What smoke jobs measured on each Azure VM size (``distill azure smoke``): the interconnect's bus bandwidth within
a node and across nodes, and the datastore mount's read and write speed. The estimator's figures for a size are
published link speeds and assumed storage throughputs; a smoke record is what that size delivered in this workspace.

The store is ``data_dir()/calibration/smoke.json`` (one JSON document, written atomically under a file lock, the
newest :data:`MAX_RECORDS` kept). :func:`measured_interconnect` is what the estimator reads.

How the sweep uses it (``planner.azure_machines`` builds each size's :class:`~.sweep.Machine`):

- ``intra_gb_per_s`` / ``inter_gb_per_s`` of a :class:`Machine` are link speeds that ``core.evaluate`` multiplies
  by ``[communication] bus_efficiency``; a measured bus bandwidth already is the achieved figure, so the sweep
  takes ``intra_node_busbw_gb_per_s / bus_efficiency`` (and likewise across nodes) in place of the catalog's;
- ``output_write_gb_per_s`` replaces ``[storage] blob_copy_gb_per_s`` (the checkpoint's copy to the output
  datastore) and, with ``data_read_gb_per_s``, ``[time] cache_transfer_gb_per_s`` (a split plan's cache written
  and read back: the smaller of the two) for that size;
- an option calibrated so says so: ``Sweep.row``'s ``calibration.smoke`` ("interconnect and storage measured by a
  smoke job on <date>", :func:`measured_text`), in the breakdown and ``--json``, and a planner note per size. Its
  training speed's fit and range are the published fit's: the interconnect is one input of it, not a measurement of
  the speed.

A figure is ``None`` where the record did not measure it (one node: nothing across nodes) or the check failed;
collectives measured without CUDA (gloo on CPUs) are never used for a GPU size.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

STORE = "calibration/smoke.json"
MAX_RECORDS = 200


def store_path() -> Path:
    from ..catalog.prices import data_dir

    return data_dir() / STORE


def _key(sku: str) -> str:
    s = sku.strip().lower()
    return s if s.startswith("standard_") else f"standard_{s}"


def load_records(path: Path | None = None) -> list[dict[str, Any]]:
    """Every record, oldest first ([] when there is no store; an unreadable one is named in the error)."""
    path = path or store_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        from ..errors import DistillError

        raise DistillError(f"{path} could not be read ({exc}); delete it to start the smoke records afresh") from None
    records = doc.get("records") if isinstance(doc, dict) else None
    return [r for r in records or [] if isinstance(r, dict) and r.get("sku")]


def add_record(results: dict[str, Any], *, job: str = "", plan: str = "", cost_usd: list | None = None,
               path: Path | None = None) -> dict[str, Any]:
    """Keep a smoke job's results (its ``smoke.json``) as a record; returns it."""
    from filelock import FileLock

    from ..files import write_json_atomic

    if not isinstance(results, dict) or not results.get("sku") or not isinstance(results.get("checks"), list):
        raise ValueError("smoke results: a JSON object with 'sku' and 'checks' (the node's smoke.json) is needed")
    path = path or store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"v": 1, "recorded": time.time(), "job": job or results.get("job", ""), "plan": plan,
           "cost_usd": cost_usd, **{k: results.get(k) for k in (
               "sku", "nodes", "gpus_per_node", "world_size", "backend", "ok", "checks", "collectives", "storage",
               "started", "finished")}}
    with FileLock(str(path) + ".lock", timeout=30):
        records = load_records(path)
        records.append(rec)
        write_json_atomic(path, {"version": 1, "records": records[-MAX_RECORDS:]}, sort_keys=False)
    return rec


def _check(rec: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in rec.get("checks", []) if c.get("name") == name), None)


def _passed(rec: dict[str, Any], name: str) -> bool:
    c = _check(rec, name)
    return bool(c and c.get("ok"))


def _best_busbw(rec: dict[str, Any], op: str, scope: str) -> float | None:
    rows = [r for r in rec.get("collectives") or [] if r.get("op") == op and r.get("scope") == scope]
    return max((float(r["busbw_gb_per_s"]) for r in rows), default=None)


def figures(rec: dict[str, Any]) -> dict[str, Any]:
    """One record's usable figures (GB/s, ``None`` where not measured or not trusted)."""
    gpu = rec.get("backend") == "nccl" and _passed(rec, "cuda")
    storage = rec.get("storage") or {}

    def bw(op, scope):
        return _best_busbw(rec, op, scope) if gpu and _passed(rec, f"{op} {scope}") else None

    return {
        "intra_node_busbw_gb_per_s": bw("all_reduce", "intra-node"),
        "intra_node_allgather_busbw_gb_per_s": bw("all_gather", "intra-node"),
        "inter_node_busbw_gb_per_s": bw("all_reduce", "across nodes"),
        "inter_node_allgather_busbw_gb_per_s": bw("all_gather", "across nodes"),
        "data_read_gb_per_s": storage.get("read_gb_per_s") if _passed(rec, "data_read") else None,
        "output_write_gb_per_s": storage.get("write_gb_per_s") if _passed(rec, "output_write") else None,
    }


def measured_interconnect(sku: str, records: list[dict[str, Any]] | None = None) -> dict | None:
    """The newest measured figures for VM size ``sku`` (any spelling: ``Standard_`` prefix optional, any case), each
    from the newest record that measured it; None when no smoke job of that size measured anything usable.
    ``records``: the store's (:func:`load_records`) by default. Reads only."""
    records = load_records() if records is None else records
    mine = sorted((r for r in records if _key(str(r.get("sku", ""))) == _key(sku)),
                  key=lambda r: float(r.get("recorded") or 0.0), reverse=True)
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    used: list[float] = []
    for rec in mine:
        for name, value in figures(rec).items():
            if value is not None and value > 0 and name not in out:
                out[name] = float(value)
                sources[name] = rec.get("job", "")
                used.append(float(rec.get("recorded") or 0.0))
    if not out:
        return None
    # "measured": when the newest record that gave a figure was kept (a newer one that measured nothing usable,
    # a failed or gloo-only job, does not date the figures)
    return {"sku": mine[0]["sku"], **{k: out.get(k) for k in figures({})}, "jobs": sources,
            "measured": max(used)}


def measured_text(m: dict[str, Any]) -> str:
    """"interconnect and storage measured by a smoke job on 2025-06-01" for :func:`measured_interconnect`'s answer
    (what it measured: the interconnect, storage or both; the local date the newest figure was kept)."""
    what = [w for w, keys in (("interconnect", ("intra_node_busbw_gb_per_s", "inter_node_busbw_gb_per_s")),
                              ("storage", ("output_write_gb_per_s", "data_read_gb_per_s")))
            if any(m.get(k) is not None for k in keys)]
    jobs = sorted({j for j in (m.get("jobs") or {}).values() if j})
    day = time.strftime("%Y-%m-%d", time.localtime(float(m.get("measured") or 0.0)))
    return (f"{' and '.join(what) or 'nothing'} measured by {'smoke jobs' if len(jobs) > 1 else 'a smoke job'} "
            f"on {day}"
            + (f" ({', '.join(jobs)})" if jobs else ""))
