"""The options of a plan as a sortable table: one row per configuration as planned.

The columns are numpy arrays taken from the sweep once per plan, and sorting is a numpy argsort inside the model
(not a QSortFilterProxyModel, which would call back into Python for every comparison), so a budget change over
thousands of options re-sorts and redraws in milliseconds. Only visible cells are ever formatted.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from ...engine.estimate.core import ADAPTERS, TEACHER_MODES
from ...engine.estimate.placement import SHARDINGS
from ...engine.estimate.solve import GIB
from ...engine.report import hours_text

COLUMNS = ("Hours", "Cost", "Machine", "GPUs", "Priority", "Adapter", "Teacher", "Recompute", "Sharding",
           "GiB/GPU", "Tokens/s/GPU", "Hours P10–P90", "Estimate", "Set-up", "Teacher pass", "Training", "MFU",
           "Status")
GIB_COL, TOKENS_COL, RANGE_COL, SOURCE_COL = 9, 10, 11, 12
SETUP_COL, PREPASS_COL, TRAIN_COL, MFU_COL, STATUS_COL = 13, 14, 15, 16, 17
_DURATION_COLS = (SETUP_COL, PREPASS_COL, TRAIN_COL)
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
INDEX_ROLE = Qt.ItemDataRole.UserRole + 2
_NUMERIC = (0, 1, 3, GIB_COL, TOKENS_COL, RANGE_COL, SETUP_COL, PREPASS_COL, TRAIN_COL, MFU_COL)
# how each model is placed, as the engine runs it: DDP, FSDP inside each node, FSDP over every GPU
_SHARDING = {"none": "none (DDP)", "within-node": "in node", "all-gpus": "all GPUs"}
_GREY = QColor("#8a8a8a")


class OptionsModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.analysis = None
        self.rows = np.zeros(0, dtype=np.int64)     # sweep index of each row, in display order
        self.ok = np.zeros(0, dtype=bool)           # over the whole sweep
        self._cols: dict[int, np.ndarray] = {}      # column -> values over the whole sweep (None: not a column)
        self._reasons: dict[int, str] = {}
        self._sort = (1, Qt.SortOrder.AscendingOrder)

    def set_analysis(self, analysis, ok: np.ndarray, only_ok: bool = False) -> None:
        """Show ``analysis``'s options as planned (``only_ok``: only those meeting the budget)."""
        self.beginResetModel()
        sweep = analysis.sweep if analysis is not None else None
        if sweep is not getattr(self, "_sweep", None):     # columns depend on the sweep only, not the budget
            self._cols = self._columns(analysis) if analysis is not None else {}
            self._sweep = sweep
        self.analysis = analysis
        self.ok = ok
        shown = (analysis.planned & ok) if (analysis is not None and only_ok) else (
            analysis.planned if analysis is not None else None)
        self.rows = np.flatnonzero(shown) if shown is not None else np.zeros(0, dtype=np.int64)
        self._reasons = {}
        self._apply_sort()
        self.endResetModel()

    @staticmethod
    def _columns(a) -> dict[int, np.ndarray]:
        sw = a.sweep
        o, g = sw.out, sw.grid

        def labels(column: str) -> np.ndarray:
            return np.asarray(sw.labels[column], dtype=object)[g.extra[column].astype(np.int64)]

        teacher = np.asarray(TEACHER_MODES, dtype=object)[g.teacher_mode.astype(np.int64)]
        prec = labels("teacher_precision")
        teacher = np.where(prec == "bf16", teacher, teacher + " (" + prec + ")")
        machine = np.char.add(np.char.add(g.nodes.astype(np.int64).astype(str), " × "),
                              np.char.replace(labels("machine").astype(str), "Standard_", ""))
        pass_row = g.extra.get("pass_row")
        if pass_row is not None and (pass_row >= 0).any():     # split: the teacher pass's machines, then training's
            split = pass_row >= 0
            machine = machine.astype(object)
            machine[split] = machine[pass_row[split]] + " → " + machine[split]
        sharding = np.asarray([_SHARDING[x] for x in SHARDINGS], dtype=object)[g.sharding.astype(np.int64)]
        # with the student sharded and a teacher in memory, whether the teacher is sharded too (under DDP it is whole)
        shown = (g.teacher_mode != TEACHER_MODES.index("none")) & (g.sharding != SHARDINGS.index("none"))
        teacher_where = np.where(o["teacher_replicated"], ", teacher whole", ", teacher sharded")
        sharding = np.where(shown, sharding + teacher_where, sharding).astype(object)
        from ...engine.estimate.sweep import CALIBRATION_SOURCES

        n = len(sw)
        low, high = (o.get("hours_low", o["total_hours"]), o.get("hours_high", o["total_hours"]))
        source = np.asarray(CALIBRATION_SOURCES, dtype=object)[o["calibration"].astype(np.int64)] \
            if "calibration" in o else np.full(n, "published fit", dtype=object)
        runs = o.get("calibration_runs", np.zeros(n, dtype=np.int64))
        source = np.where(runs > 0, source + " (" + runs.astype(str) + ")", source).astype(object)
        return {RANGE_COL: high, "range_low": low, SOURCE_COL: source,
                SETUP_COL: o["setup_hours"], PREPASS_COL: o["prepass_hours"], TRAIN_COL: o["train_hours"],
                MFU_COL: o["mfu"],
                0: o["total_hours"], 1: o["cost_usd"], 2: machine.astype(object), 3: o["gpus"].astype(np.int64),
                4: labels("priority"), 5: np.asarray(ADAPTERS, dtype=object)[g.adapter.astype(np.int64)],
                6: teacher, 7: np.where(g.recompute.astype(bool), "on", "off").astype(object), 8: sharding,
                GIB_COL: o["mem_total"] / GIB, TOKENS_COL: o["tokens_per_second_per_gpu"]}

    # ---- Qt model ----------------------------------------------------------------------------------------------

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def reason(self, i: int) -> str:
        if i not in self._reasons:
            self._reasons[i] = "meets the budget" if self.ok[i] else (self.analysis.reason(i) or "not chosen")
        return self._reasons[i]

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.analysis is None:
            return None
        i = int(self.rows[index.row()])
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == STATUS_COL:
                return self.reason(i)
            v = self._cols[col][i]
            if col == 0:
                return f"{v:.2f}" if v < 1 else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
            if col == 1:
                return "unknown" if np.isnan(v) else f"${v:,.0f}" if v >= 10 else f"${v:,.2f}"
            if col == GIB_COL:
                return f"{v:.1f}"
            if col == TOKENS_COL:
                return f"{v:,.0f}"
            if col == RANGE_COL:
                return f"{hours_text(self._cols['range_low'][i])} – {hours_text(v)}"
            if col in _DURATION_COLS:
                return "—" if col == PREPASS_COL and not v else hours_text(v)
            if col == MFU_COL:
                return f"{v * 100:.0f}%"
            return str(v)
        if role == INDEX_ROLE:
            return i
        if role == SORT_ROLE:
            if col == STATUS_COL:
                return 0 if self.ok[i] else 1
            v = self._cols[col][i]
            return v.item() if hasattr(v, "item") else v
        if role == Qt.ItemDataRole.ForegroundRole and not self.ok[i]:
            return QBrush(_GREY)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in _NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.reason(i)
        return None

    # ---- sorting -----------------------------------------------------------------------------------------------

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self._sort = (column, order)
        self._apply_sort()
        self.layoutChanged.emit()

    def _apply_sort(self) -> None:
        if not len(self.rows):
            return
        column, order = self._sort
        rows = self.rows
        if column == STATUS_COL:
            key = (~self.ok[rows]).astype(np.int8)
        else:
            key = self._cols[column][rows]
            if key.dtype == object:
                key = key.astype(str)
            else:
                key = np.where(np.isnan(key), np.inf, key) if key.dtype.kind == "f" else key
        # ties keep a stable, sensible order: by cost, then time
        tie = np.nan_to_num(self._cols[1][rows], nan=np.inf)
        perm = np.lexsort((self._cols[0][rows], tie, key))
        if order == Qt.SortOrder.DescendingOrder:
            perm = perm[::-1]
        self.rows = rows[perm]

    def row_of(self, i: int) -> int | None:
        hit = np.flatnonzero(self.rows == i)
        return int(hit[0]) if hit.size else None
