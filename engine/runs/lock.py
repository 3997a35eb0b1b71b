"""One process at a time on a run folder: an advisory lock the OS releases however the process ends, so a killed
process never leaves a stale lock. The holder writes its process id into the file, for the message of whoever
finds it taken. (No-op where ``fcntl`` is missing, i.e. Windows.)"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO


def hold(path: Path) -> tuple[IO[str] | None, str | None]:
    """(the open lock file, None) when taken; (None, the holder's process id or "") when another process holds it.
    Keep the file open for as long as the lock is needed; closing it releases it."""
    try:
        import fcntl
    except ImportError:
        return None, None
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        return None, holder
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f, None
