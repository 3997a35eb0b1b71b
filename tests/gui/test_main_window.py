"""The main window's manners: opening plans (and refusing bad ones with a message, not a traceback), editing a
plan through the wizard, recent plans, shortcuts, the About box and the settings."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication, QMessageBox

from distill_studio.engine.plan import load_plan
from distill_studio.gui.app import create_window
from distill_studio.gui.main_window import demo_plan_path
from distill_studio.gui.settings import load_settings

from .test_wizard import _walk_to_review, finish

PLANS = Path(__file__).resolve().parents[2] / "resources" / "plans"


def _window(qtbot, argv=()):
    _app, win = create_window(list(argv))
    qtbot.addWidget(win)
    return win


def test_bad_plan_file_gives_a_message_naming_the_field(qtbot, tmp_path):
    win = _window(qtbot)
    bad = tmp_path / "bad.toml"
    bad.write_text((PLANS / "qwq32b-to-qwen7b-3h.toml").read_text().replace("[data]", "[data]\nseq_lenn = 5"))
    assert not win.open_plan(bad)
    qtbot.waitUntil(lambda: win.findChild(QMessageBox, "error_box") is not None, timeout=3000)
    box = win.findChild(QMessageBox, "error_box")
    assert "seq_lenn" in box.text() and "Traceback" not in box.text() + box.informativeText()
    assert win.plan is None and not win.act_launch.isEnabled()


def test_open_plan_shows_it_and_remembers_it(qtbot):
    win = _window(qtbot)
    path = PLANS / "qwq32b-to-qwen7b-27h.toml"
    assert win.open_plan(path)
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    assert win.planner.analysis.plan.name == "qwq32b-to-qwen7b-27h"
    assert "qwq32b-to-qwen7b-27h" in win.windowTitle()
    saved, _ = load_settings()
    assert saved.recent_plans[0] == str(path.resolve())
    win._fill_recent()
    assert str(path.resolve()) in [a.text() for a in win.recent_menu.actions()]


def test_edit_the_demo_saves_a_copy_and_opens_it(qtbot, tmp_path, screenshot):
    win = _window(qtbot, ["--demo"])
    assert win.plan_path == str(demo_plan_path().resolve())
    w = win.edit_plan()
    # the bundled demo is never overwritten: the copy goes to the user's plans folder
    assert Path(w.review_page.save_path.text()).resolve() != demo_plan_path().resolve()
    _walk_to_review(qtbot, w)
    target = tmp_path / "mine" / "demo.toml"
    finish(qtbot, w, target)
    qtbot.waitUntil(lambda: win.plan_path == str(target.resolve()), timeout=5000)
    assert load_plan(target).name == "demo-column-addition"
    qtbot.waitUntil(lambda: win.planner.analysis is not None
                    and win.planner.analysis.plan.name == "demo-column-addition", timeout=30_000)
    saved, _ = load_settings()      # the wizard's remembered folder is written when it closes
    assert saved.dialog_dirs.get("plans") == str(target.parent)


def test_shortcuts_about_and_settings(qtbot):
    win = _window(qtbot)
    assert win.act_new.shortcut() == QKeySequence(QKeySequence.StandardKey.New)
    assert win.act_open.shortcut() == QKeySequence(QKeySequence.StandardKey.Open)
    assert win.act_launch.shortcut().toString() == "Ctrl+R"
    assert win.act_runs.shortcut().toString() == "Ctrl+2"
    box = win.show_about()
    assert "Distill Studio" in box.text() and "PySide6" in box.text()
    box.close()
    d = win.show_settings()
    from PySide6.QtWidgets import QComboBox

    combo = d.findChild(QComboBox, "theme_combo")
    combo.setCurrentIndex(combo.findData("dark") if combo.findData("dark") >= 0 else 2)
    d.accept()
    assert load_settings()[0].theme == "dark"
    assert QApplication.instance().palette().window().color().lightness() < 128
    from distill_studio.gui.theme import apply_theme

    apply_theme(QApplication.instance(), "light")


def test_no_display_gives_a_message_not_a_crash(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    if not sys.platform.startswith("linux"):
        return
    r = subprocess.run([sys.executable, "-m", "distill_studio.gui", "--demo"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "no display found" in r.stderr and "distill plan" in r.stderr and "Traceback" not in r.stderr


def test_a_plan_that_fails_its_check_clears_the_previous_one_and_cannot_be_launched(qtbot, tmp_path, screenshot):
    win = _window(qtbot)
    assert win.open_plan(PLANS / "gemma3-27b-to-4b-3h.toml")
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    assert win.act_launch.isEnabled() and win.planner.model.rowCount() > 0
    bad = tmp_path / "too-long.toml"
    bad.write_text((PLANS / "gemma3-27b-to-4b-3h.toml").read_text().replace("seq_len = 2048", "seq_len = 900000"))
    with qtbot.waitSignal(win.planner.sig_plan_failed, timeout=30_000):
        assert win.open_plan(bad)          # it loads; the planner's check refuses it
    assert win.planner.analysis is None and win.planner.model.rowCount() == 0
    x, _ = win.planner.chart.ok.getData()
    assert x is None or len(x) == 0
    assert not win.planner.chart.deadline.isVisible()
    assert not win.act_launch.isEnabled()
    assert "seq_len" in win.planner.summary.text()
    assert "seq_len" in win.statusBar().currentMessage()
    screenshot(win, "planner_failed_plan")
    # a plan that plans again: the old error does not stay in the status bar
    assert win.open_plan(PLANS / "phi4-to-phi4mini-3h.toml")
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    assert win.statusBar().currentMessage() == "" and win.act_launch.isEnabled()


def test_first_start_shows_a_welcome_view_that_opens_the_demo(qtbot, screenshot):
    win = _window(qtbot)
    win.resize(1200, 800)
    win.show()
    assert win.planner_page.currentWidget() is win.welcome
    assert not win.act_launch.isEnabled() and not win.act_edit.isEnabled()
    screenshot(win, "welcome")
    win.welcome.demo_button.click()
    assert win.planner_page.currentWidget() is win.planner
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    assert win.plan.name == "demo-column-addition" and win.act_launch.isEnabled()


def test_the_welcome_view_lists_recent_plans(qtbot, tmp_path):
    from distill_studio.gui.settings import save_settings

    settings, _ = load_settings()
    plan = PLANS / "phi4-to-phi4mini-3h.toml"
    settings.add_recent(plan)
    settings.add_recent(tmp_path / "gone.toml")            # a file since deleted is not offered
    save_settings(settings)
    win = _window(qtbot)
    assert [b.toolTip() for b in win.welcome.recent_buttons] == [str(plan.resolve())]
    win.welcome.recent_buttons[0].click()
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    assert win.plan.name == "phi4-to-phi4mini-3h"
