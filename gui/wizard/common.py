"""Pieces every wizard page uses: grey one-line hints beside controls, model cards, and the rules that say which
student suits which teacher.

The compatibility rules live here (not in a page) because the student page, the method page and the review page
must agree on them, and they must agree with ``engine.checks`` which has the final word when the plan is built.
"""
from __future__ import annotations

import re

from PySide6.QtCore import QModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import (QGridLayout, QLabel, QListWidget, QScrollArea, QStyle, QStyledItemDelegate,
                               QStyleOptionViewItem, QVBoxLayout, QWidget)

from ...engine.catalog.types import ModelSpec

ERROR_STYLE = "color: #c0392b;"
ID_ROLE = Qt.ItemDataRole.UserRole          # catalog id, or the absolute folder of a local model
REASON_ROLE = Qt.ItemDataRole.UserRole + 1  # why a student does not suit the teacher ("" when it does)
DETAILS_ROLE = Qt.ItemDataRole.UserRole + 2  # the card's second line
GREY_ROLE = Qt.ItemDataRole.UserRole + 3     # drawn greyed: a choice that makes little sense (its reason says why)


def hint(text: str = "", parent: QWidget | None = None) -> QLabel:
    """A grey, wrapping line that says in plain words what the control beside it does."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
    return label


def error_label(parent: QWidget | None = None) -> QLabel:
    """Red, wrapping, selectable (a user may want to copy the message), hidden while empty."""
    label = QLabel(parent)
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.hide()
    return label


def set_error(label: QLabel, text: str) -> None:
    label.setText(text)
    label.setVisible(bool(text))


def add_row(grid: QGridLayout, label: str, control: QWidget, hint_text: str, tip: str = "") -> QLabel:
    """Label | control | grey hint on one grid row; the hint also becomes the control's tooltip."""
    row = next_row(grid)
    name = QLabel(label)
    name.setBuddy(control)
    grid.addWidget(name, row, 0, Qt.AlignmentFlag.AlignVCenter)
    grid.addWidget(control, row, 1)
    h = hint(hint_text)
    grid.addWidget(h, row, 2)
    control.setToolTip(tip or hint_text)
    return h


def scrolled_body(page: QWidget, name: str) -> QVBoxLayout:
    """The layout a page puts its groups in, inside a scroll area: when the wizard is small the page scrolls
    rather than squeezing its wrapped hints into fewer lines than they need (cutting their last line)."""
    inner = QWidget()
    box = QVBoxLayout(inner)
    box.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setObjectName(name)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    outer = QVBoxLayout(page)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return box


def next_row(grid: QGridLayout) -> int:
    """The first free row (``rowCount`` is 1 for an empty grid, which would leave a blank row on top)."""
    return grid.rowCount() if grid.count() else 0


def form_grid() -> QGridLayout:
    grid = QGridLayout()
    grid.setHorizontalSpacing(14)
    grid.setVerticalSpacing(8)
    grid.setColumnStretch(2, 1)
    grid.setColumnMinimumWidth(0, 120)
    grid.setColumnMinimumWidth(1, 200)
    return grid


# ---------------------------------------------------------------------------------------------------------------
# Models


