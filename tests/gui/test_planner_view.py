"""The planner view draws the estimator's answer: the Pareto front, the budget lines, greyed options with their
reasons, the memory breakdown of the selected option, and a table that sorts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from distill_studio.engine.plan import load_plan
from distill_studio.engine.report import choices
from distill_studio.gui.planner.table import GIB_COL, SHARDING_COL, STATUS_COL
from distill_studio.gui.planner.view import PlannerView

PLANS = Path(__file__).resolve().parents[2] / "resources" / "plans"


@pytest.fixture
def planner(qtbot):
    v = PlannerView()
    v.resize(1300, 900)
    qtbot.addWidget(v)
    v.show()
    return v


def _open(qtbot, v: PlannerView, name: str):
    path = PLANS / name
    with qtbot.waitSignal(v.sig_analysis_ready, timeout=30_000):
        v.set_plan(load_plan(path), path.parent)
    return v.analysis


def test_front_budget_lines_and_greyed_options(qtbot, planner, screenshot):
    a = _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    o = a.sweep.out
    hours, cost = o["total_hours"], o["cost_usd"]
    # the Pareto front is drawn: faster points cost more, and no drawn candidate beats a front point on both
    fx, fy = planner.chart.front.getData()
    assert len(fx) >= 3
    assert np.all(np.diff(fx) >= 0) and np.all(np.diff(fy) <= 1e-9)
    ok_x, ok_y = planner.chart.ok.getData()
    for x, y in zip(fx, fy):
        assert not np.any((ok_x < x - 1e-9) & (ok_y < y - 1e-9))
    # the deadline line sits at 3 h (log10 coordinates); no cost cap yet
    assert planner.chart.deadline.isVisible() and planner.chart.deadline.value() == pytest.approx(np.log10(3))
    assert not planner.chart.cost_cap.isVisible()
    # what is blue meets the budget; every greyed option has a reason a person can read
    drawn_ok = planner.chart.ok.data["data"].astype(int)
    assert drawn_ok.size and np.all(hours[drawn_ok] <= 3)
    grey = planner.chart.grey.data["data"].astype(int)
    assert grey.size
    assert all("misses the deadline" in planner.describe(int(i)) or "over budget" in planner.describe(int(i))
               for i in grey[:50])
    nofit = planner.chart.nofit.data["data"].astype(int)
    assert nofit.size and "does not fit" in planner.describe(int(nofit[0]))
    rec = a.decision.recommended
    assert rec is not None and rec in set(drawn_ok)
    screenshot(planner, "planner_gemma3_3h")

    # a cost cap: the line appears, and what stays blue is under it
    cap = float(np.nanmedian(cost[drawn_ok]))
    planner.cap.setValue(cap)
    assert planner.chart.cost_cap.isVisible()
    assert planner.cap.value() == pytest.approx(cap, abs=0.005)      # the spin box keeps cents: no silent rounding
    assert planner.chart.cost_cap.value() == pytest.approx(np.log10(planner.cap.value()))
    still_ok = planner.chart.ok.data["data"].astype(int)
    assert 0 < still_ok.size < drawn_ok.size and np.all(cost[still_ok] <= planner.cap.value() + 1e-6)
    assert planner.analysis.decision.recommended in set(still_ok)
    # a longer deadline lets more options in
    planner.cap.setValue(0)
    planner.deadline.setValue(27)
    assert planner.chart.ok.data["data"].size > drawn_ok.size


def test_selecting_an_option_shows_its_memory_and_row(qtbot, planner, screenshot):
    a = _open(qtbot, planner, "qwq32b-to-qwen7b-27h.toml")
    nofit = planner.chart.nofit.data["data"].astype(int)
    i = int(nofit[0])
    planner.chart.sig_option_clicked.emit(i)
    row = a.sweep.row(i)
    assert planner.memory.parts["total"] == pytest.approx(row["memory_gib_per_gpu"]["total"])
    assert "does NOT fit" in planner.memory.caption
    sel = planner.table.selectionModel().selectedRows()
    assert sel and sel[0].data(Qt.ItemDataRole.UserRole + 2) == i
    screenshot(planner, "planner_qwq_selected_nofit")


def test_table_sorts_by_any_column(qtbot, planner):
    a = _open(qtbot, planner, "phi4-to-phi4mini-3h.toml")
    model = planner.proxy
    assert model.rowCount() == int(a.planned.sum())
    planner.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    hours = [float(model.index(r, 0).data(Qt.ItemDataRole.UserRole + 1)) for r in range(model.rowCount())]
    assert hours == sorted(hours)
    planner.table.sortByColumn(GIB_COL, Qt.SortOrder.DescendingOrder)
    mem = [float(model.index(r, GIB_COL).data(Qt.ItemDataRole.UserRole + 1)) for r in range(model.rowCount())]
    assert mem == sorted(mem, reverse=True)
    # the status column says why an option is not a choice
    ok = choices(planner.analysis)
    texts = {model.index(r, STATUS_COL).data() for r in range(model.rowCount())}
    assert "meets the budget" in texts and any(t.startswith("misses the deadline") for t in texts)
    assert int(ok.sum()) == sum(1 for r in range(model.rowCount())
                                if model.index(r, STATUS_COL).data() == "meets the budget")


def test_options_that_differ_only_in_sharding_say_so(qtbot, planner, screenshot):
    a = _open(qtbot, planner, "gemma3-27b-to-4b-27h.toml")
    model = planner.proxy
    sharding = {model.index(r, SHARDING_COL).data() for r in range(model.rowCount())}
    assert "none (DDP)" in sharding
    assert any(t.startswith("all GPUs, teacher sharded") for t in sharding)
    assert any(t.startswith("all GPUs, teacher whole") or t.startswith("in node, teacher whole") for t in sharding)
    planner.table.sortByColumn(SHARDING_COL, Qt.SortOrder.AscendingOrder)  # text columns sort too
    shown = [model.index(r, SHARDING_COL).data() for r in range(model.rowCount())]
    assert shown == sorted(shown)
    rec = a.decision.recommended
    assert a.sweep.row(rec)["sharding"] in ("none", "within-node", "all-gpus")
    if a.sweep.row(rec)["sharding"] != "none":
        assert "teacher" in planner.describe(rec)
    planner.select_option(rec)
    screenshot(planner, "planner_gemma3_27h_sharding")


def test_bad_plan_shows_the_reason(qtbot, planner, tmp_path):
    text = (PLANS / "gemma3-27b-to-4b-3h.toml").read_text().replace('seq_len = 2048', 'seq_len = 900000')
    assert "900000" in text
    path = tmp_path / "long.toml"
    path.write_text(text)
    with qtbot.waitSignal(planner.sig_error, timeout=30_000) as sig:
        planner.set_plan(load_plan(path), tmp_path)
    assert "data.seq_len" in sig.args[0]
    assert "data.seq_len" in planner.summary.text()


def test_local_demo_plan_without_a_price_is_drawn(qtbot, planner):
    demo = Path(__file__).resolve().parents[2] / "resources" / "demo" / "plan.toml"
    with qtbot.waitSignal(planner.sig_analysis_ready, timeout=30_000):
        planner.set_plan(load_plan(demo), demo.parent)
    a = planner.analysis
    assert np.all(a.sweep.out["cost_usd"][a.planned] == 0)
    drawn = planner.chart.ok.data["data"].size + planner.chart.grey.data["data"].size
    assert drawn == int(a.planned.sum()) > 0
    assert planner.chart.recommended.data.size == 1
    # a CPU plan speaks of processes, not GPUs, and has no VM priority
    from distill_studio.gui.planner.table import GIB_COL, GPUS_COL, TOKENS_COL

    assert "per process" in planner.memory.caption
    assert "GPU" not in planner.option_label.text() and "dedicated" not in planner.option_label.text()
    heads = [planner.model.headerData(c, Qt.Orientation.Horizontal) for c in (GPUS_COL, GIB_COL, TOKENS_COL)]
    assert heads == ["Processes", "GiB/process", "Tokens/s/process"]
    # costs under $10 keep cents in the summary: a free local run reads "$0.00", never "$0"
    assert "$0 " not in planner.summary.text()


def test_sorting_keeps_the_selected_option(qtbot, planner):
    _open(qtbot, planner, "gemma3-27b-to-4b-27h.toml")
    i = int(planner.chart.grey.data["data"][5])
    planner.select_option(i)
    planner.table.sortByColumn(9, Qt.SortOrder.DescendingOrder)
    rows = planner.table.selectionModel().selectedRows()
    assert len(rows) == 1 and rows[0].data(Qt.ItemDataRole.UserRole + 2) == i


def test_all_adapters_keeps_the_plans_other_choices(qtbot, planner):
    a = _open(qtbot, planner, "qwq32b-to-qwen7b-3h.toml")
    planned = a.planned.copy()
    planner.all_adapters.setChecked(True)
    wider = planner.analysis.planned
    assert wider.sum() > planned.sum() and np.all(wider[planned])
    sw = a.sweep
    # teacher precision and priority are still the plan's
    assert set(sw.grid.extra["teacher_precision"][wider]) == set(sw.grid.extra["teacher_precision"][planned])
    assert set(sw.grid.extra["priority"][wider]) == set(sw.grid.extra["priority"][planned])


def test_ranges_and_the_confidence_the_budget_is_met_at(qtbot, planner, screenshot):
    """Every option has a P10-P90 range in the table and a whisker on the chart; the recommendation meets the
    deadline at the confidence chosen, and a stricter confidence never picks an option slower at that quantile."""
    from distill_studio.engine.estimate.ranges import at_confidence
    from distill_studio.gui.planner.table import RANGE_COL, SOURCE_COL

    a = _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    assert planner.confidence.currentData() == 0.8
    o = a.sweep.out
    i = a.decision.recommended
    assert o["hours_low"][i] < o["total_hours"][i] < o["hours_high"][i]
    assert at_confidence(a.sweep, 0.8)[0][i] <= a.plan.budget.hours
    model = planner.model
    row = model.row_of(i)
    text = model.index(row, RANGE_COL).data()
    assert "–" in text and text.endswith("h")
    assert model.index(row, SOURCE_COL).data() in ("published fit", "extrapolated")
    # options without a price are drawn at their time along the top edge, not dropped
    unpriced = np.flatnonzero(a.planned & a.sweep.out["fits"] & ~np.isfinite(o["cost_usd"]))
    assert unpriced.size and planner.chart.unpriced.data.size == unpriced.size and planner.chart._unpriced_in_legend
    assert "no known price" in planner.notes.text() and "Refresh prices" in planner.notes.text()
    # the selected option says where its time goes, how fast it runs, how sure the figure is
    cached = np.flatnonzero(a.planned & choices(a) & (o["prepass_hours"] > o["train_hours"]))
    assert cached.size           # options that cache the teacher's top-k first: most of their time is that pass
    planner.select_option(int(cached[0]))
    label = planner.option_label.text()
    assert "teacher pass" in label and "training" in label and "MFU" in label and "P10–P90" in label
    x, _y = planner.chart.whiskers.getData()
    assert x is not None and len(x) >= 2                    # segments: pairs of points
    qtbot.wait(200)
    screenshot(planner, "planner_ranges_p80")
    chosen = {}
    for level in (0.5, 0.8, 0.95):
        planner.confidence.setCurrentIndex(planner.confidence.findData(level))
        b = planner.analysis
        r = b.decision.recommended
        assert r is not None and at_confidence(b.sweep, level)[0][r] <= b.plan.budget.hours
        chosen[level] = r
    assert len(set(chosen.values())) > 1              # P50 trusts the median more: another pick than P95
    # the list can show only what meets the budget; the recommendation is among them and scrolled into view
    all_rows = planner.model.rowCount()
    planner.only_ok.setChecked(True)
    shown = planner.model.rowCount()
    assert 0 < shown < all_rows
    assert all(planner.model.index(r, STATUS_COL).data() == "meets the budget" for r in range(shown))
    # the time breakdown and MFU as columns: the teacher's pass is most of this plan's time
    from distill_studio.engine.report import hours_text as _h
    from distill_studio.gui.planner.table import MFU_COL, PREPASS_COL, TRAIN_COL

    planner.only_ok.setChecked(False)
    rec = int(cached[0])
    hours = planner.analysis.sweep.row(rec)["hours"]
    row = planner.model.row_of(rec)
    assert row is not None and hours["teacher_pass"] > hours["training"]
    assert planner.model.index(row, PREPASS_COL).data() == _h(hours["teacher_pass"])
    assert planner.model.index(row, TRAIN_COL).data() == _h(hours["training"])
    assert planner.model.index(row, MFU_COL).data() == f"{planner.analysis.sweep.row(rec)['mfu'] * 100:.0f}%"
    assert planner.model.row_of(planner.analysis.decision.recommended) is not None
    assert "P95" in planner.analysis.decision.rationale


# ---- one meaning of time and cost: the figure at the chosen confidence -----------------------------------------

def _amounts(text: str) -> list[str]:
    import re

    return re.findall(r"\$[\d,]+(?:\.\d\d)?", text)


def test_the_recommendation_and_the_cap_message_name_the_same_cheapest(qtbot, planner):
    """The review's "$172 recommended, $206 cheapest in the cap message": one option, one figure, at P80."""
    from distill_studio.engine.estimate.ranges import at_confidence
    from distill_studio.engine.estimate.solve import usd_text
    from distill_studio.gui.planner.table import COST_AT_COL, COST_COL, HOURS_AT_COL

    a = _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    hq, cq = at_confidence(a.sweep, 0.8)
    rec = a.decision.recommended
    said = planner.summary.text()
    assert f"{usd_text(cq[rec])} at P80" in said, said
    # a cap under it: nothing meets the budget, and the cheapest within 3 h is the same option at the same figure
    planner.cap.setValue(float(np.floor(cq[rec])) - 1)
    assert planner.analysis.decision.recommended is None
    message = planner.summary.text()
    assert f"the cheapest option within 3 h at P80 costs {usd_text(cq[rec])} at P80 ({a.sweep.hardware(rec)})" \
        in message, message
    # the table has both figures; its header names the confidence
    planner.cap.setValue(0)
    model = planner.model
    row = model.row_of(rec)
    assert model.headerData(COST_AT_COL, Qt.Orientation.Horizontal) == "Cost P80"
    assert model.headerData(HOURS_AT_COL, Qt.Orientation.Horizontal) == "Hours P80"
    assert model.index(row, COST_AT_COL).data() == usd_text(cq[rec])
    assert model.index(row, COST_COL).data() == usd_text(a.sweep.out["cost_usd"][rec])
    assert float(model.index(row, HOURS_AT_COL).data(Qt.ItemDataRole.UserRole + 1)) == pytest.approx(hq[rec])
    planner.confidence.setCurrentIndex(planner.confidence.findData(0.95))
    assert model.headerData(COST_AT_COL, Qt.Orientation.Horizontal) == "Cost P95"
    r95 = planner.analysis.decision.recommended
    assert model.index(model.row_of(r95), COST_AT_COL).data() == usd_text(at_confidence(a.sweep, 0.95)[1][r95])


