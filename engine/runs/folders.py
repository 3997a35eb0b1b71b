"""Where runs live on this machine: the folder a new run gets under the user data folder.

Shared by `distill run` (engine/cli.py) and `distill azure submit` (engine/azure/cli.py), so neither command module
imports the other.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..catalog.prices import data_dir


def runs_root() -> Path:
    """``data_dir()/runs``: where runs started without ``--run-dir`` are kept."""
    return data_dir() / "runs"


def default_run_dir(plan_name: str) -> Path:
    """A new folder under the user data folder's ``runs/``, named after the plan and the time."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in plan_name)[:60] or "run"
    return runs_root() / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
