"""The main window: the planner and the runs, with menus, shortcuts, recent plans and remembered window state."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QLabel, QMainWindow, QMessageBox, QStackedWidget, QTabWidget, QToolBar, QVBoxLayout, QWidget,
)

from ..engine.errors import DistillError
from ..engine.plan import Plan, load_plan
from .dialogs import PLAN_FILTER, open_file, show_error
from .planner.view import PlannerView
from .settings import Settings, config_dir, save_settings


def demo_plan_path() -> Path:
    from importlib.resources import files

    return Path(str(files("distill_studio.resources.demo") / "plan.toml"))


def run_preflight_process(plan_path: str) -> dict:
    """``distill azure preflight PLAN --json`` as its own process (the app never talks to Azure itself); its
    findings, or a DistillError with its message."""
    import json
    import subprocess

    from .monitor.runs import engine_command

    cmd = [*engine_command(), "azure", "preflight", plan_path, "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                              cwd=str(Path(plan_path).parent))
    except subprocess.TimeoutExpired:
        raise DistillError("no answer from Azure within 5 minutes") from None
    try:
        return json.loads(done.stdout)
    except ValueError:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise DistillError(lines[-1].removeprefix("error: ") if lines else f"exit status {done.returncode}") from None


def preflight_text(doc: dict) -> tuple[str, str]:
    """The pre-flight's findings for the Launch confirmation: (summary, details with what to do)."""
    checks = doc.get("checks", [])
    fails = [c for c in checks if c["status"] == "fail"]
    warns = [c for c in checks if c["status"] == "warn"]
    notes = [c for c in checks if c["status"] == "note"]
    passed = sum(1 for c in checks if c["status"] == "ok")
    lines = []
    if fails:
        lines.append(f"Pre-flight found {len(fails)} problem{'s' if len(fails) != 1 else ''}; the job would fail "
                     "or wait, and nothing has been created or uploaded:")
        lines += [f"  ✗ {c['what']}: {c['text']}" for c in fails]
        lines.append("Fix them (Show Details says how) and Launch again, or submit from a terminal with "
                     "`distill azure submit PLAN --force` to accept the risks.")
    else:
        lines.append(f"Pre-flight passed ({passed} checks).")
    lines += [f"  ! {c['what']}: {c['text']}" for c in warns]
    lines += [f"  • {c['what']}: {c['text']}" for c in notes]
    details = []
    for c in fails + warns:
        details.append(f"{c['what']}: {c['text']}")
        if c.get("fix"):
            details.append(f"  → {c['fix']}")
        details.append("")
    details += [f"ok  {c['what']}: {c['text']}" for c in checks if c["status"] == "ok"]
    return "\n".join(lines), "\n".join(details).strip()


def _start_preflight(box: QMessageBox, submit, about: str, plan_path: str) -> None:
    """Run the pre-flight on a worker (a subprocess); show its findings in ``box``; a failure disables Submit.
    ``box.property("preflight")``: "checking", "passed", "failed" or "error"."""
    from . import workers

    box.setProperty("preflight", "checking")
    submit.setEnabled(False)          # nothing is committed before the check has answered
    submit.setToolTip("Waiting for the pre-flight (a few seconds)")

    def shown(doc: dict) -> None:
        summary, details = preflight_text(doc)
        box.setInformativeText(f"{about}\n\n{summary}")
        box.setDetailedText(details)
        failed = not doc.get("ok", False)
        if failed:
            box.setIcon(QMessageBox.Icon.Warning)
            submit.setToolTip("Pre-flight found problems: fix them and Launch again")
        else:
            submit.setEnabled(True)
            submit.setToolTip("")
        box.setProperty("preflight", "failed" if failed else "passed")

    def error(message: str) -> None:
        box.setInformativeText(f"{about}\n\nPre-flight could not run: {message}. Submit runs it again first and "
                               "stops on a problem.")
        submit.setEnabled(True)
        submit.setToolTip("Submit runs the pre-flight again first and stops on a problem")
        box.setProperty("preflight", "error")

    workers.start_for(box, run_preflight_process, plan_path, on_result=shown, on_error=error)


