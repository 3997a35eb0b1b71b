"""``python -m distill_studio.gui.monitor.logged_exec LOGFILE -- PROGRAM ARGS...``: append stdout and stderr to
LOGFILE, then become PROGRAM (``os.execv``, same process id).

The app starts runs through ``QProcess.startDetached``, which returns the process id but cannot redirect output
in its static form; this step does the redirection, so the run's console output lands in the run folder and the
process id the app keeps is the training process's own. No Qt here: it runs in the launched process.
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: logged_exec LOGFILE -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    log, cmd = argv[0], argv[2:]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ["PYTHONUNBUFFERED"] = "1"
    try:
        os.execv(cmd[0], cmd)
    except OSError as exc:
        print(f"could not start {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
