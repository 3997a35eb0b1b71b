"""Which Hugging Face models are staged in an Azure ML workspace: planning data, like prices and capacity.

A staged model is a model asset of the workspace (``hf--<org>--<name>``, a ``custom_model`` on the default
datastore) holding the hub repository's files, so that a job's nodes read the weights from the workspace's blob
storage instead of downloading them from Hugging Face on every node and every attempt (docs/azure.md, "The
teacher's weights, staged once"). ``engine/azure/models.py`` finds and registers the assets and records them here;
the planner reads this file only (it never imports the Azure package and never goes online), to cost the staging
of the models that are not staged yet.

The cache is ``data_dir()/azure/staged-models.json``: ``{"workspaces": {"<sub>/<rg>/<workspace>": {"<hub id, lower
case>": {"hub_id", "asset", "path", "recorded"}}}}``. A workspace that was never looked at has no staged model
("not staged" is the default: the planner then counts the staging once).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from .prices import data_dir

STAGED_VERSION = "1"      # the version of every staged model asset (a re-staging of another revision: a new name)


def cache_path() -> Path:
    return data_dir() / "azure" / "staged-models.json"


def asset_name(hub_id: str) -> str:
    """The model asset's name for a hub id: ``Qwen/QwQ-32B`` -> ``hf--Qwen--QwQ-32B`` (asset names take letters,
    digits, '-', '_' and '.'; at most 255)."""
    hub_id = hub_id.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*", hub_id):
        raise ValueError(f"{hub_id!r} is not a Hugging Face model id (ORG/NAME)")
    return "hf--" + hub_id.replace("/", "--")


def workspace_key(subscription_id: str, resource_group: str, workspace: str) -> str:
    return f"{subscription_id}/{resource_group}/{workspace}".lower()


def settings_workspace_key() -> str:
    """The key of the workspace in Settings › Azure, read without side effects; "" when none is set or the file
    cannot be read."""
    try:
        from ..settings import settings_path

        doc = json.loads(settings_path().read_text(encoding="utf-8"))
        az = doc.get("azure") or {}
        parts = [str(az.get(k) or "") for k in ("subscription_id", "resource_group", "workspace")]
    except (OSError, ValueError, AttributeError, TypeError):
        return ""
    return workspace_key(*parts) if all(parts) else ""


def _load() -> dict[str, Any]:
    try:
        doc = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"workspaces": {}}
    if not isinstance(doc, dict) or not isinstance(doc.get("workspaces"), dict):
        return {"workspaces": {}}
    return doc


def staged_models(workspace: str | None = None) -> dict[str, dict[str, Any]]:
    """{hub id (lower case): record} of the models recorded as staged in ``workspace`` (a :func:`workspace_key`;
    default: the workspace of Settings › Azure). Empty when none is known."""
    key = settings_workspace_key() if workspace is None else workspace.lower()
    if not key:
        return {}
    found = _load()["workspaces"].get(key)
    return {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def is_staged(hub_id: str, workspace: str | None = None) -> bool:
    return hub_id.strip().lower() in staged_models(workspace)


def record_staged(workspace: str, hub_id: str, asset: str, path: str = "") -> None:
    """Record that ``hub_id`` is staged in ``workspace`` as ``asset`` (``azureml:NAME:VERSION``)."""
    from ..files import write_json_atomic

    doc = _load()
    ws = doc["workspaces"].setdefault(workspace.lower(), {})
    ws[hub_id.strip().lower()] = {"hub_id": hub_id.strip(), "asset": asset, "path": path, "recorded": time.time()}
    cache_path().parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache_path(), doc)


def forget_staged(workspace: str, hub_id: str) -> None:
    """The workspace has no such asset (any more): drop the record."""
    from ..files import write_json_atomic

    doc = _load()
    ws = doc["workspaces"].get(workspace.lower())
    if isinstance(ws, dict) and ws.pop(hub_id.strip().lower(), None) is not None:
        write_json_atomic(cache_path(), doc)


def hub_models(plan, pair) -> list[tuple[str, str, float]]:
    """The plan's models a node would download from Hugging Face, as (plan field, hub id, bytes of bf16 weights):
    the teacher of a distillation method, the student when it starts from pretrained weights. A local folder, a
    datastore URI or a model the catalog cannot name on the hub is not one."""
    out = []
    roles = [("teacher", pair.teacher)] if plan.method.kind != "ce" else []
    if plan.student.init == "pretrained":
        roles.append(("student", pair.student))
    for role, spec in roles:
        given = str(getattr(plan, role).model or "")
        if spec.id.startswith("local:") or "://" in given or not spec.hub_id:
            continue
        try:
            asset_name(spec.hub_id)
        except ValueError:
            continue
        out.append((f"{role}.model", spec.hub_id, 2.0 * float(spec.params)))
    return out


def unstaged_bytes(plan, pair, workspace: str | None = None) -> float:
    """Bytes of the plan's hub models not recorded as staged in ``workspace`` (default: Settings › Azure's): what
    the planner counts a staging job for. 0 for a plan that does not run on Azure."""
    if plan.hardware.target != "azure":
        return 0.0
    staged = staged_models(workspace)
    return float(sum(n for _, hub, n in hub_models(plan, pair) if hub.lower() not in staged))