def test_a_point_left_of_the_deadline_line_meets_the_deadline(qtbot, planner):
    from distill_studio.engine.estimate.ranges import at_confidence

    a = _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    sw = a.sweep
    hq, _ = at_confidence(sw, 0.8)
    cand = a.decision.candidates
    # a deadline some options meet at their median and none at P80 (the review's 0.5 h case)
    deadline = round(float(sw.out["total_hours"][cand].min() + hq[cand].min()) / 2, 2)
    planner.deadline.setValue(deadline)
    line = planner.chart.deadline.value()
    assert line == pytest.approx(np.log10(deadline))
    assert planner.chart.ok.data.size == 0 and planner.analysis.decision.recommended is None
    drawn = np.concatenate([planner.chart.grey.data["x"], planner.chart.front.getData()[0]])
    assert drawn.size and np.all(drawn > line)          # nothing that misses it sits left of the line
    assert np.any(np.log10(sw.out["total_hours"][cand]) < line)     # though some medians would have
    text = planner.summary.text()
    assert f"no option finishes within {deadline:g} h at P80" in text and "the fastest takes" in text
    assert "P80" in planner.chart.plot.getAxis("bottom").labelText          # the axes say what is drawn
    assert "P80" in planner.chart.plot.getAxis("left").labelText
    # with a deadline the options meet: every blue point is left of the line
    planner.deadline.setValue(3)
    ok_x = planner.chart.ok.data["x"]
    assert ok_x.size and np.all(ok_x <= np.log10(3) + 1e-9)
    rec = planner.analysis.decision.recommended
    rx = planner.chart.recommended.data["x"]
    assert rx[0] == pytest.approx(np.log10(hq[rec]))


