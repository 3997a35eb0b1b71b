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


def save_checkpoint(accelerator, run_dir: Path, step: int, state: dict[str, Any], keep: int, *, par=None,
                    module=None, optimizer=None, scheduler=None) -> Path:
    """Every process calls this (each writes what it holds); the main process renames and prunes.

    ``par`` is the run's placement (``parallel.Replicated``: accelerate's state; ``parallel.Sharded``: a
    torch.distributed.checkpoint folder of the sharded model and optimiser, one RNG file per process, and the
    schedule). ``trainer_state.json`` records the number of processes that wrote it."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(".tmp-" + final.name)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if par is None or not par.sharded:
        accelerator.save_state(str(tmp), safe_serialization=True)
    else:
        par.save_state(tmp, module, optimizer)
        if accelerator.is_main_process and scheduler is not None:
            import torch

            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state_file = tmp / STATE_FILE
        with open(state_file, "w") as f:
            json.dump({**state, "step": step, "world_size": accelerator.num_processes,
                       "sharded": bool(par is not None and par.sharded)}, f, indent=1)
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


def load_checkpoint(par, path: Path, module, optimizer, scheduler, world_size: int) -> dict[str, Any]:
    """Restore a checkpoint into the run's objects. One written by another number of processes is refused (its
    RNG states and, for DDP, its layout are per process), naming the size it needs."""
    from ..errors import RunError

    state = read_state(path)
    wrote = int(state.get("world_size", 1))
    if wrote != world_size:
        raise RunError(f"{path}: this checkpoint was written by {wrote} process(es), and this run has {world_size}; "
                       f"resume it with {wrote} (`distill run --resume … --processes {wrote}`, and a plan for "
                       f"{wrote} GPUs), or start a new run")
    if bool(state.get("sharded", False)) != bool(par.sharded):
        raise RunError(f"{path}: this checkpoint holds {'sharded' if state.get('sharded') else 'unsharded'} state "
                       "and the plan now says otherwise (hardware.sharding); resume with the plan it was written with")
    if par.sharded:
        import torch

        par.load_state(path, module, optimizer)
        if scheduler is not None and (path / "scheduler.pt").is_file():
            scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    else:
        par.acc.load_state(str(path))
    return state


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
