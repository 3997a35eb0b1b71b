"""The app's settings: one typed, versioned model, stored as JSON in the user config folder.

Window geometry and splitter state are Qt byte blobs and stay in QSettings; everything a person might read or
that other code depends on is here. Secrets are never in this file: the Azure client secret lives in the OS
keyring (see ``azure/secrets.py``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SETTINGS_VERSION = 1
CONFIG_DIR_ENV = "DISTILL_STUDIO_CONFIG_DIR"
MAX_RECENT = 10


class AzureSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subscription_id: str = Field("", description="Azure subscription id (a GUID)")
    resource_group: str = Field("", description="resource group of the Azure ML workspace")
    workspace: str = Field("", description="Azure ML workspace name")
    tenant_id: str = Field("", description="Microsoft Entra tenant id, for a service principal")
    client_id: str = Field("", description="service principal (app) id; its secret is kept in the OS keyring")
    sign_in: Literal["browser", "azure-cli", "service-principal"] = Field(
        "browser", description="how to sign in: the browser, the Azure CLI's account (az login), or the service "
                               "principal whose client secret is in the OS keyring")
    compute: str = Field("", description="compute cluster to use (empty: one named after the VM size, created on "
                                         "first use)")
    hf_token_secret: str = Field("", description="name of a secret in the workspace's Key Vault holding a Hugging "
                                                 "Face token (gated models such as Gemma); the job reads it with the "
                                                 "cluster's managed identity")
    region: str = Field("eastus", description="default region for prices and new plans")
    smoke_test_above_usd: float = Field(200.0, ge=0, le=1e7, description=(
        "Launch offers a smoke test (`distill azure smoke`: about 10 minutes on the plan's VM size) before an Azure "
        "plan whose estimated cost at P80 is above this many US dollars; 0 offers it for every plan"))


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    version: int = SETTINGS_VERSION
    runs_dir: str = Field("", description="folder for new runs (empty: runs/ in the user data folder)")
    theme: Literal["system", "light", "dark"] = "system"
    azure: AzureSettings = AzureSettings()
    recent_plans: list[str] = Field(default_factory=list)
    dialog_dirs: dict[str, str] = Field(default_factory=dict, description="last folder of each file dialog")

    def add_recent(self, path: str | Path) -> None:
        p = str(Path(path).resolve())
        self.recent_plans = [p] + [r for r in self.recent_plans if r != p][: MAX_RECENT - 1]

    def last_dir(self, key: str) -> str:
        d = self.dialog_dirs.get(key, "")
        return d if d and Path(d).is_dir() else str(Path.home())

    def remember_dir(self, key: str, path: str | Path) -> None:
        p = Path(path)
        self.dialog_dirs = {**self.dialog_dirs, key: str(p if p.is_dir() else p.parent)}

    def resolved_runs_dir(self) -> Path:
        if self.runs_dir:
            return Path(self.runs_dir).expanduser()
        from .catalog.prices import data_dir

        return data_dir() / "runs"


def config_dir() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("distill-studio", appauthor=False))


def settings_path() -> Path:
    return config_dir() / "settings.json"


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring an older settings document up to SETTINGS_VERSION. Version 1 is the first; a later version adds its
    step here (e.g. ``if doc["version"] == 1: ...rename a key...; doc["version"] = 2``)."""
    doc = dict(doc)
    doc.setdefault("version", 1)
    return doc


def load_settings(path: Path | None = None) -> tuple[Settings, str]:
    """The settings and a warning ("" when none). A missing file gives defaults; an unreadable one gives defaults
    and a warning that says which file and why, and the file is kept (renamed ``.bad``) so nothing is lost."""
    path = path or settings_path()
    if not path.exists():
        return Settings(), ""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("the file does not hold a JSON object")
        if int(doc.get("version", 1)) > SETTINGS_VERSION:
            return Settings(), (f"{path} was written by a newer Distill Studio (settings version {doc['version']}); "
                                "using defaults and leaving the file as it is")
        return Settings.model_validate(migrate(doc)), ""
    except (ValueError, ValidationError, OSError) as exc:
        backup = path.with_suffix(".json.bad")
        try:
            path.replace(backup)
        except OSError:
            backup = path
        first = str(exc).splitlines()[0]
        return Settings(), f"settings file {path} could not be read ({first}); using defaults, the old file is {backup}"


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Written to a temporary file and renamed, so a crash never leaves half a settings file."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
