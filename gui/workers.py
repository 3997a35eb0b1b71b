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
        s = _Emitter(self.signals)
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


class _Emitter:
    """The worker's signals, emitted so that a job outliving its signals' object (the app quitting while a sweep
    runs) ends quietly instead of printing "Signal source has been deleted" from the worker thread."""

    def __init__(self, signals: _Signals) -> None:
        self._signals = signals

    def __getattr__(self, name: str):
        signal = getattr(self._signals, name)

        class _Safe:
            @staticmethod
            def emit(*args: Any) -> None:
                try:
                    signal.emit(*args)
                except RuntimeError:      # the receiving side is gone: nothing to deliver to
                    pass

        return _Safe


_running: set[Worker] = set()


def _guarded(callback, owner):
    """``callback``, skipped once ``owner`` (the widget that asked) is gone: a dialog closed while its job ran."""
    if owner is None or callback is None:
        return callback
    import shiboken6
    from PySide6.QtCore import QObject

    if isinstance(getattr(callback, "__self__", None), QObject):
        return callback     # a slot of a QObject: Qt disconnects it when that object is deleted (and sender() works)

    def call(*args: Any) -> None:
        if shiboken6.isValid(owner):
            callback(*args)

    return call


def start(fn: Callable[..., Any], *args: Any, on_result=None, on_error=None, on_progress=None, on_finished=None,
          owner=None, **kwargs: Any) -> Worker:
    """Run ``fn(*args, **kwargs)`` on the global thread pool and connect the callbacks (run on the GUI thread).
    ``owner``: the widget the callbacks belong to; once it is deleted they are not called and the job is asked to
    stop (at its next progress report)."""
    w = Worker(fn, *args, **kwargs)
    on_result, on_error, on_progress, on_finished = (_guarded(cb, owner) for cb in
                                                      (on_result, on_error, on_progress, on_finished))
    if owner is not None:
        owner.destroyed.connect(w.cancel)
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


def shutdown(timeout_ms: int = 5000) -> bool:
    """Ask every running job to stop and wait for the pool (the app is quitting): no job is left to deliver into
    a window that is gone. True when all ended within ``timeout_ms``."""
    for w in list(_running):
        w.cancel()
    return QThreadPool.globalInstance().waitForDone(timeout_ms)


def start_for(owner, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Worker:
    """:func:`start` for a job whose callbacks belong to ``owner`` (a widget or dialog)."""
    return start(fn, *args, owner=owner, **kwargs)
