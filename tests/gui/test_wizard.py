"""The new-plan wizard, driven as a user would: clicks on cards, radio buttons and Next, values typed or set into the
controls, Finish; then the saved file is read back with ``load_plan`` and checked with ``check_plan``."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QCheckBox, QLabel, QLineEdit, QListWidget, QRadioButton, QWizard

from distill_studio.engine.catalog.models import load_models
from distill_studio.engine.checks import check_plan
from distill_studio.engine.plan import load_plan
from distill_studio.gui.settings import Settings
from distill_studio.gui.wizard import PlanWizard
from distill_studio.gui.wizard import pages as pages_module
from distill_studio.gui.wizard.common import GREY_ROLE, ID_ROLE, REASON_ROLE

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "demo"
PLANS = ROOT / "resources" / "plans"
NEXT, FINISH = QWizard.WizardButton.NextButton, QWizard.WizardButton.FinishButton


def model_id(name: str) -> str:
    """A catalog id by display name, so the tests follow the catalog rather than hard-code its ids."""
    ids = [i for i, spec in load_models().items() if spec.name == name]
    assert len(ids) == 1, f"catalog has no single model named {name!r}"
    return ids[0]


def example_count(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings()


@pytest.fixture
def wizard(qtbot, settings):
    w = PlanWizard(settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.data_page.cancel_scan()


def find_item(lst: QListWidget, key: str):
    for i in range(lst.count()):
        if lst.item(i).data(ID_ROLE) == key:
            return lst.item(i)
    raise AssertionError(f"{key} is not listed in {lst.objectName()}")


def click_item(qtbot, lst: QListWidget, key: str) -> None:
    item = find_item(lst, key)
    assert not item.isHidden(), f"{key} is hidden in {lst.objectName()}"
    lst.scrollToItem(item)
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(item).center())
    assert lst.currentItem() is not None and lst.currentItem().data(ID_ROLE) == key


def click(qtbot, w: QWizard, name: str, kind=QRadioButton) -> None:
    button = w.findChild(kind, name)
    assert button is not None, name
    assert button.isEnabled(), f"{name} is disabled"
    # on the indicator: a radio button stretched across a grid cell only reacts to its indicator and text
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton, pos=QPoint(8, button.height() // 2))
    if isinstance(button, QRadioButton):
        assert button.isChecked(), f"{name} did not get checked"


def go_next(qtbot, w: QWizard, expect: str) -> None:
    button = w.button(NEXT)
    assert button.isEnabled(), f"Next is disabled on {w.currentPage().objectName()}"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert w.currentPage().objectName() == expect


def choose_teacher(qtbot, w: PlanWizard, name: str) -> str:
    key = model_id(name)
    filt = w.findChild(QLineEdit, "teacher_filter")
    qtbot.keyClicks(filt, name)
    lst = w.findChild(QListWidget, "teacher_list")
    shown = [lst.item(i).data(ID_ROLE) for i in range(lst.count()) if not lst.item(i).isHidden()]
    assert key in shown and len(shown) < len(load_models()), "the filter should narrow the list"
    click_item(qtbot, lst, key)
    return key


def finish(qtbot, w: PlanWizard, path: Path) -> Path:
    save = w.findChild(QLineEdit, "save_path")
    save.clear()
    qtbot.keyClicks(save, str(path))
    qtbot.waitUntil(lambda: w.button(FINISH).isEnabled(), timeout=5000)
    with qtbot.waitSignal(w.sig_plan_saved, timeout=5000) as blocker:
        qtbot.mouseClick(w.button(FINISH), Qt.MouseButton.LeftButton)
    assert blocker.args == [str(path.resolve())]
    assert w.saved_path == str(path.resolve())
    return path


# ---------------------------------------------------------------------------------------------------------------
# Walking the wizard from empty to a saved plan

WALKS = [
    # teacher, student, another tokenizer (seq-KD only), method expected, budget preset, hours, data
    ("Gemma 3 27B", "Gemma 3 4B", False, "logit-kd", "budget_3h", 3.0, "tokens"),
    ("Phi-4", "Phi-4-mini", True, "seq-kd", "budget_27h", 27.0, "tokens"),
    ("QwQ-32B", "Qwen2.5 7B", False, "logit-kd", "budget_27h", 27.0, "file"),
]


@pytest.mark.parametrize("teacher,student,show_all,kind,preset,hours,data", WALKS, ids=[w[0] for w in WALKS])
def test_walk_to_saved_plan(qtbot, wizard, settings, tmp_path, teacher, student, show_all, kind, preset, hours, data):
    w = wizard
    assert w.result_plan() is None and w.saved_path is None
    assert w.currentPage().objectName() == "teacher_page"
    assert not w.button(NEXT).isEnabled(), "no teacher chosen yet"
    teacher_id = choose_teacher(qtbot, w, teacher)
    go_next(qtbot, w, "student_page")

    student_id = model_id(student)
    lst = w.findChild(QListWidget, "student_list")
    item = find_item(lst, student_id)
    # listed without "Show all": Phi-4 has no student with its tokenizer, so those that work with seq-KD are shown,
    # its own family first, and not greyed
    assert not item.isHidden()
    if show_all:
        shown = [lst.item(i) for i in range(lst.count()) if not lst.item(i).isHidden()]
        assert shown[0] is item and "tokenizer" in item.data(REASON_ROLE) and not item.data(GREY_ROLE)
        assert "sequence-level KD" in w.findChild(QLabel, "student_count").text()
    click_item(qtbot, lst, student_id)
    note = w.findChild(QLabel, "student_method_note")
    assert note.isVisible() == show_all
    if show_all:
        assert "sequence-level KD" in note.text()
    go_next(qtbot, w, "method_page")

    assert w.findChild(QRadioButton, f"method_{kind}").isChecked()
    assert w.findChild(QRadioButton, "method_logit-kd").isEnabled() != show_all
    if kind == "logit-kd":
        loss = w.method_page.loss
        loss.setCurrentIndex(loss.findData("reverse-kl"))
    go_next(qtbot, w, "data_page")

    expected_tokens = None
    if data == "tokens":
        click(qtbot, w, "data_use_tokens")
        w.data_page.tokens.setValue(250.0)  # million
        expected_tokens = 250_000_000
        if kind == "seq-kd":            # a token count has no data to take prompts from: they are asked for
            assert not w.button(NEXT).isEnabled() and "needs prompts" in w.data_page.prompts_error.text()
            w.data_page.prompts_path.setText(str(DEMO / "prompts.jsonl"))
    else:
        inside = tmp_path / "data" / "train.jsonl"
        inside.parent.mkdir()
        shutil.copy(DEMO / "train.jsonl", inside)
        path = w.findChild(QLineEdit, "data_path")
        with qtbot.waitSignal(w.data_page.sig_scan_finished, timeout=15000):
            qtbot.keyClicks(path, str(inside))
        assert w.data_page.scan_result.examples == example_count(inside)
        expected_tokens = w.data_page.scan_result.tokens
    w.data_page.seq_len.setValue(4096)
    go_next(qtbot, w, "hardware_page")

    click(qtbot, w, preset)
    if teacher.startswith("Phi"):
        click(qtbot, w, "hw_local")
        acc = w.hardware_page.accelerator
        acc.setCurrentIndex(acc.findData("h100-sxm"))
        w.hardware_page.gpus.setValue(8)
    else:
        click(qtbot, w, "hw_azure")
    go_next(qtbot, w, "review_page")

    name = w.findChild(QLineEdit, "review_name").text()
    assert name.startswith(teacher_id) and name.endswith(student_id)
    assert "[teacher]" in w.review_page.toml.toPlainText()
    saved = finish(qtbot, w, tmp_path / "plans" / f"{name}.toml")

    plan = load_plan(saved)
    assert plan == w.result_plan()
    assert (plan.teacher.model, plan.student.model) == (teacher_id, student_id)
    assert plan.method.kind == kind
    assert plan.budget.hours == hours
    assert plan.data.tokens == expected_tokens and plan.data.seq_len == 4096
    if data == "file":
        assert plan.data.train == "../data/train.jsonl" or Path(plan.data.train).is_absolute()
        assert (saved.parent / plan.data.train).resolve() == (tmp_path / "data" / "train.jsonl").resolve()
    if kind == "logit-kd":
        assert plan.method.loss == "reverse-kl"
    assert plan.hardware.target == ("local" if teacher.startswith("Phi") else "azure")
    check_plan(plan, base=saved.parent)
    assert settings.recent_plans[0] == str(saved.resolve())
    assert Path(settings.dialog_dirs["plans"]) == saved.parent


def test_train_inside_the_plan_folder_is_written_relative(qtbot, wizard, tmp_path):
    w = wizard
    choose_teacher(qtbot, w, "QwQ-32B")
    go_next(qtbot, w, "student_page")
    click_item(qtbot, w.student_page.picker.list, model_id("Qwen2.5 1.5B"))
    go_next(qtbot, w, "method_page")
    go_next(qtbot, w, "data_page")
    shutil.copy(DEMO / "train.jsonl", tmp_path / "train.jsonl")
    with qtbot.waitSignal(w.data_page.sig_scan_finished, timeout=15000):
        w.data_page.set_train_path(str(tmp_path / "train.jsonl"))
    go_next(qtbot, w, "hardware_page")
    go_next(qtbot, w, "review_page")
    saved = finish(qtbot, w, tmp_path / "plan.toml")
    assert load_plan(saved).data.train == "train.jsonl"


# ---------------------------------------------------------------------------------------------------------------
# Student page


def test_student_page_hides_incompatible_and_explains(qtbot, wizard, screenshot):
    w = wizard
    teacher_id = choose_teacher(qtbot, w, "Gemma 3 27B")
    go_next(qtbot, w, "student_page")
    teacher = load_models()[teacher_id]
    lst = w.findChild(QListWidget, "student_list")
    suits = {i for i, s in load_models().items()
             if s.tokenizer_family == teacher.tokenizer_family and s.params < teacher.params}
    assert suits, "the catalog should hold a smaller Gemma 3"
    visible = {lst.item(i).data(ID_ROLE) for i in range(lst.count()) if not lst.item(i).isHidden()}
    assert visible == suits

    click(qtbot, w, "show_all", QCheckBox)
    visible = {lst.item(i).data(ID_ROLE) for i in range(lst.count()) if not lst.item(i).isHidden()}
    assert visible == set(load_models())
    other = next(i for i, s in load_models().items()
                 if s.tokenizer_family != teacher.tokenizer_family and s.params < teacher.params)
    reason = find_item(lst, other).data(REASON_ROLE)
    assert "different tokenizer" in reason and "sequence-level KD" in reason
    assert reason in find_item(lst, other).toolTip()
    assert "not smaller" in find_item(lst, teacher_id).data(REASON_ROLE)
    for key in suits:
        assert find_item(lst, key).data(REASON_ROLE) == ""

    # choosing another tokenizer switches to seq-KD and says so; a matching student switches back
    click_item(qtbot, lst, other)
    assert w.method_page.kind() == "seq-kd"
    assert w.findChild(QLabel, "student_method_note").isVisible()
    qtbot.wait(50)
    screenshot(w, "wizard_student_other_tokenizer")
    click_item(qtbot, lst, sorted(suits)[0])
    assert w.method_page.kind() == "logit-kd"
    assert not w.findChild(QLabel, "student_method_note").isVisible()


def test_student_init_from_teacher_only_when_architectures_match(qtbot, tmp_path, settings):
    plan_path = DEMO / "plan.toml"
    w = PlanWizard(settings, plan=load_plan(plan_path), plan_path=str(plan_path))
    qtbot.addWidget(w)
    assert w.student_page.init_from_teacher.isEnabled() and w.student_page.init() == "from-teacher"
    w.student_page.set_teacher(load_models()[model_id("QwQ-32B")])  # a teacher of another shape
    w.student_page._update_init()
    assert not w.student_page.init_from_teacher.isEnabled() and w.student_page.init() == "pretrained"
    w.data_page.cancel_scan()


def test_bad_local_model_folder_shows_a_clear_message(qtbot, wizard, tmp_path, monkeypatch):
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": ', encoding="utf-8")
    monkeypatch.setattr(pages_module, "open_folder", lambda *a, **k: str(folder))
    click(qtbot, wizard, "teacher_local", kind=type(wizard.teacher_page.picker.local))
    error = wizard.findChild(QLabel, "teacher_error")
    assert error.isVisible()
    assert "config.json" in error.text() and "not valid JSON" in error.text() and "Traceback" not in error.text()
    assert wizard.teacher_page.spec() is None and not wizard.button(NEXT).isEnabled()

    # a good folder is added as a card and chosen
    monkeypatch.setattr(pages_module, "open_folder", lambda *a, **k: str(DEMO / "teacher"))
    click(qtbot, wizard, "teacher_local", kind=type(wizard.teacher_page.picker.local))
    assert not error.isVisible()
    assert wizard.teacher_page.key() == str((DEMO / "teacher").resolve())
    assert wizard.button(NEXT).isEnabled()


# ---------------------------------------------------------------------------------------------------------------
# Data scan


def test_scan_counts_examples_and_tokens(qtbot, wizard):
    page = wizard.data_page
    train = DEMO / "train.jsonl"
    with qtbot.waitSignal(page.sig_scan_finished, timeout=15000):
        page.set_train_path(str(train))
    r = page.scan_result
    assert r is not None and r.examples == example_count(train) and r.tokens > 0
    assert not r.counted and "4 bytes" in r.note  # a catalog teacher has no local tokenizer
    assert page.progress.value() == page.progress.maximum()
    assert f"{r.examples:,} examples" in page.findChild(QLabel, "data_scan_result").text()
    assert page.data_values()["tokens"] == r.tokens


def _with_local_demo_teacher(wizard):
    """The demo's local teacher chosen (its tokenizer.json and chat template): -> the data page."""
    pytest.importorskip("tokenizers")
    wizard.teacher_page.picker.add_local(str(DEMO / "teacher"))
    wizard.teacher_page.refill()
    wizard.teacher_page.picker.select(str((DEMO / "teacher").resolve()))
    return wizard.data_page


