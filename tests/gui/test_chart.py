"""LiveChart: buffers that grow without losing points, NaN skipping, log scale with non-positive values, overlays,
timer-driven redraws, and a 500,000-point screenshot. No timing asserts here (speed is benchmarks/bench_gui_chart.py)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import PySide6
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPalette

from distill_studio.gui.monitor.chart import PALETTE, LiveChart, _CompactAxis


def _pyside_drops_references() -> bool:
    """PySide6 6.12.0 on Python < 3.12: every Python-side emit loses a reference to True (and every call from C++
    into Python, one to None). A few emits are enough to see it."""
    if sys.version_info >= (3, 12):
        return False

    class Probe(QObject):
        sig = Signal()

    probe = Probe()
    before = sys.getrefcount(True)
    for _ in range(4):
        probe.sig.emit()
    return sys.getrefcount(True) < before


PYSIDE_DROPS_REFERENCES = _pyside_drops_references()


@pytest.fixture
def chart(qtbot):
    c = LiveChart("Loss", y_label="loss")
    qtbot.addWidget(c)
    return c


def pushed(chart: LiveChart, name: str):
    """What the curve was last given (before its own downsampling and clipping)."""
    return chart._series[name].item.getOriginalDataset()


def legend_labels(chart: LiveChart) -> list[str]:
    return [label.text for _sample, label in chart.legend.items]


def loss_curve(n: int, seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=float)
    y = scale * (3.0 * np.exp(-x / (n / 5)) + 0.5) + 0.08 * rng.standard_normal(n)
    return x, y


def test_appends_accumulate_exactly_across_buffer_growth(chart):
    chart.add_series("train")
    xs, ys = [], []
    for i in range(1500):                      # scalars: past the first capacity (1024)
        chart.append("train", i, float(i) * 0.5)
        xs.append(i)
        ys.append(i * 0.5)
    x2, y2 = loss_curve(6000, seed=1)          # one array: several doublings at once
    x2 += 1500
    chart.append("train", x2, y2)
    chart.append("train", [7500, 7501], [0.25, 0.125])   # a plain list
    chart.append("train", np.int64(7502), np.float32(0.5))  # numpy scalars
    expect_x = np.concatenate([xs, x2, [7500, 7501, 7502]])
    expect_y = np.concatenate([ys, y2, [0.25, 0.125, 0.5]])

    assert chart.point_count("train") == expect_x.size == 7503
    cap = chart._series["train"].x.size
    assert cap >= 7503 and cap & (cap - 1) == 0        # doubled from 1024, not grown by the append size

    chart.redraw()
    px, py = pushed(chart, "train")
    np.testing.assert_array_equal(px, expect_x)
    np.testing.assert_array_equal(py, expect_y)
    hx, hy = chart.data("train")
    np.testing.assert_array_equal(hy, expect_y)

    # more after a redraw keeps the earlier points
    chart.append("train", 7503, 9.0)
    chart.redraw()
    px, py = pushed(chart, "train")
    assert px.size == 7504 and py[-1] == 9.0 and py[0] == 0.0


def test_nan_none_and_inf_are_skipped(chart):
    chart.add_series("eval", symbol="o")
    chart.append("eval", [0, 1, 2, 3, 4], [1.0, float("nan"), None, 2.0, math.inf])
    chart.append("eval", 5, float("nan"))
    chart.append("eval", 6, None)
    chart.append("eval", float("nan"), 1.0)
    chart.append("eval", 7, 3.0)
    assert chart.point_count("eval") == 3
    chart.redraw()
    px, py = pushed(chart, "eval")
    np.testing.assert_array_equal(px, [0, 3, 7])
    np.testing.assert_array_equal(py, [1.0, 2.0, 3.0])
    assert chart._series["eval"].item.opts["symbol"] == "o"


def test_mismatched_lengths_raise(chart):
    with pytest.raises(ValueError):
        chart.append("a", [1, 2, 3], [1, 2])


def test_set_data_replaces_and_undeclared_names_are_declared(chart):
    chart.append("kd", [0, 1, 2], [3.0, 2.0, 1.0])
    chart.set_data("kd", [10, 11], [0.5, float("nan")])
    assert chart.series_names() == ["kd"] and chart.point_count("kd") == 1
    chart.redraw()
    px, py = pushed(chart, "kd")
    np.testing.assert_array_equal(px, [10])
    np.testing.assert_array_equal(py, [0.5])
    assert chart.point_count("never-declared") == 0


def test_log_y_hides_non_positive_values_without_breaking(chart, qtbot):
    chart.add_series("train")
    chart.append("train", [0, 1, 2, 3, 4, 5], [2.0, 0.0, -1.0, 0.5, 1e-3, 4.0])
    chart.redraw()
    chart.resize(400, 300)
    chart.show()
    qtbot.waitExposed(chart)

    chart.set_log_y(True)                       # must not raise
    assert chart.log_y
    assert chart.plot_item.getAxis("left").logMode is True
    assert chart.plot_item.ctrl.logYCheck.isChecked()
    px, py = pushed(chart, "train")
    np.testing.assert_array_equal(px, [0, 3, 4, 5])
    dx, dy = chart._series["train"].item.getData()   # what is drawn: log10 of the positive values
    assert np.isfinite(dy).all()
    np.testing.assert_allclose(np.sort(dy), np.sort(np.log10([2.0, 0.5, 1e-3, 4.0])))
    assert not chart.grab().isNull()            # paints

    chart.append("train", 6, 0.0)               # a later non-positive point is hidden too
    chart.redraw()
    assert pushed(chart, "train")[0].size == 4
    assert chart.point_count("train") == 7      # but held

    chart.set_log_y(False)
    assert chart.plot_item.getAxis("left").logMode is False
    assert pushed(chart, "train")[0].size == 7

    chart.plot_item.ctrl.logYCheck.setChecked(True)   # the context menu's box does the same
    assert chart.log_y and pushed(chart, "train")[0].size == 4


def test_overlay_in_legend_dashed_same_hue_and_removed(chart):
    chart.add_series("train")
    chart.add_series("eval", symbol="o")
    x, y = loss_curve(300)
    chart.append("train", x, y)
    chart.set_overlay("train", x, y * 1.1, "train (run 12)")
    chart.redraw()
    assert "train (run 12)" in legend_labels(chart)
    ov = chart._overlays["train"].item
    assert ov in chart.plot_item.items
    pen = ov.opts["pen"]
    assert pen.style() == Qt.PenStyle.DashLine
    series_hue = chart._series["train"].item.opts["pen"].color().hsvHue()
    assert abs(pen.color().hsvHue() - series_hue) <= 12
    assert pen.color() != chart._series["train"].item.opts["pen"].color()
    np.testing.assert_allclose(ov.getOriginalDataset()[1], y * 1.1)

    chart.set_overlay("train", x, y, "train (run 13)")     # a new label replaces the legend entry
    chart.set_overlay("eval", [0, 100], [3.0, 2.0], "eval (run 13)")
    labels = legend_labels(chart)
    assert "train (run 13)" in labels and "train (run 12)" not in labels and "eval (run 13)" in labels

    chart.set_overlay("eval", [], [], "")                  # the empty form removes one
    assert "eval (run 13)" not in legend_labels(chart) and chart.overlay_names() == ["train"]

    chart.clear_overlays()
    assert chart.overlay_names() == []
    assert legend_labels(chart) == ["train", "eval"]
    assert ov not in chart.plot_item.items


def test_clear_keeps_declarations_and_drops_overlays(chart):
    chart.add_series("train", color="#123456")
    chart.append("train", [0, 1], [1.0, 2.0])
    chart.set_overlay("train", [0, 1], [1.5, 2.5], "other")
    chart.redraw()
    chart.clear()
    assert chart.point_count("train") == 0 and chart.series_names() == ["train"]
    assert chart.overlay_names() == [] and legend_labels(chart) == ["train"]
    chart.redraw()
    assert pushed(chart, "train") == (None, None)
    chart.append("train", 5, 1.0)
    chart.redraw()
    np.testing.assert_array_equal(pushed(chart, "train")[0], [5])
    assert chart._series["train"].item.opts["pen"].color() == QColor("#123456")


def test_default_colours_come_from_the_palette_in_order(chart):
    for name in ("a", "b", "c"):
        chart.add_series(name)
    colours = [chart._series[n].item.opts["pen"].color().name() for n in ("a", "b", "c")]
    assert colours == [c.lower() for c in PALETTE[:3]]


def test_follows_a_dark_palette(chart, qtbot, screenshot):
    chart.add_series("train")
    chart.add_series("eval", symbol="o")
    x, y = loss_curve(5000)
    chart.append("train", x, y)
    chart.append("eval", x[::250], y[::250])
    chart.set_overlay("train", x, y * 1.2, "train (run 3)")
    light_pen = chart._series["train"].item.opts["pen"].color()
    palette = chart.palette()
    palette.setColor(QPalette.ColorRole.Base, QColor("#1e1e1e"))
    palette.setColor(QPalette.ColorRole.Text, QColor("#dddddd"))
    chart.setPalette(palette)
    assert chart.plot_widget.backgroundBrush().color() == QColor("#1e1e1e")
    assert chart.plot_item.getAxis("left").textPen().color() == QColor("#dddddd")
    dark_pen = chart._series["train"].item.opts["pen"].color()
    assert dark_pen.lightness() > light_pen.lightness()          # lifted for a dark background
    overlay = chart._overlays["train"].item.opts["pen"].color()
    assert overlay.lightness() < dark_pen.lightness()            # the comparison recedes towards the background
    chart.redraw()
    chart.resize(900, 500)
    chart.show()
    qtbot.waitExposed(chart)
    screenshot(chart, "chart_dark")


def test_appends_wait_for_the_timer(chart, qtbot):
    chart.redraw_interval_ms = 50
    assert chart._timer.interval() == 50
    chart.resize(400, 300)
    chart.show()
    qtbot.waitExposed(chart)
    chart.append("train", [0, 1], [1.0, 2.0])
    chart.redraw()
    before = chart.redraw_count

    for i in range(2, 102):
        chart.append("train", i, 1.0 / i)
    assert chart.redraw_count == before                     # no redraw per append
    assert pushed(chart, "train")[0].size == 2              # the curve still shows the old data
    assert chart.is_dirty()

    qtbot.waitUntil(lambda: chart.redraw_count > before, timeout=5000)
    assert pushed(chart, "train")[0].size == 102
    qtbot.wait(200)                                         # a burst of appends is one redraw, and idle is none
    assert chart.redraw_count == before + 1
    assert not chart.is_dirty()


def test_hidden_chart_catches_up_when_shown(chart, qtbot):
    chart.redraw_interval_ms = 20
    chart.append("train", [0, 1, 2], [1.0, 2.0, 3.0])
    qtbot.wait(150)
    assert chart.redraw_count == 0 and chart.is_dirty()
    chart.show()
    qtbot.waitUntil(lambda: chart.redraw_count == 1, timeout=5000)
    assert pushed(chart, "train")[0].size == 3


def test_compact_step_ticks():
    axis = _CompactAxis(orientation="bottom")
    assert axis.tickStrings([0, 250_000, 500_000], 1.0, 250_000) == ["0", "250k", "500k"]
    assert axis.tickStrings([1_000_000, 1_500_000], 1.0, 500_000) == ["1.0M", "1.5M"]
    assert axis.tickStrings([102_500, 105_000], 1.0, 2_500) == ["102.5k", "105.0k"]
    assert axis.tickStrings([0, 500, 1000], 1.0, 500) == ["0", "500", "1000"]


def test_500k_points_grab_to_png(chart, qtbot, screenshot):
    n = 500_000
    chart.add_series("train")
    chart.add_series("kd")
    chart.add_series("eval", symbol="o")
    x, y = loss_curve(n, seed=2)
    _, y_kd = loss_curve(n, seed=3, scale=0.6)
    chart.append("train", x, y)
    chart.append("kd", x, y_kd)
    chart.append("eval", x[::10_000], y[::10_000] - 0.05)
    chart.set_overlay("train", x, loss_curve(n, seed=4, scale=1.15)[1], "train (baseline)")
    chart.resize(900, 500)
    chart.show()
    qtbot.waitExposed(chart)
    chart.redraw()
    assert chart.point_count("train") == n and pushed(chart, "train")[0].size == n

    path = screenshot(chart, "chart_500k")
    image = QImage(str(path))
    assert not image.isNull() and image.width() == 900 and image.height() == 500

    # peak downsampling is on: far fewer points are drawn than held (about two per pixel column)
    dx, _ = chart._series["train"].item.getData()
    assert 0 < dx.size < 20 * chart.width()
    # and the curve is really on the picture: many pixels of the first series' colour
    blue = QColor(PALETTE[0]).rgb()
    small = image.scaled(450, 250)  # sample fewer pixels; scaling blends, so count close colours
    hits = 0
    for yy in range(small.height()):
        for xx in range(0, small.width(), 2):
            c = QColor(small.pixel(xx, yy))
            if abs(c.red() - QColor(blue).red()) < 40 and abs(c.green() - QColor(blue).green()) < 40 \
                    and abs(c.blue() - QColor(blue).blue()) < 40:
                hits += 1
    assert hits > 500


@pytest.mark.xfail(
    PYSIDE_DROPS_REFERENCES, strict=True,
    reason=f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]} drops references to None and True on "
           "signal emits and Python overrides (~300 to None per live redraw): a shown chart aborts the process "
           "(none_dealloc) within minutes. Not fixable in the chart: use PySide6-Essentials != 6.12.0 "
           "(6.11.3 is clean) or Python >= 3.12.")
def test_live_redraws_keep_references_to_none_and_true(chart, qtbot):
    chart.resize(600, 300)
    chart.show()
    qtbot.waitExposed(chart)
    x, y = loss_curve(20_000)
    chart.append("train", x, y)
    chart.redraw()
    chart.plot_widget.viewport().repaint()

    def cycle(i: int) -> None:
        chart.append("train", np.arange(100.0) + 20_000 + 100 * i, np.full(100, 0.5))
        chart.redraw()
        chart.plot_widget.viewport().repaint()

    cycle(0)
    none0, true0 = sys.getrefcount(None), sys.getrefcount(True)
    for i in range(1, 3):
        cycle(i)
    assert sys.getrefcount(None) - none0 > -10 and sys.getrefcount(True) - true0 > -10


# ---- the planner's cost-time chart ------------------------------------------------------------------------------

from distill_studio.gui.planner.chart import CostTimeChart  # noqa: E402


def _sweep(n: int = 400, seed: int = 0, absurd: bool = False, unpriced: int = 0, cheap: bool = False):
    """A small sweep as the planner hands it over: times from 20 min to 2 days, costs that fall with time, P10-P90
    ranges, some that do not fit. ``absurd``: three 35-year options as well; ``unpriced``: so many without a price;
    ``cheap``: a local machine's cents."""
    rng = np.random.default_rng(seed)
    hours = np.exp(rng.uniform(np.log(1 / 3), np.log(48), n))
    cost = 400.0 / np.sqrt(hours) * rng.uniform(0.8, 1.6, n)
    if cheap:
        hours, cost = hours / 600, cost / 5000
    if absurd:
        hours[:3] = [312_881.0, 150_000.0, 90_000.0]
    if unpriced:
        cost[3:3 + unpriced] = np.nan
    fits = rng.uniform(size=n) > 0.1
    planned = np.ones(n, bool)
    order = np.argsort(hours)
    best, front = np.inf, []
    for i in order:                       # cheapest so far, going slower: the Pareto front
        if fits[i] and np.isfinite(cost[i]) and cost[i] < best:
            best = cost[i]
            front.append(int(i))
    return dict(hours=hours, cost=cost, fits=fits, planned=planned, front=np.asarray(front),
                low=hours * 0.7, high=hours * 1.5, cost_low=cost * 0.7, cost_high=cost * 1.5)


