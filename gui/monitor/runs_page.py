"""The Runs screen: every run the app knows of (kept across restarts), and the monitor of the selected one."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .. import workers
from ..dialogs import open_folder, show_error
from ..settings import Settings
from ...engine.errors import DistillError
from .runs import RunRecord, RunStore, launch, record_from_folder
from .view import MonitorView
from .watch import quick_status

LIST_REFRESH_MS = 2_000


def new_run_dir(root: Path, plan_name: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in plan_name)[:60] or "run"
    base = root / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    d, n = base, 1
    while d.exists():
        n += 1
        d = base.with_name(f"{base.name}-{n}")
    return d


class RunsPage(QWidget):
    sig_run_launched = Signal(str)
    """A run was started (its folder)."""

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
        h = self.table.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        add = QPushButton("Add run folder…")
        add.setToolTip("Watch a run started elsewhere, e.g. with `distill run` in a terminal")
        add.clicked.connect(self.add_folder)
        remove = QPushButton("Remove from list")
        remove.setToolTip("Forget this run here; its folder stays on disk")
        remove.clicked.connect(self.remove_selected)
        self.empty_hint = QLabel("No runs yet. Open a plan and press Launch (Ctrl+R).")
        self.empty_hint.setWordWrap(True)
        left = QVBoxLayout()
        left.addWidget(self.table, 1)
        left.addWidget(self.empty_hint)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        left.addLayout(row)
        lw = QWidget()
        lw.setLayout(left)
        self.monitor = MonitorView()
        self.monitor.sig_resume_requested.connect(self.resume)
        self.monitor.sig_status_changed.connect(lambda d, s: self._set_status(d, s))
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(lw)
        split.addWidget(self.monitor)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        split.setSizes([300, 900])
        self.splitter = split
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self._refreshing = False
        self._timer = QTimer(self)
        self._timer.setInterval(LIST_REFRESH_MS)
        self._timer.timeout.connect(self.refresh_statuses)
        self._timer.start()
        self.reload()

    # ---- list --------------------------------------------------------------------------------------------------

    def reload(self, select: str | None = None) -> None:
        current = select or (self.selected().run_dir if self.selected() else None)
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.store.records))
        for row, r in enumerate(self.store.records):
            name = QTableWidgetItem(r.name)
            name.setData(Qt.ItemDataRole.UserRole, r.run_dir)
            name.setToolTip(r.run_dir)
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, QTableWidgetItem(self.table.item(row, 1).text() if self.table.item(row, 1)
                                                         else "…"))
            self.table.setItem(row, 2, QTableWidgetItem(time.strftime("%Y-%m-%d %H:%M",
                                                                      time.localtime(r.launched_at))))
        self.table.blockSignals(False)
        self.empty_hint.setVisible(not self.store.records)
        self.monitor.set_compare_choices(self.store.records)
        if current:
            self.select(current)
        elif self.store.records and not self.table.selectedItems():
            self.table.selectRow(0)
        self.refresh_statuses()

    def selected(self) -> RunRecord | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        return self.store.find(self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))

    def select(self, run_dir: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == run_dir:
                self.table.selectRow(row)
                return

    def _selection_changed(self) -> None:
        r = self.selected()
        if self.monitor.record is None or r is None or r.run_dir != self.monitor.record.run_dir:
            self.monitor.show_run(r)
            self.monitor.set_compare_choices(self.store.records)

    def _set_status(self, run_dir: str, status: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == run_dir:
                self.table.item(row, 1).setText(status)

    def refresh_statuses(self) -> None:
        if self._refreshing or not self.store.records:
            return
        self._refreshing = True
        records = list(self.store.records)
        workers.start_for(self, lambda: {r.run_dir: quick_status(r) for r in records}, on_result=self._statuses,
                      on_finished=lambda: setattr(self, "_refreshing", False))

    def _statuses(self, statuses: dict[str, str]) -> None:
        for run_dir, status in statuses.items():
            if self.monitor.record is None or run_dir != self.monitor.record.run_dir:
                self._set_status(run_dir, status)

    # ---- actions -----------------------------------------------------------------------------------------------

    def launch_plan(self, plan_path: str, name: str, target: str = "local") -> RunRecord | None:
        """Start ``distill run`` on a saved plan in a new folder under the runs folder, and watch it. The engine
        resolves what the plan leaves to the planner (teacher mode, sharding) exactly as the planner view shows it,
        and keeps that plan in the run folder."""
        run_dir = new_run_dir(self.settings.resolved_runs_dir(), name)
        try:
            pid = launch(plan_path, str(run_dir), target=target)
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
            self.reload()

    def shutdown(self) -> None:
        self._timer.stop()
        self.monitor.stop_watching()