def billions(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 0.95e9 else f"{n / 1e6:.0f}M"


def model_details(spec: ModelSpec) -> str:
    """The second line of a model card: size, context, licence, tokenizer."""
    return (f"{billions(spec.params)} parameters · {spec.max_context_tokens:,} context · {spec.license} licence · "
            f"{spec.tokenizer_family} tokenizer")


def same_architecture(a: ModelSpec, b: ModelSpec) -> bool:
    """What ``check_plan`` demands for ``init = "from-teacher"``: same family and widths."""
    key = lambda m: (m.family, m.hidden_size, m.intermediate_size, m.num_attention_heads, m.num_kv_heads)  # noqa: E731
    return key(a) == key(b)


def student_problem(teacher: ModelSpec, student: ModelSpec) -> tuple[str, str]:
    """Why ``student`` does not suit ``teacher`` for logit KD, and what to do about it; ("", "") when it does.

    The second value is the method that still works ("seq-kd"), or "" when no method helps.
    """
    if student.params >= teacher.params or student.id == teacher.id:
        return (f"not smaller than the teacher ({billions(student.params)} vs {billions(teacher.params)}): "
                "distilling into it saves nothing; any method runs, but pick a smaller student", "")
    if student.tokenizer_family != teacher.tokenizer_family:
        return (f"different tokenizer ({student.tokenizer_family} vs {teacher.tokenizer_family}): logit KD cannot "
                "compare their token ids; sequence-level KD works", "seq-kd")
    return "", ""


def student_rank(teacher: ModelSpec, student: ModelSpec) -> tuple[int, int]:
    """Where a student is listed for ``teacher``: (tier, order within the tier), lowest first.

    Tier 0 suits every method; tier 1 is smaller but uses another tokenizer (sequence-level KD works), the teacher's
    own family first (Phi-4 -> Phi-4-mini), then by size; tier 2 is not smaller than the teacher (greyed, last)."""
    problem, works = student_problem(teacher, student)
    tier = 0 if not problem else 1 if works else 2
    return tier, 0 if student.family == teacher.family else 1


def slug(text: str) -> str:
    """A plan name from a model id: lower case, letters, digits, dots and dashes."""
    text = text.split(":", 1)[-1]
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "model"


class ModelCardDelegate(QStyledItemDelegate):
    """Draws a model as a card: the name in bold, the details in grey, and, for a student that does not suit the
    teacher for every method, the reason on a third line. A student that makes little sense (``GREY_ROLE``: not
    smaller than the teacher) stays selectable but is drawn greyed so it reads as the exception; one that works
    with sequence-level KD keeps its name in the normal colour."""

    PAD = 6

    def _fonts(self, option: QStyleOptionViewItem) -> tuple[QFont, QFont]:
        bold = QFont(option.font)
        bold.setBold(True)
        return bold, QFont(option.font)

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        bold, plain = self._fonts(option)
        lines = 3 if index.data(REASON_ROLE) else 2
        h = QFontMetrics(bold).height() + (lines - 1) * QFontMetrics(plain).height() + 2 * self.PAD + 2
        return QSize(200, h)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        style = opt.widget.style() if opt.widget else None
        if style:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        pal = opt.palette
        reason = index.data(REASON_ROLE) or ""
        main = pal.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        grey = main if selected else pal.color(QPalette.ColorRole.PlaceholderText)
        name_colour = grey if index.data(GREY_ROLE) and not selected else main
        bold, plain = self._fonts(opt)
        r = opt.rect.adjusted(self.PAD + 4, self.PAD, -self.PAD, -self.PAD)
        painter.save()
        y = r.top()
        for font, colour, text in ((bold, name_colour, index.data(Qt.ItemDataRole.DisplayRole) or ""),
                                   (plain, grey, index.data(DETAILS_ROLE) or ""),
                                   (plain, grey, reason)):
            if not text:
                continue
            fm = QFontMetrics(font)
            painter.setFont(font)
            painter.setPen(colour)
            line = QRect(r.left(), y, r.width(), fm.height())
            painter.drawText(line, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             fm.elidedText(text, Qt.TextElideMode.ElideRight, r.width()))
            y += fm.height()
        painter.restore()


def card_list(object_name: str) -> QListWidget:
    """A list of model cards; the full text of each card is in its tooltip, so nothing elided is lost."""
    lst = QListWidget()
    lst.setObjectName(object_name)
    lst.setItemDelegate(ModelCardDelegate(lst))
    lst.setUniformItemSizes(False)
    lst.setAlternatingRowColors(True)
    lst.setVerticalScrollMode(QListWidget.ScrollMode.ScrollPerPixel)
    return lst
