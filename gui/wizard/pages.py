"""The teacher and student pages: catalog models as cards, a filter, and local model folders.

A model is identified by a *key*: its catalog id, or the absolute path of a local folder holding config.json. The
wizard writes the key into the plan (relative to the plan's folder where it can), so what the user picked is what
``check_plan`` resolves later.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QHBoxLayout, QLabel, QLineEdit,
                               QListWidgetItem, QPushButton, QRadioButton, QVBoxLayout, QWidget, QWizardPage)

from ...engine.catalog.models import load_models, model_from_hf_config
from ...engine.catalog.types import ModelSpec
from ...engine.errors import CatalogError
from ..dialogs import open_folder
from ..settings import Settings
from .common import (DETAILS_ROLE, GREY_ROLE, ID_ROLE, REASON_ROLE, add_row, card_list, error_label, form_grid, hint,
                     model_details, same_architecture, set_error, student_problem, student_rank)


def read_local_model(folder: str) -> tuple[ModelSpec | None, str]:
    """A local model folder's spec, or a message naming the file and what is wrong (never a traceback)."""
    try:
        return model_from_hf_config(folder), ""
    except CatalogError as exc:
        return None, f"Cannot use {folder} as a model: {exc}"
    except (OSError, ValueError) as exc:  # a path the OS refuses (too long, NUL byte)
        return None, f"Cannot use {folder} as a model: {exc}"


class ModelPicker(QWidget):
    """Filter box, model cards, and a "Local model folder…" button. Knows nothing about teachers or students;
    the page decides which models it lists and why some are greyed."""

    sig_selected = Signal()
    sig_local_added = Signal(str)
    """A local folder was read (its key); the page lists it and selects it."""

    def __init__(self, settings: Settings, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings, self.role = settings, role
        self.specs: dict[str, ModelSpec] = {}     # key -> spec, catalog and local alike
        self._show: set[str] = set()              # keys the page lists (the filter narrows them further)
        self.local_keys: list[str] = []           # local folders added, newest first
        self.filter = QLineEdit()
        self.filter.setObjectName(f"{role}_filter")
        self.filter.setPlaceholderText("Filter by name, family, licence or tokenizer…")
        self.filter.setClearButtonEnabled(True)
        self.filter.setToolTip("Show only models whose name or details contain this text")
        self.list = card_list(f"{role}_list")
        self.list.setToolTip("")
        self.local = QPushButton("Local model folder…")
        self.local.setObjectName(f"{role}_local")
        self.local.setToolTip("Use a model folder on this machine: its config.json gives the architecture")
        self.error = error_label()
        self.error.setObjectName(f"{role}_error")

        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.local)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(top)
        box.addWidget(self.list, 1)
        box.addWidget(self.error)

        for spec in load_models().values():
            self.specs[spec.id] = spec
        self.filter.textChanged.connect(self._apply_filter)
        self.list.currentItemChanged.connect(lambda *_: self.sig_selected.emit())
        self.local.clicked.connect(self._browse)
        self.setTabOrder(self.filter, self.local)
        self.setTabOrder(self.local, self.list)

    # ---- entries
    def fill(self, keys: list[str], reasons: dict[str, str], show: set[str], greyed: set[str] = frozenset()) -> None:
        """List ``keys`` in order; ``reasons`` says why an entry does not suit every method, ``greyed`` draws it
        greyed; only keys in ``show`` are visible."""
        current = self.current_key()
        self._show = set(show)
        self.list.blockSignals(True)
        self.list.clear()
        for key in keys:
            spec = self.specs[key]
            local = key in self.local_keys
            item = QListWidgetItem(f"{spec.name}  (local folder)" if local else spec.name)
            item.setData(ID_ROLE, key)
            details = model_details(spec)
            item.setData(DETAILS_ROLE, details)
            reason = reasons.get(key, "")
            item.setData(REASON_ROLE, reason)
            item.setData(GREY_ROLE, key in greyed)
            where = key if local else (spec.hub_id or spec.id)
            lines = (f"{spec.name} — {where}", details, reason and f"Note: {reason}")
            item.setToolTip("\n".join(t for t in lines if t))
            self.list.addItem(item)
            if key == current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self._apply_filter()
        if self.current_key() != current:
            self.sig_selected.emit()

    def set_shown(self, show: set[str]) -> None:
        """Change which keys are listed without rebuilding the cards (keeps scroll position and selection)."""
        self._show = set(show)
        self._apply_filter()

    def _apply_filter(self) -> None:
        words = self.filter.text().lower().split()
        for i in range(self.list.count()):
            item = self.list.item(i)
            key = item.data(ID_ROLE)
            text = " ".join(str(item.data(r) or "") for r in (Qt.ItemDataRole.DisplayRole, ID_ROLE, DETAILS_ROLE))
            text = f"{text} {self.specs[key].hub_id}".lower()
            item.setHidden(key not in self._show or not all(w in text for w in words))

    # ---- selection
    def current_key(self) -> str | None:
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item is not None else None

    def current_spec(self) -> ModelSpec | None:
        key = self.current_key()
        return self.specs.get(key) if key else None

    def select(self, key: str) -> bool:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(ID_ROLE) == key:
                self.list.setCurrentItem(item)
                self.list.scrollToItem(item)
                return True
        return False

    # ---- local folders
    def add_local(self, folder: str) -> str | None:
        """Read ``folder``'s config.json; its key (the absolute folder), or None with the error shown."""
        spec, message = read_local_model(folder)
        set_error(self.error, message)
        if spec is None:
            return None
        key = str(Path(folder).expanduser().resolve())
        self.specs[key] = spec
        if key in self.local_keys:
            self.local_keys.remove(key)
        self.local_keys.insert(0, key)
        return key

    def _browse(self) -> None:
        folder = open_folder(self, self.settings, "models", f"Choose the {self.role}'s model folder (with config.json)")
        if folder:
            key = self.add_local(folder)
            if key:
                self.sig_local_added.emit(key)


