"""Cost versus time of every option as planned: the choices that meet the budget, the ones that do not (greyed,
with the reason on hover), the Pareto front, the recommendation, and the budget lines. Both axes are logarithmic:
options span minutes to weeks and cents to thousands of dollars.

The axes show a sensible range, not every option: from the fastest option to the Pareto front's slowest point (at
most ``PLAUSIBLE`` times the deadline), always with the deadline and the cost cap in view. An option beyond it is
drawn at the edge with an arrow (its real time and cost on hover). Options without a known price sit in a labelled
band above the dollar scale, never level with a dollar tick. The legend sits under the plot, so it covers nothing,
and the colours follow the widget's palette (light or dark theme).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget
from ..theme import style_axes

FREE_USD = 0.01   # options that cost nothing (a local machine without a price) are drawn here, labelled "$0"
OK_BRUSH = "#2e86de"
GREY = (150, 150, 150, 110)
NOFIT = (150, 150, 150, 50)
FRONT = "#e67e22"
RECOMMENDED = "#27ae60"
BUDGET = "#c0392b"
BUDGET_DARK = "#ff6b5b"         # the budget lines' red, lifted for a dark background
RANGE_PEN = "#7f8c8d"
SELECTED = "#d35400"
PLAUSIBLE = 50.0    # the time axis reaches at most this many times the deadline (or the fastest option, without one)
MARGIN = 0.06       # of each axis' span, around what it shows
MIN_SPAN = (0.3, 0.5)   # decades: the narrowest time and cost axes
INSET = 0.025       # of the span: where an option beyond the axis is drawn, inside the edge
UNPRICED_TEXT = "price unknown"


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
    """An axis over log10 values, labelled in plain units ("30 min", "2 h", "$1,200") at 1-2-5 steps. No SI prefix
    ("(x0.001)") is ever added to its title: the ticks carry the unit."""

    def __init__(self, orientation: str, fmt, **kw) -> None:
        super().__init__(orientation, **kw)
        self._fmt = fmt
        self.top: float | None = None
        """No ticks above this (log10): the cost axis stops below the "price unknown" band."""
        self.band: float | None = None
        """Where the "price unknown" band is (log10), labelled so on the axis, outside the dollar scale."""
        self.enableAutoSIPrefix(False)

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 (Qt/pyqtgraph API)
        top = min(maxVal, self.top) if self.top is not None else maxVal
        ticks = _nice_ticks(minVal, top)
        if self._fmt is _fmt_usd:     # nothing below the "$0" floor; the floor itself once
            floor = float(np.log10(FREE_USD))
            ticks = [v for v in ticks if v > floor + 1e-6] + ([floor] if minVal <= floor <= top else [])
        if self.band is not None and minVal <= self.band <= maxVal:
            ticks.insert(0, self.band)      # drawn first: a dollar label that would overlap it is the one left out
        return [(1.0, ticks)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [UNPRICED_TEXT if self.band is not None and abs(v - self.band) < 1e-9 else self._fmt(10 ** v)
                for v in values]


def _fmt_hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.0f} min" if h >= 10 / 60 else f"{h * 60:.1f} min".replace(".0 min", " min")
    return f"{h:,.0f} h" if h >= 10 else f"{h:.1f} h".replace(".0 h", " h")


def _fmt_usd(v: float) -> str:
    if v <= FREE_USD * 1.001:
        return "$0"
    return f"${v:,.0f}" if v >= 10 else f"${v:.2f}".replace(".00", "")     # "$1", "$1.50", "$0.20"


def _fmt_cap(v: float) -> str:
    """A cap as set: cents kept under $10 ("$0.20", "$2.50"), whole dollars above."""
    return f"${v:,.0f}" if v >= 10 else f"${v:,.2f}"


class _Legend(pg.LegendItem):
    """A legend laid out by the plot's own layout (a row under the plot), not floating over the data."""

    def updateSize(self):  # noqa: N802 (pyqtgraph API)
        self.updateGeometry()       # the parent layout sizes it from its entries


