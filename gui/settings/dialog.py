"""The Settings dialog: runs folder and theme, and the Azure ML workspace and service principal.

Built in code (no .ui file) so the object names tests rely on live next to the widgets. Nothing changes until OK,
and OK does nothing while a field is invalid: the problem is shown in red under that field, naming the field and
what would be valid, because a wrong subscription id or region otherwise only surfaces minutes later as an Azure
error far from where it was typed. The client secret goes to the OS keyring, never into ``Settings``.
"""
from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QPushButton, QScrollArea, QTabWidget, QVBoxLayout, QWidget,
)

from .. import dialogs, workers
from . import secrets
from .model import AzureSettings, Settings, normalise_region, save_settings, settings_path

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
REGION_RE = re.compile(r"^[a-z0-9]+$")
# Azure's own naming rules, so a typo is caught here rather than by a failed job submission.
RESOURCE_GROUP_RE = re.compile(r"^[-\w.()]{1,90}$")
WORKSPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")

THEME_CHOICES = (("system", "Follow the system"), ("light", "Light"), ("dark", "Dark"))
SIGN_IN_CHOICES = (("browser", "Browser (interactive sign-in)"), ("azure-cli", "Azure CLI account (az login)"),
                   ("service-principal", "Service principal (client secret in the OS keyring)"))
CLUSTER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,15}$")
KV_SECRET_RE = re.compile(r"^[A-Za-z0-9-]{1,127}$")
GUID_HINT = "8-4-4-4-12 hexadecimal digits, like 0a1b2c3d-4e5f-6789-abcd-ef0123456789"


def _error_colour() -> str:
    from ..theme import is_dark

    app = QApplication.instance()
    return "#ff7b72" if app is not None and is_dark(app) else "#c62828"


def _ok_colour() -> str:
    from ..theme import is_dark

    app = QApplication.instance()
    return "#7ee787" if app is not None and is_dark(app) else "#2e7d32"


class _PageScroll(QScrollArea):
    """A scroll area as tall as its page would like to be: the dialog opens showing the page whole, and scrolls
    only when made smaller than that.

    The page is never shorter than its wrapped text needs at the width it has: a scroll area sizes its page from the
    page's size hint, which is worked out at the page's preferred width, so a message that wraps onto one more line
    at the real width (a narrower dialog, the scroll bar appearing) would lose its last line. The page's minimum
    height follows its width instead."""

    def sizeHint(self):  # noqa: N802 (Qt API)
        hint = self.widget().sizeHint() if self.widget() is not None else super().sizeHint()
        return hint.grownBy(self.contentsMargins()) if hasattr(hint, "grownBy") else hint

    def setWidget(self, page: QWidget) -> None:  # noqa: N802 (Qt API)
        super().setWidget(page)
        page.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if watched is self.widget() and event.type() in (QEvent.Type.Resize, QEvent.Type.LayoutRequest):
            self.fit_page()
        return False

    def fit_page(self) -> None:
        page = self.widget()
        layout = page.layout() if page is not None else None
        if layout is None or not layout.hasHeightForWidth():
            return
        need = layout.totalHeightForWidth(page.width())
        if need > 0 and need != page.minimumHeight():
            page.setMinimumHeight(need)


