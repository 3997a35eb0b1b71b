"""Step 4: the training data (a file or folder, scanned in the background, or a token count for planning only),
and the sequence length, epochs and step size.

The scan never runs on the UI thread: it is a generator run by ``gui.workers``; choosing another file, or a teacher
with another tokenizer, cancels it and starts a new one. Its token count goes into ``data.tokens`` so the planner
sizes the run from real counts rather than from the file size; where a model's tokenizer.json is at hand the planner
counts the data itself as training reads it (``engine/data_scan.py``), and the page says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget, QWizardPage)

from ...engine.catalog.types import ModelSpec
from ...engine.plan import Data
from .. import workers
from ..dialogs import DATA_FILTER, open_file, open_folder
from ..settings import Settings
from .common import add_row, error_label, form_grid, hint, set_error
from .scan import ScanResult, scan_data

MIN_PLAN_TOKENS = 1_000  # Data.tokens' lower bound
SCAN_DELAY_MS = 400      # a typed path is scanned once typing pauses


class DoublingSpin(QSpinBox):
    """Arrows double and halve (sequence lengths and batch sizes are powers of two); any value can be typed."""

    def stepBy(self, steps: int) -> None:
        v = self.value()
        for _ in range(abs(steps)):
            v = v * 2 if steps > 0 else max(v // 2, 1)
        self.setValue(v)


class DataPage(QWizardPage):
    sig_changed = Signal()
    sig_scan_finished = Signal()
    """The current scan ended: with a result, an error, or nothing to scan."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("data_page")
        self.setTitle("Data")
        self.setSubTitle("What the student trains on, and how it is cut into sequences and steps.")
        self.settings = settings
        self.teacher: ModelSpec | None = None
        self.student: ModelSpec | None = None
        self.worker: workers.Worker | None = None
        self.scan_result: ScanResult | None = None
        self.scan_error = ""
        self._scan_key: tuple | None = None  # (path, tokenizers, reasoning) the result or running scan is for
        self._original: tuple[str, int | None] | None = None  # (train, tokens) of an edited plan

        # ---- source
        self.use_file = QRadioButton("A training file or folder")
        self.use_file.setObjectName("data_use_file")
        self.use_tokens = QRadioButton("A token count, for planning only")
        self.use_tokens.setObjectName("data_use_tokens")
        self.source = QButtonGroup(self)
        self.source.addButton(self.use_file)
        self.source.addButton(self.use_tokens)
        self.use_file.setChecked(True)
        self.path = QLineEdit()
        self.path.setObjectName("data_path")
        self.path.setPlaceholderText(".jsonl (messages, prompt + response, or text), .txt, .parquet, .arrow — or a "
                                     "folder of them")
        self.path.setToolTip("Training data; the wizard counts its examples and tokens")
        self.browse_file = QPushButton("File…")
        self.browse_file.setObjectName("data_browse_file")
        self.browse_folder = QPushButton("Folder…")
        self.browse_folder.setObjectName("data_browse_folder")
        self.progress = QProgressBar()
        self.progress.setObjectName("data_scan_progress")
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.result = QLabel()
        self.result.setObjectName("data_scan_result")
        self.result.setWordWrap(True)
        self.error = error_label()
        self.error.setObjectName("data_error")
        self.file_hint = hint("The scan's token count goes into the plan (data.tokens), so planning sizes the run "
                              "from it.")
        self.tokens = QDoubleSpinBox()
        self.tokens.setObjectName("data_tokens")
        self.tokens.setRange(MIN_PLAN_TOKENS / 1e6, 1e8)
        self.tokens.setDecimals(3)
        self.tokens.setSuffix(" M tokens")
        self.tokens.setGroupSeparatorShown(True)
        self.tokens.setValue(100.0)
        self.tokens_hint = hint()

        src = QVBoxLayout()
        src.addWidget(self.use_file)
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        row.addWidget(self.path, 1)
        row.addWidget(self.browse_file)
        row.addWidget(self.browse_folder)
        src.addLayout(row)
        for w in (self.progress, self.result, self.error, self.file_hint):
            indented = QHBoxLayout()
            indented.setContentsMargins(24, 0, 0, 0)
            indented.addWidget(w)
            src.addLayout(indented)
        trow = QHBoxLayout()
        trow.addWidget(self.use_tokens)
        trow.addWidget(self.tokens)
        trow.addWidget(self.tokens_hint, 1)
        src.addLayout(trow)
        source_box = QGroupBox("Training data")
        source_box.setLayout(src)

        # ---- shape
        grid = form_grid()
        self.seq_len = DoublingSpin()
        self.seq_len.setObjectName("data_seq_len")
        self.seq_len.setRange(16, 1_048_576)
        self.seq_len.setGroupSeparatorShown(True)
        self.seq_len.setSuffix(" tokens")
        self.seq_len_hint = add_row(grid, "&Sequence length:", self.seq_len, "")
        self.seq_len_error = error_label()
        self.seq_len_error.setObjectName("data_seq_len_error")
        grid.addWidget(self.seq_len_error, grid.rowCount(), 1, 1, 2)
        self.epochs = QDoubleSpinBox()
        self.epochs.setObjectName("data_epochs")
        self.epochs.setRange(0.01, 1000.0)
        self.epochs.setDecimals(2)
        self.epochs.setSingleStep(0.5)
        self.epochs_hint = add_row(grid, "&Epochs:", self.epochs, "Passes over the data; fractions stop part-way.")
        self.batch = DoublingSpin()
        self.batch.setObjectName("data_global_batch_tokens")
        self.batch.setRange(16, 1_000_000_000)
        self.batch.setGroupSeparatorShown(True)
        self.batch.setSuffix(" tokens per step")
        self.batch_hint = add_row(grid, "Step si&ze:", self.batch, "")
        self.reasoning = QComboBox()
        self.reasoning.setObjectName("data_reasoning")
        self.reasoning.addItem("Train on them", "keep")
        self.reasoning.addItem("Strip them", "strip")
        self.reasoning_hint = add_row(grid, "&Reasoning traces:", self.reasoning,
                                      "<think> … </think> in assistant turns (QwQ, R1-style data); where the chat "
                                      "template drops earlier turns' traces, they are not trained either.")
        shape_box = QGroupBox("Sequences and steps")
        shape_box.setLayout(grid)

        # ---- held-out data: the curves' evaluation, and the prompts the task score (and seq-KD) answer
        held = form_grid()
        self.eval_path, self.prompts_path = QLineEdit(), QLineEdit()
        self.eval_path.setObjectName("data_eval_path")
        self.prompts_path.setObjectName("data_prompts_path")
        self.eval_path.setPlaceholderText("optional: held-out examples, same formats as the training data")
        self.prompts_path.setPlaceholderText("prompts (+ answers to score against); sequence-level KD needs them")
        for edit, key, caption in ((self.eval_path, "eval", "Choose held-out evaluation data"),
                                   (self.prompts_path, "prompts", "Choose the prompts")):
            row = QHBoxLayout()
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(edit, 1)
            browse = QPushButton("File…")
            browse.setObjectName(f"data_browse_{key}")
            browse.clicked.connect(lambda _=False, e=edit, c=caption: self._browse_into(e, c))
            row.addWidget(browse)
            holder = QWidget()
            holder.setLayout(row)
            r = held.rowCount()
            label = QLabel("&Evaluation data:" if key == "eval" else "&Prompts:")
            label.setBuddy(edit)
            held.addWidget(label, r, 0)
            held.addWidget(holder, r, 1, 1, 2)           # the whole width: paths are long
            edit.textChanged.connect(lambda *_: self._changed())
        self.prompts_error = error_label()
        self.prompts_error.setObjectName("data_prompts_error")
        held.addWidget(self.prompts_error, held.rowCount(), 1, 1, 2)
        held_box = QGroupBox("Held-out data")
        held_box.setLayout(held)
        self.method_kind = "logit-kd"

        box = QVBoxLayout(self)
        box.addWidget(source_box)
        box.addWidget(shape_box)
        box.addWidget(held_box)
        box.addStretch(1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SCAN_DELAY_MS)
        self._timer.timeout.connect(self.start_scan)
        self.load(Data(tokens=100_000_000))
        self._original = None
        self.use_file.setChecked(True)
        self._source_changed()
        self.path.textChanged.connect(lambda *_: (self._timer.start(), self._changed()))
        self.path.editingFinished.connect(self._scan_now_if_changed)
        self.browse_file.clicked.connect(self._browse_file)
        self.browse_folder.clicked.connect(self._browse_folder)
        self.source.buttonToggled.connect(lambda *_: self._source_changed())
        for w in (self.tokens, self.seq_len, self.epochs, self.batch):
            w.valueChanged.connect(lambda *_: self._changed())
        self.reasoning.currentIndexChanged.connect(lambda *_: (self._changed(), self._rescan()))
        order = (self.use_file, self.path, self.browse_file, self.browse_folder, self.use_tokens, self.tokens,
                 self.seq_len, self.epochs, self.batch, self.reasoning)
        for a, b in zip(order, order[1:]):
            QWidget.setTabOrder(a, b)

    # ---- inputs
    def _browse_file(self) -> None:
        path = open_file(self, self.settings, "data", "Choose the training data", DATA_FILTER)
        if path:
            self.set_train_path(path)

    def _browse_folder(self) -> None:
        path = open_folder(self, self.settings, "data", "Choose a folder of training data")
        if path:
            self.set_train_path(path)

    def _browse_into(self, edit: QLineEdit, caption: str) -> None:
        path = open_file(self, self.settings, "data", caption, DATA_FILTER)
        if path:
            edit.setText(path)

    def set_method(self, kind: str) -> None:
        """The plan's method: sequence-level KD cannot run without prompts."""
        self.method_kind = kind
        self._changed()

    def set_train_path(self, path: str) -> None:
        """Use ``path`` as the training data and scan it now (no typing delay)."""
        self.use_file.setChecked(True)
        self.path.setText(path)
        self.start_scan()

    def _rescan(self) -> None:
        """Assistant tokens depend on the reasoning choice: count them again for the data already chosen."""
        if self.use_file.isChecked() and self.path.text().strip():
            self.start_scan()

    def _scan_now_if_changed(self) -> None:
        if self._timer.isActive():
            self.start_scan()

    def _source_changed(self) -> None:
        file_mode = self.use_file.isChecked()
        for w in (self.path, self.browse_file, self.browse_folder, self.progress, self.result, self.file_hint):
            w.setEnabled(file_mode)
        self.tokens.setEnabled(not file_mode)
        self._changed()
        self.completeChanged.emit()

    def set_models(self, teacher: ModelSpec | None, student: ModelSpec | None) -> None:
        """The pair decides the context limit, and the teacher's tokenizer decides how tokens are counted."""
        old = (self.tokenizer_file(), self.tokenizer_file(self.student))
        self.teacher, self.student = teacher, student
        if (self.tokenizer_file(), self.tokenizer_file(self.student)) != old and self.path.text().strip():
            self.start_scan()
        self._changed()

    def tokenizer_file(self, spec: ModelSpec | None | bool = False) -> str:
        """The local tokenizer.json of the teacher (or of ``spec``), or ""."""
        t = self.teacher if spec is False else spec
        if t is None or not t.id.startswith("local:") or not t.source:
            return ""
        return str(Path(t.source).parent / "tokenizer.json")

    # ---- the scan
    def start_scan(self) -> None:
        self._timer.stop()
        path = self.path.text().strip()
        key = (path, self.tokenizer_file(), self.tokenizer_file(self.student), self.reasoning.currentData())
        if self.worker is not None and key == self._scan_key:
            return  # this very scan is already running
        self.cancel_scan()
        self.scan_result, self.scan_error = None, ""
        self._scan_key = key
        set_error(self.error, "")
        self.result.setText("")
        if not path:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
            self.sig_scan_finished.emit()
            self._changed()
            return
        self.progress.setRange(0, 0)  # busy until the first report says how much there is
        self.progress.setFormat("scanning…")
        self.worker = workers.start_for(self, scan_data, path, key[1] or None, reasoning=key[3],
                                    student_tokenizer_file=key[2] or None, on_result=self._scan_result,
                                    on_error=self._scan_error, on_progress=self._scan_progress,
                                    on_finished=self._scan_finished)
        self._changed()

    def cancel_scan(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.worker = None

    def _mine(self) -> bool:
        """True when the signal comes from the scan that is current (a cancelled one may still report)."""
        return self.worker is not None and self.sender() is self.worker.signals

    def _scan_progress(self, done: int, total: int, text: str) -> None:
        if not self._mine():
            return
        scale = max(1, total // 1_000_000)  # a QProgressBar holds an int; bytes of a big folder may not fit
        self.progress.setRange(0, max(total // scale, 1))
        self.progress.setValue(done // scale)
        self.progress.setFormat(f"%p% · {text}" if text else "%p%")

    def _scan_result(self, result: ScanResult) -> None:
        if not self._mine():
            return
        self.scan_result = result
        self.progress.setFormat("done")
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.result.setText(result.summary() + self._tokens_note(result))

    def _scan_error(self, message: str) -> None:
        if not self._mine():
            return
        self.scan_error = message
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("failed")
        set_error(self.error, message)

    def _scan_finished(self) -> None:
        if not self._mine():
            return
        self.worker = None
        self.sig_scan_finished.emit()
        self._changed()
        self.completeChanged.emit()

    @staticmethod
    def _tokens_note(result: ScanResult) -> str:
        if result.tokens < MIN_PLAN_TOKENS:
            return (f". Fewer than {MIN_PLAN_TOKENS:,} tokens is too few for data.tokens; planning estimates from "
                    "the file size instead.")
        if result.counted:   # the planner counts the same data with the same tokenizer, as training reads it
            return (". Planning counts the tokens again as training reads them (cut at the sequence length, over the "
                    "run's steps).")
        return ". Planning uses this count."

    def scanning(self) -> bool:
        return self.worker is not None

    # ---- hints
    def _changed(self) -> None:
        seq, batch = self.seq_len.value(), self.batch.value()
        limits = [f"{m.name} reads up to {m.max_context_tokens:,}" for m in (self.teacher, self.student) if m]
        self.seq_len_hint.setText("Longest example in tokens; longer ones are cut. " + "; ".join(limits)
                                  + ("." if limits else ""))
        too_long = [f"{m.name} can attend to at most {m.max_context_tokens:,} tokens"
                    for m in (self.teacher, self.student) if m and seq > m.max_context_tokens]
        set_error(self.seq_len_error, f"{seq:,} is too long: " + "; ".join(too_long) if too_long else "")
        per = batch / seq
        if batch < seq:
            self.batch_hint.setText(f"Must hold at least one sequence ({seq:,} tokens).")
        else:
            self.batch_hint.setText(f"= {per:,.4g} sequences of {seq:,} tokens; the optimiser steps once per "
                                    f"{batch:,} tokens.")
        m = self.tokens.value() * 1e6
        self.tokens_hint.setText(f"= {round(m):,} tokens per epoch, no data file needed yet.")
        for w, h in ((self.seq_len, self.seq_len_hint), (self.batch, self.batch_hint)):
            w.setToolTip(h.text())
        missing = [p for p in (self.eval_path.text().strip(), self.prompts_path.text().strip())
                   if p and not Path(p).expanduser().exists()]
        if missing:
            set_error(self.prompts_error, f"{missing[0]} does not exist; choose an existing file or folder")
        elif self.method_kind == "seq-kd" and not self.prompts_path.text().strip():
            # the same with a token count: a plan without prompts cannot run sequence-level KD, whatever its data
            set_error(self.prompts_error, "Sequence-level KD needs prompts: the teacher writes its answers to them. "
                                          "Choose a prompts file (.jsonl with a “prompt” field).")
        else:
            set_error(self.prompts_error, "")
        self.completeChanged.emit()      # Next follows the prompts' check as it is typed
        self.sig_changed.emit()

    # ---- values
    def isComplete(self) -> bool:
        return (self.use_tokens.isChecked() or bool(self.path.text().strip())) and not self.prompts_error.text()

    def load(self, data: Data) -> None:
        """Fill from a plan's [data] (paths already absolute)."""
        self._original = (data.train or "", data.tokens)
        if data.tokens is not None:
            self.tokens.setValue(max(data.tokens / 1e6, self.tokens.minimum()))
        self.seq_len.setValue(data.seq_len)
        self.epochs.setValue(data.epochs)
        self.batch.setValue(data.global_batch_tokens)
        self.reasoning.setCurrentIndex(max(0, self.reasoning.findData(data.reasoning)))
        self.eval_path.setText(data.eval or "")
        self.prompts_path.setText(data.prompts or "")
        if data.train:
            self.set_train_path(data.train)
        else:
            self.use_tokens.setChecked(True)

    def data_values(self) -> dict[str, Any]:
        """The [data] keys this page controls."""
        out: dict[str, Any] = {"seq_len": self.seq_len.value(), "epochs": round(self.epochs.value(), 4),
                               "global_batch_tokens": self.batch.value(), "reasoning": self.reasoning.currentData(),
                               "eval": self.eval_path.text().strip() or None,
                               "prompts": self.prompts_path.text().strip() or None}
        if self.use_tokens.isChecked():
            out.update(train=None, tokens=round(self.tokens.value() * 1e6))
            return out
        path = self.path.text().strip()
        tokens = None
        r = self.scan_result
        if r is not None and self._scan_key and self._scan_key[0] == path and r.tokens >= MIN_PLAN_TOKENS:
            tokens = r.tokens
        elif self._original and self._original[0] == path:
            tokens = self._original[1]  # an edited plan's own count, until a scan replaces it
        out.update(train=path or None, tokens=tokens)
        return out
