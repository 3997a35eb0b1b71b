"""A live line chart for the run monitor: named series that grow while a run trains, drawn with pyqtgraph.

Built the way pyqtgraph's ``examples/scrollingPlots.py`` draws growing data:

* every series keeps its points in numpy buffers that double when full, so ``append`` is amortised O(1) and never
  touches Qt;
* appends only mark the chart dirty; a single-shot ``QTimer`` pushes the dirty buffers to the curves at most once
  every ``redraw_interval_ms`` (and not while the chart is hidden: it catches up when shown);
* the curves use automatic peak downsampling and clip-to-view, so a redraw costs about the same at 5,000 or
  500,000 points: what is drawn is about two points per horizontal pixel of what is in view;
* the buffers never hold NaN, None or infinities (they are dropped on the way in), so the curves skip pyqtgraph's
  finite checks. On a log-scale y axis the non-positive points are hidden (left out of what is pushed).

Known environment problem: PySide6 6.12.0 on Python < 3.12 drops references to None and True on signal emits and
Python overrides, so any pyqtgraph plot that keeps repainting aborts the process after a while (see
tests/gui/test_chart.py::test_live_redraws_keep_references_to_none_and_true). Nothing in this module can avoid it.

Colours follow the widget's palette (background, text, grid), and the series palette is a mid-luminance one
(Tableau 10) that reads on light and dark backgrounds; on a dark background it is lifted a little.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from ..theme import style_axes

__all__ = ["LiveChart", "PALETTE"]

PALETTE: tuple[str, ...] = (
    "#4e79a7",  # blue
    "#f28e2b",  # orange
    "#59a14f",  # green
    "#e15759",  # red
    "#b07aa1",  # purple
    "#76b7b2",  # teal
    "#9c755f",  # brown
    "#ff9da7",  # pink
    "#edc948",  # yellow
    "#bab0ac",  # grey
)
"""Series colours in the order they are handed out (Tableau 10, yellow and grey last: weakest on white)."""

_INITIAL_CAPACITY = 1024
_LINE_WIDTH = 1          # a cosmetic 1 px pen: the fast path in Qt's stroker; wider pens cost several times more
_SYMBOL_SIZE = 7
_CURVE_OPTS = {"connect": "all", "skipFiniteCheck": True}
_MARKER_LABEL_HEIGHTS = (0.04, 0.36, 0.68)   # where marker labels sit, up the plot, in turn


def _as_1d(values: Any) -> np.ndarray:
    """Scalars and 1-D sequences as a float64 array; None becomes NaN."""
    if values is None:
        return np.array([np.nan])
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"expected a scalar or a 1-D sequence, got shape {arr.shape}")
    return arr


def _finite_pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = _as_1d(x), _as_1d(y)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} and {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    if not keep.all():
        xa, ya = xa[keep], ya[keep]
    return xa, ya


def elapsed_text(seconds: float) -> str:
    """An elapsed time for an axis tick, in the app's words for durations (45 s, 2 min 30 s, 1 h 05 min), the
    parts that are zero left out (2 min, 1 h): ticks sit at round times."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60:02d} s" if s % 60 else "")
    return f"{s // 3600} h" + (f" {(s % 3600) // 60:02d} min" if (s % 3600) // 60 else "")


# round spacings for elapsed-time ticks, in seconds
_TIME_SPACINGS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600,
                  43200, 86400, 172800, 432000)


def trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Each point's mean over it and the ``window - 1`` before it (fewer at the start): the smoothed curve ends at
    the latest value's window, never ahead of the data. O(n) through a cumulative sum."""
    if window <= 1 or y.size == 0:
        return y
    cs = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(1, y.size + 1)
    lo = np.maximum(0, i - window)
    return (cs[i] - cs[lo]) / (i - lo)


