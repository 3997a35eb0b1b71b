"""The About box: versions and folders, the first things asked for in a bug report.

Versions of the training libraries are read from package metadata, never by importing them: importing torch takes
seconds and hundreds of MB, which an About box must not cost.
"""
from __future__ import annotations

import html
import platform
import sys
from importlib import metadata

from PySide6.QtCore import Qt

from PySide6.QtWidgets import QMessageBox, QWidget

from ..engine.version import LIBRARIES as TRAINING_PACKAGES  # what `distill --version` prints too
from ..engine.version import VERSION

APP_NAME = "Distill Studio"


def _dist_version(*names: str, missing: str = "not installed") -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return missing


def _qt_versions() -> tuple[str, str]:
    import PySide6
    from PySide6.QtCore import qVersion

    return qVersion(), PySide6.__version__


def about_rows() -> list[tuple[str, str]]:
    """(label, value) pairs, in display order."""
    from ..engine.catalog.prices import data_dir
    from .settings.model import config_dir

    qt, pyside = _qt_versions()
    rows = [
        (APP_NAME, VERSION + (" (packaged)" if getattr(sys, "frozen", False) else "")),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()}, {platform.system()})"),
        ("Qt", qt),
        ("PySide6", pyside),
        ("pyqtgraph", _dist_version("pyqtgraph")),
    ]
    rows += [(name, _dist_version(name)) for name in TRAINING_PACKAGES]
    rows += [("Data folder", str(data_dir())), ("Config folder", str(config_dir()))]
    return rows


def about_text() -> str:
    """Plain text, one "label: value" a line, easy to paste into a bug report."""
    return "\n".join(f"{label}: {value}" for label, value in about_rows())


def _about_html() -> str:
    rows = about_rows()
    (_, version), rest = rows[0], rows[1:]
    cells = "".join(f"<tr><td style='padding-right:12px'><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                    for k, v in rest)
    return (f"<h3>{APP_NAME} {html.escape(version)}</h3>"
            "<p>Plan, launch and watch knowledge-distillation runs of large language models.</p>"
            f"<table>{cells}</table>")


def show_about(parent: QWidget | None) -> QMessageBox:
    """Show the About box without blocking (``open``, not ``exec``), so a watched run keeps updating."""
    box = QMessageBox(parent)
    box.setObjectName("about_box")
    box.setWindowTitle(f"About {APP_NAME}")
    box.setIcon(QMessageBox.Icon.Information)
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(_about_html())
    # Selectable, so versions and paths can be copied into a bug report.
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box
