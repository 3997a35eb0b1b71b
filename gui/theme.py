"""Light, dark or the system's colour scheme, for the widgets and for pyqtgraph's plots.

Fusion is used everywhere because it draws the same on every OS and honours a palette fully (the native Windows
and macOS styles ignore parts of it). Qt 6.8+ can be asked for a colour scheme (``QStyleHints.setColorScheme``);
where the platform does not honour that (older Qt, the offscreen and some Linux platforms) an explicit palette is
set instead, so "dark" always means dark.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")

_R = QPalette.ColorRole
_G = QPalette.ColorGroup


def _palette(dark: bool) -> QPalette:
    """A complete Fusion-like palette; every role is set so nothing is left light on dark or the reverse."""
    if dark:
        window, base, alt, text, button = "#2b2b2b", "#1e1e1e", "#262626", "#e6e6e6", "#353535"
        highlight, link, disabled, tip = "#2f6fba", "#6cb4ff", "#7f7f7f", "#3a3a3a"
    else:
        window, base, alt, text, button = "#efefef", "#ffffff", "#f5f5f5", "#1a1a1a", "#e8e8e8"
        highlight, link, disabled, tip = "#3072c4", "#0b57d0", "#9a9a9a", "#ffffdc"
    p = QPalette()
    for role, colour in (
        (_R.Window, window), (_R.WindowText, text), (_R.Base, base), (_R.AlternateBase, alt),
        (_R.Text, text), (_R.Button, button), (_R.ButtonText, text), (_R.BrightText, "#ff5555"),
        (_R.Highlight, highlight), (_R.HighlightedText, "#ffffff"), (_R.Link, link), (_R.LinkVisited, link),
        (_R.ToolTipBase, tip), (_R.ToolTipText, text), (_R.PlaceholderText, disabled),
    ):
        p.setColor(role, QColor(colour))
    for role in (_R.WindowText, _R.Text, _R.ButtonText, _R.HighlightedText):
        p.setColor(_G.Disabled, role, QColor(disabled))
    p.setColor(_G.Disabled, _R.Highlight, QColor("#5a5a5a" if dark else "#c8c8c8"))
    # Fusion derives bevels and frames from these; set them so they match the scheme.
    p.setColor(_R.Light, QColor(button).lighter(150))
    p.setColor(_R.Midlight, QColor(button).lighter(120))
    p.setColor(_R.Mid, QColor(button).darker(130))
    p.setColor(_R.Dark, QColor(button).darker(160))
    p.setColor(_R.Shadow, QColor("#000000"))
    return p


def _request_scheme(app: QApplication, theme: str) -> bool:
    """Ask Qt for the scheme; True when the platform honoured it (so its own palette is the right one)."""
    hints = app.styleHints()
    if not hasattr(hints, "setColorScheme"):  # Qt < 6.8
        return False
    wanted = {"system": Qt.ColorScheme.Unknown, "light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}[theme]
    hints.setColorScheme(wanted)
    if theme == "system":
        return True
    return hints.colorScheme() == wanted


def apply_theme(app: QApplication, theme: str) -> None:
    """Apply "system", "light" or "dark" to the whole app and to plots created from now on.

    Existing pyqtgraph plots keep their colours (pyqtgraph reads its config when a plot is made); windows that
    show plots should rebuild or recolour them when the theme changes.
    """
    if theme not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {theme!r}")
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    honoured = _request_scheme(app, theme)
    if honoured or theme == "system":
        # An empty palette resolves to the style's and platform's own, which now follows the requested scheme
        # (this also undoes an explicit palette set by an earlier call).
        app.setPalette(QPalette())
    else:
        app.setPalette(_palette(dark=(theme == "dark")))
    _apply_plot_colours(app)


def is_dark(app: QApplication) -> bool:
    """Judged from the palette actually in use, which is what the user sees, whatever the theme setting says."""
    return app.palette().color(_R.Window).lightness() < 128


def _apply_plot_colours(app: QApplication) -> None:
    import pyqtgraph

    palette = app.palette()
    pyqtgraph.setConfigOption("background", palette.color(_R.Base).name())
    pyqtgraph.setConfigOption("foreground", palette.color(_R.Text).name())


def style_axes(plot_item, fg, alpha: int) -> None:
    """A pyqtgraph plot's left and bottom axes in the palette's text colour: the line at ``alpha``, the ticks full."""
    import pyqtgraph as pg
    from PySide6.QtGui import QColor

    pen = pg.mkPen(QColor(fg.red(), fg.green(), fg.blue(), alpha), width=1)
    for side in ("left", "bottom"):
        axis = plot_item.getAxis(side)
        axis.setPen(pen)
        axis.setTextPen(fg)