def _draw(c: CostTimeChart, s: dict, hours_cap, usd_cap, recommended="auto"):
    ok = s["fits"] & np.isfinite(s["cost"]) & (s["hours"] <= (hours_cap or np.inf)) & (s["cost"] <= (usd_cap or np.inf))
    if recommended == "auto":
        cands = np.flatnonzero(ok)
        recommended = int(cands[np.argmin(s["cost"][cands])]) if cands.size else None
    c.show_options(s["hours"], s["cost"], ok, s["fits"], s["planned"], s["front"], recommended, hours_cap, usd_cap,
                   low=s["low"], high=s["high"], cost_low=s["cost_low"], cost_high=s["cost_high"])
    return ok, recommended


@pytest.fixture
def cost_chart(qtbot):
    c = CostTimeChart()
    c.resize(900, 520)
    qtbot.addWidget(c)
    c.show()
    qtbot.waitExposed(c)
    return c


def _label(line) -> str:
    return line.label.toPlainText()


def test_budget_labels_show_their_value_on_first_draw_and_after_another_plan(cost_chart):
    s = _sweep()
    _draw(cost_chart, s, 3.0, 150.0)
    assert cost_chart.deadline.isVisible() and cost_chart.cost_cap.isVisible()
    assert _label(cost_chart.deadline) == "deadline 3 h"
    assert _label(cost_chart.cost_cap) == "cap $150"
    # a plan that fails clears the chart; the next one shows its own values, never the previous plan's
    cost_chart.clear_options()
    assert not cost_chart.deadline.isVisible() and not cost_chart.cost_cap.isVisible()
    _draw(cost_chart, s, 0.3, 0.2)
    assert _label(cost_chart.deadline) == "deadline 18 min"
    assert _label(cost_chart.cost_cap) == "cap $0.20"            # cents kept, not "$0"
    _draw(cost_chart, s, 27.0, None)
    assert _label(cost_chart.deadline) == "deadline 27 h" and not cost_chart.cost_cap.isVisible()