def smoke_offer(plan_path: str, threshold_usd: float) -> dict | None:
    """The smoke test Launch offers for an Azure plan whose estimated cost at P80 is above ``threshold_usd``
    (Settings › Azure): ``{"p80", "range", "text"}``, or None (below it, or its cost unknown). Planning only."""
    from ..engine.azure.smoke import plan_cost_at, plan_smoke, usd_range_text

    p80 = plan_cost_at(Path(plan_path))
    if p80 is None or p80 <= threshold_usd:
        return None
    sp = plan_smoke(Path(plan_path))
    rng = usd_range_text(sp.cost)
    return {"p80": p80, "range": rng, "nodes": sp.nodes, "sku": sp.sku,
            "text": f"Run a smoke test first ({rng}, ~10 min)"}


def run_smoke_process(plan_path: str) -> dict:
    """``distill azure smoke PLAN --yes --json`` as its own process (the app never talks to Azure itself): the
    results, or a DistillError with its message."""
    import json
    import subprocess

    from .monitor.runs import engine_command

    cmd = [*engine_command(), "azure", "smoke", plan_path, "--yes", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=str(Path(plan_path).parent))
    try:
        return json.loads(done.stdout)
    except ValueError:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise DistillError(lines[-1].removeprefix("error: ") if lines else f"exit status {done.returncode}") from None


