"""GUI tests: offscreen Qt, and a private data and config folder for every test, so no test sees the user's runs,
settings or another test's."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

SCREENSHOTS = Path(os.environ.get("DISTILL_STUDIO_SCREENSHOTS", Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"))


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISTILL_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture
def screenshot():
    """``screenshot(widget, "name")`` saves ``artifacts/screenshots/name.png`` and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(widget, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        assert widget.grab().save(str(path)), f"could not save {path}"
        return path

    return save
