"""One process at a time on a run folder, on every platform: ``filelock`` (flock on Unix, msvcrt locking on
Windows), which the OS releases however the process ends, so a killed process never leaves a stale lock. The holder
writes its process id beside the lock (``<lock>.pid``), for the message of whoever finds it taken."""
from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout


class Held:
    """A lock this process holds; ``close()`` releases it."""

    def __init__(self, lock: FileLock, pid_file: Path) -> None:
        self._lock, self._pid_file = lock, pid_file

    def close(self) -> None:
        if self._lock.is_locked:
            try:
                self._pid_file.unlink()
            except OSError:
                pass
            self._lock.release(force=True)


def hold(path: Path) -> tuple[Held | None, str | None]:
    """(the held lock, None) when taken; (None, the holder's process id or "") when another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0, thread_local=False, is_singleton=False)
    pid_file = path.with_name(path.name + ".pid")
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = pid_file.read_text(encoding="utf-8").strip()
        except OSError:
            holder = ""
        return None, holder
    pid_file.write_text(str(os.getpid()), encoding="utf-8")
    return Held(lock, pid_file), None
