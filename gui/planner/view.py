"""The planner: the estimator's answer for one plan, drawn.

The sweep (tens of thousands of configurations) is computed once per plan on a worker thread. Changing the
deadline, the cost cap or the priority only re-runs the budget solver over the existing sweep, on the GUI thread,
which takes about a millisecond, so the chart follows the controls at once (``last_update_ms`` measures it).
"""
from __future__ import annotations

import dataclasses
import struct
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QHeaderView,
                               QLabel, QPushButton, QScrollArea, QSplitter, QTableView, QVBoxLayout, QWidget)

from ...engine.estimate.solve import confidence_text, decide, usd_text
from ...engine.planner import Analysis, all_modes_mask, analyse, planned_mask
from ...engine.plan import Plan
from ...engine.report import _tokens as token_text, choices
from ...engine.report import checkpoint_text, hours_text as _hours
from .. import workers
from .chart import CostTimeChart
from .memory_bar import MemoryBar
from .table import INDEX_ROLE, STATUS_COL, OptionsModel, for_the_app


def _money(v: float) -> str:
    """"$1,234", "$0.20" (cents below $10, never "$0"), or "price unknown"."""
    return usd_text(float(v))


_SHARDING_TEXT = {"none": "no sharding (DDP)", "within-node": "FSDP within each node", "all-gpus": "FSDP over all GPUs"}


def _devices(r: dict) -> str:
    """"1 GPU", "8 GPUs", or on a CPU "1 process" (no GPU wording for a CPU)."""
    unit = "process" if r["accelerator"] == "cpu" else "GPU"
    plural = ("es" if unit == "process" else "s") if r["gpus"] != 1 else ""
    return f"{r['gpus']} {unit}{plural}"


def _where(sw, i: int) -> str:
    """"4 × NC24ads_A100_v4", "this machine", or a split option's two stages."""
    text = sw.hardware(i)
    return "this machine" if text == "1 × local" else text.replace(" × local", " × this machine")


