"""Settings: the model on disk, the secret in the keyring, the dialog, the theme and the About box."""
from __future__ import annotations

import json
import subprocess
import sys

import keyring
import keyring.backend
import pytest
from keyring.backends import fail
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from distill_studio.gui.about import about_text, show_about
from distill_studio.gui.settings import Settings, load_settings, save_settings, settings_path
from distill_studio.gui.settings import secrets
from distill_studio.gui.settings.dialog import SettingsDialog
from distill_studio.gui.theme import apply_theme, is_dark

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SUB = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
SECRET = "s3cr3t-Value~do-not-leak"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend that keeps passwords in a dict. Its priority raises, so keyring never picks it on
    its own for another test; it is only used when set explicitly."""

    @keyring.backend.properties.classproperty
    def priority(cls):
        raise RuntimeError("test backend; only used when set explicitly")

    def __init__(self):
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        if self.store.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("not found")


@pytest.fixture
def memory_keyring():
    before = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)


@pytest.fixture
def no_keyring(monkeypatch):
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(before)


@pytest.fixture
def theme_restored(qapp):
    yield qapp
    apply_theme(qapp, "system")


def ok_button(dialog):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)


# --- the settings file --------------------------------------------------------------------------------------------

def test_round_trip(tmp_path):
    s = Settings(runs_dir=str(tmp_path / "runs"), theme="dark")
    s.azure.subscription_id = SUB
    s.add_recent(tmp_path / "a.toml")
    s.remember_dir("plans", tmp_path)
    save_settings(s)
    assert settings_path().is_relative_to(tmp_path / "config")
    loaded, warning = load_settings()
    assert warning == ""
    assert loaded == s
    assert loaded.azure.subscription_id == SUB


def test_corrupt_file_gives_defaults_and_keeps_a_copy():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    loaded, warning = load_settings()
    assert loaded == Settings()
    assert str(path) in warning
    bad = path.with_suffix(".json.bad")
    assert bad.read_text(encoding="utf-8") == "{not json"
    assert str(bad) in warning
    assert not path.exists()


def test_newer_version_left_untouched():
    path = settings_path()
    path.parent.mkdir(parents=True)
    text = json.dumps({"version": 99, "theme": "dark", "future": {"x": 1}})
    path.write_text(text, encoding="utf-8")
    loaded, warning = load_settings()
    assert loaded == Settings()
    assert "newer" in warning and str(path) in warning
    assert path.read_text(encoding="utf-8") == text
    assert not path.with_suffix(".json.bad").exists()


# --- the secret ---------------------------------------------------------------------------------------------------

def test_secret_round_trip_in_keyring(memory_keyring):
    assert secrets.load_client_secret(TENANT, CLIENT) is None
    secrets.store_client_secret(TENANT, CLIENT, SECRET)
    assert memory_keyring.store == {("distill-studio", f"azure:{TENANT}:{CLIENT}"): SECRET}
    assert secrets.load_client_secret(TENANT, CLIENT) == SECRET
    secrets.delete_client_secret(TENANT, CLIENT)
    assert secrets.load_client_secret(TENANT, CLIENT) is None
    secrets.delete_client_secret(TENANT, CLIENT)  # already gone: not an error
    ok, status = secrets.keyring_status()
    assert ok and "MemoryKeyring" in status


def test_secret_needs_tenant_and_client(memory_keyring):
    with pytest.raises(secrets.SecretStoreError, match="tenant id and client id"):
        secrets.store_client_secret("", CLIENT, SECRET)


def test_no_keyring_is_a_clear_error(no_keyring):
    ok, status = secrets.keyring_status()
    assert not ok
    assert "No OS keyring" in status
    if sys.platform.startswith("linux"):
        assert "gnome-keyring" in status
    for call in (lambda: secrets.store_client_secret(TENANT, CLIENT, SECRET),
                 lambda: secrets.load_client_secret(TENANT, CLIENT),
                 lambda: secrets.delete_client_secret(TENANT, CLIENT)):
        with pytest.raises(secrets.KeyringUnavailableError, match="No OS keyring") as info:
            call()
        assert isinstance(info.value, secrets.DistillError)
        assert SECRET not in str(info.value)


def test_plaintext_backend_is_not_a_silent_fallback(monkeypatch):
    """A keyrings.alt store is plaintext; it counts only when chosen by PYTHON_KEYRING_BACKEND."""
    fake = type("PlaintextKeyring", (MemoryKeyring,), {"__module__": "keyrings.alt.file"})
    before = keyring.get_keyring()
    keyring.set_keyring(fake())
    try:
        monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
        assert secrets.keyring_status()[0] is False
        with pytest.raises(secrets.KeyringUnavailableError, match="does not encrypt"):
            secrets.store_client_secret(TENANT, CLIENT, SECRET)
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
        ok, status = secrets.keyring_status()
        assert ok and "does not encrypt" in status
    finally:
        keyring.set_keyring(before)


# --- the dialog ---------------------------------------------------------------------------------------------------

def test_invalid_guid_blocks_ok_and_names_the_field(qtbot, memory_keyring):
    s = Settings()
    dialog = SettingsDialog(s)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.subscription_edit.setText("not-a-guid")
    dialog.region_edit.setText("East US/2")
    with qtbot.assertNotEmitted(dialog.sig_settings_changed):
        ok_button(dialog).click()
    assert dialog.isVisible() and dialog.result() == 0
    err = dialog.findChild(type(dialog.save_error), "subscription_edit_error")
    assert err.isVisible()
    assert "Subscription id" in err.text() and "GUID" in err.text()
    assert "c62828" in err.styleSheet() or "ff7b72" in err.styleSheet()
    region_err = dialog.findChild(type(dialog.save_error), "region_edit_error")
    assert "Default region" in region_err.text() and "eastus" in region_err.text()
    assert dialog.tabs.currentIndex() == 1  # the Azure tab, where the bad field is
    assert s == Settings()
    assert not settings_path().exists()

    # "East US" is how the portal writes it: accepted, and saved in the ARM spelling the wizard and prices use
    dialog.subscription_edit.setText(SUB)
    dialog.region_edit.setText("East US 2")
    with qtbot.waitSignal(dialog.sig_settings_changed, timeout=1000):
        ok_button(dialog).click()
    assert not err.isVisible() and not region_err.isVisible()
    assert s.azure.subscription_id == SUB and s.azure.region == "eastus2"
    assert dialog.region_edit.text() == "eastus2"
    assert json.loads(settings_path().read_text())["azure"]["region"] == "eastus2"


def test_ok_updates_in_place_saves_and_keeps_secret_out_of_file(qtbot, memory_keyring, tmp_path):
    s = Settings()
    holder = s  # another part of the app holding the same object
    dialog = SettingsDialog(s)
    qtbot.addWidget(dialog)
    assert dialog.runs_dir_edit.placeholderText() == str(s.resolved_runs_dir())
    qtbot.waitUntil(lambda: dialog.keyring_checked, timeout=5000)    # asked on a worker, not the GUI thread
    assert dialog.keyring_ok and "MemoryKeyring" in dialog.keyring_status_label.text()
    dialog.runs_dir_edit.setText(str(tmp_path / "my-runs"))
    dialog.theme_combo.setCurrentIndex(dialog.theme_combo.findData("dark"))
    for name, value in (("subscription_edit", SUB), ("resource_group_edit", "ml-rg"), ("workspace_edit", "distill-ws"),
                        ("tenant_edit", TENANT), ("client_id_edit", CLIENT), ("region_edit", "westeurope")):
        dialog.findChild(type(dialog.runs_dir_edit), name).setText(value)
    dialog.secret_edit.setText(SECRET)
    with qtbot.waitSignal(dialog.sig_settings_changed, timeout=1000):
        ok_button(dialog).click()

    assert holder.runs_dir == str(tmp_path / "my-runs") and holder.theme == "dark"
    assert holder.azure.workspace == "distill-ws" and holder.azure.region == "westeurope"
    text = settings_path().read_text(encoding="utf-8")
    assert SECRET not in text
    # no field holds a secret (hf_token_secret holds the *name* of a Key Vault secret, empty here)
    azure = json.loads(text)["azure"]
    assert not [k for k in azure if "secret" in k.lower() and k != "hf_token_secret"] and not azure["hf_token_secret"]
    assert load_settings()[0] == holder
    assert memory_keyring.store[("distill-studio", f"azure:{TENANT}:{CLIENT}")] == SECRET
    assert dialog.secret_edit.text() == ""


def test_secret_without_ids_is_refused(qtbot, memory_keyring):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.secret_edit.setText(SECRET)
    ok_button(dialog).click()
    err = dialog.findChild(type(dialog.save_error), "secret_edit_error")
    assert "tenant id and client id" in err.text()
    assert memory_keyring.store == {}
    assert not settings_path().exists()


def test_dialog_without_keyring_disables_secret(qtbot, no_keyring):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.keyring_checked, timeout=5000)
    assert not dialog.secret_edit.isEnabled()
    assert "No OS keyring" in dialog.keyring_status_label.text()
    # the sign-ins that need no stored secret are offered instead, and a service principal without its ids is
    # refused with the reason
    assert "browser or the Azure CLI" in dialog.keyring_status_label.text()
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("service-principal"))
    assert "sign_in_combo" in dialog.validate()
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("azure-cli"))
    assert dialog.validate() == {}
    with qtbot.waitSignal(dialog.sig_settings_changed, timeout=1000):
        ok_button(dialog).click()  # everything else still saves
    assert settings_path().exists()
    assert json.loads(settings_path().read_text())["azure"]["sign_in"] == "azure-cli"


def test_cancel_changes_nothing(qtbot, memory_keyring):
    s = Settings()
    dialog = SettingsDialog(s)
    qtbot.addWidget(dialog)
    dialog.theme_combo.setCurrentIndex(dialog.theme_combo.findData("light"))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()
    assert s.theme == "system" and not settings_path().exists()


# --- theme --------------------------------------------------------------------------------------------------------

def test_theme_dark_and_light(theme_restored):
    import pyqtgraph
    from PySide6.QtGui import QColor, QPalette

    app = theme_restored
    apply_theme(app, "dark")
    assert app.style().name().lower() == "fusion"
    assert app.palette().color(QPalette.ColorRole.Window).lightness() < 128
    assert is_dark(app)
    assert QColor(pyqtgraph.getConfigOption("background")).lightness() < 128
    assert QColor(pyqtgraph.getConfigOption("foreground")).lightness() >= 128
    apply_theme(app, "light")
    assert app.palette().color(QPalette.ColorRole.Window).lightness() >= 128
    assert not is_dark(app)
    assert QColor(pyqtgraph.getConfigOption("background")).lightness() >= 128
    with pytest.raises(ValueError, match="theme must be one of"):
        apply_theme(app, "purple")


def test_screenshots_in_both_themes(qtbot, theme_restored, memory_keyring, screenshot):
    app = theme_restored
    s = Settings()
    s.azure.subscription_id = SUB
    for theme, tab, name in (("light", 0, "settings_general_light"), ("dark", 1, "settings_azure_dark")):
        apply_theme(app, theme)
        dialog = SettingsDialog(s)
        qtbot.addWidget(dialog)
        dialog.tabs.setCurrentIndex(tab)
        if theme == "dark":
            dialog.tenant_edit.setText("not-a-guid")
            ok_button(dialog).click()  # show an error message in the shot
        dialog.show()
        qtbot.waitExposed(dialog)
        qtbot.waitUntil(lambda: dialog.keyring_checked, timeout=5000)
        QApplication.processEvents()
        assert (dialog.palette().window().color().lightness() < 128) == (theme == "dark")
        assert screenshot(dialog, name).stat().st_size > 1000


# --- about --------------------------------------------------------------------------------------------------------

def test_about_text_lists_versions_and_folders(qtbot, screenshot):
    from distill_studio.engine.catalog.prices import data_dir
    from distill_studio.gui.settings import config_dir

    text = about_text()
    for label in ("Distill Studio", "Python", "Qt", "PySide6", "pyqtgraph", "torch", "transformers", "peft",
                  "accelerate", "Data folder", "Config folder"):
        assert f"\n{label}: " in f"\n{text}", label
    assert str(data_dir()) in text and str(config_dir()) in text
    box = show_about(None)
    qtbot.addWidget(box)
    assert box.isVisible() and "pyqtgraph" in box.text()
    qtbot.waitExposed(box)
    screenshot(box, "about_box")


def test_about_does_not_import_training_libraries():
    code = ("import sys\n"
            "from distill_studio.gui.about import about_text\n"
            "text = about_text()\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print(text)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch: " in out.stdout


def _clipped(dialog) -> list[str]:
    from PySide6.QtWidgets import QLabel

    out = []
    for label in dialog.findChildren(QLabel):
        if not label.isVisible() or not label.text():
            continue
        if (label.wordWrap() and label.height() < label.heightForWidth(label.width())) or (
                not label.wordWrap() and label.width() < label.sizeHint().width()):
            out.append(label.text()[:60])
    return out


def test_settings_messages_are_never_cut_off(qtbot, screenshot):
    """The keyring's long message (no keyring on this machine) is shown whole: the dialog grows for it, and made
    small, the page scrolls instead of squeezing or cutting its messages."""
    from distill_studio.engine.settings import Settings
    from distill_studio.gui.settings.dialog import SettingsDialog

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.keyring_checked, timeout=10_000)
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("service-principal"))  # shows the keyring
    for index in range(dialog.tabs.count()):
        dialog.tabs.setCurrentIndex(index)
        qtbot.wait(50)
        assert _clipped(dialog) == []
    area = dialog.tabs.widget(1)
    assert area.verticalScrollBar().maximum() == 0          # the Azure page whole, message included
    screenshot(dialog, "settings_azure_keyring_message")
    for size in ((600, 320), (900, 400), (1400, 900)):
        dialog.resize(*size)
        qtbot.wait(50)
        assert _clipped(dialog) == [], size
    dialog.resize(600, 320)
    qtbot.wait(50)
    assert area.verticalScrollBar().maximum() > 0           # small: it scrolls


def test_validation_messages_are_whole_at_every_size(qtbot, no_keyring, screenshot):
    """Five invalid fields at once, the long keyring message, and the dialog made narrower and shorter: every
    message keeps its last line (the page grows with its wrapped text, and scrolls instead of squeezing it)."""
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.keyring_checked, timeout=10_000)
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("service-principal"))
    for name, value in (("subscription_edit", "not-a-guid"), ("resource_group_edit", "rg."),
                        ("workspace_edit", "ws"), ("region_edit", "East US/2"), ("hf_secret_edit", "hf_abc TOKEN!"),
                        ("tenant_edit", "nope")):
        dialog.findChild(type(dialog.runs_dir_edit), name).setText(value)
    ok_button(dialog).click()
    shown = [n for n, label in dialog._errors.items() if label.isVisible()]
    assert len(shown) >= 6, shown
    for size in ((600, 420), (640, 700), (980, 500), (600, 530)):
        dialog.resize(*size)
        qtbot.wait(30)
        assert _clipped(dialog) == [], size
    screenshot(dialog, "settings_azure_invalid_600x530")


def test_service_principal_fields_only_for_that_sign_in(qtbot, memory_keyring):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.tabs.setCurrentIndex(1)
    assert not dialog.sp_group.isVisible()            # the browser sign-in needs none of them
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("service-principal"))
    assert dialog.sp_group.isVisible()
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("azure-cli"))
    assert not dialog.sp_group.isVisible()
    dialog.tenant_edit.setText("not-a-guid")           # a bad value in a hidden field is shown, never hidden
    ok_button(dialog).click()
    assert dialog.sp_group.isVisible() and dialog.findChild(type(dialog.save_error), "tenant_edit_error").isVisible()


# --- test connection: the real azure SDK objects against the fake Azure at the HTTP transport ---------------------

@pytest.fixture
def fake_azure(tmp_path, monkeypatch):
    from pathlib import Path

    tests = str(Path(__file__).resolve().parents[1])
    monkeypatch.syspath_prepend(tests)
    import azure_fake

    monkeypatch.setenv(azure_fake.FAKE_DIR_ENV, str(tmp_path / "azure"))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    before = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    yield azure_fake.FakeAzure(tmp_path / "azure"), azure_fake
    keyring.set_keyring(before)


def _connection_dialog(qtbot, F, region="eastus"):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.tabs.setCurrentIndex(1)
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("service-principal"))
    for name, value in (("subscription_edit", F.SUB), ("resource_group_edit", F.RG), ("workspace_edit", F.WS),
                        ("region_edit", region), ("tenant_edit", F.TENANT), ("client_id_edit", F.CLIENT)):
        dialog.findChild(type(dialog.runs_dir_edit), name).setText(value)
    return dialog


def _test(qtbot, dialog):
    qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.connection_result is not None, timeout=60_000)
    assert dialog.test_button.isEnabled() and dialog.test_status.isVisible()
    return dialog.connection_result


def test_test_connection_signs_in_and_reads_the_workspace(qtbot, fake_azure, screenshot):
    fake, F = fake_azure
    dialog = _connection_dialog(qtbot, F, region="East US")
    dialog.secret_edit.setText(SECRET)                 # typed, not stored yet: used for this sign-in only
    ok, text = _test(qtbot, dialog)
    assert ok, text
    assert text.startswith("Connected") and F.WS in text and F.RG in text and F.CLIENT in text
    assert dialog.test_status.text() == text and "2e7d32" in dialog.test_status.styleSheet()
    sent = fake.requests()
    assert any("/token" in r["url"] for r in sent)                       # a real sign-in (Entra ID's token)
    assert any(r["url"].split("?")[0].endswith(f"/workspaces/{F.WS}") for r in sent)
    assert all(SECRET not in r["url"] for r in sent)
    assert SECRET not in text and not settings_path().exists()            # nothing saved, nothing stored
    assert keyring.get_keyring().store == {}
    qtbot.wait(30)
    assert _clipped(dialog) == []
    screenshot(dialog, "settings_test_connection_ok")


def test_test_connection_names_a_missing_workspace(qtbot, fake_azure, screenshot):
    fake, F = fake_azure
    with fake.locked() as s:
        s["workspace"] = False
    keyring.get_keyring().set_password(secrets.SERVICE, f"azure:{F.TENANT}:{F.CLIENT}", SECRET)   # stored earlier
    dialog = _connection_dialog(qtbot, F)
    ok, text = _test(qtbot, dialog)
    assert not ok
    assert "Not found" in text and F.WS in text and "workspace above" in text and ".." not in text
    assert "c62828" in dialog.test_status.styleSheet()
    qtbot.wait(30)
    screenshot(dialog, "settings_test_connection_failed")


def test_test_connection_says_the_sign_in_was_refused(qtbot, fake_azure):
    fake, F = fake_azure
    fake.fail("POST", r"login\.microsoftonline\.com/.*/token", status=401, times=10, code="invalid_client",
              message="AADSTS7000215: Invalid client secret provided.")
    dialog = _connection_dialog(qtbot, F)
    dialog.secret_edit.setText("wrong-secret")
    ok, text = _test(qtbot, dialog)
    assert not ok and "refused the sign-in" in text and "client secret" in text
    assert "wrong-secret" not in text


def test_test_connection_checks_the_fields_first(qtbot, fake_azure):
    fake, F = fake_azure
    dialog = _connection_dialog(qtbot, F)
    dialog.subscription_edit.setText("not-a-guid")
    qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    assert "Fix the fields" in dialog.test_status.text() and dialog.connection_result is None
    assert dialog.findChild(type(dialog.save_error), "subscription_edit_error").isVisible()
    assert fake.requests() == []                       # nothing was sent
