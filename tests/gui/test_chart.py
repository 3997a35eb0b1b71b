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