def test_scan_uses_a_local_teachers_tokenizer(qtbot, wizard):
    page = _with_local_demo_teacher(wizard)
    with qtbot.waitSignal(page.sig_scan_finished, timeout=15000):
        page.set_train_path(str(DEMO / "train.jsonl"))
    r = page.scan_result
    assert r.counted and r.examples == example_count(DEMO / "train.jsonl")
    # the demo tokenizer is character-level: more tokens than the 4-bytes rule guesses
    assert r.tokens > r.text_bytes / 4
    # the planner counts the same data again as training reads it (engine/data_scan.py), and the page says so
    assert "Planning counts the tokens again as training reads them" in page.result.text()


def test_scan_counts_conversations_and_their_assistant_tokens(qtbot, wizard, tmp_path):
    page = _with_local_demo_teacher(wizard)
    with qtbot.waitSignal(page.sig_scan_finished, timeout=30000):
        page.set_train_path(str(DEMO / "chat-train.jsonl"))
    r = page.scan_result
    plain = example_count(DEMO / "train.jsonl")
    assert r.counted and r.conversations == r.examples == plain
    # the chat template renders the prompt, the answer and EOS: the answer and EOS are what is trained
    assert 0 < r.assistant_tokens < r.tokens
    text = page.findChild(QLabel, "data_scan_result").text()
    assert f"{plain:,} conversations" in text and "in assistant turns" in text and "chat template" in text
    page.reasoning.setCurrentIndex(page.reasoning.findData("strip"))
    assert page.data_values()["reasoning"] == "strip"
    wizard.show()
    wizard.setCurrentId(wizard.pageIds()[[wizard.page(i) for i in wizard.pageIds()].index(page)])
    qtbot.wait(50)
    result = page.findChild(QLabel, "data_scan_result")
    assert result.height() >= result.heightForWidth(result.width())  # the whole summary shows, not its first line
    shots = os.environ.get("DISTILL_SCREENSHOTS")
    if shots:
        wizard.grab().save(str(Path(shots) / "data-page-conversations.png"))