def test_caps_under_ten_dollars_keep_their_cents(qtbot, planner):
    _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    planner.deadline.setValue(0)
    planner.cap.setValue(0.2)
    text = planner.summary.text()
    assert "no option costs under $0.20 at P80" in text, text
    assert "$0 " not in text and "$0." in text
    i = int(planner.chart.grey.data["data"][0])
    assert "> $0.20" in planner.describe(i)


def test_the_selection_follows_the_recommendation_unless_the_user_picked(qtbot, planner):
    from distill_studio.gui.planner.table import INDEX_ROLE

    def shown() -> int:
        rows = planner.table.selectionModel().selectedRows()
        assert len(rows) == 1
        return int(rows[0].data(INDEX_ROLE))

    a = _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    r80 = a.decision.recommended
    assert planner.selected == r80 == shown()
    assert planner.model.row_of(r80) == 0      # what meets the budget first, cheapest first: it tops the list
    planner.confidence.setCurrentIndex(planner.confidence.findData(0.95))
    b = planner.analysis
    r95 = b.decision.recommended
    assert r95 != r80
    # the selection, its line, the memory bar and the table row follow the new recommendation
    assert planner.selected == r95 == shown()
    assert planner.option_label.text().startswith(f"Selected: {b.sweep.hardware(r95)}")
    assert "✓ meets the budget" in planner.option_label.text()
    assert planner.memory.parts["total"] == pytest.approx(b.sweep.row(r95)["memory_gib_per_gpu"]["total"])
    # an option the user clicks stays selected through a re-solve
    mine = int(planner.chart.grey.data["data"][3])
    planner.chart.sig_option_clicked.emit(mine)
    planner.confidence.setCurrentIndex(planner.confidence.findData(0.5))
    assert planner.selected == mine == shown()
    planner.deadline.setValue(5)
    assert planner.selected == mine
    # clicking the recommendation goes back to following it
    rec = planner.analysis.decision.recommended
    planner.chart.sig_option_clicked.emit(rec)
    planner.confidence.setCurrentIndex(planner.confidence.findData(0.95))
    assert planner.selected == planner.analysis.decision.recommended == shown()
    # a new plan starts with its own recommendation
    planner.chart.sig_option_clicked.emit(mine)
    c = _open(qtbot, planner, "qwq32b-to-qwen7b-3h.toml")
    assert planner.selected == c.decision.recommended == shown()


