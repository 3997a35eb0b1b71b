"""Step 5: where the run happens (this machine, or Azure Machine Learning) and the budget (deadline, cost cap).

The two budget presets are the ones users ask for most: a run that is done "under 3 hours" (this afternoon) or in
"about 27 hours" (by tomorrow). A deadline is a target the planner checks at a confidence (P80 unless chosen
otherwise): it recommends hardware that finishes in time 8 runs in 10, and keeps slower hardware in the comparison,
marked as missing the deadline.
"""
from __future__ import annotations

import re
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QLabel,
                               QRadioButton, QSpinBox, QVBoxLayout, QWidget, QWizardPage)

from ...engine.catalog.hardware import load_accelerators, load_skus
from ...engine.errors import DistillError
from ...engine.plan import Budget, Hardware
from ..settings import Settings
from ..settings.model import normalise_region
from .common import add_row, form_grid, hint, next_row, scrolled_body

AZURE_REGIONS = ("eastus", "eastus2", "westus", "westus2", "westus3", "centralus", "southcentralus",
                 "northcentralus", "canadacentral", "brazilsouth", "northeurope", "westeurope", "uksouth",
                 "francecentral", "germanywestcentral", "swedencentral", "switzerlandnorth", "norwayeast",
                 "uaenorth", "centralindia", "japaneast", "koreacentral", "southeastasia", "australiaeast")
CONFIDENCES = ((0.5, "P50 (median)"), (0.8, "P80"), (0.9, "P90"), (0.95, "P95"))
PRESETS = {"budget_3h": ("Under 3 hours", 3.0), "budget_27h": ("About 27 hours", 27.0),
           "budget_custom": ("Custom deadline", None), "budget_none": ("No deadline", None)}


REGION_RE = re.compile(r"[a-z0-9]{2,40}")


