"""The processes behind runs, the same on Linux, macOS and Windows: is a run's process alive, ask it to stop, force
it. No Qt (the app and the command line both use it).

- **Alive**: psutil, which reads /proc on Linux and the system's process table elsewhere; a process that has ended
  but not been reaped (a zombie) is not alive, and a process id reused by another program is not the run's (its
  command line must name the run folder).
- **Stop**: the run's stop file (``run_dir/.stop``), which every rank of the engine and the Azure watcher check
  between steps and polls; on Unix also SIGTERM to the run's process group (a detached run has its own), so a
  multi-process run hears it at once. Windows has no process-group signals for a process without a console, which
  is why the file is the portable request.
- **Force**: SIGKILL to the group on Unix, and to the group of every process under it: a launcher starts its ranks
  in sessions of their own, which a signal to the run's group never reaches (and each rank dies with its launcher,
  ``train/parallel.py``); on Windows the process and all its children are terminated (psutil).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

STOP_FILE = ".stop"


def stop_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / STOP_FILE


def request_stop_file(run_dir: str | Path) -> None:
    """Ask the run in ``run_dir`` to checkpoint and stop (every platform)."""
    path = stop_file(run_dir)
    try:
        path.write_text(f"{time.time():.3f}\n", encoding="utf-8")
    except OSError:
        pass


def clear_stop_file(run_dir: str | Path) -> None:
    """A run starting (or resuming) removes an old request: it was for the process before."""
    try:
        stop_file(run_dir).unlink()
    except FileNotFoundError:
        pass


def is_alive(pid: int, run_dir: str | Path | None = None) -> bool:
    """Is process ``pid`` running (and, with ``run_dir``, is it that run's rather than a reused process id)?"""
    if pid <= 0:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:   # finished; only its exit status is left
            return False
        if run_dir is None:
            return True
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.AccessDenied:             # someone else's process: it cannot be told apart
            return True
        return Path(run_dir).name in cmdline
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def send_stop(pid: int, run_dir: str | Path | None = None, force: bool = False) -> bool:
    """Ask the run to stop (``force``: end it now). Returns False if the process was gone."""
    if run_dir is not None and not force:
        request_stop_file(run_dir)
    if sys.platform == "win32":
        return _windows_stop(pid, force)
    sig = signal.SIGKILL if force else signal.SIGTERM
    # The ranks a launcher starts run in sessions of their own (torch elastic starts each with start_new_session),
    # outside the run's process group: found before anything is signalled, while the tree still links them.
    ranks = _descendant_groups(pid) if force else set()
    try:
        if os.getpgid(pid) != os.getpgid(0):       # its own group: reach every rank; never the app's own group
            os.killpg(os.getpgid(pid), sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    for group in ranks:                              # a force stop ends every rank now, not when it next notices
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass
    return True


def _descendant_groups(pid: int) -> set[int]:
    """The process groups of ``pid``'s descendants other than the caller's own (each rank's session)."""
    import psutil

    own = os.getpgid(0)
    groups = set()
    try:
        children = psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return groups
    for child in children:
        try:
            group = os.getpgid(child.pid)
        except OSError:
            continue
        if group != own:
            groups.add(group)
    return groups


def _windows_stop(pid: int, force: bool) -> bool:
    """Windows: the stop file is the request (the engine polls it); forcing terminates the process tree."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if not force:
            return proc.is_running()
        for child in proc.children(recursive=True):
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        proc.kill()
        return True
    except psutil.NoSuchProcess:
        return False


def detached_popen_kwargs(platform: str = sys.platform) -> dict:
    """How the app starts a run so that it outlives the app: on Windows a new process group and no console window
    (CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW); elsewhere a new session (its own process group)."""
    if platform == "win32":
        import subprocess

        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200) | getattr(subprocess, "CREATE_NO_WINDOW",
                                                                                  0x08000000)
        return {"creationflags": flags, "close_fds": True}
    return {"start_new_session": True, "close_fds": True}