def test_fastest_with_a_known_price_and_notes_that_point_to_the_buttons(qtbot, planner):
    import dataclasses

    from distill_studio.engine.estimate.solve import usd_text

    a = _open(qtbot, planner, "qwq32b-to-qwen7b-3h.toml")
    planner.deadline.setValue(0.3)
    d = planner.analysis.decision
    assert d.recommended is None and d.fastest is not None
    # the fastest has no known price here (as the H200 sizes in the review): the summary names the fastest that has
    out = dict(a.sweep.out)
    for key in ("usd_per_hour", "cost_usd", "cost_low", "cost_high"):
        out[key] = out[key].copy()
        out[key][d.fastest] = np.nan
    planner.base_analysis = dataclasses.replace(a, sweep=dataclasses.replace(a.sweep, out=out))
    planner._controls_changed()
    e = planner.analysis.decision
    assert e.fastest == d.fastest and not np.isfinite(e.cost[e.fastest])
    priced = e.fastest_priced
    assert priced is not None and priced != e.fastest and np.isfinite(e.cost[priced])
    text = planner.summary.text()
    assert f"Fastest with a known price: {a.sweep.hardware(priced)}, " in text, text
    assert f"{usd_text(e.cost[priced])} at P80" in text and "has no known price here" in text
    # the selection shows that option, whose row says why it is not a choice
    assert planner.selected == priced
    assert "misses the deadline" in planner.option_label.text()
    for label in (planner.notes, planner.summary):
        assert "distill prices refresh" not in label.text() and "distill azure capacity" not in label.text()
    assert "Refresh prices" in planner.notes.text()
    assert "distill prices" not in planner.prices_label.toolTip()


