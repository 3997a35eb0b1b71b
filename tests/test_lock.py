"""The one lock (lock/, packaging/deps.py): it agrees with pyproject.toml (CI fails when it does not), every target
pins every package with its hashes, the targets share their versions, and this checkout runs exactly the lock."""
from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))
import deps  # noqa: E402

PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_pyproject_and_the_lock_agree():
    assert deps.check() == []
    out = subprocess.run([sys.executable, str(ROOT / "packaging" / "deps.py"), "check"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "agree" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("edit,expected", [
    # a range the lock's pin falls outside of
    (("\"transformers>=4.50\"", "\"transformers>=99\""), r"pins transformers==\S+, outside pyproject.toml's"),
    # a new dependency the lock has not resolved
    (("\"psutil>=5.9\",", "\"psutil>=5.9\",\n    \"rich-click>=1\","), r"has no rich-click"),
    # a changed extra, even one the pins still meet: the lock was made from other inputs
    (("\"pytest>=8\",", "\"pytest>=7\","), r"made from other inputs.*run `make lock`"),
])
def test_a_pyproject_the_lock_was_not_made_from_is_caught(edit, expected):
    old, new = edit
    assert old in PYPROJECT
    problems = deps.check(PYPROJECT.replace(old, new, 1))
    assert problems and any(re.search(expected, p) for p in problems), problems
    assert all("run `make lock`" in p for p in problems)


def test_a_dependency_for_another_platform_is_judged_on_its_own_platform():
    """A requirement with a marker counts only where it applies: pywin32-ctypes is keyring's on Windows."""
    text = PYPROJECT.replace("\"psutil>=5.9\",", "\"psutil>=5.9\",\n    \"pywin32-ctypes>=0.2; sys_platform == 'win32'\",")
    problems = [p for p in deps.check(text) if "pywin32" in p]
    assert problems == []          # Windows has it pinned; Linux and macOS are not asked for it
    text = PYPROJECT.replace("\"psutil>=5.9\",", "\"psutil>=5.9\",\n    \"pywin32-ctypes>=99; sys_platform == 'win32'\",")
    problems = [p for p in deps.check(text) if "pywin32" in p]
    assert problems and all("windows-x86_64" in p for p in problems)


@pytest.mark.parametrize("target", deps.TARGETS, ids=[t.name for t in deps.TARGETS])
def test_every_pin_of_every_target_has_its_hashes(target):
    pins = deps.read_pins(ROOT / target.output)
    assert len(pins) > 50
    for pin in pins.values():
        assert pin.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin.line
    text = (ROOT / target.output).read_text()
    assert f"# Install: python packaging/deps.py install {target.name}" in text
    assert "/opt/" not in text and "/tmp/" not in text      # nothing of the machine that made it


def test_the_targets_share_every_version_but_torchs():
    """Built, tested and shipped with the same versions: only torch (and what only one platform needs) differs."""
    checkout = deps.read_pins(ROOT / "lock" / "linux-x86_64-cpu.txt")
    for target in deps.TARGETS[1:]:
        other = deps.read_pins(ROOT / target.output)
        differ = {n: (checkout[n].version, p.version) for n, p in other.items()
                  if n in checkout and checkout[n].version != p.version and n != "torch"}
        assert differ == {}, (target.name, differ)
    torch = {t.name: deps.read_pins(ROOT / t.output)["torch"].version for t in deps.TARGETS}
    assert torch["linux-x86_64-cpu"].endswith("+cpu") and torch["azure-rehearsal"] == torch["linux-x86_64-cpu"]
    assert torch["windows-x86_64"] == torch["macos-arm64"] == torch["linux-x86_64-cpu"].split("+")[0]
    assert "+" not in torch["azure-node"]


def test_this_checkout_runs_exactly_the_lock():
    """`make test` and `make demo` install the lock and nothing else: every pin is the version installed here."""
    pins = deps.read_pins(ROOT / "lock" / "linux-x86_64-cpu.txt")
    wrong = {}
    for name, pin in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != pin.version:
            wrong[name] = (pin.version, have)
    assert wrong == {}, f"installed versions differ from lock/linux-x86_64-cpu.txt (run `make clean test`): {wrong}"


def test_install_refuses_another_python_with_what_to_do():
    target = deps.Target("x", "lock/linux-x86_64-cpu.txt", "x", "x86_64-manylinux_2_28", (), (), python="3.99")
    with pytest.raises(deps.LockError, match=r"made for Python 3\.99; this is Python 3\.\d+.*PYTHON=python3\.99"):
        deps.install(target)


def test_read_pins_joins_continuation_lines(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("# c\nFoo_Bar==1.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64
                 + "\n    # via x\nbaz==2 ; sys_platform == 'linux' \\\n    --hash=sha256:" + "c" * 64 + "\n")
    pins = deps.read_pins(f)
    assert list(pins) == ["foo-bar", "baz"]
    assert pins["foo-bar"].version == "1.0" and len(pins["foo-bar"].hashes) == 2
    assert pins["baz"].version == "2" and pins["baz"].hashes == ["sha256:" + "c" * 64]