def _view_range(c: CostTimeChart):
    (x0, x1), (y0, y1) = c.vb.viewRange()
    return x0, x1, y0, y1


def _ticks(c: CostTimeChart, side: str) -> list[tuple[float, str]]:
    axis = c.plot_item.getAxis(side)
    x0, x1, y0, y1 = _view_range(c)
    lo, hi = (y0, y1) if side == "left" else (x0, x1)
    values = axis.tickValues(lo, hi, 400)[0][1]
    return list(zip(values, axis.tickStrings(values, 1.0, 1.0)))


def test_unpriced_options_sit_in_a_labelled_band_above_the_dollar_scale(cost_chart):
    s = _sweep(unpriced=40)
    _ok, rec = _draw(cost_chart, s, 3.0, None)
    unpriced = np.flatnonzero(~np.isfinite(s["cost"]) & s["fits"])
    drawn = cost_chart.unpriced.data["data"].astype(int)
    assert set(drawn) == set(unpriced)
    band_y = cost_chart.unpriced.data["y"]
    assert np.allclose(band_y, band_y[0])
    lo, hi = cost_chart.band.getRegion()
    assert cost_chart.band.isVisible() and lo < band_y[0] < hi
    ticks = _ticks(cost_chart, "left")
    dollars = [v for v, text in ticks if text.startswith("$")]
    # the band is labelled on the cost axis, and every dollar tick lies below it: none level with a triangle
    assert ("price unknown" in [text for _v, text in ticks])
    assert dollars and max(dollars) < lo
    priced_y = np.concatenate([cost_chart.ok.data["y"], cost_chart.grey.data["y"]])
    assert priced_y.max() < lo
    assert "price unknown" in cost_chart.legend_labels()
    # selecting an unpriced option shows the selection ring on it, with its time range along the band
    i = int(unpriced[0])
    cost_chart.mark(i, s["hours"], s["cost"])
    sx, sy = cost_chart.selected.getData()
    assert len(sx) == 1 and sy[0] == pytest.approx(band_y[0])
    assert sx[0] == pytest.approx(np.clip(np.log10(s["hours"][i]), *cost_chart.vb.viewRange()[0]), abs=0.1)
    wx, wy = cost_chart.whiskers.getData()
    assert len(wx) == 4 and wy[2] == wy[3] == pytest.approx(band_y[0])      # the recommendation's, then this one
    # a plan with every option priced has no band and no such label
    _draw(cost_chart, _sweep(), 3.0, None)
    assert not cost_chart.band.isVisible() and "price unknown" not in [t for _v, t in _ticks(cost_chart, "left")]
    assert "price unknown" not in cost_chart.legend_labels()