def _params(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


class _Panes(QSplitter):
    """The planner's vertical splitter. A saved state of another number of panes (an earlier version's layout) is
    not applied: its sizes would go to the wrong panes."""

    def restoreState(self, state) -> bool:  # noqa: N802 (Qt API)
        data = bytes(state.data()) if hasattr(state, "data") else bytes(state)
        # QSplitter's state: a marker (0xff), a version, then the list of pane sizes (its length first), big-endian
        if len(data) < 12 or struct.unpack(">iiI", data[:12])[2] != self.count():
            return False
        return super().restoreState(state)


def _followed(d) -> int | None:
    """The option the selection follows: the recommendation; with none, the option the summary names (the fastest
    with a known price, else the fastest)."""
    return next((i for i in (d.recommended, d.fastest_priced, d.fastest) if i is not None), None)


def _how(a: Analysis) -> str:
    """How the plan's tokens were obtained, in a few words (the notes give the whole sentence)."""
    how = a.tokens.how if a.tokens is not None else ""
    return {"counted": ", counted with the tokenizer", "sampled": ", counted on a sample",
            "estimated": ", estimated from bytes"}.get(how, "")


class PlannerView(QWidget):
    sig_analysis_ready = Signal()
    """A plan's sweep finished and is drawn."""
    sig_error = Signal(str)
    sig_plan_failed = Signal(str)
    """The open plan could not be planned (the message says why); nothing of an earlier plan is left shown."""
    """The plan could not be analysed; the message says why."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plan: Plan | None = None
        self.base: Path | None = None
        self.base_analysis: Analysis | None = None
        self.analysis: Analysis | None = None
        self.selected: int | None = None
        self.last_update_ms = 0.0
        self._job = None
        self._build()

    def _build(self) -> None:
        self.summary = QLabel("Open or create a plan to see its options.")
        self.summary.setObjectName("plan_summary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setMinimumWidth(300)
        self.deadline = QDoubleSpinBox()
        self.deadline.setObjectName("deadline_spin")
        self.deadline.setRange(0, 24 * 365)
        self.deadline.setDecimals(3)    # 0.003 h is a plan's deadline too, never rounded to "none"
        self.deadline.setSpecialValueText("none")
        self.deadline.setSuffix(" h")
        self.deadline.setToolTip("Deadline for the whole run; 0 = none")
        self.cap = QDoubleSpinBox()
        self.cap.setObjectName("cost_cap_spin")
        self.cap.setRange(0, 1e8)
        self.cap.setDecimals(2)
        self.cap.setSingleStep(100)
        self.cap.setPrefix("$")
        self.cap.setSpecialValueText("none")
        self.cap.setToolTip("Cost cap in US dollars; 0 = none")
        self.priority = QComboBox()
        self.priority.setObjectName("priority_combo")
        self.priority.addItems(["dedicated", "low-priority"])
        self.priority.setToolTip("Azure VM priority: low-priority is cheaper and can be pre-empted")
        self.confidence = QComboBox()
        self.confidence.setObjectName("confidence")
        for label, value in (("P50", 0.5), ("P80", 0.8), ("P90", 0.9), ("P95", 0.95)):
            self.confidence.addItem(label, value)
        self.confidence.setToolTip("How sure an option must be to meet the deadline and the cost cap: P80 means "
                                   "it finishes in time and under the cap in 4 runs out of 5; P50 is the median "
                                   "estimate alone")
        self.confidence.currentIndexChanged.connect(self._controls_changed)
        self.all_adapters = QCheckBox("All adapters && teacher modes")
        self.all_adapters.setToolTip("Show full training, LoRA and QLoRA and every teacher mode, not only the plan's")
        for w in (self.deadline, self.cap):
            w.valueChanged.connect(self._controls_changed)
        self.priority.currentIndexChanged.connect(self._controls_changed)
        self.all_adapters.toggled.connect(self._controls_changed)
        self.only_ok = QCheckBox("Meeting the budget only")
        self.only_ok.setObjectName("only_ok")
        self.only_ok.setToolTip("List only the options that meet the deadline and the cost cap")
        self.only_ok.toggled.connect(self._controls_changed)
        self.prices_label = QLabel("")
        self.prices_label.setObjectName("prices_label")
        self.refresh_button = QPushButton("Refresh prices")
        self.refresh_button.setObjectName("refresh_prices")
        self.refresh_button.setToolTip("Fetch current prices from the Azure Retail Prices API")
        self.refresh_button.clicked.connect(self.refresh_prices)

        controls = QHBoxLayout()
        for label, w in (("Deadline", self.deadline), ("Cost cap", self.cap), ("Confidence", self.confidence),
                         ("Priority", self.priority)):
            controls.addWidget(QLabel(label))
            controls.addWidget(w)
        controls.addStretch(1)
        # a second row: what the list shows, and where prices and capacity come from
        shown = QHBoxLayout()
        shown.addWidget(self.all_adapters)
        shown.addWidget(self.only_ok)
        shown.addStretch(1)
        shown.addWidget(self.prices_label)
        shown.addWidget(self.refresh_button)
        self.capacity_button = QPushButton("Check capacity")
        self.capacity_button.setObjectName("check_capacity")
        self.capacity_button.setToolTip("Sign in to Azure and check which sizes the region offers your subscription "
                                        "and how much quota is free (Settings › Azure)")
        self.capacity_button.clicked.connect(self.check_capacity)
        shown.addWidget(self.capacity_button)

        # an error of the planner's own actions (prices, capacity), in full: the status bar may cut it
        self.error_label = QLabel("")
        self.error_label.setObjectName("planner_error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c0392b")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()

        self.chart = CostTimeChart(tip=self.describe)
        self.chart.sig_option_clicked.connect(self._option_clicked)
        self.memory = MemoryBar()
        self.memory.setObjectName("memory_bar")
        self.option_label = QLabel("")
        self.option_label.setObjectName("option_label")
        self.option_label.setWordWrap(True)
        self.option_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # the user clicked an option: a re-solve keeps it; otherwise the selection follows the recommendation
        self._user_picked = False
        self.model = OptionsModel(self)
        self.proxy = self.model     # sorting happens inside the model (numpy), see table.py
        self.table = QTableView()
        self.table.setObjectName("options_table")
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        # what meets the budget first, cheapest at the confidence first: the recommendation is the top row
        self.table.sortByColumn(STATUS_COL, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setResizeContentsPrecision(40)   # size columns from the first rows, not all of them
        header.setStretchLastSection(True)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        self._columns_sized = False
        self.table.selectionModel().selectionChanged.connect(self._table_selected)
        self.model.layoutChanged.connect(lambda *_: self.select_option(self.selected))  # keep it after a sort
        self.notes = QLabel("")
        self.notes.setObjectName("plan_notes")
        self.notes.setWordWrap(True)
        self.notes.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # The chart, the selected option (its line and memory bar), the table and the notes are the panes of one
        # splitter, each with a floor it keeps: at the window's minimum size (960×640) nothing paints over another,
        # the selected option's details scroll inside their pane and the table keeps a few rows in view.
        self.chart.setMinimumHeight(150)
        # the selected option's line beside its memory bar: both in view in a short pane
        details = QWidget()
        dl = QHBoxLayout(details)
        dl.setContentsMargins(0, 2, 0, 2)
        self.option_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        dl.addWidget(self.option_label, 3)
        self.memory.setMinimumWidth(280)
        self.memory.setMaximumWidth(460)
        dl.addWidget(self.memory, 2, Qt.AlignmentFlag.AlignTop)
        self.details = QScrollArea()
        self.details.setObjectName("option_details")
        self.details.setWidget(details)
        self.details.setWidgetResizable(True)
        self.details.setFrameShape(QScrollArea.Shape.NoFrame)
        self.details.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.details.setMinimumHeight(max(self.memory.minimumHeight(), 3 * self.fontMetrics().lineSpacing()) + 6)
        self.table.setMinimumHeight(self.table.horizontalHeader().sizeHint().height()
                                    + 4 * self.table.verticalHeader().defaultSectionSize()
                                    + self.table.horizontalScrollBar().sizeHint().height() + 4)
        self.notes.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        notes_area = QScrollArea()
        notes_area.setObjectName("notes_area")
        notes_area.setWidget(self.notes)
        notes_area.setWidgetResizable(True)
        notes_area.setFrameShape(QScrollArea.Shape.NoFrame)
        notes_area.setMinimumHeight(self.fontMetrics().height() + 6)
        split = _Panes(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        for k, (w, stretch) in enumerate(((self.chart, 6), (self.details, 1), (self.table, 4), (notes_area, 1))):
            split.addWidget(w)
            split.setStretchFactor(k, stretch)
        split.setSizes([460, 80, 280, 60])
        self.splitter = split
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addLayout(controls)
        lay.addLayout(shown)
        lay.addWidget(self.error_label)
        lay.addWidget(split, 1)

    # ---- analysis ----------------------------------------------------------------------------------------------

    def set_plan(self, plan: Plan, base: Path | None = None) -> None:
        """Analyse ``plan`` in the background; the view keeps showing the previous plan until it is done."""
        self.plan, self.base = plan, base
        self.summary.setText(f"<b>{plan.name}</b>: estimating…")
        if self._job is not None:
            self._job.cancel()
        self._job = workers.start_for(self, analyse, plan, base, on_result=self._analysed,
                                  on_error=lambda message, p=plan: self._failed(message, p))

    def _analysed(self, a: Analysis) -> None:
        if a.plan is not self.plan:
            return
        self.base_analysis = a
        b = a.plan.budget
        for w, v in ((self.deadline, b.hours or 0), (self.cap, b.usd or 0)):
            w.blockSignals(True)
            w.setValue(v)
            w.blockSignals(False)
        self.confidence.blockSignals(True)
        values = [self.confidence.itemData(k) for k in range(self.confidence.count())]
        if a.plan.budget.confidence not in values:
            self.confidence.addItem(f"P{round(a.plan.budget.confidence * 100)}", a.plan.budget.confidence)
        self.confidence.setCurrentIndex(self.confidence.findData(a.plan.budget.confidence))
        self.confidence.blockSignals(False)
        self.priority.blockSignals(True)
        self.priority.setCurrentText(a.plan.hardware.priority)
        self.priority.setEnabled(a.plan.hardware.target == "azure")
        self.priority.blockSignals(False)
        if a.prices is None:
            self.prices_label.setText("Local machine: no prices")
            self.refresh_button.setEnabled(False)
        else:
            self.prices_label.setText(f"Prices {a.prices.region} · {a.prices.fetched_on or 'undated'} "
                                      f"({a.prices.origin})")
            self.prices_label.setToolTip(for_the_app(a.prices.note))
            self.refresh_button.setEnabled(True)
        azure = a.plan.hardware.target == "azure"
        self.capacity_button.setEnabled(azure)
        self.capacity_button.setText(f"Capacity: {a.capacity.checked_on}" if azure and a.capacity else
                                     "Check capacity")
        self.layout().activate()
        self.selected = None
        self._user_picked = False
        self._show_error("")
        self._controls_changed()
        self.sig_analysis_ready.emit()

    def _failed(self, message: str, plan: Plan) -> None:
        if plan is not self.plan:      # an older plan's error, after another plan was opened
            return
        self.summary.setText(f"<b>{self.plan.name if self.plan else 'Plan'}</b>: "
                             f"<span style='color:#c0392b'>{message}</span>")
        # nothing of the previous plan stays under this one's title
        self.analysis = self.base_analysis = None
        self.selected = None
        self._user_picked = False
        self.model.set_analysis(None, np.zeros(0, dtype=bool))
        self.chart.clear_options()
        self.memory.set_breakdown(None)
        self.option_label.setText("")
        self.notes.setText("")
        self.sig_error.emit(message)
        self.sig_plan_failed.emit(message)

    def _controls_changed(self, *_args) -> None:
        """Re-solve the budget over the existing sweep and redraw."""
        base = self.base_analysis
        if base is None:
            return
        t0 = time.perf_counter()
        hours = self.deadline.value() or None
        usd = self.cap.value() or None
        hw = base.plan.hardware
        if hw.target == "azure":
            hw = hw.model_copy(update={"priority": self.priority.currentText()})
        confidence = float(self.confidence.currentData() or base.plan.budget.confidence)
        plan = base.plan.model_copy(update={"budget": base.plan.budget.model_copy(
            update={"hours": hours, "usd": usd, "confidence": confidence}), "hardware": hw})
        sw = base.sweep
        planned = planned_mask(sw, plan)
        if self.all_adapters.isChecked():
            planned = all_modes_mask(sw, plan)
        a = dataclasses.replace(base, plan=plan, planned=planned, decision=decide(sw, planned, hours, usd,
                                                                                   plan.budget.confidence))
        self.analysis = a
        ok = choices(a)
        o = sw.out
        d = a.decision
        # drawn at the confidence the budget is judged at: left of the deadline line means it meets the deadline,
        # under the cap line means it meets the cap; the whiskers are each option's P10-P90
        self.chart.show_options(d.hours, d.cost, ok, o["fits"], planned, a.decision.pareto,
                                a.decision.recommended, hours, usd, available=o.get("available"),
                                low=o.get("hours_low"), high=o.get("hours_high"), cost_low=o.get("cost_low"),
                                cost_high=o.get("cost_high"),
                                split=sw.grid.extra["pass_row"] >= 0 if "pass_row" in sw.grid.extra else None,
                                confidence=confidence)     # the axes name the quantile the points are drawn at
        self.model.set_analysis(a, ok, only_ok=self.only_ok.isChecked())
        if not self._columns_sized and self.model.rowCount():
            self.table.resizeColumnsToContents()
            # the reason is in view beside the figures; a long one is cut, whole in its tooltip
            self.table.setColumnWidth(STATUS_COL, 36 * self.table.fontMetrics().averageCharWidth())
            self._columns_sized = True
        self._summarise(a, ok)
        # the selection follows the recommendation after a re-solve, unless the user picked an option themselves
        keep = self._user_picked and self.selected is not None and bool(planned[self.selected])
        if not keep:
            self._user_picked = False
        self.select_option(self.selected if keep else _followed(d))
        self.layout().activate()
        self.last_update_ms = (time.perf_counter() - t0) * 1000

    def _figures(self, i: int) -> str:
        """"2.5 h, $117 at P80 (median 2.0 h, $91)": the option's time and cost at the confidence the budget is
        judged at, and the model's median beside them (at P50 the median alone)."""
        a = self.analysis
        d, o = a.decision, a.sweep.out
        at = confidence_text(d.confidence)
        text = f"{_hours(d.hours[i])}, {_money(d.cost[i])}{at}"
        if at:
            text += f" (median {_hours(o['total_hours'][i])}, {_money(o['cost_usd'][i])})"
        return text

    def _summarise(self, a: Analysis, ok: np.ndarray) -> None:
        d, o, p = a.decision, a.sweep.out, a.plan
        t, s = a.pair.teacher, a.pair.student
        head = (f"<b>{p.name}</b>: {t.name} ({_params(t.params)}) → {s.name} ({_params(s.params)}), "
                f"{p.method.kind}, {p.adapter.kind}. {int(a.planned.sum()):,} options as planned, "
                f"{int(ok.sum()):,} meet the budget.")
        if d.recommended is not None:
            i = d.recommended
            r = a.sweep.row(i)
            head += (f"<br><span style='color:#27ae60'><b>Recommended:</b></span> {_where(a.sweep, i)} "
                     f"({_devices(r)}, {r['adapter']}, teacher {r['teacher_mode']}): "
                     f"<b>{self._figures(i)}</b> — {d.rationale}.")
        else:
            if d.impossible:
                head += f"<br><span style='color:#c0392b'><b>No option:</b> {for_the_app(d.impossible)}.</span>"
            else:
                head += "<br><span style='color:#c0392b'><b>Nothing meets the budget.</b></span>"
            fast, priced = d.fastest, d.fastest_priced
            if fast is not None and np.isfinite(d.cost[fast]):
                if f"({a.sweep.hardware(fast)})" not in d.impossible:    # not named already by the message
                    head += f" Fastest: {_where(a.sweep, fast)}, {self._figures(fast)}."
            elif priced is not None:       # the fastest has no price: name the fastest one that has
                head += (f" Fastest with a known price: {_where(a.sweep, priced)}, {self._figures(priced)}"
                         f" (the fastest, {_where(a.sweep, fast)}, {_hours(d.hours[fast])}"
                         f"{confidence_text(d.confidence)}, has no known price here).")
            elif fast is not None and f"({a.sweep.hardware(fast)})" not in d.impossible:
                head += f" Fastest: {_where(a.sweep, fast)}, {self._figures(fast)}."
        unpriced = int((a.planned & ~np.isfinite(o["cost_usd"])).sum())
        self.summary.setText(head)
        notes = [for_the_app(n) for n in a.notes]
        if unpriced:
            notes.insert(0, f"{unpriced:,} options have no known price in this region: they are drawn hollow at their "
                            "time, apart from the priced ones; Refresh prices (above) fetches current ones.")
        self.notes.setText("\n".join("• " + n for n in notes))

    # ---- one option --------------------------------------------------------------------------------------------

    def describe(self, i: int) -> str:
        a = self.analysis
        if a is None:
            return ""
        r = a.sweep.row(i)
        why = "" if choices(a)[i] else a.reason(i)
        per = "process" if r["accelerator"] == "cpu" else "GPU"
        where = f"{_where(a.sweep, i)} · {_devices(r)}" + (
            f" · {r['priority']}" if a.plan.hardware.target == "azure" else "")    # no VM priority on this machine
        text = (f"{where}\n"
                f"{self._figures(i)} · {r['memory_gib_per_gpu']['total']:.1f} GiB/{per}\n"
                f"{r['adapter']}, teacher {r['teacher_mode']} ({r['teacher_precision']}), "
                f"recompute {r['recompute']}"
                + (f", {_SHARDING_TEXT[r['sharding']].replace('GPUs', 'processes')}" if r["gpus"] > 1
                   and r["accelerator"] == "cpu" else f", {_SHARDING_TEXT[r['sharding']]}" if r["gpus"] > 1 else "")
                + (f", teacher {'whole on each GPU' if r['teacher_placement'] == 'replicated' else 'sharded'}"
                   if r["gpus"] > 1 and r["sharding"] != "none" and r["teacher_mode"] != "none" else ""))
        h = r["hours"]
        phases = [f"set-up {_hours(h['setup'])}"]
        if h["teacher_pass"]:
            what = "generation" if r["teacher_mode"] == "generate" else "teacher pass"
            phases.append(f"{what} {_hours(h['teacher_pass'])} ({token_text(a.sweep.job.tokens_per_epoch)} tokens"
                          f"{_how(a)})")
        if h.get("cache_transfer"):
            phases.append(f"cache {r['split']['cache_gb']:,.1f} GB through storage {_hours(h['cache_transfer'])}")
        phases.append(f"training {_hours(h['training'])} ({token_text(a.sweep.job.train_tokens)} tokens{_how(a)})")
        if h["checkpoints"] * 3600 >= 1:
            phases.append(f"checkpoints {_hours(h['checkpoints'])}")
        if h.get("failures", 0.0) * 3600 >= 1:
            phases.append(f"failures (expected) {_hours(h['failures'])}")
        cal = r["calibration"]
        text += ("\n" + ", ".join(phases) + f" · MFU {r['mfu'] * 100:.0f}% · "
                 + cal["source"] + (f" ({cal['runs']} run{'s' if cal['runs'] != 1 else ''})" if cal["runs"] else "")
                 + (f" · {cal['smoke']}" if cal.get("smoke") else ""))    # a smoke job measured links, storage
        rng = r.get("range")
        if rng:
            text += (f"\nP10–P90 {_hours(rng['hours'][0])} to {_hours(rng['hours'][1])}"
                     + (f", {_money(rng['cost_usd'][0])} to {_money(rng['cost_usd'][1])}"
                        if np.isfinite(rng["cost_usd"][0]) else ""))
        ckpt = checkpoint_text(r)       # the interval, what it adds, the expected loss without it
        if ckpt:
            text += "\n" + ckpt[0].upper() + ckpt[1:]
        return text + (f"\n✗ {for_the_app(why)}" if why else "\n✓ meets the budget")

    def select_option(self, i: int | None) -> None:
        a = self.analysis
        self.selected = i
        if a is None or i is None:
            self.memory.set_breakdown(None)
            self.option_label.setText("")
            self.chart.mark(None, np.zeros(0), np.zeros(0))
            return
        r = a.sweep.row(i)
        self.chart.mark(i, a.decision.hours, a.decision.cost)     # where the option is drawn: at the confidence
        self.memory.set_breakdown(r["memory_gib_per_gpu"], r["usable_gib_per_gpu"],
                                  per="process" if r["accelerator"] == "cpu" else "GPU")
        self.option_label.setText("Selected: " + self.describe(i).replace("\n", " · "))
        # select the row in the table without re-entering
        row = self.model.row_of(i)
        if row is not None:
            sm = self.table.selectionModel()
            sm.blockSignals(True)
            self.table.selectRow(row)
            sm.blockSignals(False)
            self.table.scrollTo(self.model.index(row, 0))

    def _option_clicked(self, i: int) -> None:
        """The user picked option ``i`` (chart or table): a re-solve keeps it selected, unless it is the
        recommendation, which the selection then goes on following."""
        a = self.analysis
        self._user_picked = a is None or i != _followed(a.decision)
        self.select_option(i)

    def _table_selected(self, *_args) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self._option_clicked(int(rows[0].data(INDEX_ROLE)))

    # ---- prices ------------------------------------------------------------------------------------------------

    def refresh_prices(self) -> None:
        if self.plan is None or self.plan.hardware.target != "azure":
            return
        from ...engine.catalog.prices import refresh_prices

        region = self.plan.hardware.region
        self.refresh_button.setEnabled(False)
        self.prices_label.setText(f"Prices: fetching {region}…")
        workers.start_for(self, refresh_prices, region, on_result=lambda _t: self.set_plan(self.plan, self.base),
                      on_error=self._refresh_failed, on_finished=lambda: self.refresh_button.setEnabled(True))

    def check_capacity(self) -> None:
        """Sign in and read the region's sizes and quota (a worker: sign-in may wait on a browser), then plan again
        with them."""
        if self.plan is None or self.plan.hardware.target != "azure":
            return
        region = self.plan.hardware.region
        self.capacity_button.setEnabled(False)
        self.capacity_button.setText(f"Checking {region}…")
        workers.start_for(self, _refresh_capacity, region, on_result=lambda _t: self.set_plan(self.plan, self.base),
                      on_error=self._capacity_failed, on_finished=lambda: self.capacity_button.setEnabled(True))

    def _show_error(self, message: str) -> None:
        """An error of the planner's own actions, in full above the chart (and in the status bar); "" clears it."""
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))

    def _capacity_failed(self, message: str) -> None:
        self.capacity_button.setText("Check capacity")
        self._show_error(f"Capacity and quota could not be checked: {for_the_app(message)}")
        self.sig_error.emit(f"Capacity and quota could not be checked: {message}")

    def _refresh_failed(self, message: str) -> None:
        a = self.base_analysis
        when = f"{a.prices.origin}, {a.prices.fetched_on}" if a and a.prices else "unknown"
        self.prices_label.setText(f"Prices: {when} (refresh failed)")
        self.prices_label.setToolTip(message)
        self._show_error(f"Prices could not be refreshed: {for_the_app(message)}")
        self.sig_error.emit(f"Prices could not be refreshed: {message}")


def _refresh_capacity(region: str):
    """On a worker: the workspace of the settings, signed in as they say, and the region's capacity and quota."""
    from ...engine.azure.capacity import refresh_capacity
    from ...engine.azure.client import Azure, workspace_from_settings

    return refresh_capacity(Azure(workspace_from_settings()), region)
