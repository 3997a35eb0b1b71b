"""Launch commits money only knowingly: a plan the planner rejects is not launched with one click, a plan that fits
nothing is not launched at all, an unpriced Azure size is never submitted without an hourly price, and the
confirmation shows the range, the budget at its confidence, the price and its date, and whether capacity was
checked, never one number to the cent."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QInputDialog, QMessageBox, QPushButton

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from distill_studio.gui.app import create_window  # noqa: E402


def _plan(tmp_path: Path, name: str, budget: str = "", hardware: str | None = None) -> Path:
    """The bundled demo with its paths made absolute, a budget and other hardware as asked."""
    demo = ROOT / "resources" / "demo"
    text = (demo / "plan.toml").read_text()
    text = text.replace('name = "demo-column-addition"', f'name = "{name}"')
    for rel in ("teacher", "student", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'"{rel}"', f'"{(demo / rel).as_posix()}"')
    if hardware is not None:
        text = text.replace('target = "local"\naccelerator = "cpu"', hardware)
    text = re.sub(r"\n\[budget\][^\[]*", "\n", text) + (f"\n[budget]\n{budget}\n" if budget else "")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _window(qtbot, plan: Path):
    _app, win = create_window([str(plan)])
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.planner.analysis is not None or win.planner.error_text(), timeout=60_000) \
        if hasattr(win.planner, "error_text") else qtbot.waitUntil(lambda: win.planner.analysis is not None,
                                                                   timeout=60_000)
    return win


def test_a_rejected_local_plan_asks_first_and_then_runs_with_force_and_its_own_stop(qtbot, screenshot, tmp_path):
    """No recommendation: Launch opens a warning (Cancel by default) naming the miss; nothing starts until "Launch
    anyway"; the run then starts with --force and, asked for, stops by itself at the deadline."""
    win = _window(qtbot, _plan(tmp_path, "demo-too-fast", "hours = 0.003"))
    # the planner judges the plan's own deadline (not one rounded to "none"), as Launch does
    assert win.planner.deadline.value() == pytest.approx(0.003)
    assert win.planner.analysis.decision.recommended is None
    box = win.launch()
    assert box is not None and box.objectName() == "launch_risk_confirm"
    assert win.runs.store.records == []                          # nothing started by the click on Launch
    text = box.informativeText()
    assert "The planner does not stand behind this run" in text and "misses the deadline" in text
    assert re.search(r"Time: .+ \(P10\) · .+ \(P80\) · .+ \(P90\)", text)
    assert "Deadline 11 s: MISSED at P80" in text
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)
    stop = box.checkBox()
    assert stop is not None and stop.objectName() == "stop_at_box" and "deadline" in stop.text()
    screenshot(box, "launch_local_rejected_plan")
    stop.setChecked(True)
    box.findChild(QPushButton, "launch_anyway_button").click()
    assert len(win.runs.store.records) == 1
    run = Path(win.runs.store.records[0].run_dir)
    log = run / "logs" / "console.log"

    def ended() -> bool:
        return (run / "events.jsonl").exists() and '"run_finished"' in (run / "events.jsonl").read_text()

    qtbot.waitUntil(ended, timeout=300_000)
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines() if x.strip()]
    end = next(e for e in events if e["type"] == "run_finished")
    assert end["status"] == "cancelled" and "the deadline (11 s), as budget.stop_at asks" in end["message"]
    console = log.read_text() if log.exists() else "".join(p.read_text() for p in (run / "logs").glob("*"))
    assert "--force: starting on this machine" in console
    # the run folder's plan keeps the stop, so a resume stops the same way
    assert 'stop_at = "deadline"' in (run / "plan.toml").read_text()


def test_a_plan_that_fits_nothing_is_not_launched(qtbot, tmp_path):
    """QwQ-32B on this CPU: the planner finds no option that fits; Launch says why and starts nothing."""
    text = _plan(tmp_path, "qwq-on-this-cpu").read_text()
    text = re.sub(r'\[teacher\]\nmodel = "[^"]*"', '[teacher]\nmodel = "Qwen/QwQ-32B"', text)
    text = re.sub(r'\[student\]\nmodel = "[^"]*"', '[student]\nmodel = "Qwen/Qwen2.5-7B-Instruct"', text)
    text = text.replace('init = "from-teacher"', 'init = "pretrained"')
    plan = tmp_path / "qwq-on-this-cpu.toml"
    plan.write_text(text)
    _app, win = create_window([str(plan)])
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.planner.base_analysis is not None, timeout=60_000)
    assert not win.act_launch.isEnabled() and "fits in memory" in win.act_launch.toolTip()
    win.launch()            # Ctrl+R or a stale click: still refused, with the reason
    box = win.findChild(QMessageBox, "error_box")
    assert box is not None and box.isVisible()
    assert "fits no" in box.text(), box.text()
    assert "Nothing was started" in box.informativeText()
    assert win.runs.store.records == []


# ---- Azure ---------------------------------------------------------------------------------------------------------

