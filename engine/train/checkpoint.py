"""Atomic checkpoints of a run: written aside, then renamed into place.

``checkpoints/step-00000120/`` holds accelerate's state (model or adapter weights, optimiser, scheduler, every
process's RNG states) and ``trainer_state.json`` (step, tokens seen, the events offset), which is written last:
a folder without it is not a checkpoint. A kill at any moment leaves either the previous checkpoint or the new
one, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
PREFIX = "step-"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{PREFIX}{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def save_checkpoint(accelerator, run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Every process calls this (accelerate gathers what each holds); the main process renames and prunes."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(".tmp-" + final.name)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state_file = tmp / STATE_FILE
        with open(state_file, "w") as f:
            json.dump({**state, "step": step}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # the same step saved again (a signal right after a periodic checkpoint)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict[str, Any]:
    accelerator.load_state(str(path))
    return read_state(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
