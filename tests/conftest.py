"""Every test gets its own user data folder: runs, caches and the planner's record of watched runs never leak from
one test (or from this machine's real use) into another."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "distill-data"))
    yield
