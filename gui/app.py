"""``distill-studio``: start the desktop app.

    distill-studio              the app, with the last plans in File → Open recent
    distill-studio PLAN.toml    the app with a plan open
    distill-studio --demo       the app on the bundled demo plan, ready to launch

Only Qt, pyqtgraph, numpy and the engine's planner are imported at start-up; torch, transformers, peft and the
Azure SDK are imported where a feature needs them (a run is a separate process anyway).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path


def _setup_logging() -> Path | None:
    from ..engine.catalog.prices import data_dir

    try:
        d = data_dir() / "logs"
        d.mkdir(parents=True, exist_ok=True)
        path = d / "studio.log"
        logging.basicConfig(filename=path, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return path
    except OSError:
        return None


def _excepthook(log_path: Path | None):
    def hook(exc_type, exc, tb):
        logging.getLogger("distill_studio.gui").error("unexpected error\n%s",
                                                      "".join(traceback.format_exception(exc_type, exc, tb)))
        from PySide6.QtWidgets import QApplication

        from .dialogs import show_error

        app = QApplication.instance()
        parent = app.activeWindow() if app else None
        where = f"The details are in {log_path}." if log_path else ""
        show_error(parent, "Something went wrong", f"{exc_type.__name__}: {exc}",
                   f"Your plans and runs are not affected. {where} Please report it with that file.")
    return hook


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill-studio", description="Plan, launch and watch distillation runs.")
    p.add_argument("plan", nargs="?", help="a plan file (.toml) to open")
    p.add_argument("--demo", action="store_true", help="open the bundled demo plan")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--smoke-test", action="store_true",
                   help="check the app: plan and train the demo from this installation, then exit 0 (gui/smoke.py)")
    p.add_argument("--startup-time", action="store_true",
                   help="print the milliseconds to the main window shown, then exit")
    return p


def create_window(argv: list[str] | None = None):
    """The application and its main window, shown, with the plan of the command line open. Used by main() and by
    tests and benchmarks, which then drive the event loop themselves."""
    args = build_parser().parse_args(argv)
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .settings import load_settings
    from .theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Distill Studio")
    app.setOrganizationName("Distill Studio")
    app.setApplicationDisplayName("Distill Studio")
    settings, warning = load_settings()
    apply_theme(app, settings.theme)
    win = MainWindow(settings)
    win.show()
    if warning:
        win.statusBar().showMessage(warning, 30_000)
    if args.demo:
        win.open_demo()
    elif args.plan:
        win.open_plan(args.plan)
    return app, win


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from ..engine.version import version_text

        print(version_text("distill-studio"))
        return 0
    if (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        print("distill-studio: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set).\n"
              "Run it in a desktop session, or use the commands without a window: `distill plan PLAN.toml`, "
              "`distill run PLAN.toml` (`make demo-cli` for the demo).", file=sys.stderr)
        return 2
    log_path = _setup_logging()
    sys.excepthook = _excepthook(log_path)
    if args.smoke_test:
        args.demo = True
    app, win = create_window(argv if not args.smoke_test else [*(argv or sys.argv[1:]), "--demo"])
    from .smoke import run_mode

    code = run_mode(args, app, win)
    return app.exec() if code is None else code


if __name__ == "__main__":
    raise SystemExit(main())
