"""The run monitor: live curves, progress with ETA, cost against the budget, the deadline check, the log, and
stop/resume for one run.

Reading the run folder happens on a worker thread every ``POLL_MS``; the GUI thread only appends ready-made arrays
to the charts, which redraw on their own timer. So a run that writes thousands of points a second, or opening a
finished run with half a million points, never stalls the window.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QPlainTextEdit,
                               QProgressBar, QPushButton, QScrollArea, QSplitter, QVBoxLayout, QWidget)

from ...engine.plan import Plan, load_plan
from ...engine.runs.process import stop_file
from .. import workers
from .chart import LiveChart
from .digest import failure_reason
from .runs import RunRecord, force_overdue, schedule_force, send_stop
from .watch import Snapshot, Watch, read_whole

POLL_MS = 300
REDRAW_MS = 60       # one chart is redrawn per tick, in turn: four charts of 150k-point curves never all at once
CANCEL_TIMEOUT_MS = 60_000   # after asking a run to stop, force it if it has not exited by then
LOG_LINES = 5_000
CHARTS_MIN_HEIGHT = 400   # below this the small charts are slivers: the chart area scrolls instead

CHARTS = {  # chart -> (title, y label, series)
    # the losses and the held-out KL share one scale (nats); the scores (0-1) have their own, with the teacher's
    # score as a reference line
    "loss": ("Loss", "nats", ("loss", "kd_loss", "ce_loss", "kl")),
    "eval": ("Held-out scores", "score (0–1)", ("task_score", "top1_agreement")),
    "grad": ("Gradient norm", "norm (unclipped)", ("grad_norm",)),
    "lr": ("Learning rate", "lr", ("lr",)),
    "speed": ("Throughput", "tokens/s", ("tokens_per_second",)),
}
# where each chart sits: (row, column, row span); the loss, the chart a user watches, is twice as tall
CHART_CELLS = {"loss": (0, 0, 2), "eval": (0, 1, 1), "grad": (1, 1, 1), "lr": (0, 2, 1), "speed": (1, 2, 1)}
SMOOTHED = ("loss", "grad")          # the charts the smoothing applies to (per-step curves; not the evaluations)
SMOOTHING = (("off", 0), ("10 steps", 10), ("50 steps", 50), ("200 steps", 200))
LABELS = {"loss": "loss (total)", "kd_loss": "KD loss", "ce_loss": "CE loss", "task_score": "task score",
          "top1_agreement": "top-1 agreement", "kl": "held-out KL", "lr": "learning rate",
          "tokens_per_second": "tokens/s", "grad_norm": "gradient norm (before clipping)"}
STATUS_TEXT = {"waiting": "Waiting", "starting": "Starting…", "running": "Running", "stopping": "Stopping…",
               "resuming": "Resuming from the last checkpoint…",
               "finishing": "Finishing: evaluating and saving the student…",
               "succeeded": "Finished", "failed": "Failed", "cancelled": "Stopped (checkpoint saved)",
               "stopped": "Stopped without finishing", "missing": "Run folder missing",
               "elsewhere": "Running (started elsewhere)"}
# the runs list says the same in fewer words (its column is narrow); the header's longer words start the same way
LIST_TEXT = {"waiting": "Waiting", "starting": "Starting…", "running": "Running", "stopping": "Stopping…",
             "resuming": "Resuming…", "finishing": "Finishing…", "succeeded": "Finished", "failed": "Failed",
             "cancelled": "Stopped", "stopped": "Stopped", "missing": "Folder missing",
             "elsewhere": "Running elsewhere"}
FAILED_COLOR = "#c0392b"
FAILED_COLOR_DARK = "#ff7b6b"      # the same red, lifted to read on a dark background


def failed_color(widget: QWidget | None = None) -> str:
    """The red of failures and warnings for the palette in use (light or dark)."""
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    palette = widget.palette() if widget is not None else QApplication.palette()
    return FAILED_COLOR_DARK if palette.color(QPalette.ColorRole.Window).lightness() < 128 else FAILED_COLOR


def list_text(status: str, step: int | None = None) -> tuple[str, str]:
    """A run's status in the runs list: the header's word (the column is narrow), and a tooltip with the step where
    it stands or stopped."""
    word = LIST_TEXT.get(status, status[:1].upper() + status[1:])
    tip = STATUS_TEXT.get(status, word)
    if step and status in ("running", "elsewhere", "cancelled", "stopped", "failed", "stopping", "finishing"):
        tip += f", at step {step:,}"
    return word, tip


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def fmt_usd(usd: float) -> str:
    """Dollars as a budget reads: cents below $100 ($0.20, $12.50), whole dollars above ($1,234)."""
    return f"${usd:,.2f}" if abs(usd) < 100 else f"${usd:,.0f}"


def started_text(record: RunRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(record.launched_at)) if record.launched_at else ""


def compare_label(record: RunRecord) -> str:
    """A run as the Compare box and the dashed curves' note name it: its name and when it started (two runs of one
    plan share a name)."""
    when = started_text(record)
    return f"{record.name}, started {when}" if when else f"{record.name} ({Path(record.run_dir).name})"


def planned_text(estimate: dict | None, what: str) -> str:
    """" (planned 24 s, P10–P90 7 s to 1 min)": the planner's figure the run started with, beside what it took."""
    rng = (estimate or {}).get("range")
    if not rng:
        return ""
    if what == "time":
        lo, mid, hi = (h * 3600 for h in (rng["hours"][0], rng["median_hours"], rng["hours"][2]))
        return f" (planned {fmt_duration(mid)}, P10–P90 {fmt_duration(lo)} to {fmt_duration(hi)})"
    lo, hi, mid = rng["cost_usd"][0], rng["cost_usd"][2], rng.get("median_cost_usd")
    if mid is None or lo is None or hi is None:
        return ""
    return f" (planned {fmt_usd(mid)}, P10–P90 {fmt_usd(lo)} to {fmt_usd(hi)})"


