"""The options of a plan as a sortable table: one row per configuration as planned.

The columns are numpy arrays taken from the sweep once per plan, and sorting is a numpy argsort inside the model
(not a QSortFilterProxyModel, which would call back into Python for every comparison), so a budget change over
thousands of options re-sorts and redraws in milliseconds. Only visible cells are ever formatted.
"""
from __future__ import annotations

import re

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from ...engine.estimate.core import ADAPTERS, RECOMPUTE, TEACHER_MODES
from ...engine.estimate.placement import SHARDINGS
from ...engine.estimate.solve import GIB
from ...engine.report import hours_text

# The time and cost at the plan's confidence come first: the budget is judged and the options ranked on them (their
# headers name the confidence, "Hours P80"); the medians beside them; then why an option is not a choice, in view
COLUMNS = ("Hours P80", "Cost P80", "Hours median", "Cost median", "Status", "Machine", "GPUs", "Priority", "Adapter",
           "Teacher", "Recompute", "Sharding", "GiB/GPU", "Tokens/s/GPU", "Hours P10–P90", "Estimate", "Set-up",
           "Teacher pass", "Training", "MFU")
HOURS_AT_COL, COST_AT_COL, HOURS_COL, COST_COL, STATUS_COL = 0, 1, 2, 3, 4
MACHINE_COL, GPUS_COL, PRIORITY_COL, ADAPTER_COL, TEACHER_COL, RECOMPUTE_COL, SHARDING_COL = 5, 6, 7, 8, 9, 10, 11
GIB_COL, TOKENS_COL, RANGE_COL, SOURCE_COL = 12, 13, 14, 15
SETUP_COL, PREPASS_COL, TRAIN_COL, MFU_COL = 16, 17, 18, 19
_DURATION_COLS = (SETUP_COL, PREPASS_COL, TRAIN_COL)
_HOURS_COLS = (HOURS_AT_COL, HOURS_COL)
_COST_COLS = (COST_AT_COL, COST_COL)
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
INDEX_ROLE = Qt.ItemDataRole.UserRole + 2
_NUMERIC = (HOURS_AT_COL, COST_AT_COL, HOURS_COL, COST_COL, GPUS_COL, GIB_COL, TOKENS_COL, RANGE_COL, SETUP_COL,
            PREPASS_COL, TRAIN_COL, MFU_COL)
# how each model is placed, as the engine runs it: DDP, FSDP inside each node, FSDP over every GPU
_SHARDING = {"none": "none (DDP)", "within-node": "in node", "all-gpus": "all GPUs"}
_GREY = QColor("#8a8a8a")

# the engine's messages name its commands; in the app the same actions are buttons of the planner
_COMMANDS = ((re.compile(r"run `distill prices refresh[^`]*` to fetch current prices"),
              "press Refresh prices (above) to fetch current prices"),
             (re.compile(r"\brun `distill prices refresh[^`]*`"), "press Refresh prices (above)"),
             (re.compile(r"`distill prices refresh[^`]*`"), "Refresh prices (above)"),
             (re.compile(r"\brun `distill azure capacity --refresh[^`]*`"), "press Check capacity (above)"),
             (re.compile(r"`distill azure capacity --refresh[^`]*`"), "Check capacity (above)"))


def for_the_app(text: str) -> str:
    """An engine message as the app says it: "Refresh prices (above)" and "Check capacity (above)", the planner's
    buttons, where the engine names `distill prices refresh` or `distill azure capacity --refresh`."""
    for pattern, words in _COMMANDS:
        text = pattern.sub(words, text)
    return text


class OptionsModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.analysis = None
        self.rows = np.zeros(0, dtype=np.int64)     # sweep index of each row, in display order
        self.ok = np.zeros(0, dtype=bool)           # over the whole sweep
        self._cols: dict[int, np.ndarray] = {}      # column -> values over the whole sweep (None: not a column)
        self._reasons: dict[int, str] = {}
        self._sort = (STATUS_COL, Qt.SortOrder.AscendingOrder)
        self.confidence = 0.8
        self.per = "GPU"      # "process" where every option as planned runs on a CPU: no GPU words there

    def set_analysis(self, analysis, ok: np.ndarray, only_ok: bool = False) -> None:
        """Show ``analysis``'s options as planned (``only_ok``: only those meeting the budget)."""
        self.beginResetModel()
        sweep = analysis.sweep if analysis is not None else None
        if sweep is not getattr(self, "_sweep", None):     # columns depend on the sweep only, not the budget
            self._cols = self._columns(analysis) if analysis is not None else {}
            self._sweep = sweep
        self.analysis = analysis
        self.ok = ok
        d = analysis.decision if analysis is not None else None
        if analysis is not None:
            cpu = analysis.sweep.labels["accelerator"].index("cpu") if "cpu" in analysis.sweep.labels["accelerator"] \
                else -1
            on_cpu = bool(np.all(analysis.sweep.grid.extra["accelerator"][analysis.planned] == cpu))
            per = "process" if on_cpu else "GPU"
            if per != self.per:
                self.per = per
                self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, len(COLUMNS) - 1)
        if d is not None and d.hours is not None:     # the figures at the confidence the budget was judged at
            self._cols[HOURS_AT_COL], self._cols[COST_AT_COL] = d.hours, d.cost
            if d.confidence != self.confidence:
                self.confidence = d.confidence
                self.headerDataChanged.emit(Qt.Orientation.Horizontal, HOURS_AT_COL, COST_AT_COL)
        elif analysis is not None:
            self._cols[HOURS_AT_COL], self._cols[COST_AT_COL] = self._cols[HOURS_COL], self._cols[COST_COL]
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
                HOURS_COL: o["total_hours"], COST_COL: o["cost_usd"], MACHINE_COL: machine.astype(object),
                GPUS_COL: o["gpus"].astype(np.int64),
                # a VM priority means nothing for this machine: a local plan's rows leave it empty
                PRIORITY_COL: labels("priority") if a.plan.hardware.target == "azure" else np.full(n, "—", object),
                ADAPTER_COL: np.asarray(ADAPTERS, dtype=object)[g.adapter.astype(np.int64)],
                TEACHER_COL: teacher, RECOMPUTE_COL: np.asarray(RECOMPUTE, dtype=object)[g.recompute.astype(np.int64)],
                SHARDING_COL: sharding,
                GIB_COL: o["mem_total"] / GIB, TOKENS_COL: o["tokens_per_second_per_gpu"]}

    # ---- Qt model ----------------------------------------------------------------------------------------------

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        at = f"P{round(self.confidence * 100)}"
        if role == Qt.ItemDataRole.DisplayRole:
            if section in (HOURS_AT_COL, COST_AT_COL):
                return COLUMNS[section].replace("P80", at)
            if section in (GPUS_COL, GIB_COL, TOKENS_COL) and self.per != "GPU":
                return {GPUS_COL: "Processes", GIB_COL: "GiB/process", TOKENS_COL: "Tokens/s/process"}[section]
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole and section in (HOURS_AT_COL, COST_AT_COL):
            return (f"The time and cost the option stays under in {round(self.confidence * 100)} runs out of 100 "
                    "(the Confidence above): the deadline and the cost cap are judged on these")
        if role == Qt.ItemDataRole.ToolTipRole and section in (HOURS_COL, COST_COL):
            return "The model's median figure: half the runs take longer or cost more"
        return None

    def reason(self, i: int) -> str:
        if i not in self._reasons:
            self._reasons[i] = ("meets the budget" if self.ok[i]
                                else for_the_app(self.analysis.reason(i) or "not chosen"))
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
            if col in _HOURS_COLS:
                if v < 0.01:       # a few seconds or minutes (a CPU demo): never "0.00" hours
                    return f"{v:.4f}"
                return f"{v:.2f}" if v < 1 else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
            if col in _COST_COLS:
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
        tie = np.nan_to_num(self._cols[COST_AT_COL][rows], nan=np.inf)
        perm = np.lexsort((self._cols[HOURS_AT_COL][rows], tie, key))
        if order == Qt.SortOrder.DescendingOrder:
            perm = perm[::-1]
        self.rows = rows[perm]

    def row_of(self, i: int) -> int | None:
        hit = np.flatnonzero(self.rows == i)
        return int(hit[0]) if hit.size else None
