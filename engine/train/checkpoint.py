"""Checkpoints of a run that survive a kill, a copy cut short and a file damaged afterwards.

``checkpoints/step-00000120/`` holds accelerate's state (model or adapter weights, optimiser, scheduler, every
process's RNG states), ``trainer_state.json`` (step, tokens seen, the events offset) and ``manifest.json``: every
other file's relative path, size and SHA-256, written last. The manifest is the completion marker: a folder without
it is not a checkpoint.

Two ways to write one:

* a local run folder: into ``checkpoints/.tmp-step-N/``, manifest last, then one atomic rename to ``step-N/``;
* a run folder on a blob mount (an Azure ML job's output, ``--checkpoint-local DIR``): into the node's own disk
  (``DIR/RUN/node-K/step-N/``), then copied file by file into ``checkpoints/step-N/`` on the output, the manifest
  written last. No directory is ever renamed on the mount (there a rename is a copy, not atomic).

A resume verifies the newest checkpoint against its manifest (sizes and checksums, split over the run's processes)
and loads it; one that fails either is set aside into ``checkpoints/damaged/`` (never deleted) with a message naming
it, and the one before it is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
PREFIX = "step-"
DAMAGED = "damaged"          # checkpoints/damaged/: checkpoints set aside by a resume
REASON_FILE = "damaged.txt"  # in a set-aside checkpoint: why
PAUSE_ENV = "DISTILL_CHECKPOINT_COPY_PAUSE_S"   # rehearsal knob: pause a copy half way, before the manifest
_CHUNK = 8 << 20


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{PREFIX}{step:08d}"


def _step_of(path: Path) -> int | None:
    if not path.name.startswith(PREFIX):
        return None
    try:
        return int(path.name[len(PREFIX):])
    except ValueError:
        return None


def _step_folders(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None]
    return sorted(found, key=_step_of)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A checkpoint's manifest, or None when it has none (a copy cut short) or it cannot be read."""
    try:
        doc = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        return None
    return doc


