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


def test_the_bundle_carries_what_the_libraries_read_at_run_time():
    """The spec's runtime closure: the distributions the bundled extras need (not the dev or bundle tools), with
    the data files they read next to their code (kernels' python_depends.json: a bundle without it cannot load a
    model, as transformers asks kernels at load time)."""
    from bundle_config import is_runtime_data, normalise, runtime_distributions, runtime_import_packages
    from PyInstaller.utils.hooks import collect_data_files

    dists = {normalise(d) for d in runtime_distributions()}
    assert {"torch", "transformers", "peft", "accelerate", "kernels", "huggingface-hub", "azure-ai-ml",
            "pyside6-essentials", "keyring"} <= dists
    assert not dists & {"pytest", "hypothesis", "pyinstaller", "scipy", "mlflow-skinny"}
    packages = runtime_import_packages(runtime_distributions())
    assert "kernels" in packages and "PySide6" not in packages and "torch" not in packages
    files = {f"{dest}/{Path(src).name}" for pkg in packages for src, dest in collect_data_files(pkg)
             if is_runtime_data(src)}
    assert "kernels/_internals/python_depends.json" in files
    assert "huggingface_hub/templates/modelcard_template.md" in files
    assert not [f for f in files if f.endswith((".py", ".typed", ".pyx")) or "/tests/" in f]


def test_the_smoke_test_names_what_a_bundle_lacks(tmp_path):
    """A bundle folder without the runtime files is caught before it is started, file by file."""
    from smoke import missing_runtime_files

    (tmp_path / "_internal").mkdir()
    missing = missing_runtime_files(tmp_path)
    assert "metadata of kernels" in missing and "kernels/_internals/python_depends.json" in missing