class _ModelChoice:
    """What the teacher and student pages share: the model chosen in ``self.picker``, and the plan's own spelling
    of it kept when editing a plan whose model the user did not change."""

    picker: ModelPicker
    _original: tuple[str, str] | None = None  # (key, the plan's own spelling) when editing

    def spec(self) -> ModelSpec | None:
        return self.picker.current_spec()

    def key(self) -> str | None:
        return self.picker.current_key()

    def plan_value(self) -> str | None:
        """What goes into the plan's model field: the plan's own spelling when the user kept its model, else the key."""
        key = self.key()
        if self._original and key == self._original[0]:
            return self._original[1]
        return key

    def set_original(self, key: str, spelling: str) -> None:
        self._original = (key, spelling)


class TeacherPage(_ModelChoice, QWizardPage):
    """Step 1: the teacher, and how its weights are held in memory."""

    sig_changed = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("teacher_page")
        self.setTitle("Teacher")
        self.setSubTitle("The large model whose behaviour the student learns. Pick one from the catalog, "
                         "or a model folder on this machine.")
        self.picker = ModelPicker(settings, "teacher", self)
        self.precision = QComboBox()
        self.precision.setObjectName("teacher_precision")
        for value, text in (("bf16", "bf16 (as trained)"), ("int8", "int8 (half the memory)"),
                            ("int4", "int4 (a quarter of the memory)")):
            self.precision.addItem(text, value)
        grid = form_grid()
        add_row(grid, "Teacher &weights:", self.precision,
                "How the teacher is held in memory. Quantised weights fit on fewer GPUs; its answers get "
                "slightly worse.")
        box = QVBoxLayout(self)
        box.addWidget(self.picker, 1)
        box.addLayout(grid)
        self._original: tuple[str, str] | None = None  # (key, the plan's own spelling) when editing
        self.refill()
        self.picker.sig_selected.connect(self._selected)
        self.picker.sig_local_added.connect(self._local_added)
        self.precision.currentIndexChanged.connect(lambda *_: self.sig_changed.emit())

    def refill(self) -> None:
        keys = self.picker.local_keys + sorted(load_models(), key=lambda k: -load_models()[k].params)
        self.picker.fill(keys, {}, set(keys))

    def _local_added(self, key: str) -> None:
        self.refill()
        self.select(key)

    def select(self, key: str) -> bool:
        return self.picker.select(key)

    def _selected(self) -> None:
        self.completeChanged.emit()
        self.sig_changed.emit()

    def isComplete(self) -> bool:
        return self.picker.current_spec() is not None



