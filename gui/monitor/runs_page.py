"""The Runs screen: every run the app knows of (kept across restarts), and the monitor of the selected one."""
from __future__ import annotations

import json
import time
from pathlib import Path

from PySide6.QtCore import SIGNAL, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSplitter,
                               QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .. import workers
from ..dialogs import open_folder, show_error
from ..settings import Settings
from ...engine.errors import DistillError
from ...engine.runs.process import stop_file
from .digest import failure_reason
from .runs import RunRecord, RunStore, is_alive, launch, record_from_folder
from .view import MonitorView, failed_color, list_text, started_text
from .watch import RECENT_S

LIST_REFRESH_MS = 2_000


def new_run_dir(root: Path, plan_name: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in plan_name)[:60] or "run"
    base = root / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    d, n = base, 1
    while d.exists():
        n += 1
        d = base.with_name(f"{base.name}-{n}")
    return d


def _tail(path: Path, size: int = 8192) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().splitlines()
    except OSError:
        return []


def list_status(record: RunRecord) -> tuple[str, int]:
    """A run's status for the runs list, in the monitor's terms (``view.STATUS_TEXT``), and the step it stands at,
    from the last 8 KiB of its events and of its console output (never the whole files). A run whose process is
    gone without an end event failed when it printed an error, or when it was launched here and never started."""
    alive = is_alive(record.pid, record.run_dir)
    step, lifecycle, started = 0, None, False
    for line in reversed(_tail(record.events_path)):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if not isinstance(e, dict):
            continue
        kind = e.get("type")
        if not step and isinstance(e.get("step"), int):
            step = e["step"]
        if lifecycle is None and kind in ("run_started", "run_finished"):
            lifecycle = e
        started = started or kind in ("run_started", "metric")
        if step and lifecycle is not None:
            break
    finished = lifecycle if lifecycle is not None and lifecycle.get("type") == "run_finished" else None
    if finished is not None:
        status = str(finished.get("status", "failed"))
        step = int(finished.get("step") or step or 0)
        if alive:        # resumed after that end, or still saving and exiting
            resumed = record.resumed_at and (finished.get("time") or 0) < record.resumed_at
            return ("resuming" if resumed else "stopping"), step
        return status, step
    if alive:
        return ("running" if started else "starting"), step
    if record.pid <= 0 and started:
        try:
            if time.time() - record.events_path.stat().st_mtime < RECENT_S:
                return "elsewhere", step
        except OSError:
            pass
    if not Path(record.run_dir).exists():
        return "missing", 0
    if stop_file(record.run_dir).exists():          # the user stopped it (perhaps before its first step)
        return "stopped", step
    error = failure_reason([b.decode("utf-8", "replace") for b in _tail(record.console_path)])
    if error or (record.pid > 0 and not started):
        return "failed", step
    return "stopped", step