def test_an_error_of_the_planners_own_actions_is_shown_in_full(qtbot, planner):
    _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    long = ("the Azure Retail Prices API could not be reached (no network: name resolution failed for "
            "prices.azure.com); the bundled prices from 2026-11-02 are kept and used for every option shown")
    planner._refresh_failed(long)
    assert planner.error_label.isVisible() and long in planner.error_label.text()
    assert planner.error_label.wordWrap()
    # it is gone with the next plan drawn
    _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    assert not planner.error_label.isVisible()


# ---- the layout, at the app's sizes ------------------------------------------------------------------------------

def _no_overlap(win) -> None:
    """Nothing of the selected option paints over the chart; the table shows a usable number of rows."""
    from PySide6.QtCore import QRect

    v = win.planner

    def rect(w) -> QRect:
        return QRect(w.mapTo(win, w.rect().topLeft()), w.size())

    chart = rect(v.chart)
    details = rect(v.details)
    assert not chart.intersects(details), (chart, details)
    for w in (v.option_label, v.memory):
        visible = w.visibleRegion().boundingRect()
        shown = QRect(w.mapTo(win, visible.topLeft()), visible.size())
        assert not shown.intersects(chart), (w.objectName(), shown, chart)
    table = rect(v.table)
    assert not table.intersects(chart) and not table.intersects(details)
    rows = v.table.viewport().height() // v.table.verticalHeader().defaultSectionSize()
    assert rows >= 4, rows
    assert v.chart.height() >= 150