def test_absurd_options_do_not_hijack_the_time_axis(cost_chart):
    s = _sweep(absurd=True)
    _ok, rec = _draw(cost_chart, s, 3.0, None)
    x0, x1, y0, y1 = _view_range(cost_chart)
    # a sensible range: the fastest option to the front (here 2 days), not 35 years
    assert 10 ** x1 < 500 and 10 ** x0 <= s["hours"][s["fits"]].min()
    assert 10 ** x1 >= s["hours"][s["front"]][s["hours"][s["front"]] < 1000].max()
    # the far-off options are drawn at the edge, each marked with an arrow, and still clickable
    for i in range(3):
        item = cost_chart.nofit if not s["fits"][i] else cost_chart.grey
        k = list(item.data["data"].astype(int)).index(i)
        assert x0 < item.data["x"][k] < x1
    marked = cost_chart.beyond.data["data"].astype(int)
    assert {0, 1, 2} <= set(marked)
    assert "beyond the axis" in cost_chart.legend_labels()
    # whiskers only for the recommendation and the selection, not every Pareto point
    wx, _wy = cost_chart.whiskers.getData()
    assert len(wx) == 2 and wx[0] == pytest.approx(np.log10(s["low"][rec]))
    other = int(s["front"][0])
    cost_chart.mark(other, s["hours"], s["cost"])
    wx, _wy = cost_chart.whiskers.getData()
    assert len(wx) == 4 and len(s["front"]) > 2