class SettingsDialog(QDialog):
    """Edits ``settings`` in place and saves it on OK; emits ``sig_settings_changed`` afterwards so open windows
    can re-read what they show (theme, runs folder)."""

    sig_settings_changed = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._errors: dict[str, QLabel] = {}
        self.setWindowTitle("Settings")
        self.setObjectName("settings_dialog")
        self.setMinimumWidth(600)

        self.tabs = QTabWidget(objectName="settings_tabs")
        self.tabs.addTab(self._build_general(), "General")
        self.tabs.addTab(self._scrolling(self._build_azure()), "Azure")

        self.save_error = QLabel(objectName="save_error_label", wordWrap=True)
        self.save_error.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.save_error)
        layout.addWidget(self.buttons)
        self._load(settings)

    # --- building -----------------------------------------------------------------------------------------------

    @staticmethod
    def _scrolling(page: QWidget) -> QScrollArea:
        """A page that scrolls when the dialog is smaller than it: a long message is never cut off."""
        area = _PageScroll(objectName=page.objectName() + "_scroll" if page.objectName() else "page_scroll")
        area.setWidgetResizable(True)
        area.setFrameShape(QScrollArea.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        area.setWidget(page)
        return area

    def _fit(self) -> None:
        """Grow the dialog to show a page whole (up to the screen), after its messages changed."""
        area = self.tabs.widget(1)
        page = area.widget()
        width = max(area.viewport().width(), self.width() - 40)
        need = page.layout().totalHeightForWidth(width) if page.layout().hasHeightForWidth() else -1
        need = max(need, page.sizeHint().height())
        have = area.viewport().height() if area.isVisible() else self.tabs.currentWidget().height()
        missing = need - have + 24       # the layout's spacing and the frame
        screen = self.screen().availableGeometry().height() if self.screen() is not None else 900
        if missing > 0:
            self.resize(self.width(), min(self.height() + missing, int(screen * 0.9)))

    def _field(self, name: str, *widgets: QWidget) -> QWidget:
        """The widget(s) of a form row with an error label under them; hidden until the field is invalid, so a
        valid form has no gaps."""
        box = QWidget()
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        for w in widgets:
            row.addWidget(w)
        column.addLayout(row)
        err = QLabel(objectName=f"{name}_error", wordWrap=True)
        err.hide()
        column.addWidget(err)
        self._errors[name] = err
        return box

    def _line(self, name: str, placeholder: str = "") -> QLineEdit:
        edit = QLineEdit(objectName=name)
        edit.setPlaceholderText(placeholder)
        edit.setClearButtonEnabled(True)
        return edit

    def _build_general(self) -> QWidget:
        page = QWidget(objectName="general_page")
        form = QFormLayout(page)
        default_runs = self._settings.model_copy(update={"runs_dir": ""}).resolved_runs_dir()
        self.runs_dir_edit = self._line("runs_dir_edit", str(default_runs))
        self.runs_dir_edit.setToolTip(f"Where new runs are created. Leave empty for the default, {default_runs}")
        browse = QPushButton("Browse…", objectName="runs_dir_browse")
        browse.clicked.connect(self._browse_runs_dir)
        form.addRow("Runs folder:", self._field("runs_dir_edit", self.runs_dir_edit, browse))

        self.theme_combo = QComboBox(objectName="theme_combo")
        for key, label in THEME_CHOICES:
            self.theme_combo.addItem(label, key)
        form.addRow("Theme:", self._field("theme_combo", self.theme_combo))

        where = QLabel(f"Settings are saved in {settings_path()}", objectName="settings_path_label", wordWrap=True)
        where.setEnabled(False)  # drawn in the palette's muted text colour: information, not a control
        form.addRow(where)
        return page

    def _build_azure(self) -> QWidget:
        page = QWidget(objectName="azure_page")
        column = QVBoxLayout(page)

        ws = QGroupBox("Azure ML workspace")
        form = QFormLayout(ws)
        self.subscription_edit = self._line("subscription_edit", "00000000-0000-0000-0000-000000000000")
        self.resource_group_edit = self._line("resource_group_edit", "e.g. ml-rg")
        self.workspace_edit = self._line("workspace_edit", "e.g. distill-ws")
        self.region_edit = self._line("region_edit", "eastus")
        self.region_edit.setToolTip("Used for prices and as the region of new plans. Written as Azure names it "
                                    "(eastus, westeurope); “East US” is accepted and saved as eastus.")
        form.addRow("Subscription id:", self._field("subscription_edit", self.subscription_edit))
        form.addRow("Resource group:", self._field("resource_group_edit", self.resource_group_edit))
        form.addRow("Workspace:", self._field("workspace_edit", self.workspace_edit))
        form.addRow("Default region:", self._field("region_edit", self.region_edit))
        self.compute_edit = self._line("compute_edit", "empty: one per VM size, created on first use")
        self.compute_edit.setToolTip("An existing AmlCompute cluster to run on. Empty: Distill Studio creates one "
                                     "per VM size (0 nodes when idle) and reuses it.")
        form.addRow("Compute cluster:", self._field("compute_edit", self.compute_edit))
        self.hf_secret_edit = self._line("hf_secret_edit", "for gated models: a secret name, e.g. hf-token")
        self.hf_secret_edit.setToolTip("The name of a secret in the workspace's Key Vault holding a Hugging Face "
                                       "token (Gemma and other gated models). The job reads it with the cluster's "
                                       "managed identity; the token itself never leaves Azure.")
        form.addRow("Hugging Face token secret:", self._field("hf_secret_edit", self.hf_secret_edit))
        self.sign_in_combo = QComboBox(objectName="sign_in_combo")
        for key, label in SIGN_IN_CHOICES:
            self.sign_in_combo.addItem(label, key)
        self.sign_in_combo.setToolTip("The browser and the Azure CLI need no stored secret; a service principal's "
                                      "client secret is kept in the OS keyring only.")
        form.addRow("Sign in with:", self._field("sign_in_combo", self.sign_in_combo))
        self.smoke_threshold_spin = QDoubleSpinBox(objectName="smoke_threshold_spin")
        self.smoke_threshold_spin.setRange(0.0, 1e7)
        self.smoke_threshold_spin.setDecimals(0)
        self.smoke_threshold_spin.setSingleStep(50.0)
        self.smoke_threshold_spin.setPrefix("$")
        self.smoke_threshold_spin.setToolTip(
            "Launch offers a smoke test first (about 10 minutes on the plan's VM size: CUDA, the GPUs, NCCL "
            "bandwidth, the Hugging Face token, storage speed) for an Azure plan whose estimated cost at P80 is "
            "above this. $0: offer it for every plan.")
        form.addRow("Offer a smoke test above:", self._field("smoke_threshold_spin", self.smoke_threshold_spin))
        # signs in and reads the workspace with the values above, before any plan is submitted
        self.test_button = QPushButton("Test connection", objectName="test_connection_button")
        self.test_button.setToolTip("Sign in with the method chosen above and read the workspace, with the values "
                                    "typed here (nothing is saved or submitted)")
        self.test_button.clicked.connect(self.test_connection)
        self.test_status = QLabel(objectName="test_connection_label", wordWrap=True)
        self.test_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.test_status.hide()
        self.connection_result: tuple[bool, str] | None = None   # the last test's outcome, once it answered
        test_row = QWidget()
        row = QHBoxLayout(test_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.test_button)
        row.addStretch(1)
        form.addRow("", test_row)
        form.addRow(self.test_status)
        column.addWidget(ws)

        # only the service principal sign-in uses these: shown when it is chosen (or something is typed in them)
        sp = QGroupBox("Service principal", objectName="service_principal_group")
        self.sp_group = sp
        form = QFormLayout(sp)
        self.tenant_edit = self._line("tenant_edit", "00000000-0000-0000-0000-000000000000")
        self.client_id_edit = self._line("client_id_edit", "00000000-0000-0000-0000-000000000000")
        self.secret_edit = self._line("secret_edit")
        self.secret_edit.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Tenant id:", self._field("tenant_edit", self.tenant_edit))
        form.addRow("Client id:", self._field("client_id_edit", self.client_id_edit))
        form.addRow("Client secret:", self._field("secret_edit", self.secret_edit))

        # Asking the keyring can wait on D-Bus (seconds, on a misconfigured desktop): it runs on a worker, and the
        # secret field stays usable meanwhile (storing it reports any problem when OK is pressed).
        self.keyring_ok = False
        self.keyring_checked = False
        note = QLabel("The client secret is stored in the OS keyring, never in the settings file. "
                      "Leave it empty to keep the secret already stored.", objectName="secret_note", wordWrap=True)
        self.keyring_status_label = QLabel("Checking the OS keyring…", objectName="keyring_status_label",
                                           wordWrap=True)
        workers.start_for(self, secrets.keyring_status, on_result=lambda r: self._keyring_checked(*r))
        form.addRow(note)
        form.addRow(self.keyring_status_label)
        column.addWidget(sp)
        column.addStretch(1)
        self.sign_in_combo.currentIndexChanged.connect(lambda *_: self._show_service_principal())
        self.region_edit.editingFinished.connect(self._normalise_region_field)
        return page

    def _show_service_principal(self, force: bool = False) -> None:
        typed = any(e.text().strip() for e in (self.tenant_edit, self.client_id_edit, self.secret_edit))
        self.sp_group.setVisible(force or typed or self.sign_in_combo.currentData() == "service-principal")
        self._fit()

    def _normalise_region_field(self) -> None:
        """"East US" becomes "eastus" as the user leaves the field: what is saved is what is shown."""
        text = self.region_edit.text()
        if text.strip() and REGION_RE.match(normalise_region(text)) and normalise_region(text) != text:
            self.region_edit.setText(normalise_region(text))

    def _load(self, s: Settings) -> None:
        self.runs_dir_edit.setText(s.runs_dir)
        self.theme_combo.setCurrentIndex(max(0, self.theme_combo.findData(s.theme)))
        a = s.azure
        self.subscription_edit.setText(a.subscription_id)
        self.resource_group_edit.setText(a.resource_group)
        self.workspace_edit.setText(a.workspace)
        self.region_edit.setText(a.region)
        self.compute_edit.setText(a.compute)
        self.hf_secret_edit.setText(a.hf_token_secret)
        self.sign_in_combo.setCurrentIndex(max(0, self.sign_in_combo.findData(a.sign_in)))
        self.smoke_threshold_spin.setValue(a.smoke_test_above_usd)
        self.tenant_edit.setText(a.tenant_id)
        self.client_id_edit.setText(a.client_id)
        self._show_service_principal()

    def _browse_runs_dir(self) -> None:
        path = dialogs.open_folder(self, self._settings, "runs_dir", "Folder for new runs")
        if path:
            self.runs_dir_edit.setText(path)

    # --- validation and OK --------------------------------------------------------------------------------------

    def _show_error(self, name: str, message: str) -> None:
        label = self._errors[name]
        label.setText(message)
        label.setStyleSheet(f"color: {_error_colour()}")
        label.show()

    def _clear_errors(self) -> None:
        for label in (*self._errors.values(), self.save_error):
            label.clear()
            label.hide()

    def validate(self) -> dict[str, str]:
        """Field object name -> message, for every invalid field (empty when all is well)."""
        errors: dict[str, str] = {}
        runs = self.runs_dir_edit.text().strip()
        if runs:
            p = Path(runs).expanduser()
            if not p.is_absolute():
                errors["runs_dir_edit"] = ("Runs folder must be a full path (like /home/me/distill-runs or "
                                           "C:\\distill-runs), or empty for the default.")
            elif p.exists() and not p.is_dir():
                errors["runs_dir_edit"] = f"Runs folder: {p} is a file; choose a folder."
        for name, label, edit in (("subscription_edit", "Subscription id", self.subscription_edit),
                                  ("tenant_edit", "Tenant id", self.tenant_edit),
                                  ("client_id_edit", "Client id", self.client_id_edit)):
            value = edit.text().strip()
            if value and not GUID_RE.match(value):
                errors[name] = f"{label} is not a GUID: expected {GUID_HINT}, or leave it empty."
        rg = self.resource_group_edit.text().strip()
        if rg and (not RESOURCE_GROUP_RE.match(rg) or rg.endswith(".")):
            errors["resource_group_edit"] = ("Resource group may use letters, digits, '-', '_', '.', '(' and ')', "
                                             "up to 90 characters, and must not end with '.'.")
        ws = self.workspace_edit.text().strip()
        if ws and not WORKSPACE_RE.match(ws):
            errors["workspace_edit"] = ("Workspace name must be 3 to 33 letters, digits, '-' or '_', starting with "
                                        "a letter or digit.")
        region = normalise_region(self.region_edit.text())
        if not REGION_RE.match(region):
            errors["region_edit"] = ("Default region must be an Azure region name: letters and digits, like eastus, "
                                     "East US or westeurope.")
        cluster = self.compute_edit.text().strip()
        if cluster and not CLUSTER_RE.match(cluster):
            errors["compute_edit"] = ("Compute cluster name must be 2 to 16 letters, digits or '-', starting with a "
                                      "letter, or empty.")
        hf = self.hf_secret_edit.text().strip()
        if hf and not KV_SECRET_RE.match(hf):
            errors["hf_secret_edit"] = ("Hugging Face token secret: a Key Vault secret name, 1 to 127 letters, digits "
                                        "or '-' (the name, not the token itself), or empty.")
        if self.sign_in_combo.currentData() == "service-principal" and not (
                self.tenant_edit.text().strip() and self.client_id_edit.text().strip()):
            errors["sign_in_combo"] = ("Service principal sign-in needs the tenant id and client id below (and its "
                                       "client secret, stored once); or choose the browser or the Azure CLI.")
        if self.secret_edit.text().strip():
            tenant, client = self.tenant_edit.text().strip(), self.client_id_edit.text().strip()
            if not tenant or not client:
                errors["secret_edit"] = ("Client secret: enter the tenant id and client id too; the secret is "
                                         "stored in the keyring under them.")
        return errors

    def _keyring_checked(self, ok: bool, status: str) -> None:
        try:
            self.keyring_status_label.setText(status)
        except RuntimeError:         # the dialog was closed before the answer came
            return
        self.keyring_ok, self.keyring_checked = ok, True
        if ok:
            self.secret_edit.setPlaceholderText("type a new secret to store or replace it")
        else:
            self.secret_edit.setEnabled(False)
            self.secret_edit.setPlaceholderText("no OS keyring available (see below)")
            self.keyring_status_label.setText(f"{status} Sign in with the browser or the Azure CLI instead (above): "
                                              "neither needs a stored secret.")
            self.keyring_status_label.setStyleSheet(f"color: {_error_colour()}")
        self._fit()

    def _show_errors(self, errors: dict[str, str]) -> bool:
        """Show each message under its field, on the tab that holds the first; True when there was any."""
        self._clear_errors()
        if not errors:
            return False
        if errors.keys() & {"tenant_edit", "client_id_edit", "secret_edit"}:
            self._show_service_principal(force=True)
        for name, message in errors.items():
            self._show_error(name, message)
        first = next(iter(errors))
        for index in range(self.tabs.count()):
            if self.tabs.widget(index).findChild(QWidget, first) is not None:
                self.tabs.setCurrentIndex(index)
        self.findChild(QWidget, first).setFocus()
        QTimer.singleShot(0, self._fit)      # once the messages are laid out: grow to show them whole
        return True

    # --- test connection ----------------------------------------------------------------------------------------

    def _azure_values(self) -> dict[str, str]:
        return {"subscription_id": self.subscription_edit.text().strip(),
                "resource_group": self.resource_group_edit.text().strip(),
                "workspace": self.workspace_edit.text().strip(), "region": normalise_region(self.region_edit.text()),
                "sign_in": self.sign_in_combo.currentData(), "tenant_id": self.tenant_edit.text().strip(),
                "client_id": self.client_id_edit.text().strip()}

    def _say_connection(self, text: str, colour: str = "") -> None:
        self.test_status.setText(text)
        self.test_status.setStyleSheet(f"color: {colour}" if colour else "")
        self.test_status.setVisible(bool(text))
        QTimer.singleShot(0, self._fit)

    def test_connection(self) -> None:
        """Sign in and read the workspace with the values typed (on a worker); the answer is shown under the
        button, in green when the workspace was reached, in red with what to do when not."""
        from .connection import test_connection

        errors = self.validate()
        if self._show_errors(errors):
            self._say_connection("Fix the fields marked in red first; nothing was tried.", _error_colour())
            return
        self.connection_result = None
        self.test_button.setEnabled(False)
        values = self._azure_values()
        self._say_connection(f"Signing in and reading workspace {values['workspace'] or '…'}…")
        workers.start_for(self, test_connection, values, self.secret_edit.text().strip(),
                          on_result=lambda text: self._connection_tested(True, text),
                          on_error=lambda text: self._connection_tested(False, text))

    def _connection_tested(self, ok: bool, text: str) -> None:
        if not ok:  # the engine's message points to this page; here "above" says where
            text = text.replace("in Settings › Azure", "above").replace("Settings › Azure", "these settings")
            text = text.replace("..", ".")
        self.connection_result = (ok, text)
        self.test_button.setEnabled(True)
        self._say_connection(text, _ok_colour() if ok else _error_colour())

    def accept(self) -> None:
        """Validate, store a typed secret, save, and only then close. Every failure leaves the dialog open with the
        reason shown, and the passed ``Settings`` untouched."""
        if self._show_errors(self.validate()):
            return
        self._normalise_region_field()

        tenant, client = self.tenant_edit.text().strip(), self.client_id_edit.text().strip()
        secret = self.secret_edit.text().strip()
        if secret:
            try:
                secrets.store_client_secret(tenant, client, secret)
            except secrets.SecretStoreError as exc:
                self.tabs.setCurrentIndex(1)
                self._show_error("secret_edit", str(exc))
                return
            self.secret_edit.clear()  # don't keep it in the widget longer than needed

        updated = self._settings.model_copy(update={
            "runs_dir": self.runs_dir_edit.text().strip(),
            "theme": self.theme_combo.currentData(),
            "azure": AzureSettings(
                subscription_id=self.subscription_edit.text().strip(),
                resource_group=self.resource_group_edit.text().strip(),
                workspace=self.workspace_edit.text().strip(),
                tenant_id=tenant,
                client_id=client,
                region=normalise_region(self.region_edit.text()),
                sign_in=self.sign_in_combo.currentData(),
                compute=self.compute_edit.text().strip(),
                hf_token_secret=self.hf_secret_edit.text().strip(),
                smoke_test_above_usd=self.smoke_threshold_spin.value(),
            ),
        })
        try:
            save_settings(updated)
        except OSError as exc:
            self.save_error.setText(f"Could not save the settings to {settings_path()}: {exc.strerror or exc}. "
                                    "Check that the folder is writable, then press OK again.")
            self.save_error.setStyleSheet(f"color: {_error_colour()}")
            self.save_error.show()
            return
        # In place, so every holder of this Settings object sees the change.
        for field in ("runs_dir", "theme", "azure"):
            setattr(self._settings, field, getattr(updated, field))
        super().accept()
        self.sig_settings_changed.emit()
