"""``make bundle-smoke``: the built bundle, run as a user runs it, with no Python environment around it.

Starts ``DistillStudio --smoke-test`` offscreen (gui/smoke.py: the main window on the demo plan, the estimate, the
demo run launched from the app as the bundle's own process, finished with a student saved) in a fresh data folder,
with PATH, PYTHONPATH and VIRTUAL_ENV scrubbed so nothing outside the bundle can be used; checks ``--version`` of the
app and of its ``distill`` command against pyproject.toml. Exits 0 when all pass.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build import platform_tag, version  # noqa: E402
from bundle_config import APP  # noqa: E402


def bundle_dir() -> Path:
    return HERE.parent / "dist" / f"{APP}-{version()}-{platform_tag()}"


def clean_env(home: Path) -> dict[str, str]:
    """An environment with no Python of ours in it: only the system's own PATH entries, a fresh home."""
    keep = ("LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "TEMP", "TMP")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir()) if os.name != "nt" else \
        os.environ.get("SystemRoot", r"C:\Windows") + r"\System32"
    env.update(HOME=str(home), USERPROFILE=str(home), QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1",
               DISTILL_STUDIO_DATA_DIR=str(home / "data"), DISTILL_STUDIO_CONFIG_DIR=str(home / "config"),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return env


def main() -> int:
    folder = bundle_dir()
    exe = folder / (APP + (".exe" if os.name == "nt" else ""))
    if not exe.is_file():
        print(f"no bundle at {folder}: build it first with `make bundle`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="distill-smoke-") as tmp:
        env = clean_env(Path(tmp))
        want = version()
        checks = {
            "app --version": [str(exe), "--version"],
            "distill --version": [str(folder / ("distill.exe" if os.name == "nt" else "distill")), "--version"],
        }
        for what, cmd in checks.items():
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            text = (out.stdout + out.stderr).strip()
            print(f"{what}: {text}")
            if out.returncode != 0 or want not in text:
                print(f"FAILED: {what} should print {want}", file=sys.stderr)
                return 1
        plan = subprocess.run([str(exe), "-m", "distill_studio.engine.cli", "plan",
                               str(folder / "_internal" / "distill_studio" / "resources" / "demo" / "plan.toml")],
                              env=env, capture_output=True, text=True, timeout=300)
        print("distill plan (demo):", plan.stdout.splitlines()[:12] and "\n  " + "\n  ".join(plan.stdout.splitlines()[8:12]))
        if plan.returncode != 0:
            print(plan.stderr, file=sys.stderr)
            return 1
        t0 = time.monotonic()
        smoke = subprocess.run([str(exe), "--smoke-test"], env=env, timeout=1500)
        print(f"smoke test: exit {smoke.returncode} in {time.monotonic() - t0:.0f} s")
        return smoke.returncode


if __name__ == "__main__":
    sys.exit(main())
