"""Step 5: where the run happens (this machine, or Azure Machine Learning) and the budget (deadline, cost cap).

The two budget presets are the ones users ask for most: a run that is done "under 3 hours" (this afternoon) or in
"about 27 hours" (by tomorrow). The planner then picks the hardware that meets them.
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
from .common import add_row, form_grid, hint, next_row

AZURE_REGIONS = ("eastus", "eastus2", "westus", "westus2", "westus3", "centralus", "southcentralus",
                 "northcentralus", "canadacentral", "brazilsouth", "northeurope", "westeurope", "uksouth",
                 "francecentral", "germanywestcentral", "swedencentral", "switzerlandnorth", "norwayeast",
                 "uaenorth", "centralindia", "japaneast", "koreacentral", "southeastasia", "australiaeast")
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
        add_row(grid, "    &GPUs:", self.gpus, "How many of them the run may use.")
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
        add_row(grid, "    C&ost:", holder, "Optional: what this machine costs to run, so the plan can show "
                                            "a price (electricity, a rented box).")

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
        add_row(grid, "    VM si&ze:", self.sku, "Leave on “Compare every size” to let the planner choose; pick one "
                                                 "to plan for that size only.")
        self.priority = QComboBox()
        self.priority.setObjectName("hw_priority")
        self.priority.addItem("Dedicated", "dedicated")
        self.priority.addItem("Low priority", "low-priority")
        add_row(grid, "    &Priority:", self.priority, "Low priority costs much less but Azure may evict the nodes; "
                                                     "the run resumes from its last checkpoint.")
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
        self.usd.setRange(1.0, 100_000_000.0)
        self.usd.setDecimals(0)
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
                                   "cost more is ruled out.")
        budget = QGroupBox("Budget")
        budget.setLayout(bgrid)

        # what the choices so far allow, planned live: whether 3 hours is possible before the plan is saved
        self.preview = QLabel("")
        self.preview.setObjectName("hardware_preview")
        self.preview.setWordWrap(True)
        self.preview.setTextFormat(Qt.TextFormat.RichText)
        preview_box = QGroupBox("What these choices allow")
        QVBoxLayout(preview_box).addWidget(self.preview)

        box = QVBoxLayout(self)
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
        b = self.preset_buttons
        order = (self.local, self.accelerator, self.gpus, self.cost_on, self.usd_per_hour, self.azure, self.region,
                 self.sku, self.priority, b["budget_3h"], b["budget_27h"], b["budget_custom"], self.hours,
                 b["budget_none"], self.usd_on, self.usd)
        for first, second in zip(order, order[1:]):
            QWidget.setTabOrder(first, second)

    def show_preview(self, text: str) -> None:
        self.preview.setText(text)

    def _refresh(self) -> None:
        local = self.local.isChecked()
        for w in (self.accelerator, self.gpus, self.cost_on):
            w.setEnabled(local)
        self.gpus.setEnabled(local and self.accelerator.currentData() != "cpu")
        self.usd_per_hour.setEnabled(local and self.cost_on.isChecked())
        for w in (self.region, self.sku, self.priority):
            w.setEnabled(not local)
        self.region_hint.setText(self._region_note())
        preset = self.preset()
        self.hours.setEnabled(preset == "budget_custom")
        self.deadline_hint.setText(
            "No deadline: the planner picks the cheapest hardware." if preset == "budget_none" else
            f"The whole run, teacher passes included, must finish within {self.budget_hours():g} hours; the planner "
            "rules out hardware that would take longer.")
        self.usd.setEnabled(self.usd_on.isChecked())
        self.sig_changed.emit()

    def _region_note(self) -> str:
        region = normalise_region(self.region.currentText())
        try:
            from ...engine.catalog.prices import load_prices

            note = load_prices(region).note
        except (DistillError, OSError, ValueError) as exc:
            note = str(exc)
        return f"Prices for {region or 'this region'}: {note}" if note else f"Azure region {region}."

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
        return {"hours": self.budget_hours(), "usd": round(self.usd.value(), 2) if self.usd_on.isChecked() else None}