class RunsPage(QWidget):
    sig_run_launched = Signal(str)
    """A run was started (its folder)."""
    sig_edit_plan_requested = Signal(str)
    """The user asked to edit a run's plan (the plan file)."""
    sig_open_demo_requested = Signal()
    """The user asked for the demo plan (from the empty Runs screen)."""

    def __init__(self, settings: Settings, store: RunStore | None = None, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.store = store or RunStore()
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("runs_table")
        self.table.setHorizontalHeaderLabels(["Run", "Status", "Started"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)                 # a long run name is elided on one line; its tooltip has it all
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 10)
        h = self.table.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        add = QPushButton("Add run folder…")
        add.setToolTip("Watch a run started elsewhere, e.g. with `distill run` in a terminal")
        add.clicked.connect(self.add_folder)
        remove = QPushButton("Remove from list")
        remove.setObjectName("remove_run_button")
        remove.setToolTip("Forget the selected run here; its folder stays on disk")
        remove.clicked.connect(self.remove_selected)
        remove.setEnabled(False)
        self.remove_button = remove
        left = QVBoxLayout()
        left.addWidget(self.table, 1)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        left.addLayout(row)
        lw = QWidget()
        lw.setLayout(left)
        self.monitor = MonitorView()
        self.monitor.sig_resume_requested.connect(self.resume)
        self.monitor.sig_status_changed.connect(self._monitor_status)
        self.monitor.sig_edit_plan_requested.connect(self._edit_plan)
        # no runs yet: a sentence and what to do, not five empty charts
        self.empty_state = QWidget()
        self.empty_state.setObjectName("runs_empty_state")
        self.empty_state_text = QLabel(
            "<h3>No runs yet</h3>"
            "<p>A run starts from a plan: open one (or the demo) in the Planner and press <b>Launch</b> "
            "(Ctrl+R). Its progress, curves, cost and result appear here while it trains, and it keeps running if "
            "you close the app.</p>"
            "<p>A run started elsewhere, in a terminal or on another machine, can be watched here too: add its "
            "folder.</p>")
        self.empty_state_text.setWordWrap(True)
        self.empty_state_text.setFixedWidth(480)
        self.empty_state_text.setMinimumHeight(self.empty_state_text.heightForWidth(480))
        demo = QPushButton("Open the demo plan")
        demo.setObjectName("empty_open_demo")
        demo.setToolTip("A tiny teacher and student that train on this machine in a few minutes")
        demo.clicked.connect(self._open_demo)
        add_here = QPushButton("Add run folder…")
        add_here.setObjectName("empty_add_run_folder")
        add_here.clicked.connect(self.add_folder)
        actions = QHBoxLayout()
        actions.addStretch(1)
        actions.addWidget(demo)
        actions.addWidget(add_here)
        actions.addStretch(1)
        centred = QHBoxLayout()
        centred.addStretch(1)
        centred.addWidget(self.empty_state_text)
        centred.addStretch(1)
        es = QVBoxLayout(self.empty_state)
        es.addStretch(1)
        es.addLayout(centred)
        es.addLayout(actions)
        es.addStretch(2)
        self.right = QStackedWidget()
        self.right.addWidget(self.empty_state)
        self.right.addWidget(self.monitor)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(lw)
        split.addWidget(self.right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        split.setSizes([300, 900])
        self.splitter = split
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self._refreshing = False
        self._status: dict[str, tuple[str, str]] = {}     # run folder -> the list's word for it, and its tooltip
        self._timer = QTimer(self)
        self._timer.setInterval(LIST_REFRESH_MS)
        self._timer.timeout.connect(self.refresh_statuses)
        self._timer.start()
        self.reload()

    # ---- list --------------------------------------------------------------------------------------------------

    def reload(self, select: str | None = None) -> None:
        """Fill the list from the store; select ``select`` (else keep the selection, else the first run) and show
        that run in the monitor. Statuses follow their run folder, never a row."""
        current = select or (self.selected().run_dir if self.selected() else None)
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.store.records))
        for row, r in enumerate(self.store.records):
            name = QTableWidgetItem(r.name)
            name.setData(Qt.ItemDataRole.UserRole, r.run_dir)
            name.setToolTip(f"{r.name}\n{r.run_dir}")
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, self._status_item(r.run_dir))
            started = QTableWidgetItem(time.strftime("%m-%d %H:%M", time.localtime(r.launched_at))
                                       if r.launched_at else "")
            started.setToolTip(started_text(r))
            self.table.setItem(row, 2, started)
        if current and not any(r.run_dir == current for r in self.store.records):
            current = None
        row = self._row_of(current) if current else (0 if self.store.records else -1)
        self.table.clearSelection()
        if row >= 0:
            self.table.selectRow(row)
        self.table.blockSignals(False)
        self.right.setCurrentWidget(self.monitor if self.store.records else self.empty_state)
        self.monitor.set_compare_choices(self.store.records)
        # selectRow on a row already selected emits nothing, and the signals were blocked: the monitor is told here
        self._selection_changed()
        self.refresh_statuses()

    def _row_of(self, run_dir: str) -> int:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == run_dir:
                return row
        return -1

    def _status_item(self, run_dir: str) -> QTableWidgetItem:
        text, tip = self._status.get(run_dir, ("…", "reading the run folder…"))
        item = QTableWidgetItem(text)
        item.setToolTip(tip)
        if text == "Failed":
            item.setForeground(QColor(failed_color(self)))
        return item

    def selected(self) -> RunRecord | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        return self.store.find(self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))

    def select(self, run_dir: str) -> None:
        row = self._row_of(run_dir)
        if row >= 0:
            self.table.selectRow(row)
            self._selection_changed()       # the monitor follows even when the row was selected already

    def _selection_changed(self) -> None:
        r = self.selected()
        self.remove_button.setEnabled(r is not None)
        if r is None and self.monitor.record is None:
            return
        if self.monitor.record is None or r is None or r.run_dir != self.monitor.record.run_dir:
            self.monitor.show_run(r)
            self.monitor.set_compare_choices(self.store.records)

    def _set_status(self, run_dir: str, status: tuple[str, str]) -> None:
        changed = self._status.get(run_dir) != status
        self._status[run_dir] = status
        row = self._row_of(run_dir)
        if changed and row >= 0:
            self.table.setItem(row, 1, self._status_item(run_dir))

    def _monitor_status(self, run_dir: str, _status: str) -> None:
        """The monitor's status of the run it shows (it knows more: resuming, finishing, a stop being asked)."""
        snap = self.monitor.snapshot
        if snap is not None and self.monitor.record is not None and self.monitor.record.run_dir == run_dir:
            self._set_status(run_dir, list_text(snap.status, snap.step))

    def refresh_statuses(self) -> None:
        if self._refreshing or not self.store.records:
            return
        self._refreshing = True
        records = list(self.store.records)
        workers.start_for(self, lambda: {r.run_dir: list_status(r) for r in records}, on_result=self._statuses,
                          on_finished=lambda: setattr(self, "_refreshing", False))

    def _statuses(self, statuses: dict[str, tuple[str, int]]) -> None:
        for run_dir, (status, step) in statuses.items():
            if self.monitor.record is not None and run_dir == self.monitor.record.run_dir:
                self._monitor_status(run_dir, "")       # the monitor's word, with the step it shows now
            else:
                self._set_status(run_dir, list_text(status, step))

    def _open_demo(self) -> None:
        """Open the demo plan in the Planner: the main window does it (``sig_open_demo_requested``); a window that
        does not listen for it but can open the demo is asked directly."""
        if self.receivers(SIGNAL("sig_open_demo_requested()")) > 0:
            self.sig_open_demo_requested.emit()
            return
        win = self.window()
        if hasattr(win, "open_demo"):
            win.open_demo()

    def _edit_plan(self, plan_path: str) -> None:
        """Edit a failed run's plan: the main window opens it in the wizard (``sig_edit_plan_requested``); a window
        that does not listen for it but can open and edit plans is asked directly."""
        if self.receivers(SIGNAL("sig_edit_plan_requested(QString)")) > 0:
            self.sig_edit_plan_requested.emit(plan_path)
            return
        win = self.window()
        if hasattr(win, "open_plan") and hasattr(win, "edit_plan") and win.open_plan(plan_path):
            win.edit_plan()

    # ---- actions -----------------------------------------------------------------------------------------------

    def launch_plan(self, plan_path: str, name: str, target: str = "local",
                    extra: list[str] | None = None) -> RunRecord | None:
        """Start ``distill run`` on a saved plan in a new folder under the runs folder, and watch it. The engine
        resolves what the plan leaves to the planner (teacher mode, sharding) exactly as the planner view shows it,
        and keeps that plan in the run folder."""
        run_dir = new_run_dir(self.settings.resolved_runs_dir(), name)
        try:
            pid = launch(plan_path, str(run_dir), target=target, extra=extra)   # extra: what the launch confirmed
        except (RuntimeError, OSError, DistillError) as exc:
            show_error(self, "Could not start the run", str(exc),
                       "Check that Distill Studio was installed with its training extra (pip install "
                       "'distill-studio[train]') and that the runs folder in Settings is writable.")
            return None
        record = RunRecord(run_dir=str(run_dir), name=name, plan_path=plan_path, pid=pid, target=target)
        try:
            self.store.add(record)
        except OSError as exc:   # the run is started; only the list could not be written
            self.store.records.insert(0, record)
            show_error(self, "The runs list could not be saved", f"{self.store.path}: {exc.strerror or exc}",
                       f"The run is training in {run_dir}; after a restart, add it again with Run → Add run folder.")
        self.reload(select=record.run_dir)
        self.sig_run_launched.emit(record.run_dir)
        return record

    def resume(self, run_dir: str) -> None:
        record = self.store.find(run_dir)
        if record is None:
            return
        try:
            pid = launch(None, run_dir, resume=True, target=record.target)
        except (RuntimeError, OSError) as exc:
            show_error(self, "Could not resume the run", str(exc))
            return
        try:
            self.store.update(run_dir, pid=pid, resumed_at=time.time())
        except OSError as exc:
            show_error(self, "The runs list could not be saved", f"{self.store.path}: {exc.strerror or exc}")
        if self.monitor.record is not None and self.monitor.record.run_dir == run_dir:
            self.monitor.record.pid = pid
            self.monitor.record.resumed_at = time.time()
            self.monitor.snapshot = None
            self.monitor.log.appendPlainText("[studio] resuming from the last checkpoint")

    def add_folder(self) -> None:
        path = open_folder(self, self.settings, "runs", "Add a run folder")
        if path:
            self.add_run_folder(path)

    def add_run_folder(self, path: str) -> RunRecord | None:
        try:
            record = record_from_folder(path)
        except ValueError as exc:
            show_error(self, "Not a run folder", str(exc))
            return None
        known = self.store.find(record.run_dir)
        if known is not None:            # already listed (perhaps launched here, with its process id): keep it
            self.select(known.run_dir)
            return known
        self.store.add(record)
        self.reload(select=record.run_dir)
        return record

    def remove_selected(self) -> None:
        r = self.selected()
        if r is not None:
            if self.monitor.record and self.monitor.record.run_dir == r.run_dir:
                self.monitor.show_run(None)
            self.store.remove(r.run_dir)
            self._status.pop(r.run_dir, None)
            self.table.clearSelection()
            self.reload()

    def shutdown(self) -> None:
        self._timer.stop()
        self.monitor.stop_watching()