class StudentPage(_ModelChoice, QWizardPage):
    """Step 2: the student. Only models that suit the teacher for logit KD are listed unless "Show all" is ticked;
    the others are greyed with the reason, and choosing one switches the method to one that works."""

    sig_changed = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("student_page")
        self.setTitle("Student")
        self.setSubTitle("The smaller model that learns from the teacher. Listed first: models smaller than the "
                         "teacher that share its tokenizer, so every method works.")
        self.teacher: ModelSpec | None = None
        self.reasons: dict[str, str] = {}
        self._keys: list[str] = []
        self._good: list[str] = []
        self._seq_kd: list[str] = []      # smaller, another tokenizer: sequence-level KD works
        self.picker = ModelPicker(settings, "student", self)
        self.show_all = QCheckBox("Show all models")
        self.show_all.setObjectName("show_all")
        self.show_all.setToolTip("Also list models that are larger than the teacher or use another tokenizer")
        self.count_hint = hint()
        self.count_hint.setObjectName("student_count")
        self.method_note = QLabel()
        self.method_note.setObjectName("student_method_note")
        self.method_note.setWordWrap(True)
        self.method_note.setStyleSheet("font-weight: bold;")
        self.method_note.hide()

        self.init_pretrained = QRadioButton("Pretrained weights")
        self.init_pretrained.setObjectName("student_init_pretrained")
        self.init_pretrained.setChecked(True)
        self.init_from_teacher = QRadioButton("Copy layers from the teacher")
        self.init_from_teacher.setObjectName("student_init_from_teacher")
        self.init_group = QButtonGroup(self)
        self.init_group.addButton(self.init_pretrained)
        self.init_group.addButton(self.init_from_teacher)
        self.init_hint = hint()

        row = QHBoxLayout()
        row.addWidget(self.show_all)
        row.addWidget(self.count_hint, 1)
        init_row = QHBoxLayout()
        init_row.addWidget(QLabel("Start from:"))
        init_row.addWidget(self.init_pretrained)
        init_row.addWidget(self.init_from_teacher)
        init_row.addStretch(1)
        box = QVBoxLayout(self)
        box.addWidget(self.picker, 1)
        box.addLayout(row)
        box.addWidget(self.method_note)
        box.addLayout(init_row)
        box.addWidget(self.init_hint)

        self.picker.sig_selected.connect(self._selected)
        self.picker.sig_local_added.connect(self._local_added)
        self.show_all.toggled.connect(self._show_all_toggled)
        self.init_group.buttonToggled.connect(lambda *_: self.sig_changed.emit())

    # ---- listing
    def set_teacher(self, teacher: ModelSpec | None) -> None:
        self.teacher = teacher
        self.refill()

    def refill(self) -> None:
        specs = self.picker.specs
        keys = self.picker.local_keys + sorted(load_models(), key=lambda k: -load_models()[k].params)
        self.reasons, rank = {}, {k: (0, 0) for k in keys}
        if self.teacher is not None:
            self.reasons = {k: student_problem(self.teacher, specs[k])[0] for k in keys}
            rank = {k: student_rank(self.teacher, specs[k]) for k in keys}
        keys = sorted(keys, key=lambda k: rank[k])        # stable: largest first within a tier
        self._keys = keys
        self._good = [k for k in keys if rank[k][0] == 0]
        self._seq_kd = [k for k in keys if rank[k][0] == 1]
        greyed = {k for k in keys if rank[k][0] == 2}
        self.picker.fill(keys, self.reasons, self._shown_keys(), greyed)
        self._update_count()

    def _show_all_toggled(self) -> None:
        self.picker.set_shown(self._shown_keys())
        self._update_count()

    def _local_added(self, key: str) -> None:
        self.refill()
        self.select(key)

    def _update_count(self) -> None:
        name = self.teacher.name if self.teacher else "the teacher"
        good, seq = len(self._good), len(self._seq_kd)
        hidden = len(self._keys) - len(self._shown_keys() & set(self._keys))
        if good:
            text = f"{good} models suit {name} for every method"
            text += f"; {seq} more work with sequence-level KD only" if seq else ""
        elif seq:
            first = self.picker.specs[self._seq_kd[0]]
            same = self.teacher is not None and first.family == self.teacher.family
            text = (f"No smaller model shares {name}'s tokenizer, so these work with sequence-level KD (the teacher "
                    f"writes answers, the student learns the text)" + (f"; {first.name}, its own family, first" if
                                                                       same else ""))
        else:
            text = f"No model is smaller than {name}; add a local model folder"
        if self.show_all.isChecked():
            text += ". Greyed: not smaller than the teacher."
        elif hidden:
            text += f". {hidden} more under “Show all”."
        else:
            text += "."
        self.count_hint.setText(text)

    def _shown_keys(self) -> set[str]:
        """Every model with "Show all", else the suitable ones (those that work with sequence-level KD too when none
        suits every method), and the current choice, never hidden under the user."""
        if self.show_all.isChecked():
            return set(self._keys)
        current = self.picker.current_key()
        listed = set(self._good) if self._good else set(self._seq_kd)
        return listed | ({current} if current else set())

    def _selected(self) -> None:
        self._update_init()
        self.completeChanged.emit()
        self.sig_changed.emit()

    def _update_init(self) -> None:
        s, t = self.spec(), self.teacher
        ok = bool(s and t and same_architecture(t, s))
        self.init_from_teacher.setEnabled(ok)
        if not ok and self.init_from_teacher.isChecked():
            self.init_pretrained.setChecked(True)
        if ok:
            text = ("Copying every k-th teacher layer gives the student a head start; it works here because both "
                    "models have the same architecture and widths.")
        else:
            text = ("Copying teacher layers needs the same architecture and widths as the teacher"
                    f"{' (' + s.name + ' differs)' if s and t else ''}; the student starts from its own weights.")
        self.init_hint.setText(text)
        self.init_from_teacher.setToolTip(text)

    def set_method_note(self, text: str) -> None:
        self.method_note.setText(text)
        self.method_note.setVisible(bool(text))

    # ---- values
    def isComplete(self) -> bool:
        return self.picker.current_spec() is not None

    def select(self, key: str) -> bool:
        """Choose ``key``; a model not listed without "Show all" is revealed by ticking it."""
        if key not in self._shown_keys() and key in self._keys and not self.show_all.isChecked():
            self.show_all.setChecked(True)
        return self.picker.select(key)

    def reason(self) -> str:
        key = self.key()
        return self.reasons.get(key, "") if key else ""

    def init(self) -> str:
        b = self.init_from_teacher
        return "from-teacher" if b.isChecked() and b.isEnabled() else "pretrained"

    def set_init(self, value: str) -> None:
        self._update_init()
        (self.init_from_teacher if value == "from-teacher" else self.init_pretrained).setChecked(True)