class MainWindow(QMainWindow):
    sig_plan_opened = Signal(str)
    """A plan file was opened (its path)."""

    def __init__(self, settings: Settings, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.plan: Plan | None = None
        self.plan_path: str | None = None
        self.setWindowTitle("Distill Studio")
        self.setMinimumSize(960, 640)
        self.planner = PlannerView()
        self.planner.sig_error.connect(self._show_error_message)
        # Launch only once the open plan has been planned: a plan that fails its check cannot be launched
        self.planner.sig_analysis_ready.connect(self._update_actions)
        self.planner.sig_analysis_ready.connect(self._clear_error_message)
        self.planner.sig_plan_failed.connect(lambda _m: self._update_actions())
        # The Runs screen (four live charts, the runs list) is built when it is first shown or used: the window
        # comes up sooner, and a run left training is re-attached as soon as the Runs tab is opened.
        self._runs = None
        self._runs_holder = QWidget()
        QVBoxLayout(self._runs_holder).setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("main_tabs")
        self.tabs.setDocumentMode(True)
        # before a plan is open: a welcome view, not an empty chart
        from .welcome import WelcomeView

        self.welcome = WelcomeView()
        self.welcome.sig_demo.connect(lambda: self.open_demo())
        self.welcome.sig_new.connect(lambda: self.new_plan())
        self.welcome.sig_open.connect(lambda: self.open_plan_dialog())
        self.welcome.sig_recent.connect(lambda path: self.open_plan(path))
        self.welcome.set_recent(list(self.settings.recent_plans))
        self.planner_page = QStackedWidget()
        self.planner_page.addWidget(self.welcome)
        self.planner_page.addWidget(self.planner)
        self.tabs.addTab(self.planner_page, "Planner")
        self.tabs.addTab(self._runs_holder, "Runs")
        self.tabs.currentChanged.connect(lambda i: self.runs if i == 1 else None)
        self.setCentralWidget(self.tabs)
        self.plan_label = QLabel("No plan open")
        self.statusBar().addPermanentWidget(self.plan_label)
        self._actions()
        self._restore_state()

    def _show_error_message(self, message: str) -> None:
        self._error_message = message
        self.statusBar().showMessage(message, 15_000)

    def _clear_error_message(self) -> None:
        """A plan that planned: an earlier plan's error is not left in the status bar."""
        if getattr(self, "_error_message", "") and self.statusBar().currentMessage() == self._error_message:
            self.statusBar().clearMessage()
        self._error_message = ""

    @property
    def runs(self):
        """The Runs screen (``RunsPage``), built on first use."""
        if self._runs is None:
            from .monitor.runs_page import RunsPage

            self._runs = RunsPage(self.settings)
            self._runs.sig_run_launched.connect(lambda _d: self.show_runs())
            self._runs_holder.layout().addWidget(self._runs)
            q = self._qsettings()
            for key, splitter in (("runs_split", self._runs.splitter), ("monitor_split", self._runs.monitor.splitter)):
                value = q.value(key)
                if value is not None:
                    splitter.restoreState(value)
            if self._runs.store.warning:
                self.statusBar().showMessage(self._runs.store.warning, 20_000)
        return self._runs

    def show_runs(self) -> None:
        self.runs  # noqa: B018 - builds the screen
        self.tabs.setCurrentWidget(self._runs_holder)

    # ---- menus and shortcuts -----------------------------------------------------------------------------------

    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.setStatusTip(tip)
        a.setToolTip(f"{text.replace('&', '').rstrip('…')}" + (f" ({QKeySequence(shortcut).toString()})"
                                                               if shortcut is not None else ""))
        a.triggered.connect(slot)
        return a

    def _actions(self) -> None:
        K = QKeySequence.StandardKey
        self.act_new = self._action("&New plan…", self.new_plan, K.New, "Create a plan with the wizard")
        self.act_open = self._action("&Open plan…", self.open_plan_dialog, K.Open, "Open a plan file (.toml)")
        self.act_edit = self._action("&Edit plan…", self.edit_plan, "Ctrl+E", "Change the open plan in the wizard")
        self.act_demo = self._action("Open the &demo", self.open_demo, None, "The bundled demo: a tiny teacher "
                                     "and student that train on this machine's CPU; the planner says how long")
        self.act_settings = self._action("&Settings…", self.show_settings, K.Preferences, "Runs folder, theme, Azure")
        self.act_quit = self._action("&Quit", self.close, K.Quit)
        self.act_launch = self._action("&Launch", self.launch, "Ctrl+R",
                                       "Start the open plan on this machine, or submit it to Azure ML")
        self.act_stop = self._action("&Stop run", lambda: self.runs.monitor.request_stop(), "Ctrl+.",
                                     "Ask the selected run to checkpoint and stop")
        self.act_add_run = self._action("&Add run folder…", lambda: self.runs.add_folder(), None,
                                        "Watch a run started elsewhere")
        self.act_planner = self._action("&Planner", lambda: self.tabs.setCurrentWidget(self.planner_page), "Ctrl+1")
        self.act_runs = self._action("&Runs", self.show_runs, "Ctrl+2")
        self.act_log = self._action("&Log scale", lambda: self.runs.monitor.log_scale.toggle(), "Ctrl+L",
                                    "Logarithmic loss axis")
        self.act_about = self._action("&About Distill Studio", self.show_about)
        if self.act_settings.shortcut().isEmpty():
            self.act_settings.setShortcut(QKeySequence("Ctrl+,"))

        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_new, self.act_open):
            m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        for a in (self.act_edit, self.act_demo):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_settings)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Run")
        for a in (self.act_launch, self.act_stop, self.act_add_run):
            m.addAction(a)
        m = mb.addMenu("&View")
        for a in (self.act_planner, self.act_runs, self.act_log):
            m.addAction(a)
        mb.addMenu("&Help").addAction(self.act_about)

        tb = QToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in (self.act_new, self.act_open, self.act_edit, self.act_launch):
            tb.addAction(a)
        self.addToolBar(tb)
        self._update_actions()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in self.settings.recent_plans if Path(p).exists()]
        if not recent:
            self.recent_menu.addAction("(no recent plans)").setEnabled(False)
        for p in recent:
            self.recent_menu.addAction(p, lambda p=p: self.open_plan(p))

    def _update_actions(self) -> None:
        has = self.plan is not None
        self.act_edit.setEnabled(has)
        a = self.planner.base_analysis
        # a plan with no option that fits in memory has nothing to launch: the planner's header says why
        fits = a is not None and bool((a.planned & a.sweep.out["fits"]).any())
        self.act_launch.setEnabled(has and self.plan_path is not None and fits)
        self.act_launch.setToolTip("Run the open plan (Ctrl+R)" if fits or a is None else
                                   "Nothing to launch: no option as planned fits in memory (see the planner)")

    # ---- plans -------------------------------------------------------------------------------------------------

    def open_plan_dialog(self) -> None:
        path = open_file(self, self.settings, "plans", "Open a plan", PLAN_FILTER)
        if path:
            self.open_plan(path)

    def open_plan(self, path: str | Path) -> bool:
        try:
            plan = load_plan(path)
        except DistillError as exc:
            show_error(self, "This plan cannot be opened", str(exc),
                       "Fix the field named above in the file, or create a new plan with File → New plan.")
            return False
        except OSError as exc:
            show_error(self, "This plan cannot be opened", f"{path}: {exc.strerror or exc}")
            return False
        self.plan, self.plan_path = plan, str(Path(path).resolve())
        if Path(path).resolve() != demo_plan_path().resolve():
            self.settings.add_recent(path)
            self._save_settings()
        self.planner.set_plan(plan, Path(self.plan_path).parent)
        self.plan_label.setText(f"{plan.name} — {self.plan_path}")
        self.setWindowTitle(f"{plan.name} — Distill Studio")
        self.planner_page.setCurrentWidget(self.planner)
        self.tabs.setCurrentWidget(self.planner_page)
        self._update_actions()
        self.sig_plan_opened.emit(self.plan_path)
        return True

    def open_demo(self) -> None:
        if not self.open_plan(demo_plan_path()):
            return
        self.statusBar().showMessage("The demo plan: press Launch (Ctrl+R) to distil its tiny teacher on this "
                                     "machine.", 60_000)

        def say_estimate() -> None:     # the planner's own figure for this machine, once it has one
            self.planner.sig_analysis_ready.disconnect(say_estimate)
            a = self.planner.analysis
            i = a.decision.recommended if a is not None else None
            if i is None or self.plan_path != str(demo_plan_path().resolve()):
                return
            from ..engine.estimate.solve import hours_text
            from ..engine.planner import option_range

            rng = option_range(a.sweep, i, a.plan.budget.confidence)
            h = rng["hours"]
            self.statusBar().showMessage(
                f"The demo plan: press Launch (Ctrl+R) to distil its tiny teacher on this machine; the planner "
                f"expects {hours_text(rng['median_hours'])} of training (P10–P90 {hours_text(h[0])} to "
                f"{hours_text(h[2])}), more while this machine is busy.", 60_000)

        self.planner.sig_analysis_ready.connect(say_estimate)

    def _wizard(self, plan: Plan | None, path: str | None):
        from .wizard import PlanWizard   # the wizard's pages are built only when asked for

        w = PlanWizard(self.settings, plan=plan, plan_path=path, parent=self)
        w.sig_plan_saved.connect(self.open_plan)
        w.finished.connect(lambda _result: self._save_settings())   # remembered folders and recent plans
        w.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        w.open()
        self.wizard = w
        return w

    def new_plan(self):
        return self._wizard(None, None)

    def edit_plan(self):
        if self.plan is None:
            return None
        w = self._wizard(self.plan, self.plan_path)
        if self.plan_path and Path(self.plan_path).resolve() == demo_plan_path().resolve():
            # the bundled demo is part of the installation: an edited copy goes to the user's plans folder
            w.review_page.save_path.setText(str(Path(self.settings.last_dir("plans")) / "demo-column-addition.toml"))
        return w

    # ---- runs --------------------------------------------------------------------------------------------------

    def launch(self) -> QMessageBox | None:
        """Start the open plan: on this machine, or (an Azure plan) after the cost is confirmed in the returned
        question box."""
        if self.plan is None or self.plan_path is None:
            show_error(self, "No plan to launch", "Open or create a plan first (Ctrl+O or Ctrl+N).")
            return
        if self.plan.hardware.target == "azure":
            return self.launch_azure()
        if importlib.util.find_spec("torch") is None:
            show_error(self, "Training is not installed",
                       "Running a plan needs torch, transformers, peft and accelerate.",
                       "Install them with: pip install 'distill-studio[train]'")
            return
        # what the plan leaves to the planner (teacher mode, sharding) the engine resolves as the planner view does;
        # a plan that fits nothing is not launched, one the planner does not stand behind only once confirmed
        resolved = self._resolve_for_launch()
        if resolved is None:
            return None
        plan_path, name = self.plan_path, self.plan.name
        if not resolved.risks:
            self._start_local(plan_path, name, [])
            return None
        from .launch_text import confirmation_text

        box = QMessageBox(QMessageBox.Icon.Warning, "Launch anyway?",
                          f"The planner does not recommend running {name} as planned.", parent=self)
        box.setObjectName("launch_risk_confirm")
        box.setInformativeText(confirmation_text(resolved))
        go = box.addButton("Launch anyway", QMessageBox.ButtonRole.AcceptRole)
        go.setObjectName("launch_anyway_button")
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        stop = self._stop_at_box(box, resolved)

        def done(button) -> None:
            if button is go:
                self._start_local(plan_path, name, ["--force", *self._stop_at_args(stop, resolved)])

        box.buttonClicked.connect(done)
        box.open()
        return box

    def _resolve_for_launch(self):
        """The planner's resolution of the open plan, as the engine will run it; None (and the reason shown) when
        the plan cannot run at all, e.g. it fits in no memory."""
        from ..engine.planner import resolve_run

        try:
            return resolve_run(self.plan, Path(self.plan_path).parent)
        except DistillError as exc:
            show_error(self, "This plan cannot be launched", str(exc),
                       "Nothing was started. Edit the plan (Ctrl+E) as the message says, then Launch again.")
            return None

    def _start_local(self, plan_path: str, name: str, extra: list[str]) -> None:
        if self.runs.launch_plan(plan_path, name, extra=extra) is not None:
            self.statusBar().showMessage(f"Started {name}; it runs as its own process and keeps running if you "
                                         "close the app.", 15_000)

    @staticmethod
    def _stop_at_box(box: QMessageBox, resolved):
        """The confirmation's choice to stop the run by itself at its deadline and/or cost cap (None: no limit)."""
        from PySide6.QtWidgets import QCheckBox

        budget = resolved.plan.budget
        limits = [w for w, v in (("deadline", budget.hours), ("cost cap", budget.usd)) if v is not None]
        if not limits:
            return None
        check = QCheckBox(f"Stop the run by itself at the {' or the '.join(limits)} (a checkpoint is saved"
                          + ("; the Azure job ends)" if resolved.plan.hardware.target == "azure" else ")"))
        check.setObjectName("stop_at_box")
        box.setCheckBox(check)
        return check

    @staticmethod
    def _stop_at_args(check, resolved) -> list[str]:
        if check is None or not check.isChecked():
            return []
        budget = resolved.plan.budget
        which = ("either" if budget.hours is not None and budget.usd is not None else
                 "deadline" if budget.hours is not None else "cap")
        return ["--stop-at", which]

    def launch_azure(self, usd_per_hour: float | None = None):
        """Show what the Azure run will cost and where it runs, and submit it once the user confirms. The
        submission and the watching run in their own process (``distill azure submit --watch``), like a local run:
        the window never waits on Azure."""
        from ..engine.planner import resolve_run
        from .monitor.view import fmt_duration

        try:
            installed = importlib.util.find_spec("azure.ai.ml") is not None
        except ModuleNotFoundError:    # no azure namespace at all
            installed = False
        if not installed:
            show_error(self, "Azure support is not installed",
                       "Launching on Azure Machine Learning needs the Azure extra (azure-ai-ml, azure-identity).",
                       "Install it with: pip install 'distill-studio[azure]'")
            return None
        from ..engine.azure.client import workspace_from_settings

        try:
            ws = workspace_from_settings(self.settings)
            resolved = resolve_run(self.plan, Path(self.plan_path).parent, usd_per_hour=usd_per_hour)
        except DistillError as exc:
            show_error(self, "This plan cannot be launched on Azure yet", str(exc),
                       "Enter the workspace in Settings (Ctrl+,) › Azure; see the README's Azure set-up.")
            return None
        if resolved.unpriced:
            return self._ask_price(resolved)
        hw = resolved.plan.hardware
        from ..engine.azure.job import known
        from .launch_text import confirmation_text, usd

        risky = bool(resolved.risks)
        box = QMessageBox(QMessageBox.Icon.Warning if risky else QMessageBox.Icon.Question, "Launch on Azure",
                          (f"Submit {self.plan.name} to Azure Machine Learning although the planner does not "
                           "recommend it?") if risky else f"Submit {self.plan.name} to Azure Machine Learning?",
                          parent=self)
        box.setObjectName("azure_confirm")
        split = resolved.split
        lead = ""
        if split:   # two jobs, chained: the teacher's pass first, on its own size
            tp = split["teacher_pass"]
            lead = (f"Two jobs, one after the other: the teacher's pass on {tp['nodes']} × {tp['sku']} "
                    f"({fmt_duration(tp['hours'] * 3600)}, {usd(tp['cost_usd']) if known(tp['cost_usd']) else 'price unknown'}), "
                    f"then training, reading the pass's {split['cache_gb']:,.1f} GB cache from storage. Launch "
                    "submits both: the second when the first has completed.\n\n")
        about = (
            f"{lead}{confirmation_text(resolved)}\n\n"
            f"Workspace {ws.workspace} ({ws.region}), billed to subscription {ws.subscription_id} while the nodes run. "
            "Stop cancels the job (the engine saves a checkpoint first); the cluster then scales to 0 nodes.")
        box.setInformativeText(about + "\n\nPre-flight: checking permissions, quota, the data, the model's token "
                               "and the image…")
        submit = box.addButton("Submit anyway" if risky else "Submit to Azure", QMessageBox.ButtonRole.AcceptRole)
        submit.setObjectName("azure_submit_button")
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        stop = self._stop_at_box(box, resolved)
        capacity = resolved.estimate.get("capacity") or {}
        check = None
        if not capacity.get("checked_on"):
            check = box.addButton("Check capacity", QMessageBox.ButtonRole.ActionRole)
            check.setObjectName("azure_check_capacity_button")
            check.setToolTip("Sign in and read this region's capacity and quota (the planner's Check capacity); "
                             "Launch again when it is done")
        plan_path, name = self.plan_path, self.plan.name
        try:
            offer = smoke_offer(str(plan_path), self.settings.azure.smoke_test_above_usd)
        except DistillError:
            offer = None
        smoke = None
        if offer is not None:
            smoke = box.addButton(offer["text"], QMessageBox.ButtonRole.ActionRole)
            smoke.setObjectName("azure_smoke_button")
            smoke.setToolTip(f"Estimated {'$' + format(offer['p80'], ',.0f')} at P80, above the "
                             f"${self.settings.azure.smoke_test_above_usd:,.0f} set in Settings › Azure: check CUDA, "
                             f"the GPUs, NCCL bandwidth, the model's token and storage speed on {offer['nodes']} × "
                             f"{offer['sku']} first; its measurements refine the estimate")
        box.setProperty("smoke_offer", offer["text"] if offer else "")
        _start_preflight(box, submit, about, str(plan_path))

        def done(button) -> None:
            if smoke is not None and button is smoke:
                self.start_smoke(str(plan_path), name)
                return
            if check is not None and button is check:
                self.planner.check_capacity()
                self.statusBar().showMessage("Checking capacity and quota; Launch again when the planner shows the "
                                             "result.", 15_000)
                return
            if button is not submit:
                return
            extra = ["--force"] if risky else []
            if usd_per_hour is not None:      # the price the user gave for a size with none in the table
                extra += ["--usd-per-hour", f"{usd_per_hour:.4f}"]
            extra += self._stop_at_args(stop, resolved)
            if self.runs.launch_plan(plan_path, name, target="azure", extra=extra) is not None:
                self.statusBar().showMessage(f"Submitting {name} to Azure ML; the run appears in Runs and keeps "
                                             "being watched if you close the app.", 15_000)

        box.buttonClicked.connect(done)
        box.open()      # not exec(): the window stays live while the question is shown
        return box

    def _ask_price(self, resolved):
        """The size chosen has no price in the region's table: ask for its price per node-hour first (nothing is
        submitted without one); the confirmation then shows the run priced with it. Returns the (open) dialog."""
        from PySide6.QtWidgets import QInputDialog, QLabel

        hw = resolved.plan.hardware
        dlg = QInputDialog(self)
        dlg.setObjectName("azure_price_dialog")
        dlg.setWindowTitle("Price per node-hour")
        dlg.setInputMode(QInputDialog.InputMode.DoubleInput)
        dlg.setDoubleRange(0.01, 10_000.0)
        dlg.setDoubleDecimals(2)
        dlg.setDoubleValue(0.01)
        dlg.setLabelText(
            f"The planner chose {resolved.nodes} × {hw.sku} ({hw.priority}) in {hw.region}, and the price table "
            f"has no price for it ({resolved.why}).\n\nEnter its price per node-hour in US$, from Azure's pricing "
            "page, to see what the run costs before you submit it; the run's cost is counted with it. Or Cancel "
            "and choose another size (the planner's table lists the sizes with a price).")
        dlg.setOkButtonText("Continue")
        for label in dlg.findChildren(QLabel):
            label.setWordWrap(True)
        dlg.setMinimumWidth(560)
        dlg.doubleValueSelected.connect(lambda value: self.launch_azure(usd_per_hour=float(value)))
        dlg.open()
        return dlg

    def start_smoke(self, plan_path: str, name: str) -> None:
        """The smoke test as its own process; its results in a message box when it ends (Launch again after)."""
        from . import workers
        from ..engine.azure.smoke import results_text

        def shown(doc: dict) -> None:
            results = doc.get("results", {})
            ok = bool(results.get("ok"))
            box = QMessageBox(QMessageBox.Icon.Information if ok else QMessageBox.Icon.Warning, "Smoke test",
                              f"Smoke test of {name} {'passed' if ok else 'FAILED'} on {results.get('nodes')} × "
                              f"{results.get('sku')}.", parent=self)
            box.setObjectName("smoke_result")
            box.setInformativeText(results_text(results) + "\n\nThe measured bandwidth and storage speed are kept "
                                   "for the planner's estimates of this size.")
            box.open()

        def failed(message: str) -> None:
            show_error(self, "The smoke test did not finish", message,
                       "`distill azure smoke PLAN` in a terminal shows each step.")

        self._smoke_worker = workers.start_for(self, run_smoke_process, plan_path, on_result=shown, on_error=failed)
        self.statusBar().showMessage(f"Smoke test of {name} submitted to Azure ML (about 10 minutes once its nodes "
                                     "are up); its results appear here when it ends.", 15_000)

    # ---- settings, about, window state -------------------------------------------------------------------------

    def show_settings(self):
        from .settings.dialog import SettingsDialog

        d = SettingsDialog(self.settings, self)
        d.sig_settings_changed.connect(self._settings_changed)
        d.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        d.open()
        return d

    def _settings_changed(self) -> None:
        from PySide6.QtWidgets import QApplication

        from .theme import apply_theme

        apply_theme(QApplication.instance(), self.settings.theme)
        self.statusBar().showMessage("Settings saved. New charts follow the theme.", 8_000)

    def show_about(self) -> QMessageBox:
        from .about import show_about

        return show_about(self)

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.statusBar().showMessage(f"Settings could not be saved: {exc}", 15_000)

    def _qsettings(self) -> QSettings:
        return QSettings(str(config_dir() / "window.ini"), QSettings.Format.IniFormat)

    def _restore_state(self) -> None:
        q = self._qsettings()
        geometry = q.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1320, 860)
        value = q.value("planner_split")
        if value is not None:
            self.planner.splitter.restoreState(value)
        tab = q.value("tab")
        if tab is not None:
            self.tabs.setCurrentIndex(int(tab))

    def save_state(self) -> None:
        q = self._qsettings()
        q.setValue("geometry", self.saveGeometry())
        q.setValue("planner_split", self.planner.splitter.saveState())
        if self._runs is not None:
            q.setValue("runs_split", self._runs.splitter.saveState())
            q.setValue("monitor_split", self._runs.monitor.splitter.saveState())
        q.setValue("tab", self.tabs.currentIndex())
        q.sync()
        self._save_settings()

    def closeEvent(self, event) -> None:
        # runs are separate processes and keep training; they are watched again at the next start
        self.save_state()
        if self._runs is not None:
            self._runs.shutdown()
        from . import workers

        workers.shutdown(3000)     # no background job delivers into a window that is gone
        super().closeEvent(event)
