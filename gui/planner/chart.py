"""Cost versus time of every option as planned: the choices that meet the budget, the ones that do not (greyed,
with the reason on hover), the Pareto front, the recommendation, and the budget lines. Both axes are logarithmic:
options span minutes to weeks and cents to thousands of dollars."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

FREE_USD = 0.01   # options that cost nothing (a local machine without a price) are drawn here, labelled "$0"
OK_BRUSH = "#2e86de"
GREY = (150, 150, 150, 110)
NOFIT = (150, 150, 150, 50)
FRONT = "#e67e22"
RECOMMENDED = "#27ae60"


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """Tick positions (log10 units) at 1-2-5 values, or finer where the range is under a decade."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return []
    mantissas = (1, 2, 5) if hi - lo > 1.2 else (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9) if hi - lo < 0.6 else (1, 2, 3, 5, 7)
    out = []
    for decade in range(int(np.floor(lo)) - 1, int(np.ceil(hi)) + 1):
        for m in mantissas:
            v = decade + np.log10(m)
            if lo <= v <= hi:
                out.append(v)
    if len(out) > 12:                       # many decades: powers of ten only
        out = [v for v in out if abs(v - round(v)) < 1e-9]
    return out


class LogAxis(pg.AxisItem):
    """An axis over log10 values, labelled in plain units ("0.5", "20", "$1,200") at 1-2-5 steps."""

    def __init__(self, orientation: str, fmt, **kw) -> None:
        super().__init__(orientation, **kw)
        self._fmt = fmt

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 (Qt/pyqtgraph API)
        ticks = _nice_ticks(minVal, maxVal)
        if self._fmt is _fmt_usd:     # nothing below the "$0" floor; the floor itself once
            floor = float(np.log10(FREE_USD))
            ticks = [v for v in ticks if v > floor + 1e-6] + ([floor] if minVal <= floor <= maxVal else [])
        return [(1.0, ticks)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [self._fmt(10 ** v) for v in values]


def _fmt_hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.0f} min" if h >= 10 / 60 else f"{h * 60:.1f} min".replace(".0 min", " min")
    return f"{h:,.0f} h" if h >= 10 else f"{h:.1f} h".replace(".0 h", " h")


def _fmt_usd(v: float) -> str:
    if v <= FREE_USD * 1.001:
        return "$0"
    return f"${v:,.0f}" if v >= 10 else f"${v:.2f}".rstrip("0").rstrip(".")


RANGE_PEN = "#7f8c8d"