def test_budget_lines_in_view_even_outside_the_data_and_no_si_prefix(cost_chart):
    s = _sweep(cheap=True)          # a local plan: seconds to minutes, fractions of a cent to a few cents
    _draw(cost_chart, s, 0.001, 0.2)    # a 3.6 s deadline and a $0.20 cap: both outside every option
    x0, x1, y0, y1 = _view_range(cost_chart)
    assert x0 < np.log10(0.001) < x1 and y0 < np.log10(0.2) < y1
    for side in ("left", "bottom"):
        axis = cost_chart.plot_item.getAxis(side)
        assert not axis.autoSIPrefix and "(x" not in axis.labelString()
    assert _label(cost_chart.deadline) == "deadline 4 s" and _label(cost_chart.cost_cap) == "cap $0.20"
    # the axis titles name no unit the ticks do not use: the ticks say "s", "min", "h" and "$"
    assert "hours" not in cost_chart.plot_item.getAxis("bottom").labelString()
    texts = [t for _v, t in _ticks(cost_chart, "bottom")]
    assert texts and all(t.endswith((" s", " min", " h")) for t in texts)


def test_the_legend_sits_outside_the_plot_area(cost_chart, qtbot):
    s = _sweep(absurd=True, unpriced=10)
    split = np.zeros(s["hours"].size, bool)
    split[::7] = True
    cost_chart.show_options(s["hours"], s["cost"], s["fits"] & np.isfinite(s["cost"]), s["fits"], s["planned"],
                            s["front"], None, 3.0, 300.0, low=s["low"], high=s["high"], cost_low=s["cost_low"],
                            cost_high=s["cost_high"], split=split)
    qtbot.wait(50)
    labels = cost_chart.legend_labels()
    assert {"meets the budget", "Pareto front", "price unknown", "split hardware (◆)"} <= set(labels)
    plot_area = cost_chart.vb.sceneBoundingRect()
    legend = cost_chart.legend.sceneBoundingRect()
    assert legend.height() > 0 and not legend.intersects(plot_area.adjusted(1, 1, -1, -1))
    assert legend.top() >= plot_area.bottom() or legend.left() >= plot_area.right()      # under it or beside it
    assert legend.right() <= cost_chart.plot.sceneRect().right() + 1     # within the widget, not cut off
    # a short, wide chart (the window's minimum size) keeps the plot's height: the legend moves beside it
    cost_chart.resize(940, 200)
    qtbot.wait(50)
    plot_area, legend = cost_chart.vb.sceneBoundingRect(), cost_chart.legend.sceneBoundingRect()
    assert not legend.intersects(plot_area.adjusted(1, 1, -1, -1)) and legend.bottom() <= cost_chart.plot.sceneRect().bottom() + 1
    assert plot_area.height() > 100
    cost_chart.clear_options()
    assert cost_chart.legend_labels() == [] and not cost_chart.legend.isVisible()