pytest.importorskip("azure.ai.ml")
import keyring  # noqa: E402
import azure_fake as F  # noqa: E402
from test_azure import SECRET  # noqa: E402


@pytest.fixture
def azure_ready(tmp_path, monkeypatch):
    monkeypatch.setenv(F.FAKE_DIR_ENV, str(tmp_path / "azure"))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "azure_fake.FileKeyring")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    config = Path(os.environ["DISTILL_STUDIO_CONFIG_DIR"]) if os.environ.get("DISTILL_STUDIO_CONFIG_DIR") \
        else tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    before = keyring.get_keyring()
    keyring.set_keyring(F.FileKeyring())
    keyring.set_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}", SECRET)
    yield F.FakeAzure(tmp_path / "azure")
    keyring.set_keyring(before)


def _azure_hw(sku: str, nodes: int = 1) -> str:
    return f'target = "azure"\nsku = "{sku}"\nnodes = {nodes}\nregion = "eastus"\npriority = "dedicated"'


def test_the_azure_confirmation_shows_the_range_the_budget_the_price_and_the_capacity(qtbot, screenshot, tmp_path,
                                                                                      azure_ready):
    plan = _plan(tmp_path, "demo-on-azure", "hours = 3.0\nusd = 50.0", _azure_hw("Standard_NC24ads_A100_v4"))
    win = _window(qtbot, plan)
    box = win.launch()
    assert box is not None and box.objectName() == "azure_confirm"
    text = box.informativeText()
    assert re.search(r"Time: .+ \(P10\) · .+ \(P80\) · .+ \(P90\); median", text), text
    assert re.search(r"Cost: \$\S+ \(P10\) · \$\S+ \(P80\) · \$\S+ \(P90\)", text), text
    assert not re.search(r"\$\d{2,}\.\d\d", text)                 # no estimate above $10 to the cent
    assert "Deadline 3.0 h: met at P80" in text and "Cost cap $50: met at P80" in text
    assert re.search(r"Price: \$\S+ an hour \(.+, 20\d\d-\d\d-\d\d\)", text), text
    assert "Throughput estimate:" in text
    assert "Capacity and quota: NOT checked" in text
    assert box.findChild(QPushButton, "azure_check_capacity_button") is not None
    assert box.findChild(QPushButton, "azure_submit_button").text() == "Submit to Azure"
    assert box.checkBox() is not None and "deadline or the cost cap" in box.checkBox().text()
    screenshot(box, "launch_azure_confirm_range")
    box.close()


def test_a_rejected_azure_plan_is_submitted_only_anyway(qtbot, screenshot, tmp_path, azure_ready):
    plan = _plan(tmp_path, "demo-too-fast-azure", "hours = 0.006", _azure_hw("Standard_NC24ads_A100_v4"))
    win = _window(qtbot, plan)
    box = win.launch()
    assert box is not None and box.objectName() == "azure_confirm"
    assert "although the planner does not recommend it" in box.text()
    text = box.informativeText()
    assert "The planner does not stand behind this run" in text and "MISSED at P80" in text
    submit = box.findChild(QPushButton, "azure_submit_button")
    assert submit.text() == "Submit anyway" and box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)
    screenshot(box, "launch_azure_rejected_plan")
    box.close()


def test_an_unpriced_size_is_never_submitted_without_a_price(qtbot, screenshot, tmp_path, azure_ready):
    """H200 has no price in the bundled table: Launch asks for one first; the confirmation then prices the run with
    it, and the submission carries it."""
    plan = _plan(tmp_path, "demo-on-h200", "", _azure_hw("Standard_ND96isr_H200_v5"))
    win = _window(qtbot, plan)
    ask = win.launch()
    assert isinstance(ask, QInputDialog) and ask.objectName() == "azure_price_dialog"
    assert win.findChild(QMessageBox, "azure_confirm") is None        # no Submit anywhere yet
    assert "has no price" in ask.labelText()
    screenshot(ask, "launch_azure_price_dialog")
    ask.setDoubleValue(84.0)
    ask.accept()
    box = win.findChild(QMessageBox, "azure_confirm")
    qtbot.waitUntil(lambda: win.findChild(QMessageBox, "azure_confirm") is not None, timeout=30_000)
    box = win.findChild(QMessageBox, "azure_confirm")
    text = box.informativeText()
    assert "Price: $84.00 an hour (confirmed at launch" in text, text
    assert "Cost: unknown" not in text and re.search(r"Cost: \$\S+ \(P10\)", text)
    screenshot(box, "launch_azure_confirm_priced_by_user")
    box.close()


def test_the_demo_says_the_planners_estimate_not_a_guess(qtbot, tmp_path):
    _app, win = create_window([])
    qtbot.addWidget(win)
    win.open_demo()
    qtbot.waitUntil(lambda: "the planner expects" in win.statusBar().currentMessage(), timeout=60_000)
    msg = win.statusBar().currentMessage()
    assert "minute or two" not in msg and re.search(r"expects \d+ s of training \(P10–P90 \d+ s to", msg), msg