class CostTimeChart(QWidget):
    sig_option_clicked = Signal(int)
    """The sweep index of a clicked option."""

    def __init__(self, tip=None, parent=None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(axisItems={"bottom": LogAxis("bottom", _fmt_hours),
                                             "left": LogAxis("left", _fmt_usd)})
        self.plot.setObjectName("cost_time_plot")
        # Items take log10 coordinates and the axes label them in plain units. (PlotWidget.setLogMode would
        # transform PlotDataItems but not ScatterPlotItems or lines, so everything is transformed here instead.)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "time to finish (hours)")
        self.plot.setLabel("left", "cost (US$)")
        self.plot.setMenuEnabled(False)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self._tip = tip or (lambda i: str(i))
        kw = dict(hoverable=True, tip=lambda x, y, data: self._tip(int(data)), pxMode=True)
        self.nofit = pg.ScatterPlotItem(size=6, pen=None, brush=pg.mkBrush(NOFIT), symbol="x", name="does not fit", **kw)
        self.grey = pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(GREY), name="outside the budget", **kw)
        # sizes the region does not offer this subscription, or without quota: hollow, in the legend only when shown
        self.unavailable = pg.ScatterPlotItem(size=8, pen=pg.mkPen(NOFIT, width=1.2), brush=pg.mkBrush(0, 0, 0, 0),
                                              **kw)
        self._unavailable_in_legend = False
        # options without a price: at their time, along the top edge, hollow (in the legend only when shown)
        self.unpriced = pg.ScatterPlotItem(size=8, symbol="t", pen=pg.mkPen(FRONT, width=1.2),
                                           brush=pg.mkBrush(0, 0, 0, 0), **kw)
        self._unpriced_in_legend = False
        # the legend's key for split-hardware options (teacher pass on one size, training on another): drawn as
        # diamonds among the others; this item only carries the legend entry
        self.split_key = pg.ScatterPlotItem(size=8, symbol="d", pen=pg.mkPen("#555", width=1), brush=pg.mkBrush(GREY))
        self._split: np.ndarray | None = None
        self._split_in_legend = False
        self.ok = pg.ScatterPlotItem(size=8, pen=pg.mkPen("w", width=0.5), brush=pg.mkBrush(OK_BRUSH),
                                     name="meets the budget", **kw)
        # P10-P90 of the options that matter (on the front, recommended): time and cost move
        # together (cost is time at the option's price), so each range is a short diagonal on log axes
        self.whiskers = pg.PlotDataItem(pen=pg.mkPen(RANGE_PEN, width=1.2), connect="pairs", name="P10–P90 range")
        self.front = pg.PlotDataItem(pen=pg.mkPen(FRONT, width=2), symbol="o", symbolSize=7,
                                     symbolBrush=FRONT, symbolPen=None, name="Pareto front")
        self.recommended = pg.ScatterPlotItem(size=22, symbol="star", pen=pg.mkPen("k", width=1),
                                              brush=pg.mkBrush(RECOMMENDED), name="recommended", **kw)
        self.selected = pg.ScatterPlotItem(size=20, symbol="o", pen=pg.mkPen("#d35400", width=2.5),
                                           brush=pg.mkBrush(0, 0, 0, 0))
        for item in (self.nofit, self.unavailable, self.unpriced, self.grey, self.whiskers, self.ok, self.front,
                     self.recommended, self.selected):
            self.plot.addItem(item)
        for item in (self.nofit, self.unavailable, self.unpriced, self.grey, self.ok, self.recommended):
            item.sigClicked.connect(self._clicked)
        label_opts = dict(position=0.92, color="#c0392b", movable=False, fill=(255, 255, 255, 200))
        self.deadline = pg.InfiniteLine(angle=90, pen=pg.mkPen("#c0392b", width=2, style=Qt.PenStyle.DashLine),
                                        label="deadline", labelOpts=label_opts)
        self.cost_cap = pg.InfiniteLine(angle=0, pen=pg.mkPen("#c0392b", width=2, style=Qt.PenStyle.DashLine),
                                        label="cost cap", labelOpts=dict(label_opts, position=0.1))
        for line in (self.deadline, self.cost_cap):
            self.plot.addItem(line, ignoreBounds=True)
            line.hide()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)

    def _clicked(self, _item, points, _ev=None) -> None:
        if len(points):
            self.sig_option_clicked.emit(int(points[0].data()))

    @staticmethod
    def _y(cost: np.ndarray) -> np.ndarray:
        return np.log10(np.maximum(cost, FREE_USD))

    def _set(self, item, idx: np.ndarray, hours: np.ndarray, cost: np.ndarray) -> None:
        idx = idx[np.isfinite(cost[idx]) & np.isfinite(hours[idx]) & (hours[idx] > 0)]
        kw = {}
        if item in (self.ok, self.grey):    # split-hardware options as diamonds; a per-point list only if any
            split = self._split[idx] if self._split is not None else None
            kw["symbol"] = np.where(split, "d", "o").tolist() if split is not None and split.any() else "o"
        item.setData(x=np.log10(hours[idx]), y=self._y(cost[idx]), data=idx, **kw)

    def show_options(self, hours: np.ndarray, cost: np.ndarray, ok: np.ndarray, fits: np.ndarray,
                     planned: np.ndarray, front: np.ndarray, recommended: int | None,
                     hours_cap: float | None, usd_cap: float | None, available: np.ndarray | None = None,
                     low: np.ndarray | None = None, high: np.ndarray | None = None,
                     cost_low: np.ndarray | None = None, cost_high: np.ndarray | None = None,
                     split: np.ndarray | None = None) -> None:
        """Draw the options (arrays over the whole sweep; ``planned`` selects what is drawn). ``available``: False
        where the region cannot give the option (capacity or quota, as last checked). ``split``: True for the
        split-hardware options, drawn as diamonds."""
        self._split = split
        shown = bool(split is not None and (split & planned).any())
        if shown != self._split_in_legend:
            if shown:
                self.legend.addItem(self.split_key, "split: teacher pass on other hardware (◆)")
            else:
                self.legend.removeItem(self.split_key)
            self._split_in_legend = shown
        blocked = planned & fits & ~available if available is not None else np.zeros_like(planned)
        self._set(self.ok, np.flatnonzero(planned & ok), hours, cost)
        self._set(self.grey, np.flatnonzero(planned & ~ok & fits & ~blocked), hours, cost)
        self._set(self.unavailable, np.flatnonzero(blocked), hours, cost)
        self._edge(planned & fits & ~np.isfinite(cost) & np.isfinite(hours) & (hours > 0), hours, cost, planned)
        if blocked.any() != self._unavailable_in_legend:
            if blocked.any():
                self.legend.addItem(self.unavailable, "not available here (capacity or quota)")
            else:
                self.legend.removeItem(self.unavailable)
            self._unavailable_in_legend = bool(blocked.any())
        self._set(self.nofit, np.flatnonzero(planned & ~fits), hours, cost)
        fr = np.asarray(front, dtype=np.int64)
        fr = fr[np.isfinite(cost[fr])] if fr.size else fr
        fr = fr[np.argsort(hours[fr])] if fr.size else fr
        if fr.size:
            self.front.setData(x=np.log10(hours[fr]), y=self._y(cost[fr]))
        else:
            self.front.setData([], [])
        if recommended is not None and np.isfinite(cost[recommended]):
            self.recommended.setData(x=[np.log10(hours[recommended])], y=self._y(cost[[recommended]]),
                                     data=[recommended])
        else:
            self.recommended.setData([], [])
        # ranges on the Pareto front and the recommendation: the choices worth weighing (all of them would hide the
        # chart); every option's range is in the table
        self._whiskers(np.unique(np.concatenate([np.asarray(front, dtype=np.int64),
                                                 [recommended] if recommended is not None else []]).astype(np.int64)),
                       hours, cost, low, high, cost_low, cost_high)
        self.set_budget(hours_cap, usd_cap)
        self.plot.enableAutoRange()

    def _whiskers(self, idx: np.ndarray, hours, cost, low, high, cost_low, cost_high) -> None:
        if low is None or high is None or cost_low is None or cost_high is None or not idx.size:
            self.whiskers.setData([], [])
            return
        idx = idx[np.isfinite(cost[idx]) & np.isfinite(hours[idx]) & (low[idx] > 0) & np.isfinite(high[idx])]
        x = np.empty(2 * idx.size)
        y = np.empty(2 * idx.size)
        x[0::2], x[1::2] = np.log10(low[idx]), np.log10(high[idx])
        y[0::2], y[1::2] = self._y(cost_low[idx]), self._y(cost_high[idx])
        self.whiskers.setData(x=x, y=y)

    def _edge(self, unpriced: np.ndarray, hours: np.ndarray, cost: np.ndarray, planned: np.ndarray) -> None:
        idx = np.flatnonzero(unpriced)
        priced = cost[planned & np.isfinite(cost)]
        if idx.size and priced.size:
            top = float(self._y(np.asarray([priced.max()]))[0]) + 0.12     # just above the dearest priced option
            self.unpriced.setData(x=np.log10(hours[idx]), y=np.full(idx.size, top), data=idx)
        else:
            self.unpriced.setData(x=np.zeros(0), y=np.zeros(0))
            idx = idx[:0]
        if bool(idx.size) != self._unpriced_in_legend:
            if idx.size:
                self.legend.addItem(self.unpriced, "price unknown (at the top edge)")
            else:
                self.legend.removeItem(self.unpriced)
            self._unpriced_in_legend = bool(idx.size)

    def clear_options(self) -> None:
        """Nothing drawn (a plan that could not be planned)."""
        for item in (self.ok, self.grey, self.nofit, self.unavailable, self.unpriced, self.recommended, self.selected):
            item.setData([], [])
        self.front.setData([], [])
        self.whiskers.setData([], [])
        self.set_budget(None, None)

    def set_budget(self, hours_cap: float | None, usd_cap: float | None) -> None:
        for line, value, text in ((self.deadline, hours_cap, "deadline {:g} h"), (self.cost_cap, usd_cap, "cap ${:,.0f}")):
            if value:
                line.setPos(np.log10(value))
                line.label.setFormat(text.format(value))
                line.show()
            else:
                line.hide()

    def mark(self, i: int | None, hours: np.ndarray, cost: np.ndarray) -> None:
        if i is None or not np.isfinite(cost[i]):
            self.selected.setData([], [])
        else:
            self.selected.setData(x=[np.log10(hours[i])], y=self._y(cost[[i]]))