@pytest.mark.parametrize("size", [(1320, 860), (960, 640)])
def test_planner_states_at_the_apps_sizes(qtbot, size):
    """The planner states the review named, at the usual size and at the window's minimum, each saved as a PNG:
    no overlap, the table usable, the selected option's line and memory bar in their own pane."""
    from distill_studio.gui.app import create_window
    from tests.gui.conftest import SCREENSHOTS

    _app, win = create_window([])
    qtbot.addWidget(win)
    win.resize(*size)
    qtbot.waitExposed(win)
    v = win.planner
    tag = f"{size[0]}x{size[1]}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        qtbot.wait(50)
        _no_overlap(win)
        assert win.grab().save(str(SCREENSHOTS / f"planner_{name}_{tag}.png"))

    def open_plan(name: str) -> None:
        with qtbot.waitSignal(v.sig_analysis_ready, timeout=30_000):
            assert win.open_plan(PLANS / name)

    assert win.width() == size[0] and win.height() == size[1]
    open_plan("gemma3-27b-to-4b-3h.toml")
    shot("gemma_3h")
    v.confidence.setCurrentIndex(v.confidence.findData(0.95))
    assert v.selected == v.analysis.decision.recommended
    shot("gemma_3h_p95_resolved")
    v.confidence.setCurrentIndex(v.confidence.findData(0.8))
    v.deadline.setValue(0.5)
    shot("gemma_deadline_0.5h")
    open_plan("qwq32b-to-qwen7b-3h.toml")
    v.cap.setValue(150)
    shot("qwq_cap_150")
    v.cap.setValue(0.2)
    shot("qwq_cap_0.20")


def test_a_saved_layout_of_another_number_of_panes_is_not_applied(qtbot, planner):
    from PySide6.QtWidgets import QLabel, QSplitter

    old = QSplitter(Qt.Orientation.Vertical)     # an earlier version's planner: chart, table, notes
    qtbot.addWidget(old)
    for k in range(3):
        old.addWidget(QLabel(str(k)))
    old.resize(300, 850)
    old.setSizes([520, 260, 70])
    before = planner.splitter.sizes()
    assert planner.splitter.restoreState(old.saveState()) is False
    assert planner.splitter.sizes() == before
    own = planner.splitter.saveState()
    planner.splitter.setSizes([300, 60, 400, 40])
    assert planner.splitter.restoreState(own) is True and planner.splitter.sizes() == before


def test_the_recompute_column_and_details_name_the_mode(qtbot, planner):
    """off, full and selective by name in the table and in each option's details, as the sweep has them."""
    from distill_studio.engine.estimate.core import RECOMPUTE
    from distill_studio.gui.planner.table import RECOMPUTE_COL

    _open(qtbot, planner, "gemma3-27b-to-4b-3h.toml")
    g = planner.analysis.sweep.grid
    seen = set()
    for row, i in enumerate(planner.model.rows[:400]):
        mode = RECOMPUTE[int(g.recompute[int(i)])]
        assert planner.model.index(row, RECOMPUTE_COL).data() == mode
        if mode not in seen:
            assert f"recompute {mode}" in planner.describe(int(i))
        seen.add(mode)
    assert seen == {"off", "full", "selective"}