def test_choosing_another_file_cancels_the_running_scan(qtbot, wizard, tmp_path):
    big = tmp_path / "big.jsonl"
    row = json.dumps({"text": "word " * 200}) + "\n"
    big.write_text(row * 20_000, encoding="utf-8")
    small = tmp_path / "small.jsonl"
    small.write_text(row * 3, encoding="utf-8")
    page = wizard.data_page
    page.set_train_path(str(big))
    assert page.scanning()
    with qtbot.waitSignal(page.sig_scan_finished, timeout=15000):
        page.set_train_path(str(small))
    assert page.scan_result.path == str(small) and page.scan_result.examples == 3
    qtbot.wait(200)  # anything the cancelled scan still reports must be ignored
    assert page.scan_result.path == str(small)


def test_bad_data_line_is_reported_with_file_and_line(qtbot, wizard, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    page = wizard.data_page
    with qtbot.waitSignal(page.sig_scan_finished, timeout=15000):
        page.set_train_path(str(bad))
    error = page.findChild(QLabel, "data_error")
    assert page.scan_result is None
    assert error.isVisibleTo(page) and f"{bad}:2" in error.text() and "not valid JSON" in error.text()


# ---------------------------------------------------------------------------------------------------------------
# Review


def test_invalid_combination_keeps_finish_disabled(qtbot, wizard, tmp_path, screenshot):
    w = wizard
    teacher_id = choose_teacher(qtbot, w, "Phi-4")
    go_next(qtbot, w, "student_page")
    click(qtbot, w, "show_all", QCheckBox)
    click_item(qtbot, w.student_page.picker.list, model_id("Phi-4-mini"))
    go_next(qtbot, w, "method_page")
    go_next(qtbot, w, "data_page")
    click(qtbot, w, "data_use_tokens")
    w.data_page.prompts_path.setText(str(DEMO / "prompts.jsonl"))   # sequence-level KD needs them
    too_long = load_models()[teacher_id].max_context_tokens * 2
    w.data_page.seq_len.setValue(too_long)
    assert w.findChild(QLabel, "data_seq_len_error").isVisible()
    go_next(qtbot, w, "hardware_page")
    go_next(qtbot, w, "review_page")
    w.findChild(QLineEdit, "save_path").setText(str(tmp_path / "x.toml"))
    w.review_page.refresh()
    error = w.findChild(QLabel, "review_error")
    assert error.isVisible() and "data.seq_len" in error.text() and f"{too_long:,}" in error.text()
    assert not w.review_page.isComplete() and not w.button(FINISH).isEnabled()
    qtbot.wait(50)
    screenshot(w, "wizard_review_invalid")

    # fixing it on the data page enables Finish
    w.back()
    w.back()
    w.data_page.seq_len.setValue(4096)
    go_next(qtbot, w, "hardware_page")
    go_next(qtbot, w, "review_page")
    assert not error.isVisible() and w.button(FINISH).isEnabled()


# ---------------------------------------------------------------------------------------------------------------
# Editing a plan


def _open(qtbot, settings, plan_path: Path) -> PlanWizard:
    w = PlanWizard(settings, plan=load_plan(plan_path), plan_path=str(plan_path))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: not w.data_page.scanning(), timeout=15000)
    return w


