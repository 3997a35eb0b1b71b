"""File dialogs that remember their folder (per purpose, in the settings) and message boxes that never show a
traceback."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from .settings import Settings

PLAN_FILTER = "Distill plans (*.toml);;All files (*)"
DATA_FILTER = "Data (*.jsonl *.txt *.parquet);;All files (*)"


def open_file(parent: QWidget | None, settings: Settings, key: str, caption: str, filter: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, caption, settings.last_dir(key), filter)
    if path:
        settings.remember_dir(key, path)
    return path or None


def save_file(parent: QWidget | None, settings: Settings, key: str, caption: str, filter: str,
              suggested_name: str = "") -> str | None:
    start = settings.last_dir(key)
    if suggested_name:
        start = f"{start}/{suggested_name}"
    path, _ = QFileDialog.getSaveFileName(parent, caption, start, filter)
    if path:
        settings.remember_dir(key, path)
    return path or None


def open_folder(parent: QWidget | None, settings: Settings, key: str, caption: str) -> str | None:
    path = QFileDialog.getExistingDirectory(parent, caption, settings.last_dir(key))
    if path:
        settings.remember_dir(key, path)
    return path or None


def show_error(parent: QWidget | None, title: str, message: str, what_next: str = "") -> QMessageBox:
    """A problem the user can act on: what went wrong, then what to do. Window-modal and non-blocking (``open``,
    not ``exec``), so background work and a watched run carry on while it is shown."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    if what_next:
        box.setInformativeText(what_next)
    box.setObjectName("error_box")
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box
