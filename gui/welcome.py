"""What the app shows before any plan is open: start with the demo, a new plan or a recent one, instead of an empty
chart with invented axes."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget


class WelcomeView(QWidget):
    sig_demo = Signal()
    sig_new = Signal()
    sig_open = Signal()
    sig_recent = Signal(str)
    """A recent plan's path."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("welcome")
        title = QLabel("<h2>Distill Studio</h2>Plan a distillation run: which student, which method, which "
                       "hardware, how long and how much, before anything is spent.")
        title.setWordWrap(True)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.demo_button = QPushButton("Open the demo plan (trains here in a minute)")
        self.demo_button.setObjectName("welcome_demo")
        self.new_button = QPushButton("New plan…")
        self.new_button.setObjectName("welcome_new")
        self.open_button = QPushButton("Open a plan file…")
        self.open_button.setObjectName("welcome_open")
        self.demo_button.clicked.connect(self.sig_demo)
        self.new_button.clicked.connect(self.sig_new)
        self.open_button.clicked.connect(self.sig_open)
        self.recent_label = QLabel("Recent plans")
        self.recent_box = QVBoxLayout()
        column = QVBoxLayout()
        column.setSpacing(10)
        column.addWidget(title)
        for b in (self.demo_button, self.new_button, self.open_button):
            b.setMinimumWidth(380)
            column.addWidget(b, 0, Qt.AlignmentFlag.AlignHCenter)
        column.addSpacing(12)
        column.addWidget(self.recent_label, 0, Qt.AlignmentFlag.AlignHCenter)
        column.addLayout(self.recent_box)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(column)
        outer.addStretch(2)
        self.recent_buttons: list[QPushButton] = []

    def set_recent(self, paths: list[str]) -> None:
        for b in self.recent_buttons:
            b.deleteLater()
        self.recent_buttons = []
        existing = [p for p in paths if Path(p).is_file()][:5]
        self.recent_label.setVisible(bool(existing))
        for p in existing:
            b = QPushButton(f"{Path(p).stem}  —  {Path(p).parent}")
            b.setFlat(True)
            b.setToolTip(p)
            b.clicked.connect(lambda _=False, path=p: self.sig_recent.emit(path))
            self.recent_box.addWidget(b, 0, Qt.AlignmentFlag.AlignHCenter)
            self.recent_buttons.append(b)