def test_follows_the_dark_theme(cost_chart, qtbot):
    s = _sweep(unpriced=10)
    _draw(cost_chart, s, 3.0, 200.0)
    light_bg = cost_chart.plot.backgroundBrush().color()
    palette = cost_chart.palette()
    palette.setColor(QPalette.ColorRole.Base, QColor("#1e1e1e"))
    palette.setColor(QPalette.ColorRole.Text, QColor("#e6e6e6"))
    cost_chart.setPalette(palette)
    assert cost_chart.plot.backgroundBrush().color() == QColor("#1e1e1e") != light_bg
    cost_chart.plot.setLabel("bottom", "time to finish, at P80")       # a title the view sets keeps its text
    cost_chart.setPalette(QPalette())
    cost_chart.setPalette(palette)
    for side in ("left", "bottom"):
        axis = cost_chart.plot_item.getAxis(side)
        assert axis.textPen().color() == QColor("#e6e6e6")
        assert "#e6e6e6" in axis.labelString() and ("time to finish, at P80" if side == "bottom" else "cost") \
            in axis.labelString()
    assert all(label.opts["color"] == QColor("#e6e6e6") for _s, label in cost_chart.legend.items)
    assert cost_chart.legend.opts["brush"].color().lightness() < 60
    fill = cost_chart.deadline.label.fill.color()
    assert fill.lightness() < 60                                   # the line labels are not white boxes
    assert cost_chart.deadline.label.color.lightness() > QColor("#c0392b").lightness()
    cost_chart.grab()                                              # paints


