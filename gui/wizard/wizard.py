"""The new-plan wizard: six pages from teacher to a saved, validated plan file; also edits an existing plan.

The wizard keeps an edited plan's document as its base and overwrites only the keys its pages control, so sections it
has no page for (``[training]``, ``data.eval``, ``data.prompts``, ``hardware.nodes``, ...) come back unchanged.
Inside the wizard every path is absolute; relative paths of a loaded plan are resolved against the plan file's
folder, and on save they are written relative to the new file's folder when they lie inside it (else absolute), so
the saved plan works from wherever it is.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel
from PySide6.QtCore import QSize, QTimer, Signal
from PySide6.QtWidgets import QWidget, QWizard

from ...engine.catalog.models import load_models, resolve_model
from ...engine.checks import check_plan
from ...engine.errors import CatalogError, PlanError
from ...engine.plan import Data, Plan, plan_from_dict, save_plan
from ..settings import Settings
from .common import set_error, slug
from .data_page import DataPage
from .hardware_page import HardwarePage
from .method_page import MethodPage
from .pages import ModelPicker, StudentPage, TeacherPage
from .review_page import Review, ReviewPage

DATA_PATH_KEYS = ("train", "eval", "prompts")
PREVIEW_DELAY_MS = 400


def preview_text(doc: dict[str, Any]) -> str:
    """On a worker: the fastest and the cheapest option the choices so far allow, and whether the budget can be
    met (the planner's own answer). Each time and cost is the figure at the plan's confidence (P80: what the
    deadline and the cost cap are checked against), with the P10-P90 range it comes from; a line under them says
    what both mean."""
    import numpy as np

    from ...engine.estimate.ranges import at_confidence
    from ...engine.planner import analyse
    from ...engine.report import hours_text

    plan = plan_from_dict(doc)
    a = analyse(plan)
    d, o, sw = a.decision, a.sweep.out, a.sweep
    conf = plan.budget.confidence
    p = f"P{conf * 100:g}"
    hq, cq = at_confidence(sw, conf)
    uncosted = plan.hardware.target == "local" and plan.hardware.usd_per_hour is None

    def usd(v: float) -> str:
        return f"${v:,.2f}" if abs(v) < 10 else f"${v:,.0f}"

    def span(lo: float, hi: float, fmt) -> str:
        a, b = fmt(lo), fmt(hi)
        return a if a == b else f"{a}–{b}"

    def option(i: int) -> str:
        r = sw.row(i)
        where = "this machine" if r["sku"] == "local" else f"{r['nodes']} × {r['sku'].removeprefix('Standard_')}"
        time = (f"<b>{hours_text(hq[i])}</b> at {p} "
                f"({span(o['hours_low'][i], o['hours_high'][i], hours_text)})")
        if uncosted:
            cost = "no cost (no price per hour given for this machine)"
        elif not np.isfinite(cq[i]):
            cost = "price unknown"
        else:
            cost = f"<b>{usd(cq[i])}</b> at {p} ({span(o['cost_low'][i], o['cost_high'][i], usd)})"
        return f"{where}: {time}, {cost}"

    lines = []
    if d.fastest is not None and d.fastest != d.recommended:
        lines.append("Fastest: " + option(d.fastest))
    if d.cheapest is not None and d.cheapest not in (d.fastest, d.recommended) and not uncosted:
        lines.append("Cheapest: " + option(d.cheapest))
    if d.recommended is not None:
        why = d.rationale[:1].upper() + d.rationale[1:]
        if plan.budget.hours is not None or plan.budget.usd is not None:
            lines.append(f"<span style='color:#27ae60'>Meets the budget</span> — recommended "
                         f"{option(d.recommended)}. {why}.")
        else:  # nothing to meet: the rationale would only repeat that
            lines.append(f"<span style='color:#27ae60'>No deadline or cost cap</span> — recommended "
                         f"{option(d.recommended)}.")
    elif d.impossible:
        lines.append(f"<span style='color:#c0392b'>The budget cannot be met: {d.impossible}</span>")
    if not lines:
        return "No option fits in memory with these choices."
    n = conf * 10
    lines.append(f"<span style='color:#7f8c8d'>{p}: {n:g} runs in 10 take no longer and cost no more; the budget "
                 "is checked at it. In brackets: P10–P90, where 8 runs in 10 land.</span>")
    return "<br>".join(lines)


PAGE_OF_SECTION = {"teacher": "Teacher", "student": "Student", "method": "Method", "adapter": "Method",
                   "data": "Data", "hardware": "Hardware and budget", "budget": "Hardware and budget",
                   "name": "Review", "description": "Review"}


def relative_to_folder(path: str, folder: Path | None) -> str:
    """``path`` relative to ``folder`` when it lies inside it (with / separators, as TOML readers expect), else as
    it is (absolute)."""
    p = Path(path)
    if folder is None or not p.is_absolute():
        return path
    try:
        return p.resolve().relative_to(folder.resolve()).as_posix()
    except (ValueError, OSError):
        return path


def _expand(path: str) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not have: keep it as written
        return Path(path)


def _absolute(path: str, base: Path) -> str:
    p = _expand(path)
    return str(p if p.is_absolute() else Path(os.path.normpath(base / p)))


def _preview(doc: dict[str, Any]) -> str:
    """TOML of a document that does not validate yet: keys in the plan's field order, None left out."""

    def ordered(d: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in [*model.model_fields, *(k for k in d if k not in model.model_fields)]:
            if key in d and d[key] is not None:
                sub = model.model_fields[key].annotation if key in model.model_fields else None
                value = d[key]
                if isinstance(value, dict):
                    value = ordered(value, sub if isinstance(sub, type) and issubclass(sub, BaseModel) else BaseModel)
                out[key] = value
        return out

    try:
        return tomli_w.dumps(ordered(doc, Plan))
    except (TypeError, ValueError) as exc:  # pragma: no cover - every value comes from a typed control
        return f"# cannot show the plan: {exc}"


def _with_pages(message: str) -> str:
    """Add to each ``field: problem`` line the wizard page where the field is set."""
    lines = []
    for line in message.splitlines():
        head = line.strip().split(":", 1)[0]
        page = PAGE_OF_SECTION.get(head.split(".", 1)[0])
        lines.append(f"{line}  (set on the {page} page)" if page and ":" in line else line)
    return "\n".join(lines)


class PlanWizard(QWizard):
    """``PlanWizard(settings, plan=None, plan_path=None, parent=None)``; Finish saves the plan and emits
    ``sig_plan_saved(path)``."""

    sig_plan_saved = Signal(str)

    def __init__(self, settings: Settings, plan: Plan | None = None, plan_path: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("plan_wizard")
        self.settings = settings
        self.saved_path: str | None = None
        self._result: Plan | None = None
        self._base_dir = Path(plan_path).expanduser().resolve().parent if plan_path else Path.cwd()
        self._base_doc: dict[str, Any] = self._absolute_doc(plan) if plan is not None else {}
        self._teacher_key: str | None = None
        self._checked: tuple[tuple, Any] | None = None  # (values check_plan reads, its Pair or PlanError)

        self.teacher_page = TeacherPage(settings)
        self.student_page = StudentPage(settings)
        self.method_page = MethodPage()
        self.data_page = DataPage(settings)
        self.hardware_page = HardwarePage(settings)
        self.review_page = ReviewPage(settings, self.review, self._save)
        for page in (self.teacher_page, self.student_page, self.method_page, self.data_page, self.hardware_page,
                     self.review_page):
            self.addPage(page)

        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setButtonText(QWizard.WizardButton.FinishButton, "&Save plan")
        self.setMinimumSize(QSize(900, 640))
        self.resize(980, 700)
        self.setWindowTitle(f"Edit plan — {plan.name}" if plan else "New distillation plan")

        self.teacher_page.sig_changed.connect(self._models_changed)
        self.student_page.sig_changed.connect(self._models_changed)
        for page in (self.method_page, self.data_page, self.hardware_page):
            page.sig_changed.connect(self.review_page.schedule)
        # sequence-level KD needs prompts: the data page says so where they are chosen
        self.method_page.sig_changed.connect(lambda: self.data_page.set_method(self.method_page.kind()))
        # the hardware page plans the choices so far (on a worker, shortly after the last change)
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self._preview)
        self._preview_generation = 0
        self.hardware_page.sig_changed.connect(self._preview_timer.start)
        self.hardware_page.sig_changed.connect(self._preview_stale)
        self.currentIdChanged.connect(lambda _id: self._preview_timer.start()
                                      if self.currentPage() is self.hardware_page else None)
        if plan is not None:
            self._prefill(plan, plan_path)

    # ---- public
    def result_plan(self) -> Plan | None:
        """The plan as saved (paths relative to its file where they lie inside its folder); None before Finish."""
        return self._result

    def done(self, result: int) -> None:
        self.data_page.cancel_scan()  # a scan must not report into a closed wizard
        super().done(result)

    # ---- coordination between pages
    def _models_changed(self) -> None:
        t, key = self.teacher_page.spec(), self.teacher_page.key()
        if key != self._teacher_key:
            self._teacher_key = key
            self.student_page.set_teacher(t)  # may change the student, which calls back here
        s = self.student_page.spec()
        self.student_page.set_method_note(self.method_page.set_pair(t, s))
        self.data_page.set_models(t, s)
        if t and s:
            self.review_page.suggest_name(f"{slug(t.id)}-to-{slug(s.id)}")
        self.review_page.schedule()

    # ---- loading a plan
    def _absolute_doc(self, plan: Plan) -> dict[str, Any]:
        doc = plan.model_dump(mode="json")
        for key in DATA_PATH_KEYS:
            if doc["data"].get(key):
                doc["data"][key] = _absolute(doc["data"][key], self._base_dir)
        return doc

    def _model_key(self, role: str, name: str, picker: ModelPicker) -> str | None:
        """The picker key for a plan's model, resolved as ``check_plan`` does: a folder relative to the plan first,
        then the catalog, then a path. A model that cannot be found is reported on its page."""
        p = _expand(name)
        folder = None
        if not p.is_absolute() and (self._base_dir / name).exists():
            folder = self._base_dir / name
        else:
            low = name.strip().lower()
            for spec in load_models().values():
                if low in (spec.id.lower(), spec.hub_id.lower(), spec.name.lower()):
                    return spec.id
            if p.exists():
                folder = p
        if folder is not None:
            return picker.add_local(str(folder))  # None with the reason shown on the page
        try:
            resolve_model(name)
        except (CatalogError, OSError, RuntimeError, ValueError) as exc:
            set_error(picker.error, f"{role}.model: {exc}")
        return None

    def _prefill(self, plan: Plan, plan_path: str | None) -> None:
        tp, sp = self.teacher_page, self.student_page
        key = self._model_key("teacher", plan.teacher.model, tp.picker)
        if key:
            if key in load_models():
                tp.set_original(key, plan.teacher.model)
            tp.refill()
            tp.picker.select(key)
        tp.precision.setCurrentIndex(max(tp.precision.findData(plan.teacher.precision), 0))
        key = self._model_key("student", plan.student.model, sp.picker)
        if key:
            if key in load_models():
                sp.set_original(key, plan.student.model)
            sp.refill()
            sp.select(key)
        sp.set_init(plan.student.init)
        self.method_page.load(plan.method, plan.adapter)
        sp.set_method_note(self.method_page.set_pair(tp.spec(), sp.spec()))
        self.data_page.load(Data.model_validate(self._base_doc["data"]))
        self.hardware_page.load(plan.hardware, plan.budget)
        rp = self.review_page
        rp.name.setText(plan.name)
        rp.name_edited = True
        rp.description.setText(plan.description)
        if plan_path:
            rp.set_save_path(str(Path(plan_path).expanduser().resolve()))

    # ---- the hardware page's live answer
    def _preview(self) -> None:
        if self.currentPage() is not self.hardware_page:
            return
        from .. import workers

        doc = self.plan_doc()
        doc["name"] = doc.get("name") or "preview"
        self._preview_generation += 1
        generation = self._preview_generation
        self.hardware_page.mark_stale(planning=True)
        workers.start_for(self, preview_text, doc, on_result=lambda text: self._previewed(generation, text),
                      on_error=lambda message: self._previewed(
                          generation, f"<span style='color:#c0392b'>Not plannable yet: {message}</span>"))

    def _preview_stale(self) -> None:
        """A choice changed: the numbers shown are marked as old at once, not only when planning starts."""
        if self.currentPage() is self.hardware_page:
            self.hardware_page.mark_stale()

    def _previewed(self, generation: int, text: str) -> None:
        if generation != self._preview_generation:
            return                      # an older answer, after the choices changed again
        try:
            self.hardware_page.show_preview(text)
        except RuntimeError:            # the wizard was closed while planning
            pass

    # ---- building the plan
    def plan_doc(self) -> dict[str, Any]:
        """The plan as a document, every path absolute: the edited plan's keys, overwritten by the pages'."""
        doc = copy.deepcopy(self._base_doc)

        def section(name: str, values: dict[str, Any]) -> None:
            doc[name] = {**doc.get(name, {}), **values}

        doc["name"] = self.review_page.name.text().strip()
        doc["description"] = self.review_page.description.text().strip()
        section("teacher", {"model": self.teacher_page.plan_value(),
                            "precision": self.teacher_page.precision.currentData()})
        section("student", {"model": self.student_page.plan_value(), "init": self.student_page.init()})
        section("method", self.method_page.method_values())
        section("adapter", self.method_page.adapter_values())
        section("data", self.data_page.data_values())
        section("hardware", self.hardware_page.hardware_values())
        section("budget", self.hardware_page.budget_values())
        return doc

    def _save_folder(self) -> Path | None:
        p = self.review_page.path()
        if p is None:
            return None
        if not p.is_absolute():
            p = Path(self.settings.last_dir("plans")) / p
        return p.parent

    def _relative_doc(self, doc: dict[str, Any], folder: Path | None) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        for key in DATA_PATH_KEYS:
            if out.get("data", {}).get(key):
                out["data"][key] = relative_to_folder(out["data"][key], folder)
        for role in ("teacher", "student"):
            model = out.get(role, {}).get("model")
            if model and Path(model).is_absolute():
                out[role]["model"] = relative_to_folder(model, folder)
        return out

    def review(self) -> Review:
        """Validate the current values as the CLI would; the TOML shown is what Finish writes."""
        doc = self.plan_doc()
        out = self._relative_doc(doc, self._save_folder())
        try:
            toml = plan_from_dict(out).to_toml()  # exactly what Finish writes
        except PlanError:
            toml = _preview(out)                  # not valid yet: still show it, in the plan's own order
        notes: list[str] = []
        try:
            plan = plan_from_dict(doc, origin="plan")
            pair = self._check(plan)
        except PlanError as exc:
            text = str(exc).replace("plan: invalid plan\n", "The plan is not valid yet:\n")
            return Review(toml, _with_pages(text))
        notes += pair.notes
        problem = self._data_problem(plan, notes)
        if not problem and self.review_page.path() is None:
            problem = "Save to: choose where to save the plan file."
        elif not problem and self.review_page.path().is_dir():
            problem = "Save to: this is a folder; add a file name ending in .toml."
        return Review(toml, _with_pages(problem), notes)

    def _check(self, plan: Plan):
        """``check_plan``, remembered for the values it reads: a local model folder's config.json and tokenizer.json
        (which can be tens of MB) are not re-read each time the name or the save path is typed."""
        key = (plan.teacher.model, plan.student.model, plan.method.kind, plan.data.seq_len, plan.student.init)
        if self._checked is None or self._checked[0] != key:
            try:
                self._checked = (key, check_plan(plan))
            except PlanError as exc:
                self._checked = (key, exc)
        result = self._checked[1]
        if isinstance(result, PlanError):
            raise result
        return result

    def _data_problem(self, plan: Plan, notes: list[str]) -> str:
        dp = self.data_page
        if plan.data.train is None:
            notes.append(f"planning uses {plan.data.tokens:,} tokens per epoch (no data file yet)")
            return ""
        train = Path(plan.data.train)
        if not train.exists():
            return f"data.train: {train}: no such file or folder"
        if dp.scan_error:
            return dp.scan_error if dp.scan_error.startswith("data.train") else f"data.train: {dp.scan_error}"
        if dp.scanning():
            notes.append("the data scan is still running; if you save now, planning estimates the tokens from the "
                         "file size")
        elif plan.data.tokens is not None:
            notes.append(f"planning uses {plan.data.tokens:,} tokens per epoch (data.tokens, from the data scan)")
        return ""

    def _save(self) -> str:
        """Write the plan; "" on success, else the problem (shown on the review page)."""
        path = self.review_page.path()
        if path is None:
            return "Save to: choose where to save the plan file."
        if not path.is_absolute():
            path = Path(self.settings.last_dir("plans")) / path
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"Save to: cannot create the folder {folder} ({exc.strerror or exc})"
        try:
            plan = plan_from_dict(self._relative_doc(self.plan_doc(), folder), origin=str(path))
            save_plan(plan, path)
        except PlanError as exc:
            return str(exc)
        self.settings.remember_dir("plans", path)
        self.settings.add_recent(path)
        self._result = plan
        self.saved_path = str(path.resolve())
        self.sig_plan_saved.emit(self.saved_path)
        return ""