class HardwarePage(QWizardPage):
    sig_changed = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("hardware_page")
        self.setTitle("Hardware and budget")
        self.setSubTitle("Where the run happens, and by when it must be done. The planner compares the options "
                         "and picks what meets the budget.")
        self.settings = settings

        # ---- where
        grid = form_grid()
        self.local = QRadioButton("This machine")
        self.local.setObjectName("hw_local")
        self.azure = QRadioButton("Azure Machine Learning")
        self.azure.setObjectName("hw_azure")
        self.target = QButtonGroup(self)
        self.target.addButton(self.local)
        self.target.addButton(self.azure)
        r = next_row(grid)
        grid.addWidget(self.local, r, 0, 1, 2)
        grid.addWidget(hint("Run on the GPUs (or CPU) of this computer; the planner estimates the time."), r, 2)
        self.accelerator = QComboBox()
        self.accelerator.setObjectName("hw_accelerator")
        for acc in load_accelerators().values():
            if not acc.comparison_only:
                memory = f" · {acc.hbm_gb:g} GB" if acc.vendor != "cpu" else ""
                self.accelerator.addItem(f"{acc.name}{memory}", acc.id)
        self.accelerator_hint = add_row(grid, "    &Accelerator:", self.accelerator,
                                        "The GPU model in this machine, or the CPU for tiny models.")
        self.gpus = QSpinBox()
        self.gpus.setObjectName("hw_gpus")
        self.gpus.setRange(1, 64)
        self.gpus_hint = add_row(grid, "    &GPUs:", self.gpus, "How many of them the run may use.")
        self.gpus_label = grid.itemAtPosition(grid.rowCount() - 1, 0).widget()
        self.cost_on = QCheckBox("Cost per hour")
        self.cost_on.setObjectName("hw_cost_on")
        self.usd_per_hour = QDoubleSpinBox()
        self.usd_per_hour.setObjectName("hw_usd_per_hour")
        self.usd_per_hour.setRange(0.0, 10_000.0)
        self.usd_per_hour.setPrefix("$ ")
        self.usd_per_hour.setSuffix(" / hour")
        self.usd_per_hour.setDecimals(2)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.cost_on)
        row.addWidget(self.usd_per_hour, 1)
        holder = QWidget()
        holder.setLayout(row)
        add_row(grid, "    C&ost:", holder, "Optional: this machine's price per hour (power, a rented box), "
                                            "so the plan shows costs.")

        r = next_row(grid)
        grid.addWidget(self.azure, r, 0, 1, 2)
        grid.addWidget(hint("Rent GPUs by the hour; the planner compares every VM size and node count."), r, 2)
        self.region = QComboBox()
        self.region.setObjectName("hw_region")
        self.region.setEditable(True)
        self.region.addItems(sorted(set(AZURE_REGIONS) | {settings.azure.region}))
        self.region.setCurrentText(settings.azure.region)
        self.region_hint = add_row(grid, "    &Region:", self.region, "")
        self.sku = QComboBox()
        self.sku.setObjectName("hw_sku")
        self.sku.addItem("Compare every size", None)
        for sku in load_skus().values():
            self.sku.addItem(f"{sku.id} · {sku.gpus}× {load_accelerators()[sku.accelerator].name}", sku.id)
        add_row(grid, "    VM si&ze:", self.sku, "“Compare every size” lets the planner choose; pick one to plan "
                                                 "for that size only.")
        self.priority = QComboBox()
        self.priority.setObjectName("hw_priority")
        self.priority.addItem("Dedicated", "dedicated")
        self.priority.addItem("Low priority", "low-priority")
        add_row(grid, "    &Priority:", self.priority, "Low priority: much cheaper; Azure may evict the nodes, and "
                                                     "the run resumes.")
        for combo in (self.accelerator, self.region, self.sku, self.priority):
            # long SKU names must not widen the column and squeeze the hints; the popup still shows them in full
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(22)
        where = QGroupBox("Where it runs")
        where.setLayout(grid)

        # ---- budget
        bgrid = form_grid()
        self.presets = QButtonGroup(self)
        self.preset_buttons: dict[str, QRadioButton] = {}
        prow = QHBoxLayout()
        self.hours = QDoubleSpinBox()
        self.hours.setObjectName("budget_hours")
        self.hours.setRange(0.1, 24 * 365)
        self.hours.setDecimals(1)
        self.hours.setSuffix(" hours")
        self.hours.setValue(12.0)
        self.hours.setToolTip("The deadline in hours, for “Custom deadline”")
        for name, (text, _) in PRESETS.items():
            b = QRadioButton(text)
            b.setObjectName(name)
            self.presets.addButton(b)
            self.preset_buttons[name] = b
            prow.addWidget(b)
            if name == "budget_custom":
                prow.addWidget(self.hours)  # beside the choice it belongs to
                prow.addSpacing(12)
        prow.addStretch(1)
        r = next_row(bgrid)
        bgrid.addLayout(prow, r, 0, 1, 3)
        self.deadline_hint = hint()
        bgrid.addWidget(self.deadline_hint, r + 1, 0, 1, 3)
        self.usd_on = QCheckBox("Cost cap")
        self.usd_on.setObjectName("budget_usd_on")
        self.usd = QDoubleSpinBox()
        self.usd.setObjectName("budget_usd")
        self.usd.setRange(0.01, 100_000_000.0)
        self.usd.setDecimals(2)              # a local run's cap may be $0.20: never rounded to $0
        self.usd.setPrefix("$ ")
        self.usd.setGroupSeparatorShown(True)
        self.usd.setValue(1000.0)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.usd_on)
        row.addWidget(self.usd, 1)
        holder = QWidget()
        holder.setLayout(row)
        add_row(bgrid, "", holder, "Optional: the most the whole run may cost, in US dollars; hardware that would "
                                   "cost more is not recommended.")
        # how sure: beside the cost cap's row, so the page keeps its height
        self.confidence = QComboBox()
        self.confidence.setObjectName("budget_confidence")
        for value, text in CONFIDENCES:
            self.confidence.addItem(text, value)
        confidence_label = QLabel("Con&fidence:")
        confidence_label.setBuddy(self.confidence)
        prow.insertSpacing(prow.count() - 1, 12)
        prow.insertWidget(prow.count() - 1, confidence_label)   # before the stretch that ends the presets' row
        prow.insertWidget(prow.count() - 1, self.confidence)
        self.confidence_hint = self.deadline_hint               # one sentence says what the confidence means
        budget = QGroupBox("Budget")
        budget.setLayout(bgrid)

        # what the choices so far allow, planned live: whether 3 hours is possible before the plan is saved
        self.preview = QLabel("")
        self.preview.setObjectName("hardware_preview")
        self._preview_html = ""
        self.preview_stale = False
        self.preview.setWordWrap(True)
        self.preview.setTextFormat(Qt.TextFormat.RichText)
        preview_box = QGroupBox("What these choices allow")
        QVBoxLayout(preview_box).addWidget(self.preview)

        box = scrolled_body(self, "hardware_scroll")
        box.addWidget(where)
        box.addWidget(budget)
        box.addWidget(preview_box)
        box.addStretch(1)

        self.load(Hardware(region=normalise_region(settings.azure.region) or "eastus"), Budget())
        self.target.buttonToggled.connect(lambda *_: self._refresh())
        self.presets.buttonToggled.connect(lambda *_: self._refresh())
        for w in (self.cost_on, self.usd_on):
            w.toggled.connect(lambda *_: self._refresh())
        self.accelerator.currentIndexChanged.connect(lambda *_: self._refresh())
        self.region.currentTextChanged.connect(lambda *_: self._refresh())
        for w in (self.gpus, self.usd_per_hour, self.hours, self.usd):
            w.valueChanged.connect(lambda *_: self.sig_changed.emit())
        for w in (self.sku, self.priority):
            w.currentIndexChanged.connect(lambda *_: self.sig_changed.emit())
        self.confidence.currentIndexChanged.connect(lambda *_: self._refresh())
        b = self.preset_buttons
        order = (self.local, self.accelerator, self.gpus, self.cost_on, self.usd_per_hour, self.azure, self.region,
                 self.sku, self.priority, b["budget_3h"], b["budget_27h"], b["budget_custom"], self.hours,
                 b["budget_none"], self.usd_on, self.usd, self.confidence)
        for first, second in zip(order, order[1:]):
            QWidget.setTabOrder(first, second)

    def show_preview(self, text: str) -> None:
        """The planner's answer for the choices as they are now."""
        self._preview_html = text
        self.preview_stale = False
        self.preview.setText(text)

    def mark_stale(self, planning: bool = False) -> None:
        """The choices changed since the numbers shown were planned: they stay, greyed under a line that says so,
        until the new answer comes (a blank box would jump; unmarked old numbers would mislead)."""
        self.preview_stale = True
        old = self._preview_html
        head = ("Planning the choices so far…" if not old else "Planning the new choices…" if planning else
                "The choices changed: these numbers are being planned again…")
        body = f"<br><span style='color:#8a8a8a'>{old}</span>" if old else ""
        self.preview.setText(f"<i>{head}</i>{body}")

    def _refresh(self) -> None:
        local = self.local.isChecked()
        for w in (self.accelerator, self.gpus, self.cost_on):
            w.setEnabled(local)
        cpu = self.accelerator.currentData() == "cpu"
        self.gpus.setEnabled(local and not cpu)
        # a CPU has no GPUs: the row says what such a run uses (one process), not a GPU count
        self.gpus_label.setText("    Processes:" if cpu else "    &GPUs:")
        self.gpus_hint.setText("A CPU run uses one process." if cpu else "How many of them the run may use.")
        if cpu and self.gpus.value() != 1:
            self.gpus.blockSignals(True)
            self.gpus.setValue(1)
            self.gpus.blockSignals(False)
        self.usd_per_hour.setEnabled(local and self.cost_on.isChecked())
        for w in (self.region, self.sku, self.priority):
            w.setEnabled(not local)
        self.region_hint.setText(self._region_note())
        preset = self.preset()
        self.hours.setEnabled(preset == "budget_custom")
        p = self.confidence_text()
        sure = f"{p}: {self._in_ten()} runs in 10 would"
        self.deadline_hint.setText(
            f"No deadline: the planner recommends the cheapest hardware (a cost cap is checked at {sure} stay "
            "under it)." if preset == "budget_none" else
            f"A target for the whole run, teacher passes included: the planner recommends the cheapest hardware "
            f"that finishes within {self.budget_hours():g} hours at {sure}. Slower hardware stays in the "
            "comparison, marked as missing it.")
        self.usd.setEnabled(self.usd_on.isChecked())
        self.sig_changed.emit()

    def confidence_text(self) -> str:
        return f"P{round(self.confidence.currentData() * 100)}"

    def _in_ten(self) -> str:
        n = self.confidence.currentData() * 10
        return f"{n:g}" if n == int(n) else f"{n:.1f}"

    def _region_note(self) -> str:
        """Where this region's prices come from, and what to do for fresher ones, in the app's words (the buttons
        of the planner), not a command line."""
        region = normalise_region(self.region.currentText())
        if not REGION_RE.fullmatch(region):
            return "An Azure region name, like eastus or westeurope (“East US” is accepted)."
        try:
            from ...engine.catalog.prices import load_prices

            table = load_prices(region)
        except (DistillError, OSError, ValueError) as exc:
            return f"Prices for {region}: {exc}"
        refresh = "“Refresh prices” in the planner fetches current ones"
        if not table.prices:
            return (f"No prices are known for {region}: the planner will show times but no costs; {refresh}, or pick "
                    "a region with prices (eastus, westeurope).")
        if table.origin == "bundled":
            unread = " (a saved price file could not be read)" if "ignored" in table.note else ""
            return f"Prices for {region}: the bundled table from {table.fetched_on}{unread}; {refresh}."
        return f"Prices for {region}: Azure's retail prices as fetched on {table.fetched_on}; {refresh}."

    def preset(self) -> str:
        for name, b in self.preset_buttons.items():
            if b.isChecked():
                return name
        return "budget_none"

    def budget_hours(self) -> float | None:
        preset = self.preset()
        if preset == "budget_custom":
            return round(self.hours.value(), 2)
        return PRESETS[preset][1]

    # ---- values
    def load(self, hw: Hardware, budget: Budget) -> None:
        (self.local if hw.target == "local" else self.azure).setChecked(True)
        if hw.accelerator:
            i = self.accelerator.findData(hw.accelerator)
            if i < 0:  # an alias or a name: show it as typed, the review page reports what is wrong
                self.accelerator.addItem(hw.accelerator, hw.accelerator)
                i = self.accelerator.count() - 1
            self.accelerator.setCurrentIndex(i)
        else:
            self.accelerator.setCurrentIndex(max(self.accelerator.findData("h100-sxm"), 0))
        self.gpus.setValue(hw.gpus)
        self.cost_on.setChecked(hw.usd_per_hour is not None)
        self.usd_per_hour.setValue(hw.usd_per_hour or 0.0)
        self.region.setCurrentText(hw.region)
        i = self.sku.findData(hw.sku) if hw.sku else 0
        if i < 0:
            self.sku.addItem(hw.sku, hw.sku)
            i = self.sku.count() - 1
        self.sku.setCurrentIndex(i)
        self.priority.setCurrentIndex(max(self.priority.findData(hw.priority), 0))
        if budget.hours is None:
            name = "budget_none"
        elif budget.hours == 3.0:
            name = "budget_3h"
        elif budget.hours == 27.0:
            name = "budget_27h"
        else:
            name = "budget_custom"
            self.hours.setValue(budget.hours)
        self.preset_buttons[name].setChecked(True)
        self.usd_on.setChecked(budget.usd is not None)
        if budget.usd is not None:
            self.usd.setValue(budget.usd)
        i = self.confidence.findData(budget.confidence)
        if i < 0:                       # a plan's own confidence (0.85): listed as it is
            self.confidence.addItem(f"P{budget.confidence * 100:g}", budget.confidence)
            i = self.confidence.count() - 1
        self.confidence.setCurrentIndex(i)
        self._refresh()

    def hardware_values(self) -> dict[str, Any]:
        """The [hardware] keys this page controls (``nodes`` of an edited plan is kept by the wizard)."""
        region = normalise_region(self.region.currentText())
        if self.local.isChecked():
            acc = self.accelerator.currentData()
            out = {"target": "local", "accelerator": acc, "gpus": 1 if acc == "cpu" else self.gpus.value(),
                   "usd_per_hour": round(self.usd_per_hour.value(), 4) if self.cost_on.isChecked() else None,
                   "sku": None, "priority": self.priority.currentData()}
            if REGION_RE.fullmatch(region):  # unused by a local run; a half-typed one must not block the plan
                out["region"] = region
            return out
        return {"target": "azure", "region": region, "sku": self.sku.currentData(),
                "priority": self.priority.currentData(), "accelerator": None, "usd_per_hour": None}

    def budget_values(self) -> dict[str, Any]:
        return {"hours": self.budget_hours(), "usd": round(self.usd.value(), 2) if self.usd_on.isChecked() else None,
                "confidence": self.confidence.currentData()}
