"""A per-GPU memory breakdown of one option: a stacked bar of what takes the memory, against what is usable."""
from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

PARTS = (  # key in Sweep.row()["memory_gib_per_gpu"], label, colour
    ("weights", "weights", "#4e79a7"),
    ("gradients", "gradients", "#f28e2b"),
    ("optimizer", "optimizer", "#e15759"),
    ("activations", "activations", "#76b7b2"),
    ("logits", "logits", "#59a14f"),
    ("loss_temporaries", "KD loss", "#edc948"),
    ("teacher", "teacher", "#b07aa1"),
    ("overhead", "runtime overhead", "#9c755f"),
)


class MemoryBar(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.parts: dict[str, float] = {}
        self.usable = 0.0
        self.caption = "Select an option to see its memory"
        self.setMinimumHeight(64)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_breakdown(self, parts: dict[str, float] | None, usable_gib: float = 0.0, caption: str = "",
                      per: str = "GPU") -> None:
        """``per``: what the memory is counted per, "GPU" or, on a CPU, "process"."""
        self.parts = dict(parts or {})
        self.usable = usable_gib
        total = self.parts.get("total", sum(v for k, v in self.parts.items() if k != "total"))
        if parts:
            verdict = "fits" if total <= usable_gib else "does NOT fit"
            self.caption = caption or f"{total:.1f} GiB of {usable_gib:.1f} GiB usable per {per}: {verdict}"
        else:
            self.caption = "Select an option to see its memory"
        tip = "\n".join(f"{label}: {self.parts.get(k, 0.0):.2f} GiB" for k, label, _ in PARTS)
        self.setToolTip(tip if parts else "")
        self.update()

    def paintEvent(self, _ev) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fm = p.fontMetrics()
        line = fm.height()
        p.setPen(pal.windowText().color())
        p.drawText(QRectF(0, 0, self.width(), line), Qt.AlignmentFlag.AlignLeft, self.caption)
        bar = QRectF(0, line + 4, self.width() - 1, 16)
        p.setPen(QPen(pal.mid().color()))
        p.drawRect(bar)
        total = sum(self.parts.get(k, 0.0) for k, _, _ in PARTS)
        scale_max = max(total, self.usable) or 1.0
        x = bar.left()
        for key, _label, colour in PARTS:
            w = bar.width() * self.parts.get(key, 0.0) / scale_max
            if w > 0:
                p.fillRect(QRectF(x, bar.top() + 1, w, bar.height() - 1), QColor(colour))
                x += w
        if self.usable:
            ux = bar.left() + bar.width() * self.usable / scale_max
            p.setPen(QPen(QColor("#c0392b"), 2))
            p.drawLine(int(ux), int(bar.top() - 3), int(ux), int(bar.bottom() + 3))
        # legend
        lx, ly = 0.0, bar.bottom() + 6
        p.setPen(pal.windowText().color())
        for key, label, colour in PARTS:
            v = self.parts.get(key, 0.0)
            if not self.parts or v < 0.005:
                continue
            text = f"{label} {v:.1f}" if v >= 0.1 else f"{label} {v:.2f}"      # LoRA's few MiB: not "0.0"
            tw = fm.horizontalAdvance(text) + 22
            if lx + tw > self.width():
                break
            p.fillRect(QRectF(lx, ly + 3, 10, 10), QColor(colour))
            p.drawText(QRectF(lx + 14, ly, tw, line), Qt.AlignmentFlag.AlignLeft, text)
            lx += tw
        p.end()

    def sizeHint(self):
        from PySide6.QtCore import QSize

        return QSize(400, self.fontMetrics().height() * 2 + 30)
