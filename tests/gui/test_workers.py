"""Background jobs and the widgets that asked for them: a job that outlives its dialog delivers nothing into it and
is asked to stop, and a job whose signals' object is gone (the app quitting) ends without a traceback."""
from __future__ import annotations

import threading

from PySide6.QtWidgets import QDialog

from distill_studio.gui import workers


def test_a_closed_dialog_gets_no_result_and_its_job_is_cancelled(qtbot):
    release = threading.Event()
    reports = []

    def job():
        for k in range(1000):
            yield k, 1000
            release.wait(5)
        return "done"

    dialog = QDialog()
    got = []
    w = workers.start_for(dialog, job, on_result=got.append, on_progress=lambda *a: reports.append(a))
    qtbot.waitUntil(lambda: bool(reports), timeout=5_000)
    dialog.deleteLater()                           # the user closed it while the job runs
    qtbot.waitUntil(lambda: w.cancelled, timeout=5_000)
    release.set()
    qtbot.waitUntil(lambda: w not in workers._running, timeout=10_000)
    assert got == [] and w.result is None


def test_a_job_whose_signals_are_gone_ends_quietly(qtbot, capfd, monkeypatch):
    started, go = threading.Event(), threading.Event()
    raised = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))

    def job():
        started.set()
        go.wait(5)
        return 1

    w = workers.Worker(job)
    signals = w.signals
    t = threading.Thread(target=w.run)
    t.start()
    started.wait(5)
    import shiboken6

    shiboken6.delete(signals)                      # what the app's teardown does to a parentless QObject
    go.set()
    t.join(10)
    assert not t.is_alive() and w.result == 1
    assert raised == []
    err = capfd.readouterr().err
    assert "Signal source has been deleted" not in err and "Traceback" not in err


def test_shutdown_cancels_and_waits_for_running_jobs(qtbot):
    def job():
        for k in range(10_000):
            yield k, 10_000
            threading.Event().wait(0.01)

    w = workers.start(job)
    qtbot.waitUntil(lambda: w in workers._running, timeout=2_000)
    assert workers.shutdown(5_000)
    assert w.cancelled
