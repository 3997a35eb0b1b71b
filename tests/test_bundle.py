"""The built bundle, when there is one (``make bundle``): its smoke test (packaging/smoke.py) passes. A clean clone
has no bundle, so CI skips this; `make bundle-smoke` runs the same check on demand."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))
from smoke import bundle_dir  # noqa: E402


@pytest.mark.skipif(not bundle_dir().is_dir(), reason="no bundle built (make bundle)")
def test_the_built_bundle_plans_and_trains_the_demo():
    out = subprocess.run([sys.executable, str(ROOT / "packaging" / "smoke.py")], capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "run succeeded" in out.stdout