def _walk_to_review(qtbot, w: PlanWizard) -> None:
    for page in ("student_page", "method_page", "data_page", "hardware_page", "review_page"):
        go_next(qtbot, w, page)


def test_edit_demo_plan_round_trips(qtbot, settings, tmp_path):
    source = DEMO / "plan.toml"
    original = load_plan(source)
    w = _open(qtbot, settings, source)
    assert w.teacher_page.key() == str((DEMO / original.teacher.model).resolve())
    assert w.student_page.key() == str((DEMO / original.student.model).resolve())
    assert w.student_page.init() == original.student.init
    assert w.method_page.kind() == original.method.kind
    assert w.method_page.temperature.value() == original.method.temperature
    assert w.data_page.path.text() == str(DEMO / original.data.train)
    assert w.data_page.seq_len.value() == original.data.seq_len
    assert w.hardware_page.local.isChecked() and w.hardware_page.accelerator.currentData() == "cpu"
    assert w.review_page.save_path.text() == str(source.resolve())
    _walk_to_review(qtbot, w)
    saved = finish(qtbot, w, tmp_path / "edited" / "demo.toml")

    plan = load_plan(saved)
    assert plan.name == original.name and plan.training == original.training
    for key in ("train", "eval", "prompts"):  # outside the new folder: absolute, to the same files
        value = getattr(plan.data, key)
        assert Path(value).is_absolute() and Path(value) == (DEMO / getattr(original.data, key)).resolve()
    assert Path(plan.teacher.model) == (DEMO / original.teacher.model).resolve()
    assert plan.method.model_dump() == original.method.model_dump()
    assert plan.adapter == original.adapter and plan.hardware == original.hardware
    assert plan.data.tokens is not None and plan.data.tokens >= 1_000  # the scan's count for planning
    check_plan(plan, base=saved.parent)


