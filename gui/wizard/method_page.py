"""Step 3: how the student learns from the teacher (method, loss, teacher mode) and which weights it trains.

Controls that do not apply to the chosen method are disabled rather than hidden, so the page keeps its shape and
the hint beside each says why it is off.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDoubleSpinBox, QGroupBox, QLabel, QRadioButton, QSpinBox,
                               QWidget, QWizardPage)

from ...engine.catalog.types import ModelSpec
from ...engine.plan import Adapter, Method
from .common import add_row, form_grid, hint, next_row, scrolled_body

KINDS = {
    "logit-kd": ("Logit KD", "The student matches the teacher's probabilities for every next token. Richest "
                 "signal; needs a shared tokenizer."),
    "seq-kd": ("Sequence-level KD", "The teacher writes answers to the prompts and the student learns from that "
               "text. Works across tokenizers."),
    "ce": ("Cross-entropy only", "Baseline without a teacher: the student trains on the data as it is, to "
           "measure what distillation adds."),
}
LOSSES = {
    "forward-kl": ("Forward KL", "Covers everything the teacher thinks likely (mean-seeking). The usual choice."),
    "reverse-kl": ("Reverse KL", "Sticks to the teacher's most likely tokens (mode-seeking); often better for "
                   "small students that cannot copy everything."),
    "jsd": ("Jensen–Shannon", "A blend of the two, set by beta; bounded, so it is gentle on early training."),
}
TEACHER_MODES = {
    "auto": ("Auto (planner decides)", "The planner runs the teacher beside the student where it fits, else "
             "caches its top-k outputs once."),
    "online": ("Online", "The teacher runs beside the student at every step: exact, but needs memory for both."),
    "offline-topk": ("Offline top-k", "One teacher pass first caches its top-k log-probs; training then needs "
                     "only the student in memory."),
    "generate": ("Generate", "The teacher first writes answers to the prompts; training uses that text."),
}
ADAPTERS = {
    "lora": ("LoRA", "Trains small low-rank matrices beside the frozen weights: fast and light on memory."),
    "qlora": ("QLoRA", "LoRA on a 4-bit copy of the student: the least memory, a little slower."),
    "full": ("Full fine-tuning", "Trains every weight of the student: the most capacity, the most memory."),
}


class MethodPage(QWizardPage):
    sig_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("method_page")
        self.setTitle("Method")
        self.setSubTitle("How the student learns from the teacher, and which of its weights are trained.")
        self._auto_switched = False    # seq-KD chosen by the wizard (other tokenizer), not by the user
        self._tokenizers_differ = False

        # ---- distillation
        grid = form_grid()
        self.kind_group = QButtonGroup(self)
        self.kind_buttons: dict[str, QRadioButton] = {}
        self.kind_hints: dict[str, QLabel] = {}
        for kind, (text, explain) in KINDS.items():
            b = QRadioButton(text)
            b.setObjectName(f"method_{kind}")
            self.kind_group.addButton(b)
            self.kind_buttons[kind] = b
            row = next_row(grid)
            grid.addWidget(b, row, 0, 1, 2)
            h = hint(explain)
            h.setObjectName(f"method_{kind}_hint")
            grid.addWidget(h, row, 2)
            self.kind_hints[kind] = h
            b.setToolTip(explain)
        self.kind_buttons["logit-kd"].setChecked(True)

        self.loss = self._combo("method_loss", LOSSES)
        self.loss_hint = add_row(grid, "&Loss:", self.loss, "")
        self.beta = self._spin("method_beta", 0.0, 1.0, 0.05, 2)
        self.beta_hint = add_row(grid, "JSD &beta:", self.beta,
                                 "Jensen–Shannon mix: 0 behaves like forward KL, 1 like reverse KL.")
        self.temperature = self._spin("method_temperature", 0.1, 20.0, 0.1, 2)
        self.temperature_hint = add_row(grid, "&Temperature:", self.temperature,
                                        "Softens both distributions before comparing them; above 1 shows the "
                                        "student more of the teacher's second choices.")
        self.kd_weight = self._spin("method_kd_weight", 0.0, 1.0, 0.05, 2)
        self.kd_weight_hint = add_row(grid, "KD &weight:", self.kd_weight,
                                      "Share of the loss that comes from the teacher; the rest is plain "
                                      "cross-entropy on the data.")
        self.mode = QComboBox()
        self.mode.setObjectName("method_teacher_mode")
        self.mode_hint = add_row(grid, "Teacher &mode:", self.mode, "")
        self.top_k = QSpinBox()
        self.top_k.setObjectName("method_top_k")
        self.top_k.setRange(1, 4096)
        self.top_k_hint = add_row(grid, "Top-&k kept:", self.top_k,
                                  "Offline pass: how many of the teacher's most likely tokens are cached per "
                                  "position.")
        self.share = self._spin("method_generated_share", 0.05, 1.0, 0.05, 2)
        self.share_hint = add_row(grid, "&Generated share:", self.share,
                                  "Sequence-level KD: share of the trained tokens the teacher writes; the rest "
                                  "comes from the data as it is.")
        distil = QGroupBox("Distillation")
        distil.setLayout(grid)

        # ---- adapter
        agrid = form_grid()
        self.adapter = self._combo("adapter_kind", ADAPTERS)
        self.adapter_hint = add_row(agrid, "Trai&n:", self.adapter, "")
        self.rank = QSpinBox()
        self.rank.setObjectName("adapter_rank")
        self.rank.setRange(1, 1024)
        self.rank_hint = add_row(agrid, "LoRA &rank:", self.rank,
                                 "Width of the adapter: higher learns more and costs more memory (8–64 is usual).")
        self.alpha = self._spin("adapter_alpha", 0.5, 4096.0, 1.0, 1)
        self.alpha_hint = add_row(agrid, "LoRA &alpha:", self.alpha,
                                  "Scale of the adapter's update; twice the rank is the common choice.")
        adapter = QGroupBox("Trained weights")
        adapter.setLayout(agrid)

        box = scrolled_body(self, "method_scroll")
        box.addWidget(distil)
        box.addWidget(adapter)
        box.addStretch(1)

        self.load(Method(), Adapter())
        self.kind_group.buttonClicked.connect(self._kind_clicked)
        self.kind_group.buttonToggled.connect(lambda *_: self._refresh())
        for w in (self.loss, self.mode, self.adapter):
            w.currentIndexChanged.connect(lambda *_: self._refresh())
        for w in (self.beta, self.temperature, self.kd_weight, self.top_k, self.share, self.alpha):
            w.valueChanged.connect(lambda *_: self.sig_changed.emit())
        self.rank.valueChanged.connect(self._rank_changed)
        self._last_rank = self.rank.value()

    @staticmethod
    def _combo(name: str, table: dict[str, tuple[str, str]]) -> QComboBox:
        c = QComboBox()
        c.setObjectName(name)
        for value, (text, _) in table.items():
            c.addItem(text, value)
        return c

    @staticmethod
    def _spin(name: str, lo: float, hi: float, step: float, decimals: int) -> QDoubleSpinBox:
        s = QDoubleSpinBox()
        s.setObjectName(name)
        s.setRange(lo, hi)
        s.setSingleStep(step)
        s.setDecimals(decimals)
        return s

    # ---- behaviour
    def kind(self) -> str:
        for kind, b in self.kind_buttons.items():
            if b.isChecked():
                return kind
        return "logit-kd"

    def set_kind(self, kind: str) -> None:
        self.kind_buttons[kind].setChecked(True)

    def _kind_clicked(self, *_: Any) -> None:
        self._auto_switched = False  # the user chose; never switch it back behind their back

    def _rank_changed(self, rank: int) -> None:
        if abs(self.alpha.value() - 2 * self._last_rank) < 1e-9:
            self.alpha.setValue(2.0 * rank)  # keep the usual alpha = 2 x rank unless the user set another
        self._last_rank = rank
        self.sig_changed.emit()

    def set_pair(self, teacher: ModelSpec | None, student: ModelSpec | None) -> str:
        """Fit the method to the pair; a sentence for the user when the wizard changed it, else ""."""
        differ = bool(teacher and student and teacher.tokenizer_family != student.tokenizer_family)
        self._tokenizers_differ = differ
        logit = self.kind_buttons["logit-kd"]
        logit.setEnabled(not differ)
        note = ""
        if differ:
            why = (f"{teacher.name} and {student.name} use different tokenizers ({teacher.tokenizer_family} vs "
                   f"{student.tokenizer_family}), so logit KD cannot compare their token ids.")
            logit.setToolTip(why + " Sequence-level KD works across tokenizers.")
            # said beside the greyed choice, not only in its tooltip
            self.kind_hints["logit-kd"].setText(f"Not available for this pair: {why}")
            self.kind_hints["logit-kd"].setForegroundRole(QPalette.ColorRole.WindowText)  # a reason, not a hint
            if self.kind() == "logit-kd":
                self.set_kind("seq-kd")
                self._auto_switched = True
            if self._auto_switched:
                note = f"Method set to sequence-level KD: {why}"
        else:
            logit.setToolTip(KINDS["logit-kd"][1])
            self.kind_hints["logit-kd"].setText(KINDS["logit-kd"][1])
            self.kind_hints["logit-kd"].setForegroundRole(QPalette.ColorRole.PlaceholderText)
            if self._auto_switched and self.kind() == "seq-kd":
                self.set_kind("logit-kd")
            self._auto_switched = False
        return note

    def _refresh(self) -> None:
        kind = self.kind()
        wanted = {"logit-kd": ("auto", "online", "offline-topk"), "seq-kd": ("generate",), "ce": ()}[kind]
        current = self.mode.currentData()
        self.mode.blockSignals(True)
        self.mode.clear()
        for m in wanted:
            self.mode.addItem(TEACHER_MODES[m][0], m)
        if not wanted:
            self.mode.addItem("None (no teacher)", "auto")
        i = self.mode.findData(current)
        self.mode.setCurrentIndex(max(i, 0))
        self.mode.blockSignals(False)
        mode = self.mode.currentData()
        logit = kind == "logit-kd"
        for w in (self.loss, self.temperature, self.kd_weight):
            w.setEnabled(logit)
        self.beta.setEnabled(logit and self.loss.currentData() == "jsd")
        self.top_k.setEnabled(logit and mode in ("auto", "offline-topk"))
        self.share.setEnabled(kind == "seq-kd")
        self.mode.setEnabled(kind != "ce")
        off = {"seq-kd": "Not used by sequence-level KD: the student learns the teacher's text with cross-entropy.",
               "ce": "Not used by the cross-entropy baseline."}
        self.loss_hint.setText(LOSSES[self.loss.currentData()][1] if logit else off[kind])
        self.mode_hint.setText(TEACHER_MODES[mode][1] if kind != "ce" else "No teacher runs in this baseline.")
        adapter = self.adapter.currentData()
        self.adapter_hint.setText(ADAPTERS[adapter][1])
        self.rank.setEnabled(adapter != "full")
        self.alpha.setEnabled(adapter != "full")
        for w, h in ((self.loss, self.loss_hint), (self.mode, self.mode_hint), (self.adapter, self.adapter_hint)):
            w.setToolTip(h.text())
        self.sig_changed.emit()

    # ---- values
    def load(self, method: Method, adapter: Adapter) -> None:
        self.set_kind(method.kind)
        self._auto_switched = False
        self.loss.setCurrentIndex(self.loss.findData(method.loss))
        self.beta.setValue(method.beta)
        self.temperature.setValue(method.temperature)
        self.kd_weight.setValue(method.kd_weight)
        self.top_k.setValue(method.top_k)
        self.share.setValue(method.generated_share)
        self.adapter.setCurrentIndex(self.adapter.findData(adapter.kind))
        self.rank.setValue(adapter.rank)
        self._last_rank = adapter.rank
        self.alpha.setValue(adapter.alpha)
        self._refresh()
        self.mode.setCurrentIndex(max(self.mode.findData(method.teacher_mode), 0))
        self._refresh()

    def method_values(self) -> dict[str, Any]:
        """The [method] keys this page controls (the others, e.g. from an edited plan, are kept by the wizard)."""
        return {"kind": self.kind(), "loss": self.loss.currentData(), "beta": round(self.beta.value(), 4),
                "temperature": round(self.temperature.value(), 4), "kd_weight": round(self.kd_weight.value(), 4),
                "teacher_mode": self.mode.currentData(), "top_k": self.top_k.value(),
                "generated_share": round(self.share.value(), 4)}

    def adapter_values(self) -> dict[str, Any]:
        return {"kind": self.adapter.currentData(), "rank": self.rank.value(), "alpha": round(self.alpha.value(), 4)}
