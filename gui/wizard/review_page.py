"""Step 6: name the plan, see it as TOML, and save it. Finish stays disabled until the plan validates.

Validation is what the CLI does (pydantic, then ``engine.checks.check_plan``), run on a short timer after each change
while this page is shown, so typing stays smooth and a slow local model folder is read once per pause, not per key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget,
                               QWizardPage)

from ..dialogs import PLAN_FILTER, save_file
from ..settings import Settings
from .common import add_row, error_label, form_grid, hint, set_error

REFRESH_MS = 150


class Review:
    """What validating the wizard's values gave: the TOML to show, the first problem (blocks Finish), notes."""

    def __init__(self, toml: str, error: str = "", notes: list[str] | None = None) -> None:
        self.toml, self.error, self.notes = toml, error, notes or []


class ReviewPage(QWizardPage):
    def __init__(self, settings: Settings, review: Callable[[], Review], save: Callable[[], str],
                 parent: QWidget | None = None) -> None:
        """``review`` validates the wizard's current values; ``save`` writes the plan and returns "" or a problem."""
        super().__init__(parent)
        self.setObjectName("review_page")
        self.setTitle("Review and save")
        self.setSubTitle("Check the plan, give it a name and choose where to save it. Finish saves it.")
        self.setFinalPage(True)
        self.settings = settings
        self._review, self._save = review, save
        self._valid = False
        self.name_edited = False          # the user typed a name: stop suggesting one
        self.path_edited = False          # the user chose a path: stop deriving it from the name

        grid = form_grid()
        self.name = QLineEdit()
        self.name.setObjectName("review_name")
        self.name.setMaxLength(120)
        add_row(grid, "&Name:", self.name, "Shown in the planner and in run folders.")
        self.description = QLineEdit()
        self.description.setObjectName("review_description")
        self.description.setPlaceholderText("optional")
        add_row(grid, "&Description:", self.description, "One line about what this run is for.")
        self.save_path = QLineEdit()
        self.save_path.setObjectName("save_path")
        self.browse = QPushButton("Browse…")
        self.browse.setObjectName("save_browse")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.save_path, 1)
        row.addWidget(self.browse)
        holder = QWidget()
        holder.setLayout(row)
        self.save_hint = add_row(grid, "&Save to:", holder, "")
        grid.setColumnStretch(1, 3)
        grid.setColumnStretch(2, 2)

        self.error = error_label()
        self.error.setObjectName("review_error")
        self.ok = QLabel()
        self.ok.setObjectName("review_ok")
        self.ok.setWordWrap(True)
        self.notes = hint()
        self.notes.setObjectName("review_notes")
        self.notes.setForegroundRole(self.ok.foregroundRole())  # notes are facts to read, not grey asides
        self.toml = QPlainTextEdit()
        self.toml.setObjectName("review_toml")
        self.toml.setReadOnly(True)
        self.toml.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.toml.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.toml.setToolTip("The plan file as it will be saved")
        self.toml.setTabChangesFocus(True)

        box = QVBoxLayout(self)
        box.addLayout(grid)
        box.addWidget(self.error)
        box.addWidget(self.ok)
        box.addWidget(self.notes)
        box.addWidget(self.toml, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self.name.textEdited.connect(self._name_typed)
        self.name.textChanged.connect(self._name_changed)
        self.description.textChanged.connect(lambda *_: self.schedule())
        self.save_path.textEdited.connect(self._path_typed)
        self.save_path.textChanged.connect(lambda *_: self.schedule())
        self.browse.clicked.connect(self._browse)

    # ---- name and path
    def suggest_name(self, name: str) -> None:
        if not self.name_edited and name:
            self.name.setText(name)

    def _name_typed(self, *_: object) -> None:
        self.name_edited = True

    def _name_changed(self, text: str) -> None:
        if not self.path_edited:
            stem = text.strip() or "plan"
            self.save_path.setText(str(Path(self.settings.last_dir("plans")) / f"{stem}.toml"))
        self.schedule()

    def _path_typed(self, *_: object) -> None:
        self.path_edited = True

    def set_save_path(self, path: str) -> None:
        self.path_edited = True
        self.save_path.setText(path)

    def _browse(self) -> None:
        stem = self.name.text().strip() or "plan"
        path = save_file(self, self.settings, "plans", "Save the plan as", PLAN_FILTER, f"{stem}.toml")
        if path:
            if not path.lower().endswith(".toml"):
                path += ".toml"
            self.set_save_path(path)

    def path(self) -> Path | None:
        text = self.save_path.text().strip()
        return Path(text).expanduser() if text else None

    # ---- validation
    def schedule(self) -> None:
        wizard = self.wizard()
        if wizard is not None and wizard.currentPage() is self:
            self._timer.start()

    def initializePage(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self._timer.stop()
        r = self._review()
        if self.toml.toPlainText() != r.toml:
            bar = self.toml.verticalScrollBar().value()
            self.toml.setPlainText(r.toml)
            self.toml.verticalScrollBar().setValue(bar)
        set_error(self.error, r.error)
        self.ok.setText("" if r.error else "✓ The plan is valid. Finish saves it.")
        self.ok.setVisible(not r.error)
        self.notes.setText("\n".join(f"• {n}" for n in r.notes))
        self.notes.setVisible(bool(r.notes))
        self.save_hint.setText(self._path_hint())
        valid = not r.error
        if valid != self._valid:
            self._valid = valid
            self.completeChanged.emit()

    def _path_hint(self) -> str:
        p = self.path()
        if p is None:
            return "Choose where the plan file goes."
        if p.is_dir():
            return "This is a folder; add a file name ending in .toml."
        if p.exists():
            return "A file of this name exists and will be replaced."
        if not p.parent.exists():
            return "The folder does not exist yet and will be created."
        return "Paths in the plan are written relative to this file's folder when they lie inside it."

    def isComplete(self) -> bool:
        return self._valid

    def validatePage(self) -> bool:
        self.refresh()
        if not self._valid:
            return False
        problem = self._save()
        set_error(self.error, problem)
        if problem:
            self.ok.hide()
        return not problem