def price_per_hour(plan: Plan) -> float | None:
    """US dollars per hour of the plan's hardware, when known: the local machine's stated cost, or the Azure size's
    price in the region (or the one confirmed at launch) times its nodes."""
    hw = plan.hardware
    if hw.target == "local":
        return hw.usd_per_hour
    if not hw.sku:
        return None
    try:
        from ...engine.catalog.prices import load_prices

        price = load_prices(hw.region).lookup(hw.sku, hw.priority)
    except Exception:  # noqa: BLE001 - an unknown price is shown as unknown
        return None
    if price is None and hw.usd_per_hour is not None:     # the price confirmed at launch for a size with none
        return hw.usd_per_hour * (hw.nodes or 1)
    return None if price is None else price.usd_per_hour * (hw.nodes or 1)


class MonitorView(QWidget):
    sig_resume_requested = Signal(str)
    """The user asked to resume the run in this folder."""
    sig_status_changed = Signal(str, str)
    """run folder, new status."""
    sig_edit_plan_requested = Signal(str)
    """The user asked to edit the plan of the run shown (its plan file)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.record: RunRecord | None = None
        self.plan: Plan | None = None
        self._x_total = 0           # the steps the charts' x axes span (0: not known yet)
        self.watch: Watch | None = None
        self.snapshot: Snapshot | None = None
        self._polling = False
        self._stop_asked_at: float | None = None
        self._price: float | None = None
        self._console_error = ""        # the run's own error, from its console output
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._force_timer = QTimer(self)          # forces runs that were asked to stop and did not (any run)
        self._force_timer.setInterval(1000)
        self._force_timer.timeout.connect(self._force_overdue)
        self._force_timer.start()
        self._resume_asked_at: float | None = None
        self._compare_generation = 0
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw_next)
        self._redraw_timer.start()
        self._next_chart = 0

    def _redraw_next(self) -> None:
        """Redraw the next chart that has new points (charts of a hidden monitor wait until it is shown)."""
        if not self.isVisible():
            return
        charts = list(self.charts.values())
        for k in range(len(charts)):
            c = charts[(self._next_chart + k) % len(charts)]
            if c.is_dirty():
                c.redraw()
                self._next_chart = (self._next_chart + k + 1) % len(charts)
                return

    # ---- layout ----------------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.title = QLabel("No run selected")
        f = self.title.font()
        f.setPointSizeF(f.pointSizeF() * 1.3)
        f.setBold(True)
        self.title.setFont(f)
        self.status_label = QLabel("")
        self.status_label.setObjectName("status_label")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.figures = QLabel("")
        self.figures.setObjectName("figures_label")
        self.figures.setWordWrap(True)
        self.figures.setTextInteractionFlags(self.figures.textInteractionFlags())
        self.warning = QLabel("")
        self.warning.setObjectName("deadline_warning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(f"color: {failed_color(self)}; font-weight: bold;")
        self.warning.hide()
        # the outcome of a finished run, in one place: the student against its teacher, KL, time, cost, where
        self.result_card = QLabel("")
        self.result_card.setObjectName("result_card")
        self.result_card.setWordWrap(True)
        self.result_card.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_card.setStyleSheet("QLabel#result_card { border: 1px solid #27ae60; border-radius: 4px; "
                                       "padding: 6px; }")
        self.result_card.hide()
        # a failed run: what went wrong, in its own words, and what to do next
        self.failure_card = QLabel("")
        self.failure_card.setObjectName("failure_card")
        self.failure_card.setWordWrap(True)
        self.failure_card.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.edit_plan_button = QPushButton("Edit plan…")
        self.edit_plan_button.setObjectName("edit_plan_button")
        self.edit_plan_button.setToolTip("Open this run's plan in the wizard, change it and launch it again")
        self.edit_plan_button.clicked.connect(self._edit_plan_clicked)
        self.failure_box = QFrame()
        self.failure_box.setObjectName("failure_box")
        self._style_failure_box()
        fb = QHBoxLayout(self.failure_box)
        fb.setContentsMargins(6, 4, 6, 4)
        fb.addWidget(self.failure_card, 1)
        fb.addWidget(self.edit_plan_button, 0, Qt.AlignmentFlag.AlignVCenter)
        self.failure_box.hide()

        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stop_button")
        self.stop_button.setToolTip("Ask the run to save a checkpoint and stop; it is forced after "
                                    f"{CANCEL_TIMEOUT_MS // 1000} s if it does not. It can be resumed.")
        self.stop_button.clicked.connect(self.request_stop)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setObjectName("resume_button")
        self.resume_button.setToolTip("Continue from the last checkpoint")
        self.resume_button.clicked.connect(self._resume_clicked)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.clicked.connect(self._open_folder)
        self.log_scale = QCheckBox("Log scale")
        self.log_scale.setObjectName("log_scale")
        self.log_scale.setToolTip("Logarithmic y axis for the loss chart (Ctrl+L); the held-out scores keep "
                                  "their fixed 0–1 scale")
        self.log_scale.toggled.connect(self._set_log)
        self.smoothing = QComboBox()
        self.smoothing.setObjectName("smoothing_combo")
        for text, window in SMOOTHING:
            self.smoothing.addItem(text, window)
        self.smoothing.setToolTip("Draw the loss and gradient-norm curves as their mean over the last N steps; the "
                                  "raw points stay faint behind them")
        self.smoothing.currentIndexChanged.connect(self._set_smoothing)
        self.x_axis = QComboBox()
        self.x_axis.setObjectName("x_axis_combo")
        self.x_axis.addItem("step", "step")
        self.x_axis.addItem("elapsed time", "time")
        self.x_axis.setToolTip("Label the x axis with steps, or with the time elapsed since the run began (a stop "
                               "and resume shows as a jump in time)")
        self.x_axis.currentIndexChanged.connect(self._set_x_axis)
        self._clock_steps: list[int] = []
        self._clock_seconds: list[float] = []
        self.compare = QComboBox()
        self.compare.setObjectName("compare_combo")
        self.compare.setMinimumContentsLength(18)
        self.compare.setToolTip("Draw another run's curves, dashed, on the same charts")
        self.compare.currentIndexChanged.connect(self._compare_changed)
        self.compare_note = QLabel("")
        self.compare_note.setObjectName("compare_note")
        self.compare_note.hide()

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.status_label)
        buttons = QHBoxLayout()
        for w in (self.stop_button, self.resume_button, self.folder_button):
            buttons.addWidget(w)
        buttons.addStretch(1)
        buttons.addWidget(self.log_scale)
        # how the charts are drawn, on a row of its own: the monitor stays narrow beside the runs list
        view_row = QHBoxLayout()
        view_row.addWidget(QLabel("Smoothing:"))
        view_row.addWidget(self.smoothing)
        view_row.addSpacing(8)
        view_row.addWidget(QLabel("x axis:"))
        view_row.addWidget(self.x_axis)
        view_row.addSpacing(8)
        view_row.addWidget(QLabel("Compare with:"))
        view_row.addWidget(self.compare, 1)

        self.charts: dict[str, LiveChart] = {}
        grid = QGridLayout()
        grid.setSpacing(6)
        for key, (title, ylabel, series) in CHARTS.items():
            c = LiveChart(title, y_label=ylabel)
            c.auto_redraw = False
            for s in series:
                c.add_series(s, symbol="o" if key == "eval" or s == "kl" else None, label=LABELS.get(s, s))
            if key == "eval":
                c.plot_item.setYRange(0.0, 1.05, padding=0)   # scores are 0-1: a fixed scale reads at a glance
                c.fixed_y = True
                c.plot_item.ctrl.logYCheck.setEnabled(False)  # nor from the chart's menu
            if len(series) == 1:       # one curve: the title names it, a legend would only cover it
                c.legend.hide()
            self.charts[key] = c
            row, col, span = CHART_CELLS[key]
            grid.addWidget(c, row, col, span, 1)
        charts = QWidget()
        charts.setLayout(grid)
        # at the window's smallest sizes the charts keep a readable height and scroll, rather than shrink to slivers
        charts.setMinimumHeight(CHARTS_MIN_HEIGHT)
        self.charts_area = QScrollArea()
        self.charts_area.setObjectName("charts_area")
        self.charts_area.setWidget(charts)
        self.charts_area.setWidgetResizable(True)
        self.charts_area.setFrameShape(QFrame.Shape.NoFrame)
        self.charts_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        self.log = QPlainTextEdit()
        self.log.setObjectName("log_pane")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setFont(QFont("monospace", 9))
        self.log.setPlaceholderText("The run's output appears here.")
        split = QSplitter()
        split.setOrientation(split.orientation().__class__.Vertical)
        split.addWidget(self.charts_area)
        split.addWidget(self.log)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        self.splitter = split

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.progress)
        lay.addWidget(self.figures)
        lay.addWidget(self.warning)
        lay.addWidget(self.result_card)
        lay.addWidget(self.failure_box)
        lay.addLayout(buttons)
        lay.addLayout(view_row)
        lay.addWidget(self.compare_note, 0, Qt.AlignmentFlag.AlignRight)
        lay.addWidget(split, 1)
        self._update_buttons()

    # ---- which run ---------------------------------------------------------------------------------------------

    def show_run(self, record: RunRecord | None) -> None:
        """Watch ``record`` (None: show nothing). Points already written are read in the background, then new ones
        as they arrive."""
        self._timer.stop()
        self._stop_asked_at = None
        self._resume_asked_at = None
        self._compare_generation += 1
        self.compare.blockSignals(True)
        self.compare.setCurrentIndex(0)
        self.compare.blockSignals(False)
        self.record, self.snapshot = record, None
        for c in self.charts.values():
            c.clear()
        self._clock_steps, self._clock_seconds = [], []
        self._set_smoothing()
        self.log.clear()
        self._console_error = ""
        self.warning.hide()
        self.failure_box.hide()
        self.result_card.hide()
        self.compare_note.hide()
        self.status_label.setStyleSheet("")
        self.charts_area.show()
        self.figures.setText("")
        self.progress.setValue(0)
        self.progress.setFormat("")
        if record is None:
            self.watch, self.plan = None, None
            self.title.setText("No run selected")
            self.status_label.setText("")
            self._update_buttons()
            return
        self.title.setText(record.name)
        self.plan, self._price = None, None
        self._x_total = 0
        self._attach_plan()
        self.watch = Watch(record)
        self._timer.start()
        self._poll()

    def _attach_plan(self) -> None:
        """The run's plan as it runs (its price, budget and deadline). A run just launched writes it a moment after
        it starts: until then this is tried again at every poll, so cost so far and the deadline warning appear
        without reopening the run."""
        if self.plan is not None or self.record is None:
            return
        path = Path(self.record.run_dir) / "plan.toml"
        if not path.is_file():
            return
        try:
            self.plan = load_plan(path)
        except Exception:  # noqa: BLE001 - a run whose plan does not load still shows its curves
            return
        self._price = price_per_hour(self.plan)

    def set_compare_choices(self, records: list[RunRecord]) -> None:
        current = self.compare.currentData()
        self.compare.blockSignals(True)
        self.compare.clear()
        self.compare.addItem("(none)", None)
        for r in records:
            if self.record is None or r.run_dir != self.record.run_dir:
                self.compare.addItem(compare_label(r), r.run_dir)
                self.compare.setItemData(self.compare.count() - 1, r.run_dir, Qt.ItemDataRole.ToolTipRole)
        i = self.compare.findData(current)
        self.compare.setCurrentIndex(max(0, i))
        self.compare.blockSignals(False)
        self._compare_records = {r.run_dir: r for r in records}

    # ---- polling -----------------------------------------------------------------------------------------------

    def _poll(self) -> None:
        if self._polling or self.watch is None:
            return
        self._polling = True
        watch = self.watch
        workers.start_for(self, watch.poll, on_result=lambda res, w=watch: self._apply(w, *res),
                      on_finished=self._poll_done)

    def _poll_done(self) -> None:
        self._polling = False

    def _apply(self, watch: Watch, batch, snap: Snapshot) -> None:
        if watch is not self.watch:       # the user switched runs while this poll ran
            return
        if batch.truncate_to is not None:     # a resumed run repeats the steps after its checkpoint
            for c in self.charts.values():
                for name in c.series_names():
                    x, y = c.data(name)
                    keep = x <= batch.truncate_to
                    c.set_data(name, x[keep], y[keep])
            keep = [k for k, st in enumerate(self._clock_steps) if st <= batch.truncate_to]
            self._clock_steps = [self._clock_steps[k] for k in keep]
            self._clock_seconds = [self._clock_seconds[k] for k in keep]
        for step, label in batch.markers:     # where the run stopped and where it resumed
            for key, c in self.charts.items():
                c.add_marker(step, label if key == "loss" else "")
        if batch.clock:
            self._clock_steps += [st for st, _ in batch.clock]
            self._clock_seconds += [sec for _, sec in batch.clock]
            if self.x_axis.currentData() == "time":
                self._set_x_axis()
        for key, (title, _, series) in CHARTS.items():
            for s in series:
                if s in batch.points:
                    self.charts[key].append(s, *batch.points[s])
        if "teacher_task_score" in batch.points:
            score = float(batch.points["teacher_task_score"][1][-1])
            self.charts["eval"].set_reference(score, f"teacher {score:.2f}")
        if batch.logs:
            self.log.appendPlainText("\n".join(batch.logs))
            reason = failure_reason(batch.logs)
            if reason:
                self._console_error = reason
        snap = self._judge(snap)
        old = self.snapshot.status if self.snapshot else None
        self.snapshot = snap
        self._show(snap)
        if snap.status != old and self.record is not None:
            self.sig_status_changed.emit(self.record.run_dir, snap.status)
        if not snap.alive and snap.status not in ("starting", "running", "stopping"):
            self._stop_asked_at = None
        if snap.alive:
            self._resume_asked_at = None

    def _judge(self, snap: Snapshot) -> Snapshot:
        """A run that ended without saying how is told as failed when it failed: its process is gone and it printed
        an error, or it was launched here and ended before it ever started training. A failed run's reason is its
        own: the engine's message, else its console's error line."""
        if snap.alive or self.record is None:
            return snap
        if snap.status == "stopped" and not stop_file(self.record.run_dir).exists() and (
                self._console_error or (self.record.pid > 0 and not snap.total_steps)):
            return dataclasses.replace(snap, status="failed", message=self._console_error or (
                "the run ended before its first step without saying why; its output is below"))
        if snap.status == "failed" and not snap.message and self._console_error:
            return dataclasses.replace(snap, message=self._console_error)
        return snap

    def _ended_after(self) -> float | None:
        """Seconds from the launch of the run shown to its last output (a run that failed before its first step)."""
        if self.record is None or not self.record.launched_at:
            return None
        try:
            return max(0.0, self.record.console_path.stat().st_mtime - self.record.launched_at)
        except OSError:
            return None

    def _show(self, s: Snapshot) -> None:
        self._attach_plan()
        if s.total_steps and s.total_steps != self._x_total:
            self._x_total = s.total_steps
            for c in self.charts.values():
                c.set_steps(s.total_steps)
        status = STATUS_TEXT.get(s.status, s.status)
        if s.remote and s.alive and s.status in ("starting", "running"):
            status = f"{status} · Azure ML: {s.remote}"       # Queued, Preparing (image build), Running, ...
        if self._stop_asked_at is not None and s.alive:
            status = ("Stopping: cancelling the job, the engine saves a checkpoint…" if s.remote else
                      "Stopping: saving a checkpoint…")
        failed = s.status == "failed"
        self.status_label.setText(status)
        self.status_label.setStyleSheet(f"color: {failed_color(self)}; font-weight: bold;" if failed else "")
        self.progress.setValue(int(s.fraction * 1000))
        if s.total_steps:
            self.progress.setFormat(f"step {s.step:,} of {s.total_steps:,}  ({s.fraction:.0%})"
                                    + ("  · failed" if failed else ""))
        else:
            self.progress.setFormat("failed before the first step" if failed else
                                    "ended before the first step" if not s.alive and s.status != "starting"
                                    else "waiting for the first step…")
        if failed and not s.total_steps:
            after = self._ended_after()
            parts = ["never started" if after is None else "ended within a second of its launch" if after < 1
                     else f"ended {fmt_duration(after)} after its launch"]
        else:
            parts = [f"elapsed {fmt_duration(s.elapsed_seconds)}"]
        if s.eta_seconds is not None:
            spread = (f"{fmt_duration(s.eta_range[0])} to {fmt_duration(s.eta_range[1])}, "
                      if s.eta_range and s.eta_range[1] - s.eta_range[0] >= 1 else "")
            parts.append(f"ETA {fmt_duration(s.eta_seconds)} ({spread}at {s.seconds_per_step:.2f} s/step, "
                         f"{time.strftime('%H:%M', time.localtime(time.time() + s.eta_seconds))})")
        if s.tokens_per_second:
            parts.append(f"{s.tokens_per_second:,.0f} tokens/s")
        held_out = [f"{label} {s.latest[key]:.3f}" for key, label in (("task_score", "task score"), ("kl", "KL"))
                    if key in s.latest]
        if held_out:
            at = s.latest.get("eval_step")
            parts.append(" · ".join(held_out) + (f" (step {int(at):,})" if at is not None else ""))
        if self._price is not None:
            spent = self._price * s.elapsed_seconds / 3600
            cost = f"cost so far ${spent:,.2f}"
            if s.eta_seconds is not None:
                cost += f", projected ${self._price * (s.elapsed_seconds + s.eta_seconds) / 3600:,.2f}"
            if self.plan and self.plan.budget.usd:
                cost += f" of {fmt_usd(self.plan.budget.usd)} budget"
            parts.append(cost)
        elif self.plan is not None:
            parts.append("no hourly price for this hardware, cost not counted")
        if s.status == "stopped" and s.message:
            parts.append(s.message)
        self.figures.setText("  ·  ".join(parts))
        self.warning.setText(self._budget_warning(s))
        self.warning.setVisible(bool(self.warning.text()))
        card = self._result(s)
        self.result_card.setText(card)
        self.result_card.setVisible(bool(card))
        failure = self._failure(s)
        self.failure_card.setText(failure)
        self.failure_box.setVisible(bool(failure))
        self.edit_plan_button.setVisible(bool(failure) and self._plan_to_edit() is not None)
        # a run that failed before its first step has nothing to chart: its output gets the room instead
        self.charts_area.setVisible(not (failed and not s.total_steps
                                         and not any(c.point_count(n) for c in self.charts.values()
                                                     for n in c.series_names())))
        self._update_buttons()

    def _failure(self, s: Snapshot) -> str:
        """The card of a run that failed ("" otherwise): its reason in red, and what to do next."""
        if s.status != "failed":
            return ""
        from html import escape

        reason = s.message or "the run did not say why; its output is below"
        if s.last_checkpoint is not None:
            todo = (f"Fix the cause, then Resume continues from the checkpoint at step {s.last_checkpoint:,}; or "
                    "Edit plan to change it and launch it again. The run's output is below.")
        elif not s.total_steps:
            todo = "Nothing was trained. Edit plan to change what the error names, then launch it again."
        else:
            todo = "No checkpoint was saved. Edit plan to change what the error names, then launch it again."
        return (f'<span style="color:{failed_color(self)}"><b>Failed:</b> {escape(reason)}</span>'
                f"<br>What to do: {todo}")

    def _style_failure_box(self) -> None:
        self.failure_box.setStyleSheet(f"QFrame#failure_box {{ border: 1px solid {failed_color(self)}; "
                                       "border-radius: 4px; }")

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        """A theme change: the styled labels take the new palette's text colour and red (a style sheet keeps the
        colours it was polished with until it is set again)."""
        from PySide6.QtCore import QEvent

        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange) and \
                hasattr(self, "failure_box"):
            self.warning.setStyleSheet(f"color: {failed_color(self)}; font-weight: bold;")
            self.result_card.setStyleSheet(self.result_card.styleSheet())
            self._style_failure_box()
            if self.snapshot is not None:
                self._show(self.snapshot)
        super().changeEvent(event)

    def _plan_to_edit(self) -> str | None:
        """The plan file behind the run shown: the one it was launched from, else the copy in its folder."""
        if self.record is None:
            return None
        for path in (self.record.plan_path, str(Path(self.record.run_dir) / "plan.toml")):
            if path and Path(path).is_file():
                return path
        return None

    def _edit_plan_clicked(self) -> None:
        path = self._plan_to_edit()
        if path:
            self.sig_edit_plan_requested.emit(path)

    def _result(self, s: Snapshot) -> str:
        """The card of a run that succeeded ("" otherwise)."""
        if s.status != "succeeded":
            return ""
        parts = []
        score, teacher = s.latest.get("task_score"), s.latest.get("teacher_task_score")
        if score is not None:
            parts.append(f"task score <b>{score:.3f}</b>" + (f" (teacher {teacher:.3f})" if teacher is not None else ""))
        if s.latest.get("kl") is not None:
            parts.append(f"held-out KL to the teacher {s.latest['kl']:.4f}")
        parts.append(f"trained in {fmt_duration(s.elapsed_seconds)}" + planned_text(s.planned, "time"))
        if self._price is not None:
            parts.append(f"cost ${self._price * s.elapsed_seconds / 3600:,.2f}" + planned_text(s.planned, "cost"))
        where = s.message.split("student saved to ", 1)[1] if "student saved to " in s.message else ""
        text = "<b>Finished.</b> " + " · ".join(parts)
        return text + (f"<br>Student: {where}" if where else (f"<br>{s.message}" if s.message else ""))

    def _budget_warning(self, s: Snapshot) -> str:
        if self.plan is None:
            return ""
        out = []
        hours, cap = self.plan.budget.hours, self.plan.budget.usd
        if s.eta_seconds is not None:
            need = (s.elapsed_seconds + s.eta_seconds) / 3600
            if hours and need > hours:
                out.append(f"At the measured {s.seconds_per_step:.2f} s a step this run needs {need:.2f} h in all, "
                           f"{need - hours:.2f} h past its {hours:g} h deadline.")
            if self._price is not None and cap and need * self._price > cap:
                out.append(f"Projected cost {fmt_usd(need * self._price)} is over the {fmt_usd(cap)} budget.")
        elif s.alive and s.status in ("finishing", "stopping"):
            # no ETA while the student is evaluated and saved, but the clock and the cost still run
            spent = s.elapsed_seconds / 3600
            if hours and spent > hours:
                out.append(f"This run has taken {spent:.2f} h, past its {hours:g} h deadline.")
            if self._price is not None and cap and spent * self._price > cap:
                out.append(f"Cost so far {fmt_usd(spent * self._price)} is over the {fmt_usd(cap)} budget.")
        return " ".join(out)

    def _update_buttons(self) -> None:
        s = self.snapshot
        alive = bool(s and s.alive)
        self.stop_button.setEnabled(alive and self._stop_asked_at is None)
        resumable = bool(s and not s.alive and s.status in ("cancelled", "stopped", "failed")
                         and s.last_checkpoint is not None
                         and (self._resume_asked_at is None or time.time() - self._resume_asked_at > 60))
        self.resume_button.setEnabled(resumable)
        self.folder_button.setEnabled(self.record is not None)

    # ---- actions -----------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the run to stop at the next step, saving a checkpoint; force it after CANCEL_TIMEOUT_MS."""
        if not self.record or not self.snapshot or not self.snapshot.alive:
            return
        if send_stop(self.record.pid, run_dir=self.record.run_dir):
            self._stop_asked_at = time.time()
            if self.record.target == "azure":
                # the watcher cancels the job and follows it to its end; nothing here to force
                self.log.appendPlainText("[studio] asked Azure ML to cancel the job; the engine saves a checkpoint "
                                         "first")
            else:
                self.log.appendPlainText("[studio] asked the run to stop; it saves a checkpoint first")
                schedule_force(self.record.pid, self.record.run_dir, CANCEL_TIMEOUT_MS / 1000)
        self._update_buttons()

    def _force_overdue(self) -> None:
        for pid in force_overdue():
            if self.record is not None and pid == self.record.pid:
                self.log.appendPlainText(f"[studio] the run did not stop within {CANCEL_TIMEOUT_MS // 1000} s; forced "
                                         "it. Resume continues from its last saved checkpoint.")

    def _resume_clicked(self) -> None:
        if self.record is None:
            return
        self._resume_asked_at = time.time()      # no second click while the resumed process starts
        self._update_buttons()
        self.sig_resume_requested.emit(self.record.run_dir)

    def _set_smoothing(self, *_args) -> None:
        window = int(self.smoothing.currentData() or 0)
        for key in SMOOTHED:
            self.charts[key].set_smoothing(window)

    def _set_x_axis(self, *_args) -> None:
        on = self.x_axis.currentData() == "time" and bool(self._clock_steps)
        steps = np.asarray(self._clock_steps, dtype=float) if on else None
        seconds = np.asarray(self._clock_seconds, dtype=float) if on else None
        for c in self.charts.values():
            c.set_clock(steps, seconds)

    def _set_log(self, on: bool) -> None:
        # the losses only: the scores chart keeps its fixed 0-1 scale (log of a score of 0 is nowhere)
        self.charts["loss"].set_log_y(on)

    def _open_folder(self) -> None:
        if self.record:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.record.run_dir))

    def _compare_changed(self, _i: int) -> None:
        self._compare_generation += 1
        for c in self.charts.values():
            c.clear_overlays()
        run_dir = self.compare.currentData()
        other = getattr(self, "_compare_records", {}).get(run_dir)
        self.compare_note.setVisible(other is not None)
        if other is None:
            return
        self.compare_note.setText(f"Dashed curves: {compare_label(other)}")
        self._compare_generation += 1
        gen = self._compare_generation
        workers.start_for(self, read_whole, other, on_result=lambda b, name=other.name: self._overlay(b, name, gen))

    def _overlay(self, batch, name: str, generation: int) -> None:
        if generation != self._compare_generation:     # another run or comparison was chosen meanwhile
            return
        for key, (_, _, series) in CHARTS.items():
            for s in series:
                if s in batch.points:
                    x, y = batch.points[s]
                    # not in the legends: the line above the charts names the run the dashed curves are of
                    self.charts[key].set_overlay(s, x, y, f"{LABELS.get(s, s)} · {name}", legend=False)

    def stop_watching(self) -> None:
        self._redraw_timer.stop()
        self._timer.stop()
        self._force_timer.stop()