class _CompactAxis(pg.AxisItem):
    """An axis whose large tick values read 250k, 1.5M rather than 250000 or an "x1e+06" in the label."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enableAutoSIPrefix(False)
        self.clock: tuple[np.ndarray, np.ndarray] | None = None
        """(steps, seconds since the run began): ticks read as the elapsed time at that step (a wall-clock axis)."""

    def tickValues(self, minVal: float, maxVal: float, size: float):  # noqa: N802 (pyqtgraph API)
        """On a wall-clock axis, ticks at round elapsed times (every 30 s, 2 min, 1 h...), placed at the step where
        the run was at that time; a pause (a stop, then a resume) gets no crowd of ticks."""
        if self.clock is None or not len(self.clock[0]) or maxVal <= minVal or size <= 0:
            return super().tickValues(minVal, maxVal, size)
        steps, seconds = self.clock
        seconds = np.maximum.accumulate(seconds)
        lo = float(np.interp(minVal, steps, seconds)) if minVal > steps[0] else 0.0
        hi = float(np.interp(maxVal, steps, seconds))
        def spacing_for(px: int) -> float:
            room = max(2, int(size // px))
            return next((sp for sp in _TIME_SPACINGS if (hi - lo) / sp <= room), _TIME_SPACINGS[-1])

        # whole minutes and hours read short ("3 min", "2 h"): a tick per ~60 px; seconds ("1 min 30 s") need ~75
        spacing = spacing_for(60)
        if spacing < 60:
            spacing = spacing_for(75)
        times = np.arange(math.ceil(lo / spacing) * spacing, hi + 1e-9, spacing)
        at = np.interp(times, seconds, steps)
        ticks: dict[float, float] = {}         # step -> the round time it marks
        last = None
        min_gap = (maxVal - minVal) * 40 / size       # ticks crowded by a pause in the run: keep the first
        for t, x in zip(times, at):
            if last is None or x - last >= min_gap:
                ticks[float(x)] = float(t)
                last = x
        self._tick_times = ticks
        return [(spacing, list(ticks))]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if self.clock is not None and len(self.clock[0]) and values:
            steps, seconds = self.clock
            seconds = np.maximum.accumulate(seconds)
            known = getattr(self, "_tick_times", {})
            return [elapsed_text(known.get(v, float(np.interp(v * scale, steps, seconds))))
                    if v * scale >= steps[0] - 1e-9 else "" for v in values]
        if self.logMode or not values or spacing <= 0:
            return super().tickStrings(values, scale, spacing)
        biggest = max(abs(v * scale) for v in values)
        if biggest < 10_000:
            return super().tickStrings(values, scale, spacing)
        unit, suffix = (1e6, "M") if biggest >= 1e6 else (1e3, "k")
        step = spacing * scale / unit
        decimals = next((d for d in range(4) if abs(step * 10**d - round(step * 10**d)) < 1e-6 * 10**d), 3)
        out = []
        for v in values:
            v = v * scale / unit
            text = f"{v:.{decimals}f}"
            out.append("0" if float(text) == 0 else text + suffix)
        return out


@dataclass
class _Series:
    item: pg.PlotDataItem
    color: QColor
    explicit_color: bool
    symbol: str | None
    shadow: pg.PlotDataItem | None = None      # the raw points, faint, while the series is drawn smoothed
    x: np.ndarray = field(default_factory=lambda: np.empty(_INITIAL_CAPACITY))
    y: np.ndarray = field(default_factory=lambda: np.empty(_INITIAL_CAPACITY))
    n: int = 0

    def reset(self) -> None:
        # fresh buffers, not n = 0: the curve may still hold views of the old ones until the next redraw
        self.x = np.empty(_INITIAL_CAPACITY)
        self.y = np.empty(_INITIAL_CAPACITY)
        self.n = 0

    def extend(self, xa: np.ndarray, ya: np.ndarray) -> None:
        k = xa.size
        need = self.n + k
        if need > self.x.size:
            cap = self.x.size * 2
            while cap < need:
                cap *= 2
            nx, ny = np.empty(cap), np.empty(cap)
            nx[: self.n] = self.x[: self.n]
            ny[: self.n] = self.y[: self.n]
            self.x, self.y = nx, ny
        self.x[self.n:need] = xa
        self.y[self.n:need] = ya
        self.n = need


@dataclass
class _Overlay:
    item: pg.PlotDataItem
    label: str
    x: np.ndarray
    y: np.ndarray


class LiveChart(QWidget):
    """A titled chart of named, growing series (see the module docstring for how it stays fast)."""

    def __init__(self, title: str, y_label: str = "", x_label: str = "step", parent: QWidget | None = None) -> None:
        self._ready = False  # changeEvent may come before the plot exists
        super().__init__(parent)
        self._title = title
        self._series: dict[str, _Series] = {}
        self._overlays: dict[str, _Overlay] = {}
        self._dirty: set[str] = set()
        self._dirty_overlays: set[str] = set()
        self._log_y = False
        self.last_redraw_ms: float = 0.0
        self.redraw_count: int = 0
        """How many times the curves were updated (by the timer or by ``redraw()``)."""

        self.plot_widget = pg.PlotWidget(axisItems={"bottom": _CompactAxis(orientation="bottom")})
        self.plot_widget.setMinimumSize(160, 120)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)

        pi = self.plot_item
        # new curves take these from the plot (and its context menu), so they are set here, not only per curve
        pi.setDownsampling(auto=True, mode="peak")
        pi.setClipToView(True)
        pi.showGrid(x=True, y=True, alpha=0.18)
        pi.setLabel("bottom", x_label)
        if y_label:
            pi.setLabel("left", y_label)
        for side in ("left", "bottom"):
            # major and minor ticks, not the third level: a calmer grid, and a third less to paint per redraw
            pi.getAxis(side).setStyle(maxTickLevel=1)
        pi.getAxis("left").setWidth(54)     # room for 4-5 digit ticks, so the plot does not jump as values change
        self.legend = pi.addLegend(offset=(-8, 8), verSpacing=-4, labelTextSize="9pt")
        self.legend_corner = "top-right"
        """Where the legend sits: the corner of the plot with the fewest points under it (place_legend)."""
        self._smoothing = 0
        self._markers: list[pg.InfiniteLine] = []
        self.fixed_y = False
        """The owner set the y range (a 0-1 score): flat curves do not change it."""
        # the context menu's log-y box and set_log_y() end up in the same place
        pi.ctrl.logYCheck.toggled.connect(self._on_log_y_toggled)

        self.auto_redraw = True
        """False: the owner calls redraw() (e.g. a monitor that spreads several charts' redraws over time)."""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timer)
        self._timer.setInterval(200)
        self._show_timer = QTimer(self)   # catch-up redraw right after a hidden, dirty chart is shown
        self._show_timer.setSingleShot(True)
        self._show_timer.setInterval(0)
        self._show_timer.timeout.connect(self._on_timer)

        self._ready = True
        self._apply_theme()

    # ------------------------------------------------------------------ public interface
    @property
    def plot_item(self) -> pg.PlotItem:
        return self.plot_widget.getPlotItem()

    @property
    def redraw_interval_ms(self) -> int:
        return self._timer.interval()

    @redraw_interval_ms.setter
    def redraw_interval_ms(self, ms: int) -> None:
        self._timer.setInterval(max(0, int(ms)))

    def add_series(self, name: str, color: str | None = None, symbol: str | None = None,
                   label: str | None = None) -> None:
        """Declare a curve and its legend entry (``label``, default the name). Declaring it again changes its colour
        or symbol, keeps its data."""
        s = self._series.get(name)
        if s is not None:
            if color is not None:
                s.color, s.explicit_color = pg.mkColor(color), True
            s.symbol = symbol if symbol is not None else s.symbol
            self._style_series(s)
            if name in self._overlays:
                self._style_overlay(self._overlays[name], s)
            return
        explicit = color is not None
        qcolor = pg.mkColor(color) if explicit else QColor(PALETTE[len(self._series) % len(PALETTE)])
        item = pg.PlotDataItem(name=label or name, **_CURVE_OPTS)
        s = _Series(item=item, color=qcolor, explicit_color=explicit, symbol=symbol)
        self._series[name] = s
        self._style_series(s)
        self.plot_item.addItem(item)
        self._tune(item)

    def append(self, name: str, x: Any, y: Any) -> None:
        """Add points to a series (declared on first use). Points with a NaN/None/infinite x or y are skipped."""
        s = self._series.get(name)
        if s is None:
            self.add_series(name)
            s = self._series[name]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):  # the per-step case, without numpy
            if not (math.isfinite(x) and math.isfinite(y)):
                return
            if s.n >= s.x.size:
                self._grow(s)
            s.x[s.n] = x
            s.y[s.n] = y
            s.n += 1
        else:
            xa, ya = _finite_pairs(x, y)
            if xa.size == 0:
                return
            s.extend(xa, ya)
        self._mark_dirty(name)

    def set_data(self, name: str, x: Any, y: Any) -> None:
        """Replace a series' points (declared on first use)."""
        if name not in self._series:
            self.add_series(name)
        s = self._series[name]
        xa, ya = _finite_pairs(x, y)
        s.reset()
        if xa.size:
            s.extend(xa, ya)
        self._mark_dirty(name)

    def set_reference(self, value: float | None, label: str = "") -> None:
        """A dashed horizontal reference line (the teacher's score), or none."""
        line = getattr(self, "_reference", None)
        if value is None:
            if line is not None:
                line.hide()
            return
        if line is None:
            line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen("#7f8c8d", width=1.5,
                                                                         style=Qt.PenStyle.DashLine),
                                   label="", labelOpts={"position": 0.03, "color": "#7f8c8d",
                                                               "anchors": [(0, 0), (0, 0)]})
            self.plot_item.addItem(line)
            self._reference = line
        line.setPos(value)
        line.label.setFormat(label)
        line.show()

    def reference(self) -> float | None:
        line = getattr(self, "_reference", None)
        return float(line.value()) if line is not None and line.isVisible() else None

    def clear(self) -> None:
        """Empty every series (their declarations and colours stay) and remove the overlays."""
        for name, s in self._series.items():
            s.reset()
            self._dirty.add(name)
        self.clear_overlays()
        self.set_reference(None)
        for m in self._markers:
            self.plot_item.removeItem(m)
        self._markers.clear()
        self.set_clock(None, None)
        self.redraw()        # the curves let go of the old points now, before any autorange can see them
        if self.legend_corner != "top-right":      # the next run's legend starts where legends usually are
            self.legend.anchor(itemPos=(1, 0), parentPos=(1, 0), offset=(-8, 8))
            self.legend_corner = "top-right"
        # nothing of the previous data's ranges stays: an empty chart shows 0-1 until its own points come
        self.plot_item.setXRange(0, 1, padding=0.02)
        if not self.fixed_y:
            self.plot_item.setYRange(0, 1, padding=0.02)
            self._flat = False
        self.plot_item.enableAutoRange(x=True, y=not self.fixed_y)

    def set_smoothing(self, window: int) -> None:
        """Draw the dense series (those without markers) as their trailing mean over ``window`` steps, with the
        raw points faint behind them; 0 or 1: raw."""
        window = max(0, int(window))
        if window != self._smoothing:
            self._smoothing = window
            self._push_all()

    @property
    def smoothing(self) -> int:
        return self._smoothing

    def add_marker(self, x: float, label: str) -> None:
        """A vertical dotted line at step ``x`` with a short label (a stop, a resume). A second marker at the same
        step joins the first ("stopped · resumed"); labels of markers close together sit at different heights, so
        they never print over each other."""
        for m in self._markers:
            if float(m.value()) == float(x):
                if label and label not in m.label.format.split(" · "):
                    m.label.setFormat(" · ".join(t for t in (m.label.format, label) if t))
                return
        position = _MARKER_LABEL_HEIGHTS[len(self._markers) % len(_MARKER_LABEL_HEIGHTS)]
        colour = "#c39bd3" if self._is_dark() else "#8e44ad"      # purple that reads on either background
        line = pg.InfiniteLine(pos=x, angle=90, movable=False,
                               pen=pg.mkPen(colour, width=1.2, style=Qt.PenStyle.DotLine), label=label,
                               labelOpts={"position": position, "color": colour, "rotateAxis": (1, 0),
                                          "anchors": [(0, 1), (0, 1)]})
        self.plot_item.addItem(line, ignoreBounds=True)
        self._markers.append(line)

    def markers(self) -> list[tuple[float, str]]:
        return [(float(m.value()), m.label.format) for m in self._markers]

    def set_clock(self, steps: np.ndarray | None, seconds: np.ndarray | None) -> None:
        """Label the x axis with the elapsed time at each step (``steps`` ascending) or, with None, with steps."""
        axis = self.plot_item.getAxis("bottom")
        axis.clock = None if steps is None or seconds is None else (np.asarray(steps, float), np.asarray(seconds, float))
        self.plot_item.setLabel("bottom", "elapsed time" if axis.clock is not None else "step")
        axis.picture = None
        axis.update()

    def place_legend(self) -> str:
        """Put the legend in the corner of the plot where it hides the fewest points; returns the corner."""
        vb = self.plot_item.vb
        (x0, x1), (y0, y1) = vb.viewRange()
        vw, vh = vb.width(), vb.height()
        lr = self.legend.boundingRect()
        if vw <= 0 or vh <= 0 or x1 <= x0 or y1 <= y0 or not self.legend.items:
            return self.legend_corner
        w, h = min(1.0, (lr.width() + 10) / vw), min(1.0, (lr.height() + 10) / vh)
        xs, ys = [], []
        for s in self._series.values():
            if s.n:
                stride = max(1, s.n // 2000)
                x, y = s.x[: s.n : stride], s.y[: s.n : stride]
                if x.size < 400 and x.size > 1:     # a sparse curve's lines count, not only its points
                    order = np.argsort(x, kind="stable")
                    fine = np.linspace(x[order][0], x[order][-1], 400)
                    x, y = fine, np.interp(fine, x[order], y[order])
                xs.append(x)
                ys.append(np.log10(np.maximum(y, 1e-300)) if self._log_y else y)
        for ov in self._overlays.values():
            if len(ov.x):
                stride = max(1, len(ov.x) // 2000)
                xs.append(ov.x[::stride])
                ys.append(np.log10(np.maximum(ov.y[::stride], 1e-300)) if self._log_y else ov.y[::stride])
        ref = self.reference()
        if ref is not None:              # the reference line and its label count as points across the plot
            xs.append(np.linspace(x0, x1, 200))
            ys.append(np.full(200, math.log10(max(ref, 1e-300)) if self._log_y else ref))
        if not xs:
            return self.legend_corner
        u = (np.concatenate(xs) - x0) / (x1 - x0)
        v = (np.concatenate(ys) - y0) / (y1 - y0)
        counts = {}
        for name, (right, top) in {"top-right": (1, 1), "top-left": (0, 1), "bottom-right": (1, 0),
                                   "bottom-left": (0, 0)}.items():
            in_x = (u >= 1 - w) & (u <= 1) if right else (u >= 0) & (u <= w)
            in_y = (v >= 1 - h) & (v <= 1) if top else (v >= 0) & (v <= h)
            counts[name] = int((in_x & in_y).sum())
        best = min(counts, key=lambda k: (counts[k], k != self.legend_corner, k != "top-right"))
        if best != self.legend_corner:
            right, top = best.endswith("right"), best.startswith("top")
            anchor = (1 if right else 0, 0 if top else 1)
            self.legend.anchor(itemPos=anchor, parentPos=anchor, offset=(-8 if right else 8, 8 if top else -8))
            self.legend_corner = best
        return best

    def _fit_flat(self) -> None:
        """A curve that never changes (a constant learning rate, a steady throughput) gets a y range around its
        value instead of the autorange's invented ±1 span around it."""
        if self.fixed_y:
            return
        values = [s.y[: s.n] for s in self._series.values() if s.n] + [o.y for o in self._overlays.values()
                                                                       if len(o.y)]
        flat = bool(values) and not self._log_y and all(np.ptp(v) == 0 for v in values) and \
            len({float(v[0]) for v in values}) == 1
        if flat:
            v = float(values[0][0])
            span = abs(v) * 0.5 or 1.0
            self.plot_item.setYRange(v - span, v + span, padding=0)
            self._flat = True
        elif getattr(self, "_flat", False):
            self._flat = False
            self.plot_item.enableAutoRange(y=True)

    def set_steps(self, total: int) -> None:
        """The x axis spans the whole run (0 to its last step): the curves fill it as the run goes, and one point is
        not drawn on an axis invented around it."""
        if total > 0:
            self.plot_item.setXRange(0, total, padding=0.02)

    def set_log_y(self, on: bool) -> None:
        """Log-scale y axis. Points at or below zero are hidden while it is on."""
        on = bool(on)
        if on and self.fixed_y:          # a fixed 0-1 scale stays linear: log of a score near 0 is unreadable
            return
        if on == self._log_y and self.plot_item.ctrl.logYCheck.isChecked() == on:
            return
        self._log_y = on
        if on:
            # push positive-only data before the items take log10 of what they hold, so they never see log(0)
            self._push_all()
        self.plot_item.setLogMode(y=on)   # -> _on_log_y_toggled
        if not on:
            self._push_all()

    @property
    def log_y(self) -> bool:
        return self._log_y

    def set_overlay(self, name: str, x: Any, y: Any, label: str, legend: bool = True) -> None:
        """Show a comparison run's curve for series ``name``: dashed, in a lighter shade of the series' colour, with
        ``label`` in the legend (``legend=False``: not in the legend; the owner says what the dashed curves are).
        Empty data with an empty label removes it."""
        xa, ya = _finite_pairs(x, y)
        xa, ya = xa.copy(), ya.copy()  # the caller may reuse its arrays; an overlay is set rarely
        if xa.size == 0 and not label:
            self._remove_overlay(name)
            return
        if name not in self._series:
            self.add_series(name)
        ov = self._overlays.get(name)
        if ov is not None and ov.label != label:
            self._remove_overlay(name)
            ov = None
        if ov is None:
            item = pg.PlotDataItem(name=(label or f"{name} (compare)") if legend else None, **_CURVE_OPTS)
            item.setZValue(-1)  # under the live curves
            ov = _Overlay(item=item, label=label, x=xa, y=ya)
            self._overlays[name] = ov
            self._style_overlay(ov, self._series[name])
            self.plot_item.addItem(item)
            self._tune(item)
        else:
            ov.x, ov.y = xa, ya
        self._dirty_overlays.add(name)
        self._schedule()

    def clear_overlays(self) -> None:
        for name in list(self._overlays):
            self._remove_overlay(name)

    def overlay_names(self) -> list[str]:
        """The series that have an overlay now."""
        return list(self._overlays)

    def series_names(self) -> list[str]:
        return list(self._series)

    def point_count(self, name: str) -> int:
        s = self._series.get(name)
        return 0 if s is None else s.n

    def data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the points held for a series (what the next redraw shows, before any log-scale hiding)."""
        s = self._series[name]
        return s.x[: s.n].copy(), s.y[: s.n].copy()

    def redraw(self) -> float:
        """Push the dirty buffers to the curves now; returns the milliseconds it took (also in ``last_redraw_ms``)."""
        t0 = time.perf_counter()
        self._timer.stop()
        dirty, self._dirty = self._dirty, set()
        for name in dirty:
            s = self._series.get(name)
            if s is None:
                continue
            x, y = s.x[: s.n], s.y[: s.n]
            if self._smoothing > 1 and not s.symbol:
                if s.shadow is None:
                    s.shadow = pg.PlotDataItem(**_CURVE_OPTS)     # no name: not in the legend
                    self.plot_item.addItem(s.shadow)
                    self._tune(s.shadow)
                    s.shadow.setZValue(-1)
                    c = self._series_color(s)
                    c.setAlpha(70)
                    s.shadow.setPen(pg.mkPen(c, width=_LINE_WIDTH))
                self._push(s.shadow, x, y)
                self._push(s.item, x, trailing_mean(y, self._smoothing))
            else:
                if s.shadow is not None:
                    self.plot_item.removeItem(s.shadow)
                    s.shadow = None
                self._push(s.item, x, y)
        if dirty:
            self._fit_flat()
            self.place_legend()
        dirty_ov, self._dirty_overlays = self._dirty_overlays, set()
        for name in dirty_ov:
            ov = self._overlays.get(name)
            if ov is not None:
                self._push(ov.item, ov.x, ov.y)
        self.last_redraw_ms = (time.perf_counter() - t0) * 1000.0
        self.redraw_count += 1
        return self.last_redraw_ms

    def is_dirty(self) -> bool:
        return bool(self._dirty or self._dirty_overlays)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(640, 360)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _grow(s: _Series) -> None:
        cap = s.x.size * 2
        nx, ny = np.empty(cap), np.empty(cap)
        nx[: s.n] = s.x[: s.n]
        ny[: s.n] = s.y[: s.n]
        s.x, s.y = nx, ny

    @staticmethod
    def _tune(item: pg.PlotDataItem) -> None:
        # after PlotItem.addItem, which hands every new curve the plot's own settings. The buffers hold finite values
        # only (and positive ones on log scale): hence connect="all" and skipFiniteCheck in _CURVE_OPTS.
        item.setDownsampling(auto=True, method="peak")
        item.setClipToView(True)

    def _push(self, item: pg.PlotDataItem, x: np.ndarray, y: np.ndarray) -> None:
        if self._log_y and y.size:
            keep = y > 0
            if not keep.all():
                x, y = x[keep], y[keep]
        if x.size == 0:
            item.setData(x=np.empty(0), y=np.empty(0))
        else:
            item.setData(x=x, y=y)

    def _push_all(self) -> None:
        for name in self._series:
            self._dirty.add(name)
        for name in self._overlays:
            self._dirty_overlays.add(name)
        self.redraw()

    def _mark_dirty(self, name: str) -> None:
        self._dirty.add(name)
        self._schedule()

    def _schedule(self) -> None:
        if self.auto_redraw and not self._timer.isActive():
            self._timer.start()

    def _on_timer(self) -> None:
        if not self.is_dirty():
            return
        if not self.isVisible():
            return  # a hidden chart (another tab) catches up in showEvent
        self.redraw()

    def _remove_overlay(self, name: str) -> None:
        ov = self._overlays.pop(name, None)
        self._dirty_overlays.discard(name)
        if ov is not None:
            self.plot_item.removeItem(ov.item)

    def _on_log_y_toggled(self, on: bool) -> None:
        if on != self._log_y:  # toggled from the context menu: re-push with/without the non-positive points
            self._log_y = on
            self._push_all()

    # ------------------------------------------------------------------ look
    def _is_dark(self) -> bool:
        return self._background().lightness() < 128

    def _background(self) -> QColor:
        return self.palette().color(QPalette.ColorRole.Base)

    def _series_color(self, s: _Series) -> QColor:
        if s.explicit_color or not self._is_dark():
            return QColor(s.color)
        return QColor(s.color).lighter(125)

    def _style_series(self, s: _Series) -> None:
        color = self._series_color(s)
        # a sparse series with markers (eval points) gets a bolder line: it has few points, and must stand out
        s.item.setPen(pg.mkPen(color, width=2 if s.symbol else _LINE_WIDTH))
        if s.symbol:
            s.item.setSymbol(s.symbol)
            s.item.setSymbolSize(_SYMBOL_SIZE)
            s.item.setSymbolBrush(color)
            s.item.setSymbolPen(pg.mkPen(self._background(), width=1))
        else:
            s.item.setSymbol(None)

    def _style_overlay(self, ov: _Overlay, s: _Series) -> None:
        base = self._series_color(s)
        bg = self._background()
        # part of the way towards the background: a paler shade of the same hue on light and dark themes
        t = 0.3 if bg.lightness() < 128 else 0.42
        shade = QColor(
            round(base.red() + (bg.red() - base.red()) * t),
            round(base.green() + (bg.green() - base.green()) * t),
            round(base.blue() + (bg.blue() - base.blue()) * t),
        )
        ov.item.setPen(pg.mkPen(shade, width=_LINE_WIDTH, style=Qt.PenStyle.DashLine))
        if s.symbol:
            ov.item.setSymbol(s.symbol)
            ov.item.setSymbolSize(_SYMBOL_SIZE - 1)
            ov.item.setSymbolBrush(bg)
            ov.item.setSymbolPen(pg.mkPen(shade, width=1))
        else:
            ov.item.setSymbol(None)

    def _apply_theme(self) -> None:
        bg = self._background()
        fg = self.palette().color(QPalette.ColorRole.Text)
        self.plot_widget.setBackground(bg)
        style_axes(self.plot_item, fg, 110)
        self.plot_item.setTitle(self._title, color=fg.name(), size="11pt")
        frame = QColor(fg)
        frame.setAlpha(60)
        fill = QColor(bg)
        fill.setAlpha(215)
        self.legend.setPen(pg.mkPen(frame))
        self.legend.setBrush(pg.mkBrush(fill))
        self.legend.setLabelTextColor(fg)
        # legend labels keep the colour they were made with: restyle them
        for _sample, label in self.legend.items:
            label.setText(label.text, color=fg)
        for s in self._series.values():
            self._style_series(s)
        for name, ov in self._overlays.items():
            self._style_overlay(ov, self._series[name])

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        if self._ready and event.type() in (QEvent.Type.PaletteChange, QEvent.Type.StyleChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if self.is_dirty():
            self._show_timer.start()