class CostTimeChart(QWidget):
    sig_option_clicked = Signal(int)
    """The sweep index of a clicked option."""

    def __init__(self, tip=None, parent=None) -> None:
        super().__init__(parent)
        self._ready = False                 # changeEvent may come before the plot exists
        self.plot = pg.PlotWidget(axisItems={"bottom": LogAxis("bottom", _fmt_hours),
                                             "left": LogAxis("left", _fmt_usd)})
        self.plot.setObjectName("cost_time_plot")
        self.plot_item = self.plot.getPlotItem()
        self.vb = self.plot_item.getViewBox()
        # Items take log10 coordinates and the axes label them in plain units. (PlotWidget.setLogMode would
        # transform PlotDataItems but not ScatterPlotItems or lines, so everything is transformed here instead.)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setMenuEnabled(False)
        self.plot_item.hideButtons()        # "auto range" would undo the sensible range
        self._confidence: float | None = None
        self.legend = _Legend(colCount=4, horSpacing=2, verSpacing=-4, labelTextSize="9pt")
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.plot_item.layout.addItem(self.legend, 4, 1, alignment=Qt.AlignmentFlag.AlignLeft)
        self._legend_place = "below"
        self._legend_entries: list = []
        self._tip = tip or (lambda i: str(i))
        kw = dict(hoverable=True, tip=lambda x, y, data: self._tip(int(data)), pxMode=True)
        self.nofit = pg.ScatterPlotItem(size=6, pen=None, brush=pg.mkBrush(NOFIT), symbol="x", **kw)
        self.grey = pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(GREY), **kw)
        # sizes the region does not offer this subscription, or without quota: hollow, in the legend only when shown
        self.unavailable = pg.ScatterPlotItem(size=8, pen=pg.mkPen(NOFIT, width=1.2), brush=pg.mkBrush(0, 0, 0, 0),
                                              **kw)
        self._unavailable_in_legend = False
        # options without a price: at their time, in the "price unknown" band above the dollar scale, hollow
        self.unpriced = pg.ScatterPlotItem(size=8, symbol="t", pen=pg.mkPen(FRONT, width=1.2),
                                           brush=pg.mkBrush(0, 0, 0, 0), **kw)
        self._unpriced_in_legend = False
        self.band = pg.LinearRegionItem(orientation="horizontal", movable=False, pen=pg.mkPen(None))
        self._band: tuple[float, float] | None = None
        # the legend's key for split-hardware options (teacher pass on one size, training on another): drawn as
        # diamonds among the others; this item only carries the legend entry
        self.split_key = pg.ScatterPlotItem(size=8, symbol="d", pen=pg.mkPen("#555", width=1), brush=pg.mkBrush(GREY))
        self._split: np.ndarray | None = None
        self._split_in_legend = False
        self.ok = pg.ScatterPlotItem(size=8, pen=pg.mkPen("w", width=0.5), brush=pg.mkBrush(OK_BRUSH), **kw)
        # P10-P90 of the recommendation and the selected option: time and cost move together (cost is time at the
        # option's price), so each range is a short diagonal on log axes; every option's range is in the table
        self.whiskers = pg.PlotDataItem(pen=pg.mkPen(RANGE_PEN, width=1.6), connect="pairs")
        self.front = pg.PlotDataItem(pen=pg.mkPen(FRONT, width=2), symbol="o", symbolSize=7,
                                     symbolBrush=FRONT, symbolPen=None)
        self.recommended = pg.ScatterPlotItem(size=22, symbol="star", pen=pg.mkPen("k", width=1),
                                              brush=pg.mkBrush(RECOMMENDED), **kw)
        self.selected = pg.ScatterPlotItem(size=20, symbol="o", pen=pg.mkPen(SELECTED, width=2.5),
                                           brush=pg.mkBrush(0, 0, 0, 0))
        # arrows at the edge for options beyond the axes (drawn at the edge; their values on hover)
        self.beyond = pg.ScatterPlotItem(size=7, symbol="t2", pen=None, brush=pg.mkBrush(RANGE_PEN), **kw)
        self._beyond_in_legend = False
        self.plot.addItem(self.band, ignoreBounds=True)
        for item in (self.nofit, self.unavailable, self.unpriced, self.grey, self.whiskers, self.ok, self.front,
                     self.recommended, self.beyond, self.selected):
            self.plot.addItem(item)
        for item in (self.nofit, self.unavailable, self.unpriced, self.grey, self.ok, self.recommended, self.beyond):
            item.sigClicked.connect(self._clicked)
        label_opts = dict(position=0.8, color=BUDGET, movable=False, fill=(255, 255, 255, 200))
        self.deadline = pg.InfiniteLine(angle=90, pen=pg.mkPen(BUDGET, width=2, style=Qt.PenStyle.DashLine),
                                        label="deadline", labelOpts=label_opts)
        self.cost_cap = pg.InfiniteLine(angle=0, pen=pg.mkPen(BUDGET, width=2, style=Qt.PenStyle.DashLine),
                                        label="cost cap", labelOpts=dict(label_opts, position=0.12))
        for line in (self.deadline, self.cost_cap):
            self.plot.addItem(line, ignoreBounds=True)
            line.hide()
        self.band.hide()
        # what show_options was given, for mark() and the whiskers
        self._x_range = (np.log10(0.1), np.log10(100.0))
        self._dollars = (0.0, 3.0)
        self._arrays: dict = {}
        self._off: list = []
        self._recommended: int | None = None
        self._selected: int | None = None
        self._set_titles()
        self._update_legend()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)
        self._ready = True
        self._apply_theme()

    # ---- look --------------------------------------------------------------------------------------------------

    def _is_dark(self) -> bool:
        return self.palette().color(QPalette.ColorRole.Base).lightness() < 128

    def _set_titles(self, text: bool = True) -> None:
        """The axis titles: the ticks carry the unit ("30 min", "2 h", "$100"), so a title names no other. With
        ``text`` False only their colour follows the palette (a title set by the view is kept)."""
        fg = self.palette().color(QPalette.ColorRole.Text).name()
        if not text:
            for side in ("bottom", "left"):
                axis = self.plot_item.getAxis(side)
                axis.setLabel(axis.labelText, axis.labelUnits, color=fg)
            return
        at = f", at P{round(self._confidence * 100)}" if self._confidence else ""
        self.plot.setLabel("bottom", f"time to finish{at}", color=fg)
        self.plot.setLabel("left", f"cost (US$){at}", color=fg)

    def _apply_theme(self) -> None:
        """Background, text, axes, legend, labels and the few colours that need it from the palette."""
        bg = self.palette().color(QPalette.ColorRole.Base)
        fg = self.palette().color(QPalette.ColorRole.Text)
        dark = self._is_dark()
        self.plot.setBackground(bg)
        style_axes(self.plot_item, fg, 120)
        self._set_titles(text=False)
        frame = QColor(fg)
        frame.setAlpha(60)
        self.legend.setPen(pg.mkPen(frame))
        self.legend.setBrush(pg.mkBrush(QColor(bg)))
        self.legend.setLabelTextColor(fg)
        for _sample, label in self.legend.items:
            label.setText(label.text, color=fg)
        red = QColor(BUDGET_DARK if dark else BUDGET)
        fill = QColor(bg)
        fill.setAlpha(210)
        for line in (self.deadline, self.cost_cap):
            line.setPen(pg.mkPen(red, width=2, style=Qt.PenStyle.DashLine))
            line.label.setColor(red)
            line.label.fill = pg.mkBrush(fill)
            line.label.update()
        edge = QColor(bg)
        self.ok.setPen(pg.mkPen(edge, width=0.5))
        self.recommended.setPen(pg.mkPen(QColor("#f0f0f0") if dark else QColor("#000000"), width=1))
        self.split_key.setPen(pg.mkPen(QColor("#aaaaaa") if dark else QColor("#555555"), width=1))
        self.whiskers.setPen(pg.mkPen(QColor("#aab4b8") if dark else QColor(RANGE_PEN), width=1.6))
        self.beyond.setBrush(pg.mkBrush(QColor("#aab4b8") if dark else QColor(RANGE_PEN)))
        band = QColor(FRONT)
        band.setAlpha(34 if dark else 22)
        self.band.setBrush(pg.mkBrush(band))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        if self._ready and event.type() in (QEvent.Type.PaletteChange, QEvent.Type.StyleChange,
                                            QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()
        super().changeEvent(event)

    def _update_legend(self, empty: bool = False) -> None:
        """The legend lists what is drawn, in a fixed order; rebuilt only when that changes."""
        entries = [] if empty else [
            (self.ok, "meets the budget"), (self.recommended, "recommended"), (self.front, "Pareto front"),
            (self.whiskers, "P10–P90"), (self.grey, "outside the budget"), (self.nofit, "does not fit")]
        if not empty and self._split_in_legend:
            entries.append((self.split_key, "split hardware (◆)"))
        if not empty and self._unavailable_in_legend:
            entries.append((self.unavailable, "no capacity or quota"))
        if not empty and self._unpriced_in_legend:
            entries.append((self.unpriced, UNPRICED_TEXT))
        if not empty and self._beyond_in_legend:
            entries.append((self.beyond, "beyond the axis"))
        if [(id(i), n) for i, n in entries] == [(id(i), n) for i, n in self._legend_entries]:
            return
        self.legend.clear()
        for item, name in entries:
            self.legend.addItem(item, name)
        self._legend_entries = entries
        fg = self.palette().color(QPalette.ColorRole.Text)
        for _sample, label in self.legend.items:
            label.setText(label.text, color=fg)
        self.legend.setVisible(bool(entries))
        self._fit_legend()

    def _fit_legend(self) -> None:
        """The legend under the plot in as many columns as the width holds, or beside it in one or two columns,
        whichever leaves the plot more room (a short, wide chart at the window's minimum size: beside it)."""
        if not self.legend.items:
            return
        row_h = max(label.item.boundingRect().height() for _s, label in self.legend.items) + 1
        widths = [20 + self.legend.layout.horizontalSpacing() * 2 + label.item.boundingRect().width() + 6
                  for _sample, label in self.legend.items]
        n = len(widths)
        axis_w = self.plot_item.getAxis("left").width() + 24
        plot_h = max(1.0, self.height() - self.plot_item.getAxis("bottom").height() - 16)
        room = self.width() - axis_w

        def columns_width(cols: int) -> float:      # entries fill rows left to right: column k holds k, k+cols, ...
            return sum(max(widths[k::cols]) for k in range(cols))

        below = next((c for c in range(n, 0, -1) if columns_width(c) <= room), 1)
        rows_below = -(-n // below)
        area_below = room * max(0.0, plot_h - rows_below * row_h - 8)
        beside = next((c for c in (1, 2, 3) if -(-n // c) * row_h + 8 <= plot_h), None)
        area_beside = (room - columns_width(beside) - 8) * plot_h if beside else -1.0
        place, cols = ("beside", beside) if area_beside > area_below else ("below", below)
        if place != getattr(self, "_legend_place", None):
            self.plot_item.layout.removeItem(self.legend)
            if place == "below":
                self.plot_item.layout.addItem(self.legend, 4, 1, alignment=Qt.AlignmentFlag.AlignLeft)
            else:
                self.plot_item.layout.addItem(self.legend, 2, 3, alignment=Qt.AlignmentFlag.AlignTop)
            self._legend_place = place
        self.legend.setColumnCount(cols)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit_legend()

    def legend_labels(self) -> list[str]:
        return [label.text for _sample, label in self.legend.items]

    # ---- options -----------------------------------------------------------------------------------------------

    def _clicked(self, _item, points, _ev=None) -> None:
        if len(points):
            self.sig_option_clicked.emit(int(points[0].data()))

    @staticmethod
    def _y(cost: np.ndarray) -> np.ndarray:
        return np.log10(np.maximum(cost, FREE_USD))

    def _ranges(self, hours, cost, fits, planned, front, recommended, hours_cap, usd_cap) -> None:
        """The axes' range: from the fastest option to the front's slowest point (or the recommendation, or the
        deadline), never further than PLAUSIBLE times the deadline (or the fastest option); the costs of what falls
        in that time; the deadline and the cap always inside."""
        drawn = planned & np.isfinite(hours) & (hours > 0)
        pool = drawn & fits if (drawn & fits).any() else drawn
        if pool.any():
            fastest = float(hours[pool].min())
            anchors = [fastest]
            fr = np.asarray(front, dtype=np.int64)
            if fr.size:
                anchors += [float(h) for h in hours[fr] if np.isfinite(h) and h > 0]
            if recommended is not None and np.isfinite(hours[recommended]):
                anchors.append(float(hours[recommended]))
            reach = PLAUSIBLE * max(hours_cap or 0.0, fastest)
            lo = min(fastest, hours_cap or np.inf)
            # and what lies just past the deadline (up to twice it), so a near miss is in view
            near = min(2 * hours_cap, float(hours[pool].max())) if hours_cap else 0.0
            hi = max(min(max(anchors), reach), near, hours_cap or 0.0, fastest)
        else:
            lo, hi = (hours_cap / 3, hours_cap * 3) if hours_cap else (0.1, 100.0)
        x0, x1 = self._padded(np.log10(lo), np.log10(hi), MIN_SPAN[0], self.vb.width())
        in_time = pool & (hours >= 10 ** x0) & (hours <= 10 ** x1) & np.isfinite(cost)
        costs = list(cost[in_time])
        if usd_cap:
            costs.append(usd_cap)
        if costs:
            ys = self._y(np.asarray(costs, dtype=float))
            y0, y1 = self._padded(float(ys.min()), float(ys.max()), MIN_SPAN[1], self.vb.height())
        else:
            y0, y1 = 0.0, 3.0        # $1 to $1,000: nothing priced to show
        self._x_range, self._dollars = (x0, x1), (y0, y1)

    @staticmethod
    def _padded(lo: float, hi: float, min_span: float, pixels: float = 0.0) -> tuple[float, float]:
        """``lo``-``hi`` widened to ``min_span`` and a margin: MARGIN of the span, and at least 14 pixels (a tick
        label's half height) on a small chart, so what sits at either end (a budget line) is never on the frame."""
        if hi - lo < min_span:
            mid = (hi + lo) / 2
            lo, hi = mid - min_span / 2, mid + min_span / 2
        frac = max(MARGIN, min(0.2, 14.0 / pixels)) if pixels > 0 else MARGIN
        pad = (hi - lo) * frac
        return lo - pad, hi + pad

    def _apply_ranges(self, any_unpriced: bool) -> None:
        (x0, x1), (y0, y1) = self._x_range, self._dollars
        top = y1
        if any_unpriced:
            span = y1 - y0
            lo = y1 + 0.03 * span
            # at least 24 pixels high, so its label and the selection ring (20 px) fit in it on a short chart
            frac = min(0.35, max(0.14, 24.0 / self.vb.height())) if self.vb.height() > 0 else 0.14
            hi = lo + max(frac * span, 0.12)
            self._band = (lo, hi)
            self.band.setRegion((lo, hi))
            self.band.show()
            top = hi
        else:
            self._band = None
            self.band.hide()
        axis = self.plot_item.getAxis("left")
        axis.top = y1
        axis.band = sum(self._band) / 2 if self._band is not None else None
        axis.picture = None         # ticks of the new range, and the band's label, at once
        axis.update()
        self.vb.setRange(xRange=(x0, x1), yRange=(y0, top), padding=0)

    def _place(self, idx: np.ndarray, hours: np.ndarray, cost: np.ndarray):
        """Chart coordinates of the options ``idx`` (log10): an unpriced option in the band, and an option beyond the
        axes at their edge. Returns x, y and where each went off the axes ("", "right", "left", "up", "down")."""
        (x0, x1), (y0, y1) = self._x_range, self._dollars
        c = cost[idx]
        priced = np.isfinite(c)
        x = np.log10(hours[idx])
        band = sum(self._band) / 2 if self._band is not None else y1
        y = np.where(priced, self._y(np.where(priced, c, 1.0)), band)
        dx, dy = (x1 - x0) * INSET, (y1 - y0) * INSET
        off = np.full(idx.size, "", dtype=object)
        for mask, where in ((priced & (y < y0), "down"), (priced & (y > y1), "up"), (x < x0, "left"),
                            (x > x1, "right")):
            off[mask] = where
        x = np.clip(x, x0 + dx, x1 - dx)
        y = np.where(priced, np.clip(y, y0 + dy, y1 - dy), y)
        return x, y, off

    def _set(self, item, idx: np.ndarray, hours: np.ndarray, cost: np.ndarray) -> None:
        idx = idx[np.isfinite(cost[idx]) & np.isfinite(hours[idx]) & (hours[idx] > 0)] if item is not self.unpriced \
            else idx[np.isfinite(hours[idx]) & (hours[idx] > 0)]
        kw = {}
        if item in (self.ok, self.grey):    # split-hardware options as diamonds; a per-point list only if any
            split = self._split[idx] if self._split is not None else None
            kw["symbol"] = np.where(split, "d", "o").tolist() if split is not None and split.any() else "o"
        x, y, off = self._place(idx, hours, cost)
        item.setData(x=x, y=y, data=idx, **kw)
        out = off != ""
        if out.any():
            self._off.append((idx[out], x[out], y[out], off[out]))

    def _draw_beyond(self) -> None:
        """An arrow beside each option drawn at an edge, pointing the way it went off."""
        (x0, x1), (y0, y1) = self._x_range, self._dollars
        dx, dy = (x1 - x0) * INSET * 0.6, (y1 - y0) * INSET * 0.6
        if not self._off:
            self.beyond.setData(x=np.zeros(0), y=np.zeros(0))
            return
        idx = np.concatenate([o[0] for o in self._off])
        x = np.concatenate([o[1] for o in self._off])
        y = np.concatenate([o[2] for o in self._off])
        off = np.concatenate([o[3] for o in self._off])
        shift_x = np.select([off == "right", off == "left"], [dx, -dx], 0.0)
        shift_y = np.select([off == "up", off == "down"], [dy, -dy], 0.0)
        symbols = [{"right": "t2", "left": "t3", "up": "t1", "down": "t"}[o] for o in off]
        self.beyond.setData(x=x + shift_x, y=y + shift_y, data=idx, symbol=symbols)

    def show_options(self, hours: np.ndarray, cost: np.ndarray, ok: np.ndarray, fits: np.ndarray,
                     planned: np.ndarray, front: np.ndarray, recommended: int | None,
                     hours_cap: float | None, usd_cap: float | None, available: np.ndarray | None = None,
                     low: np.ndarray | None = None, high: np.ndarray | None = None,
                     cost_low: np.ndarray | None = None, cost_high: np.ndarray | None = None,
                     split: np.ndarray | None = None, confidence: float | None = None) -> None:
        """Draw the options (arrays over the whole sweep; ``planned`` selects what is drawn). ``hours`` and
        ``cost`` are what the budget is judged by (so a point left of the deadline line meets it); ``confidence``,
        when given, names that quantile in the axis titles ("at P80"). ``available``: False where the region cannot
        give the option (capacity or quota, as last checked). ``split``: True for the split-hardware options, drawn
        as diamonds. ``low``/``high``, ``cost_low``/``cost_high``: P10 and P90, whiskered for the recommendation
        and the selected option."""
        hours = np.asarray(hours, dtype=float)
        cost = np.asarray(cost, dtype=float)
        if confidence is not None and confidence != self._confidence:
            self._confidence = confidence
            self._set_titles()
        self._split = split
        self._split_in_legend = bool(split is not None and (split & planned).any())
        self._arrays = dict(hours=hours, cost=cost, low=low, high=high, cost_low=cost_low, cost_high=cost_high)
        self._recommended = recommended
        blocked = planned & fits & ~available if available is not None else np.zeros_like(planned)
        unpriced = planned & fits & ~np.isfinite(cost) & np.isfinite(hours) & (hours > 0)
        self._ranges(hours, cost, fits, planned, front, recommended, hours_cap, usd_cap)
        self._apply_ranges(bool(unpriced.any()))
        self._off: list = []
        self._set(self.ok, np.flatnonzero(planned & ok), hours, cost)
        self._set(self.grey, np.flatnonzero(planned & ~ok & fits & ~blocked & np.isfinite(cost)), hours, cost)
        self._set(self.unavailable, np.flatnonzero(blocked & np.isfinite(cost)), hours, cost)
        self._set(self.unpriced, np.flatnonzero(unpriced), hours, cost)
        self._set(self.nofit, np.flatnonzero(planned & ~fits), hours, cost)
        self._unavailable_in_legend = bool((blocked & np.isfinite(cost)).any())
        self._unpriced_in_legend = bool(unpriced.any())
        self._draw_beyond()
        self._beyond_in_legend = bool(self._off)
        fr = np.asarray(front, dtype=np.int64)
        fr = fr[np.isfinite(cost[fr]) & np.isfinite(hours[fr]) & (hours[fr] > 0)] if fr.size else fr
        fr = fr[np.argsort(hours[fr])] if fr.size else fr
        if fr.size:
            x, y, _off = self._place(fr, hours, cost)
            self.front.setData(x=x, y=y)
        else:
            self.front.setData([], [])
        if recommended is not None and np.isfinite(cost[recommended]):
            x, y, _off = self._place(np.asarray([recommended]), hours, cost)
            self.recommended.setData(x=x, y=y, data=[recommended])
        else:
            self.recommended.setData([], [])
        self._update_legend()
        self.set_budget(hours_cap, usd_cap)
        self._whiskers()

    def _whiskers(self) -> None:
        """P10-P90 of the recommendation and the selected option only (all of them would hide the chart); an unpriced
        option's range lies along the band."""
        a = self._arrays
        low, high, cost_low, cost_high = (a.get(k) for k in ("low", "high", "cost_low", "cost_high"))
        xs: list[float] = []
        ys: list[float] = []
        if low is not None and high is not None:
            for i in dict.fromkeys((self._recommended, self._selected)):
                if i is None or i >= low.size or not (low[i] > 0 and np.isfinite(high[i])):
                    continue
                if np.isfinite(a["cost"][i]) and cost_low is not None and cost_high is not None \
                        and np.isfinite(cost_low[i]) and np.isfinite(cost_high[i]):
                    ys += list(self._y(np.asarray([cost_low[i], cost_high[i]], dtype=float)))
                elif not np.isfinite(a["cost"][i]) and self._band is not None:
                    ys += [sum(self._band) / 2] * 2
                else:
                    continue
                xs += [float(np.log10(low[i])), float(np.log10(high[i]))]
        self.whiskers.setData(x=np.asarray(xs), y=np.asarray(ys))

    def clear_options(self) -> None:
        """Nothing drawn (a plan that could not be planned): no points, no budget lines, no legend."""
        for item in (self.ok, self.grey, self.nofit, self.unavailable, self.unpriced, self.recommended, self.selected,
                     self.beyond):
            item.setData([], [])
        self.front.setData([], [])
        self.whiskers.setData([], [])
        self._arrays, self._recommended, self._selected = {}, None, None
        self._band = None
        self.band.hide()
        self.plot_item.getAxis("left").band = None
        self._update_legend(empty=True)
        self.set_budget(None, None)

    def set_budget(self, hours_cap: float | None, usd_cap: float | None) -> None:
        """The deadline and cap lines, labelled with their value. The line is shown before its label is set:
        pyqtgraph's label ignores a new text while hidden, and would keep the previous plan's."""
        if hours_cap:       # the cap's label on the side away from the deadline line, so the two never overlap
            (x0, x1), _ = self.vb.viewRange()
            self.cost_cap.label.setPosition(0.88 if (np.log10(hours_cap) - x0) / (x1 - x0 or 1) < 0.5 else 0.12)
        for line, value, text in ((self.deadline, hours_cap, lambda v: f"deadline {_fmt_hours(v)}"),
                                  (self.cost_cap, usd_cap, lambda v: f"cap {_fmt_cap(v)}")):
            if value:
                line.show()
                line.setPos(np.log10(value))
                words = text(value).replace("{", "{{").replace("}", "}}")
                line.label.setFormat(words)
                line.label.setText(text(value))
            else:
                line.hide()

    def mark(self, i: int | None, hours: np.ndarray, cost: np.ndarray) -> None:
        """The selection ring on option ``i`` (at the edge if beyond the axes, in the band if unpriced), and its
        P10-P90 whisker."""
        self._selected = i
        hours = np.asarray(hours, dtype=float)
        cost = np.asarray(cost, dtype=float)
        if i is None or i >= hours.size or not (np.isfinite(hours[i]) and hours[i] > 0) \
                or (not np.isfinite(cost[i]) and self._band is None):
            self.selected.setData([], [])
        else:
            x, y, _off = self._place(np.asarray([i]), hours, cost)
            self.selected.setData(x=x, y=y)
        self._whiskers()
