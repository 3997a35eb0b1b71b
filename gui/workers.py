"""Background work for the GUI: short jobs (scans, sweeps, reading run folders) run on a thread pool and report
back through signals, so the event loop never waits on them. Training never runs here; it is a separate process.

A job is a plain function. If it is a generator, each value it yields is a progress report ``(done, total)`` or
``(done, total, text)``, and the generator's return value is the result. Cancel is cooperative: the worker stops
at the next ``yield``.
"""
from __future__ import annotations

import inspect
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from ..engine.errors import DistillError


class _Signals(QObject):
    sig_progress = Signal(int, int, str)
    """Progress: done, total (0 = unknown), a short text."""
    sig_result = Signal(object)
    """The job's return value."""
    sig_error = Signal(str)
    """A message for the user (the traceback of an unexpected error goes to the log, not to the screen)."""
    sig_finished = Signal()
    """Always emitted last, after a result, an error or a cancel."""


class Worker(QRunnable):
    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the owner keeps it until sig_finished; Qt must not delete it under Python
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.signals = _Signals()
        self._cancelled = False
        self.result: Any = None
        self.error: str | None = None

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def run(self) -> None:  # worker thread
        s = self.signals
        try:
            out = self.fn(*self.args, **self.kwargs)
            if inspect.isgenerator(out):
                gen = out
                try:
                    while True:
                        report = next(gen)
                        if self._cancelled:
                            gen.close()
                            break
                        if report is not None:
                            done, total, *text = report
                            s.sig_progress.emit(int(done), int(total), str(text[0]) if text else "")
                except StopIteration as stop:
                    out = stop.value
            if not self._cancelled:
                self.result = out
                s.sig_result.emit(out)
        except DistillError as exc:
            self.error = str(exc)
            s.sig_error.emit(self.error)
        except Exception as exc:  # noqa: BLE001 - shown as a message, logged with its traceback
            import logging

            logging.getLogger("distill_studio.gui").error("background job failed\n%s", traceback.format_exc())
            self.error = f"{type(exc).__name__}: {exc}"
            s.sig_error.emit(self.error)
        finally:
            s.sig_finished.emit()


_running: set[Worker] = set()


def start(fn: Callable[..., Any], *args: Any, on_result=None, on_error=None, on_progress=None, on_finished=None,
          **kwargs: Any) -> Worker:
    """Run ``fn(*args, **kwargs)`` on the global thread pool and connect the callbacks (run on the GUI thread)."""
    w = Worker(fn, *args, **kwargs)
    if on_result:
        w.signals.sig_result.connect(on_result)
    if on_error:
        w.signals.sig_error.connect(on_error)
    if on_progress:
        w.signals.sig_progress.connect(on_progress)
    if on_finished:
        w.signals.sig_finished.connect(on_finished)
    _running.add(w)
    w.signals.sig_finished.connect(lambda: _running.discard(w))
    QThreadPool.globalInstance().start(w)
    return w