def test_edit_in_place_keeps_relative_paths(qtbot, settings, tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    for name in ("plan.toml", "train.jsonl", "eval.jsonl", "prompts.jsonl"):
        shutil.copy(DEMO / name, demo / name)
    for model in ("teacher", "student"):
        (demo / model).mkdir()
        for name in ("config.json", "tokenizer.json"):
            shutil.copy(DEMO / model / name, demo / model / name)
    w = _open(qtbot, settings, demo / "plan.toml")
    _walk_to_review(qtbot, w)
    w.findChild(QLineEdit, "review_description").setText("edited")
    qtbot.waitUntil(lambda: w.button(FINISH).isEnabled(), timeout=5000)
    with qtbot.waitSignal(w.sig_plan_saved, timeout=5000):
        qtbot.mouseClick(w.button(FINISH), Qt.MouseButton.LeftButton)
    plan = load_plan(demo / "plan.toml")
    original = load_plan(DEMO / "plan.toml")
    assert plan.description == "edited"
    assert (plan.teacher.model, plan.student.model) == (original.teacher.model, original.student.model)
    assert (plan.data.train, plan.data.eval, plan.data.prompts) == (
        original.data.train, original.data.eval, original.data.prompts)
    check_plan(plan, base=demo)


# ---------------------------------------------------------------------------------------------------------------
# Screenshots of every page (look at them: artifacts/screenshots/wizard_*.png)


def test_screenshots(qtbot, wizard, screenshot, tmp_path):
    w = wizard

    def shot(name: str):
        qtbot.wait(50)  # let pending layout requests run, as the event loop would before painting
        return screenshot(w, name)

    w.resize(w.minimumSize())
    choose_teacher(qtbot, w, "Gemma 3 27B")
    w.findChild(QLineEdit, "teacher_filter").clear()
    w.teacher_page.picker.select(model_id("Gemma 3 27B"))
    shots = {"teacher_page": shot("wizard_teacher")}
    go_next(qtbot, w, "student_page")
    click(qtbot, w, "show_all", QCheckBox)
    click_item(qtbot, w.student_page.picker.list, model_id("Gemma 3 4B"))
    shots["student_page"] = shot("wizard_student")
    go_next(qtbot, w, "method_page")
    shots["method_page"] = shot("wizard_method")
    go_next(qtbot, w, "data_page")
    with qtbot.waitSignal(w.data_page.sig_scan_finished, timeout=15000):
        w.data_page.set_train_path(str(DEMO / "train.jsonl"))
    shots["data_page"] = shot("wizard_data")
    go_next(qtbot, w, "hardware_page")
    click(qtbot, w, "budget_27h")
    shots["hardware_page"] = shot("wizard_hardware")
    go_next(qtbot, w, "review_page")
    w.findChild(QLineEdit, "save_path").setText(str(tmp_path / "shot.toml"))
    w.review_page.refresh()
    shots["review_page"] = shot("wizard_review")
    for page, path in shots.items():
        assert path.is_file() and path.stat().st_size > 10_000, page


def test_edit_plan_whose_model_folder_is_missing_says_so(qtbot, settings, tmp_path):
    moved = tmp_path / "plan.toml"
    shutil.copy(DEMO / "plan.toml", moved)  # its teacher/ and student/ folders did not come along
    w = PlanWizard(settings, plan=load_plan(moved), plan_path=str(moved))
    qtbot.addWidget(w)
    error = w.findChild(QLabel, "teacher_error")
    assert error.isVisibleTo(w.teacher_page) and error.text().startswith("teacher.model:")
    assert "teacher" in error.text() and w.teacher_page.spec() is None
    assert not w.teacher_page.isComplete()
    w.data_page.cancel_scan()


def test_the_data_page_chooses_eval_and_prompts_and_seq_kd_needs_prompts(qtbot, wizard, tmp_path):
    from distill_studio.engine.plan import loads_plan

    w = wizard
    page = w.data_page
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a b c"}\n' * 20)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "2+2=", "answer": "4"}\n')
    page.set_train_path(str(train))
    page.set_method("seq-kd")
    assert "needs prompts" in page.prompts_error.text() and not page.isComplete()
    page.eval_path.setText(str(tmp_path / "missing.jsonl"))
    assert "does not exist" in page.prompts_error.text()
    page.eval_path.setText(str(train))
    page.prompts_path.setText(str(prompts))
    assert page.prompts_error.text() == "" and page.isComplete()
    values = page.data_values()
    assert values["eval"] == str(train) and values["prompts"] == str(prompts)
    page.set_method("logit-kd")
    page.prompts_path.setText("")
    assert page.prompts_error.text() == "" and page.data_values()["prompts"] is None
    # an edited plan's eval and prompts come back into the fields
    demo = Path(__file__).resolve().parents[2] / "resources" / "demo"
    plan = loads_plan((demo / "plan.toml").read_text())
    page.load(plan.data.model_copy(update={"eval": str(demo / "eval.jsonl"), "prompts": str(demo / "prompts.jsonl")}))
    assert page.eval_path.text().endswith("eval.jsonl") and page.prompts_path.text().endswith("prompts.jsonl")


def test_the_hardware_page_plans_the_choices_so_far(qtbot, settings, screenshot):
    """Before saving, the hardware page shows the fastest and the cheapest option for the choices so far, and
    whether the budget can be met; it answers again when the budget changes."""
    w = _open(qtbot, settings, PLANS / "gemma3-27b-to-4b-3h.toml")
    for page in ("student_page", "method_page", "data_page", "hardware_page"):
        go_next(qtbot, w, page)
    hp = w.hardware_page
    qtbot.waitUntil(lambda: "Fastest" in hp.preview.text() and not hp.preview_stale, timeout=30_000)
    text = hp.preview.text()
    assert "Cheapest" in text and "Meets the budget" in text
    # every figure is the one at the plan's confidence, with its P10-P90 range, and the page says what both mean
    assert text.count("at P80") >= 3 and "8 runs in 10" in text and "P10–P90" in text
    assert re.search(r"<b>[\d.]+ (h|min)</b> at P80 \([\d.]+ (h|min)–[\d.]+ (h|min)\)", text), text
    assert re.search(r"<b>\$[\d,]+</b> at P80 \(\$[\d,]+–\$[\d,]+\)", text), text
    qtbot.wait(50)
    screenshot(w, "wizard_hardware_preview")
    hp.preset_buttons["budget_custom"].setChecked(True)
    # the old numbers are marked at once, not left looking current while the new plan is computed
    assert hp.preview_stale and "planned again" in hp.preview.text() and "Fastest" in hp.preview.text()
    qtbot.wait(50)
    screenshot(w, "wizard_hardware_preview_stale")
    hp.hours.setValue(0.05)                 # 3 minutes: no option is that fast
    qtbot.waitUntil(lambda: "cannot be met" in hp.preview.text(), timeout=30_000)
    assert not hp.preview_stale


def test_phi4_lists_its_own_family_first_and_greys_only_larger_models(qtbot, wizard, screenshot):
    w = wizard
    teacher = load_models()[choose_teacher(qtbot, w, "Phi-4")]
    go_next(qtbot, w, "student_page")
    lst = w.findChild(QListWidget, "student_list")
    mini = model_id("Phi-4-mini")

    def visible():
        return [lst.item(i) for i in range(lst.count()) if not lst.item(i).isHidden()]

    shown = visible()
    assert shown[0].data(ID_ROLE) == mini and not shown[0].data(GREY_ROLE)
    assert all(load_models()[i.data(ID_ROLE)].params < teacher.params for i in shown)
    count = w.findChild(QLabel, "student_count").text()
    assert "Phi-4-mini, its own family, first" in count and "Show all" in count
    qtbot.wait(50)
    screenshot(w, "wizard_student_phi4")
    click(qtbot, w, "show_all", QCheckBox)
    cards = visible()
    larger = [i for i, item in enumerate(cards) if "not smaller" in item.data(REASON_ROLE)]
    other = [i for i, item in enumerate(cards) if "different tokenizer" in item.data(REASON_ROLE)]
    assert larger and other and max(other) < min(larger), "larger models go below the ones seq-KD can use"
    assert all(cards[i].data(GREY_ROLE) for i in larger) and not any(cards[i].data(GREY_ROLE) for i in other)
    assert cards[0].data(ID_ROLE) == mini


def test_greyed_logit_kd_says_why_on_the_page(qtbot, wizard, screenshot):
    w = wizard
    choose_teacher(qtbot, w, "Phi-4")
    go_next(qtbot, w, "student_page")
    click_item(qtbot, w.student_page.picker.list, model_id("Phi-4-mini"))
    go_next(qtbot, w, "method_page")
    logit = w.findChild(QRadioButton, "method_logit-kd")
    why = w.findChild(QLabel, "method_logit-kd_hint")
    assert not logit.isEnabled() and why.isVisible()
    assert "Not available for this pair" in why.text() and "different tokenizers" in why.text()
    qtbot.wait(50)
    screenshot(w, "wizard_method_phi4_seqkd")
    # a pair that shares a tokenizer: the choice is back, with its usual explanation
    models = load_models()
    w.method_page.set_pair(models[model_id("Gemma 3 27B")], models[model_id("Gemma 3 4B")])
    assert logit.isEnabled() and "Not available" not in why.text() and "shared tokenizer" in why.text()


def test_seq_kd_with_a_token_count_needs_prompts_too(qtbot, wizard, tmp_path, screenshot):
    page = wizard.data_page
    page.use_tokens.setChecked(True)
    page.set_method("seq-kd")
    assert "needs prompts" in page.prompts_error.text() and not page.isComplete()
    page.prompts_path.setText(str(DEMO / "prompts.jsonl"))
    assert page.prompts_error.text() == "" and page.isComplete()


def test_hardware_page_words(qtbot, wizard, settings):
    """The deadline reads as the target the planner checks at the confidence; the region hint names the app's
    button, not a command; "East US" is taken; a CPU is not given GPU words; a cap keeps its cents."""
    hp = wizard.hardware_page
    hp.preset_buttons["budget_27h"].setChecked(True)
    text = hp.deadline_hint.text()
    assert "must finish" not in text and "target" in text and "within 27 hours at P80" in text
    assert "8 runs in 10" in text
    hp.confidence.setCurrentIndex(hp.confidence.findData(0.9))
    assert "at P90" in hp.deadline_hint.text() and "9 runs in 10" in hp.deadline_hint.text()
    hp.azure.setChecked(True)
    hp.region.setCurrentText("East US")
    note = hp.region_hint.text()
    assert "eastus" in note and "Refresh prices" in note and "distill " not in note and "`" not in note
    assert hp.hardware_values()["region"] == "eastus"
    hp.local.setChecked(True)
    hp.accelerator.setCurrentIndex(hp.accelerator.findData("cpu"))
    assert hp.gpus_label.text().strip() == "Processes:" and "one process" in hp.gpus_hint.text()
    assert "GPU" not in hp.gpus_hint.text()
    hp.usd_on.setChecked(True)
    hp.usd.setValue(0.2)
    values = hp.budget_values()
    assert values["usd"] == 0.2 and values["confidence"] == 0.9



@pytest.mark.parametrize("size", [(980, 700), None], ids=["980x700", "minimum"])
def test_screenshots_of_the_changed_states(qtbot, settings, screenshot, size):
    """Phi-4's students, the greyed method with its reason, seq-KD asking for prompts with a token count, and the
    demo's CPU plan on the hardware page, at the wizard's usual and its minimum size; nothing on them is cut off."""
    w = PlanWizard(settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.resize(*size) if size else w.resize(w.minimumSize())
    tag = f"{w.width()}x{w.height()}"

    def shot(name: str) -> None:
        qtbot.wait(50)
        page = w.currentPage()
        labels = [lab for lab in page.findChildren(QLabel) if lab.isVisible() and lab.wordWrap() and lab.text()]
        cut = [lab.text()[:50] for lab in labels if lab.height() < lab.heightForWidth(lab.width())]
        assert cut == [], (name, cut)
        screenshot(w, f"{name}_{tag}")

    choose_teacher(qtbot, w, "Phi-4")
    go_next(qtbot, w, "student_page")
    shot("wizard_phi4_student")
    click_item(qtbot, w.student_page.picker.list, model_id("Phi-4-mini"))
    go_next(qtbot, w, "method_page")
    shot("wizard_phi4_method")
    go_next(qtbot, w, "data_page")
    click(qtbot, w, "data_use_tokens")
    assert not w.button(NEXT).isEnabled()
    shot("wizard_phi4_data_needs_prompts")
    w.data_page.cancel_scan()

    demo = _open(qtbot, settings, DEMO / "plan.toml")
    demo.resize(*size) if size else demo.resize(demo.minimumSize())
    for page in ("student_page", "method_page", "data_page", "hardware_page"):
        go_next(qtbot, demo, page)
    hp = demo.hardware_page
    qtbot.waitUntil(lambda: "recommended" in hp.preview.text() and not hp.preview_stale, timeout=30_000)
    text = hp.preview.text()
    assert "this machine" in text and "GPU" not in text and "dedicated" not in text.lower()
    assert "no cost" in text and "$0" not in text
    assert hp.gpus_label.text().strip() == "Processes:"
    w, tag = demo, f"{demo.width()}x{demo.height()}"
    shot("wizard_demo_cpu_hardware")
    demo.data_page.cancel_scan()