def is_complete(path: Path) -> bool:
    """The manifest is there, is this folder's, and every file it lists is there with its size (no checksums:
    a stat per file)."""
    doc = read_manifest(path)
    if doc is None or doc.get("step") != _step_of(path):
        return False
    try:
        return all((path / f["path"]).stat().st_size == f["size"] for f in doc["files"])
    except (OSError, KeyError, TypeError):
        return False


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (manifest present and matching the files' sizes), oldest first."""
    return [p for p in _step_folders(run_dir) if is_complete(p)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def marked_checkpoints(run_dir: Path) -> list[Path]:
    """Folders whose completion marker was written, oldest first: what a resume verifies in full."""
    return [p for p in _step_folders(run_dir) if (p / MANIFEST).is_file()]


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


# ---- files, checksums and the manifest ----------------------------------------------------------------------

def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` but the manifest, as sorted POSIX relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST)


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _entry(folder: Path, rel: str) -> dict[str, Any]:
    size, digest = _digest(folder / rel)
    return {"path": rel, "size": size, "sha256": digest}


def _threads(n: int) -> int:
    return max(1, min(4, n, os.cpu_count() or 1))


def hash_files(folder: Path, rels: list[str]) -> list[dict[str, Any]]:
    """Manifest entries of ``rels`` under ``folder`` (hashlib releases the GIL: files are hashed side by side)."""
    with ThreadPoolExecutor(_threads(len(rels))) as pool:
        return list(pool.map(lambda rel: _entry(folder, rel), rels))


def _copy(src_root: Path, dst_root: Path, rel: str) -> dict[str, Any]:
    """Copy one file, hashing what is read as it goes; the copy is flushed to storage before it counts."""
    src, dst = src_root / rel, dst_root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while chunk := fi.read(_CHUNK):
            h.update(chunk)
            fo.write(chunk)
            size += len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return {"path": rel, "size": size, "sha256": h.hexdigest()}


def copy_pause() -> float:
    """``DISTILL_CHECKPOINT_COPY_PAUSE_S``: seconds a checkpoint copy waits half way, before its manifest (a
    rehearsal uses it to kill a node in the middle of a copy)."""
    from ..errors import RunError

    raw = os.environ.get(PAUSE_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise RunError(f"{PAUSE_ENV}: {raw!r} is not a number of seconds; allowed: 0 to 3600")
    return value


def copy_files(src: Path, dst: Path, pause: float = 0.0) -> list[dict[str, Any]]:
    """Copy every file of ``src`` into ``dst`` (several at a time), pausing ``pause`` seconds half way; returns
    their manifest entries. Writes no manifest."""
    rels = _files(src)
    half = (len(rels) + 1) // 2
    entries: list[dict[str, Any]] = []
    with ThreadPoolExecutor(_threads(len(rels))) as pool:
        entries += pool.map(lambda rel: _copy(src, dst, rel), rels[:half])
        if pause > 0:
            time.sleep(pause)
        entries += pool.map(lambda rel: _copy(src, dst, rel), rels[half:])
    return entries


def write_manifest(folder: Path, step: int, entries: list[dict[str, Any]], seconds: float) -> None:
    """The completion marker, written last and flushed to storage: the files, and how long the checkpoint took to
    write (and copy), which tells a stop whether another one fits in its grace period."""
    doc = {"v": 1, "step": step, "seconds": round(seconds, 3), "written": time.time(),
           "files": sorted(entries, key=lambda e: e["path"])}
    with open(folder / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify(path: Path, part: tuple[int, int] = (0, 1)) -> list[str]:
    """What is wrong with a checkpoint against its manifest (empty: nothing). ``part`` = (i, n): check every n-th
    file from the i-th (the processes of a run share the reading)."""
    doc = read_manifest(path)
    if doc is None:
        return [f"its {MANIFEST} cannot be read"]
    if doc.get("step") != _step_of(path):
        return [f"its {MANIFEST} is for step {doc.get('step')}"]
    if part[0] == 0 and not any(f.get("path") == STATE_FILE for f in doc["files"] if isinstance(f, dict)):
        return [f"its {MANIFEST} lists no {STATE_FILE}"]
    problems: list[str] = []
    mine: list[dict] = []
    for f in doc["files"][part[0]::part[1]]:
        try:
            rel, size = str(f["path"]), int(f["size"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"its {MANIFEST} has an entry without a path and size")
            continue
        try:
            found = (path / rel).stat().st_size
        except OSError:
            problems.append(f"{rel} is missing")
            continue
        if found != size:
            problems.append(f"{rel} has {found:,} bytes, the manifest says {size:,}")
        else:
            mine.append(f)
    if mine:
        for f, got in zip(mine, hash_files(path, [str(f["path"]) for f in mine])):
            if got["sha256"] != f.get("sha256"):
                problems.append(f"{f['path']} does not match its checksum (its content changed after it was written)")
    return problems


# ---- saving ----------------------------------------------------------------------------------------------------

def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _node_index() -> int:
    """This process's node (0 on one machine), from the launcher's environment."""
    for key in ("GROUP_RANK", "NODE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    rank, local = int(os.environ.get("RANK", "0") or 0), int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return rank // max(local, 1)


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder, its marker first: a deletion cut short never leaves something that looks
    complete."""
    try:
        (folder / MANIFEST).unlink()
    except FileNotFoundError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def prune(run_dir: Path, keep: int, *, mount: bool, current: Path | None = None) -> None:
    """Keep the newest ``keep`` complete checkpoints. On a mount, also delete step folders a killed copy left
    without a marker (the same step, when it comes again, is written afresh); locally, stale ``.tmp-`` folders."""
    complete = list_checkpoints(run_dir)
    for old in complete[:-keep] if keep > 0 else complete:
        _remove(old)
    root = run_dir / "checkpoints"
    if mount:
        for p in _step_folders(run_dir):
            if p != current and not (p / MANIFEST).is_file():
                shutil.rmtree(p, ignore_errors=True)
    elif root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-" + PREFIX) and (current is None or p.name != ".tmp-" + current.name):
                shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(accelerator, run_dir: Path, step: int, state: dict[str, Any], keep: int, *, par=None,
                    module=None, optimizer=None, scheduler=None, local: Path | None = None,
                    say: Callable[[str], None] | None = None) -> tuple[Path, float]:
    """Every process calls this (each writes what it holds); the main process writes the manifest and prunes.
    Returns the checkpoint's folder and the seconds it took (write, checksums and copy).

    ``par`` is the run's placement (``parallel.Replicated``: accelerate's state; ``parallel.Sharded``: a
    torch.distributed.checkpoint folder of the sharded model and optimiser, one RNG file per process, and the
    schedule). ``trainer_state.json`` records the number of processes that wrote it. ``local``: the run folder is
    a mount; write to this folder on the node's disk first, then copy (see the module's docstring). ``say``: how
    the main process tells what it does (a ``log`` event and a line)."""
    from .parallel import Collective

    t0 = time.monotonic()
    main = accelerator.is_main_process
    final = checkpoint_dir(run_dir, step)
    if local is None:
        work, writer = final.with_name(".tmp-" + final.name), main
    else:
        # one folder per run and node: runs (or "nodes" of a rehearsal) sharing a disk never meet
        tag = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]
        work = Path(local) / tag / f"node-{_node_index()}" / final.name
        writer = accelerator.is_local_main_process
    if writer:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if par is None or not par.sharded:
        accelerator.save_state(str(work), safe_serialization=True)
    else:
        par.save_state(work, module, optimizer)
        if main and scheduler is not None:
            import torch

            torch.save(scheduler.state_dict(), work / "scheduler.pt")
    accelerator.wait_for_everyone()
    if main:
        with open(work / STATE_FILE, "w") as f:
            json.dump({**state, "step": step, "world_size": accelerator.num_processes,
                       "sharded": bool(par is not None and par.sharded)}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    if local is None:
        if main:
            entries = hash_files(work, _files(work))
            for e in entries:
                _fsync_file(work / e["path"])   # accelerate's files are closed, not synced
            write_manifest(work, step, entries, time.monotonic() - t0)
            if final.exists():  # the same step saved again (a signal right after a periodic checkpoint)
                _remove(final)
            os.replace(work, final)
            _fsync_dir(final.parent)
            prune(run_dir, keep, mount=False, current=final)
        accelerator.wait_for_everyone()
        return final, time.monotonic() - t0
    # a mount: each node copies what it wrote, the main process writes the marker once every node's files are in
    pause = copy_pause()
    if main:
        if say is not None:
            say(f"copying checkpoint step {step} to the output ({final})")
        if final.exists():  # a copy a killed attempt left, or the same step again
            _remove(final)
        final.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    entries = []
    if writer:
        entries = copy_files(work, final, pause)
        shutil.rmtree(work, ignore_errors=True)
    everyone = [e for part in Collective(accelerator).gather(entries) for e in part]
    seconds = time.monotonic() - t0
    if main:
        write_manifest(final, step, everyone, seconds)
        prune(run_dir, keep, mount=True, current=final)
    accelerator.wait_for_everyone()
    return final, seconds


def last_write_seconds(run_dir: Path) -> float | None:
    """How long the newest complete checkpoint took to write (and copy), from its manifest."""
    latest = latest_checkpoint(run_dir)
    doc = read_manifest(latest) if latest is not None else None
    try:
        return float(doc["seconds"]) if doc is not None else None
    except (KeyError, TypeError, ValueError):
        return None


# ---- resuming ----------------------------------------------------------------------------------------------------

def set_aside(path: Path, reason: str, *, mount: bool) -> Path:
    """Move a damaged checkpoint into ``checkpoints/damaged/`` (a new name if one is there already), with a note
    of why. Locally one rename; on a mount, file by file, the marker first (no directory is renamed there)."""
    root = path.parent / DAMAGED
    root.mkdir(exist_ok=True)
    dest, n = root / path.name, 1
    while dest.exists():
        n += 1
        dest = root / f"{path.name}.{n}"
    if not mount:
        os.replace(path, dest)
    else:
        rels = ([MANIFEST] if (path / MANIFEST).is_file() else []) + _files(path)
        for rel in rels:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path / rel, dest / rel)
        shutil.rmtree(path, ignore_errors=True)   # the emptied folders
    (dest / REASON_FILE).write_text(reason + "\n", encoding="utf-8")
    return dest


def resume_checkpoint(par, run_dir: Path, module, optimizer, scheduler, world_size: int, *, collective,
                      mount: bool, say: Callable[[str], None]) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest checkpoint that verifies against its manifest and loads, loaded; each one before it that does
    not is set aside with a message naming it. Every process calls this. (None, None): no checkpoint (a run
    resumed before its first one, or none intact)."""
    from ..errors import RunError

    main = collective.rank == 0
    candidates = collective.gather([str(p) for p in marked_checkpoints(run_dir)] if main else None)[0]
    loaded_any = False
    for name in reversed(candidates):
        path = Path(name)
        problems = [p for part in collective.gather(verify(path, (collective.rank, collective.world)))
                    for p in part]
        if not problems:
            error = None
            try:
                state = load_checkpoint(par, path, module, optimizer, scheduler, world_size)
            except RunError:
                raise
            except Exception as exc:  # noqa: BLE001 — a file the libraries cannot read: the checkpoint is damaged
                why = _what_failed(exc)
                # intact bytes that fail for another reason (out of memory, a read error, another library version)
                # are not damage: setting good checkpoints aside one after another would lose the run
                error = (("damaged", f"it could not be loaded ({why})") if why else
                         ("fatal", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"))
            loaded_any = True
            errors = [e for e in collective.gather(error) if e]
            fatal = [text for kind, text in errors if kind == "fatal"]
            if fatal:
                raise RunError(f"{path}: its files verify against the manifest but could not be loaded ({fatal[0]}); "
                               "it is kept as it is: fix the cause (memory, the storage, the library versions the "
                               "run was started with) and resume again")
            if not errors:
                return path, state
            problems = [text for _kind, text in errors]
        if main:
            rel = path.relative_to(run_dir)
            dest = set_aside(path, "; ".join(problems), mount=mount)
            before = [p for p in candidates if Path(p) != path and _step_of(Path(p)) < _step_of(path)]
            then = (f"resuming from the one before it, {Path(before[-1]).name}, if it is intact" if before
                    else "no earlier checkpoint is left")
            say(f"checkpoint {rel} is damaged: {problems[0]}"
                + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
                + f"; set aside in {dest.relative_to(run_dir)}; {then}")
        collective.barrier()
    if loaded_any:
        raise RunError(f"{run_dir}: every checkpoint of this run is damaged (set aside in checkpoints/{DAMAGED}/) "
                       "and the model already holds part of one; start the run again in a new folder")
    if candidates and main:
        say("no intact checkpoint is left: the run starts again from step 0")
    return None, None


def _what_failed(exc: BaseException) -> str:
    """A library's error as the user needs it: which kind of file failed, not the library's text; "" when the error
    is not one of a damaged file."""
    kind = type(exc).__name__
    text = str(exc)
    if "Safetensor" in kind or "safetensors" in text.lower() or "header" in text.lower():
        return "a weights file (.safetensors) is unreadable"
    import errno

    if "PytorchStreamReader" in text or "zip archive" in text or "Unpickl" in kind or "pickle" in text.lower() \
            or isinstance(exc, EOFError) or (isinstance(exc, OSError) and exc.errno == errno.EINVAL):
        # (a truncated torch file fails to seek: EINVAL; a read error of the storage, EIO, is not damage)
        return "a saved state file (.bin, .pt or .pkl) is unreadable"
    if isinstance(exc, ValueError) and "JSON" in kind + text or kind == "JSONDecodeError":
        return f"{STATE_FILE} is unreadable"
    return ""


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