def test_planner_chart_states_in_the_main_window(qtbot, tmp_path, screenshot):
    """The chart as a user meets it, at the window's usual (1320×860) and minimum (960×640) size: a cloud plan with
    unpriced sizes, an unpriced option selected, a plan whose slowest options run for years, a cheap local plan
    whose deadline and cap lie outside every option, the labels after a failed plan, and the dark theme."""
    from pathlib import Path

    from PySide6.QtWidgets import QApplication

    from distill_studio.gui.app import create_window
    from distill_studio.gui.theme import apply_theme

    root = Path(__file__).resolve().parents[2]
    plans = root / "resources" / "plans"
    demo = root / "resources" / "demo"
    costed = tmp_path / "costed.toml"
    text = (demo / "plan.toml").read_text()
    for name in ("teacher", "student", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'= "{name}"', f'= "{(demo / name).as_posix()}"')
    costed.write_text(text.replace('name = "demo-column-addition"', 'name = "demo-costed-tight-budget"')
                      .replace('accelerator = "cpu"', 'accelerator = "cpu"\nusd_per_hour = 2.0')
                      + "\n[budget]\nhours = 0.01\nusd = 0.2\n")
    bad = tmp_path / "too-long.toml"
    bad.write_text((plans / "gemma3-27b-to-4b-3h.toml").read_text().replace("seq_len = 2048", "seq_len = 900000"))
    _app, win = create_window([])
    qtbot.addWidget(win)
    view = win.planner
    chart = view.chart

    def open_(path: Path):
        view.analysis = None
        assert win.open_plan(path)
        qtbot.waitUntil(lambda: view.analysis is not None and view.analysis.plan.name in view.summary.text(),
                        timeout=30_000)
        qtbot.wait(30)

    try:
        for w, h in ((1320, 860), (960, 640)):
            win.resize(w, h)
            qtbot.wait(30)
            open_(plans / "gemma3-27b-to-4b-3h.toml")
            assert _label(chart.deadline) == "deadline 3 h" and chart.band.isVisible()
            screenshot(win, f"chart_gemma_3h_{w}x{h}")
            # the fastest unpriced option, selected: the ring is on it, in the band
            o = view.analysis.sweep.out
            unpriced = np.flatnonzero(view.analysis.planned & o["fits"] & ~np.isfinite(o["cost_usd"]))
            fastest = int(unpriced[np.argmin(o["total_hours"][unpriced])])
            chart.sig_option_clicked.emit(fastest)
            sx, sy = chart.selected.getData()
            assert len(sx) == 1 and chart.band.getRegion()[0] < sy[0] < chart.band.getRegion()[1]
            screenshot(win, f"chart_unpriced_selected_{w}x{h}")

            open_(plans / "phi4-to-phi4mini-27h.toml")
            (x0, x1), _ = chart.vb.viewRange()
            a = view.analysis
            slowest = float(np.nanmax(a.sweep.out["total_hours"][a.planned & a.sweep.out["fits"]]))
            assert 10 ** x1 < 1000 < slowest and chart.beyond.data.size        # years-long options: at the edge
            screenshot(win, f"chart_phi4_27h_axis_{w}x{h}")

            open_(costed)
            (x0, x1), (y0, y1) = chart.vb.viewRange()
            assert x0 < np.log10(0.01) < x1 and y0 < np.log10(0.2) < y1
            assert _label(chart.cost_cap) == "cap $0.20" and "(x" not in chart.plot_item.getAxis("left").labelString()
            screenshot(win, f"chart_costed_demo_lines_outside_data_{w}x{h}")

            # a plan that fails, then another with a cost cap: the labels are the new plan's
            with qtbot.waitSignal(view.sig_plan_failed, timeout=30_000):
                assert win.open_plan(bad)
            assert not chart.deadline.isVisible()
            open_(plans / "qwq32b-to-qwen7b-3h.toml")
            view.cap.setValue(150)
            assert _label(chart.deadline) == "deadline 3 h" and _label(chart.cost_cap) == "cap $150"
            screenshot(win, f"chart_labels_after_failed_plan_{w}x{h}")

            apply_theme(QApplication.instance(), "dark")
            qtbot.wait(30)
            assert chart.plot.backgroundBrush().color().lightness() < 60
            screenshot(win, f"chart_qwq_dark_{w}x{h}")
            apply_theme(QApplication.instance(), "light")
            qtbot.wait(30)
            assert chart.plot.backgroundBrush().color().lightness() > 200
    finally:
        apply_theme(QApplication.instance(), "light")
