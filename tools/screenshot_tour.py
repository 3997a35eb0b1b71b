"""The app's screens in their real states, at the main window's usual size (1320x860) and at its minimum (960x640),
saved as PNGs for a person to look at: `make screenshots` (offscreen; nothing is trained, nothing reaches Azure).

States, after the review of 2026-12-06 (../shared/reviews/gui-2026-12-06/review.md): the welcome view, the empty
Runs tab, the bundled plans in the planner (Gemma 3 h, its 0.5 h deadline and P95 re-solve, Phi-4 27 h, QwQ with a
$150 cap and with an impossible 0.3 h deadline, QwQ in the dark theme), the demo's planner, a plan that fits no
memory, a plan file with bad TOML, Settings, the About box, and Launch on a plan the planner rejects; then the demo
launched from the app and watched through starting, the first step, running, Stop, stopped, Resume, finishing and
finished, the elapsed-time axis with smoothing, log scale and the dark theme (--no-run leaves these out; they train
the demo, a minute or two). Compared and failed runs come from the GUI tests, which save theirs.

    python tools/screenshot_tour.py [--out artifacts/screenshots/tour] [--no-run]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((1320, 860), (960, 640))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "screenshots" / "tour")
    ap.add_argument("--no-run", action="store_true", help="leave out the monitor's states (they train the demo, "
                    "a minute or two)")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="distill-tour-"))
    os.environ["DISTILL_STUDIO_DATA_DIR"] = str(work / "data")      # a first start: no runs, default settings
    os.environ["DISTILL_STUDIO_CONFIG_DIR"] = str(work / "config")
    os.environ["HF_HUB_OFFLINE"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtWidgets import QApplication, QMessageBox

    from distill_studio.gui.app import create_window
    from distill_studio.gui.theme import apply_theme

    app, win = create_window([])
    saved: list[Path] = []

    def settle(seconds: float = 0.3, until=None, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            app.processEvents()
            if until is None or until():
                break
            time.sleep(0.02)
        t = time.monotonic() + seconds
        while time.monotonic() < t:
            app.processEvents()
            time.sleep(0.02)

    def shoot(name: str, widget=None) -> None:
        for w, h in SIZES if widget is None else ((0, 0),):
            if widget is None:
                win.resize(w, h)
                settle(0.4)
            target = widget or win
            path = args.out / (f"{name}_{w}x{h}.png" if widget is None else f"{name}.png")
            target.grab().save(str(path))
            saved.append(path)

    def open_plan(path: Path) -> None:
        win.planner.analysis = None
        win.open_plan(path)
        settle(0.5, until=lambda: win.planner.analysis is not None, timeout=60)

    def variant(src: Path, name: str, **budget) -> Path:
        text = src.read_text()
        text = re.sub(r"\n\[budget\][^\[]*", "\n", text)
        lines = "".join(f"{k} = {v}\n" for k, v in budget.items())
        out = work / f"{name}.toml"
        out.write_text(text + f"\n[budget]\n{lines}")
        return out

    plans = ROOT / "resources" / "plans"
    shoot("01-welcome")
    win.tabs.setCurrentIndex(1)
    shoot("02-runs-empty")
    win.tabs.setCurrentIndex(0)
    gemma = plans / "gemma3-27b-to-4b-3h.toml"
    open_plan(gemma)
    shoot("09-planner-gemma-3h")
    d = win.planner.analysis.decision
    win.planner.select_option(d.fastest)           # the fastest option: priced or in the "price unknown" band
    settle(0.5)
    shoot("10-planner-gemma-fastest-selected")
    win.planner.refresh_prices()                   # no network to Azure's price API here: the failure, in full
    settle(1.0, until=lambda: win.planner.refresh_button.isEnabled(), timeout=120)
    shoot("32-refresh-prices-failed")
    win.planner.check_capacity()                   # no sign-in here: the failure, in full
    settle(1.0, until=lambda: win.planner.capacity_button.isEnabled(), timeout=120)
    shoot("33-check-capacity-failed")
    open_plan(gemma)
    win.planner.confidence.setCurrentIndex(win.planner.confidence.findText("P50"))
    settle(0.6)
    shoot("11-planner-gemma-P50")
    win.planner.confidence.setCurrentIndex(win.planner.confidence.findText("P95"))
    settle(0.6)
    shoot("12-planner-gemma-P95")
    win.planner.confidence.setCurrentIndex(win.planner.confidence.findText("P80"))
    win.planner.only_ok.setChecked(True)
    settle(0.6)
    shoot("13-planner-gemma-meeting-budget-only")
    win.planner.only_ok.setChecked(False)
    win.planner.all_adapters.setChecked(True)
    settle(1.0, until=lambda: win.planner.analysis is not None, timeout=120)
    shoot("14-planner-gemma-all-adapters")
    win.planner.all_adapters.setChecked(False)
    settle(0.6)
    open_plan(variant(gemma, "gemma-half-hour", hours=0.5))
    shoot("15-planner-gemma-deadline-0.5h")
    open_plan(variant(gemma, "gemma-cap-100", hours=3.0, usd=100))
    shoot("16-planner-gemma-cap-100")
    open_plan(plans / "phi4-to-phi4mini-27h.toml")
    shoot("21-planner-phi4-27h")
    a = win.planner.analysis
    pass_row = a.sweep.grid.extra.get("pass_row")
    if pass_row is not None:
        import numpy as np

        split = np.flatnonzero((pass_row >= 0) & a.decision.candidates)
        if split.size:
            win.planner.select_option(int(split[np.argmin(a.sweep.out["total_hours"][split])]))
            settle(0.5)
            shoot("23-planner-split-option-selected")
    qwq = plans / "qwq32b-to-qwen7b-3h.toml"
    open_plan(variant(qwq, "qwq-cap-150", hours=3.0, usd=150))
    shoot("24-planner-qwq-cap-150")
    apply_theme(app, "dark")
    settle(0.6)
    shoot("25-planner-qwq-dark-theme")
    apply_theme(app, "light")
    settle(0.3)
    open_plan(variant(qwq, "qwq-in-18-minutes", hours=0.3))
    shoot("37-impossible-deadline-planner")
    open_plan(ROOT / "resources" / "demo" / "plan.toml")
    shoot("43-demo-planner")

    # a plan that fits no memory on this machine: the planner says so, and Launch starts nothing
    demo = (ROOT / "resources" / "demo" / "plan.toml").read_text()
    for rel in ("train.jsonl", "eval.jsonl", "prompts.jsonl"):
        demo = demo.replace(f'"{rel}"', f'"{(ROOT / "resources" / "demo" / rel).as_posix()}"')
    big = demo.replace('model = "teacher"', 'model = "Qwen/QwQ-32B"').replace(
        'model = "student"', 'model = "Qwen/Qwen2.5-7B-Instruct"').replace('init = "from-teacher"',
                                                                           'init = "pretrained"')
    (work / "qwq-on-this-cpu.toml").write_text(big.replace('name = "demo-column-addition"',
                                                           'name = "qwq-on-this-cpu"'))
    open_plan(work / "qwq-on-this-cpu.toml")
    shoot("40-qwq-on-cpu-does-not-fit")
    win.launch()
    settle(0.5)
    box = win.findChild(QMessageBox, "error_box")
    if box is not None:
        shoot("42-launch-of-unfit-plan-refused", box)
        box.close()

    # Launch on a plan the planner rejects: a warning, Cancel by default
    fast = demo.replace('model = "teacher"', f'model = "{(ROOT / "resources/demo/teacher").as_posix()}"').replace(
        'model = "student"', f'model = "{(ROOT / "resources/demo/student").as_posix()}"')
    (work / "demo-too-fast.toml").write_text(fast + "\n[budget]\nhours = 0.003\n")
    open_plan(work / "demo-too-fast.toml")
    box = win.launch()
    settle(0.5)
    if box is not None:
        shoot("39-launch-of-rejected-plan", box)
        box.close()

    for name, text in (("34-bad-toml-syntax", 'name = "bad"\n[teacher\nmodel = 1\n'),
                       ("35-bad-toml-types", demo.replace("seq_len = 64", 'seq_len = "long"'))):
        bad = work / f"{name}.toml"
        bad.write_text(text)
        win.open_plan(bad)
        settle(0.5)
        shoot(name)
        for b in win.findChildren(QMessageBox):
            b.close()
    missing = work / "missing-data.toml"
    missing.write_text(fast.replace((ROOT / "resources" / "demo" / "train.jsonl").as_posix(),
                                    (work / "no-such-file.jsonl").as_posix()))
    win.open_plan(missing)
    settle(1.0)
    shoot("36-missing-data-file")

    # an Azure plan launched before Settings has a workspace: what is missing and where to enter it
    open_plan(plans / "gemma3-27b-to-4b-3h.toml")
    win.launch()
    settle(0.5)
    box = win.findChild(QMessageBox, "error_box")
    if box is not None and box.isVisible():
        shoot("30-launch-azure-no-settings", box)
        box.close()
    win.show_settings()
    settle(0.5)
    from distill_studio.gui.settings.dialog import SettingsDialog

    dialog = win.findChild(SettingsDialog)
    if dialog is not None:
        shoot("27-settings-general", dialog)
        dialog.tabs.setCurrentIndex(1)
        settle(0.3)
        shoot("28-settings-azure", dialog)
        dialog.subscription_edit.setText("not-a-subscription")
        dialog.region_edit.setText("East US/2")
        dialog.accept()                            # refused: each field says what is valid
        settle(0.5)
        shoot("29-settings-azure-invalid", dialog)
        dialog.close()
    about = win.show_about()
    settle(0.3)
    shoot("about", about)
    about.close()
    if not args.no_run:
        monitor_states(win, settle, shoot, apply_theme, app)
    win.close()
    QApplication.processEvents()
    print(f"{len(saved)} screenshots in {args.out}")
    for p in saved:
        print(f"  {p.name}")
    return 0


def monitor_states(win, settle, shoot, apply_theme, app) -> None:
    """The demo launched from the app and watched: starting, the first step, running, stopping, stopped, resuming,
    resumed, finishing, the result card, the elapsed-time axis with smoothing, log scale, the Runs tab dark."""
    from distill_studio.gui.main_window import demo_plan_path

    win.open_plan(demo_plan_path())
    settle(0.5, until=lambda: win.planner.analysis is not None, timeout=60)
    win.launch()
    mon = win.runs.monitor

    def status() -> str:
        return mon.snapshot.status if mon.snapshot is not None else ""

    def step() -> int:
        return mon.snapshot.step if mon.snapshot is not None else 0

    settle(0.5, until=lambda: mon.snapshot is not None, timeout=60)
    shoot("44-monitor-starting")
    settle(0.5, until=lambda: step() >= 1, timeout=600)
    shoot("45-monitor-first-step")
    settle(1.0, until=lambda: step() >= 30, timeout=600)
    shoot("46-monitor-running")
    mon.request_stop()
    settle(0.2, until=lambda: status() == "stopping", timeout=10)
    shoot("47-monitor-stopping")
    settle(1.0, until=lambda: status() in ("cancelled", "stopped") and not mon.snapshot.alive, timeout=300)
    shoot("48-monitor-stopped")
    mon.resume_button.click()
    settle(0.3, until=lambda: status() in ("resuming", "starting"), timeout=30)
    shoot("49-monitor-resuming")
    settle(1.0, until=lambda: status() == "running", timeout=600)
    shoot("50-monitor-resumed")
    settle(0.2, until=lambda: status() == "finishing", timeout=900)
    shoot("51-monitor-finishing")
    settle(1.0, until=lambda: status() == "succeeded", timeout=900)
    shoot("52-monitor-finished-result-card")
    mon.x_axis.setCurrentIndex(mon.x_axis.findData("time"))
    mon.smoothing.setCurrentIndex(2)
    settle(0.5)
    shoot("53-monitor-smoothing-elapsed-axis")
    mon.log_scale.setChecked(True)
    settle(0.5)
    shoot("54-monitor-log-scale")
    mon.log_scale.setChecked(False)
    apply_theme(app, "dark")
    settle(0.6)
    shoot("60-runs-dark-theme")
    apply_theme(app, "light")
    settle(0.3)
    # the demo planned again after the run it measured: "measured here"
    win.planner.analysis = None
    win.open_plan(demo_plan_path())
    settle(0.5, until=lambda: win.planner.analysis is not None, timeout=60)
    win.tabs.setCurrentIndex(0)
    shoot("56-demo-planner-after-run")

    # a costed copy of the demo ($3.60 an hour) with a deadline and a cap it misses: launched anyway, watched
    from pathlib import Path as _P

    root = demo_plan_path().parent
    text = demo_plan_path().read_text().replace('name = "demo-column-addition"', 'name = "demo-costed"')
    for rel in ("teacher", "student", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        text = text.replace(f'"{rel}"', f'"{(root / rel).as_posix()}"')
    text = text.replace('accelerator = "cpu"', 'accelerator = "cpu"\nusd_per_hour = 3.6')
    costed = _P(win.settings.resolved_runs_dir()).parent / "demo-costed.toml"
    costed.write_text(text + "\n[budget]\nhours = 0.003\nusd = 0.01\n")
    win.planner.analysis = None
    win.open_plan(costed)
    settle(0.5, until=lambda: win.planner.analysis is not None, timeout=60)
    shoot("57-costed-demo-planner")
    box = win.launch()
    settle(0.3)
    if box is not None:
        from PySide6.QtWidgets import QPushButton

        box.findChild(QPushButton, "launch_anyway_button").click()
        def costed_run() -> bool:
            return mon.record is not None and "demo-costed" in mon.record.run_dir and mon.snapshot is not None

        settle(0.5, until=lambda: costed_run() and mon.snapshot.step >= 20, timeout=600)
        shoot("58-monitor-live-cost-and-warnings")
        settle(1.0, until=lambda: costed_run() and mon.snapshot.status == "succeeded", timeout=900)
        shoot("59-monitor-costed-finished")


if __name__ == "__main__":
    sys.exit(main())
