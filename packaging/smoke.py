"""``make bundle-smoke``: the built bundle, run as a user runs it, with no Python environment around it.

Starts ``DistillStudio --smoke-test`` offscreen (gui/smoke.py: the main window on the demo plan, the estimate, the
demo run launched from the app as the bundle's own process, finished with a student saved) in a fresh data folder,
with PATH, PYTHONPATH and VIRTUAL_ENV scrubbed so nothing outside the bundle can be used; checks ``--version`` of the
app and of its ``distill`` command against pyproject.toml, and the versions of torch, transformers, peft and
accelerate they print against the lock; and first, that the bundle carries the metadata and data files its libraries
read at run time (bundle_config.runtime_distributions). Exits 0 when all pass.
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
from bundle_config import APP, normalise, is_runtime_data, runtime_distributions, runtime_import_packages  # noqa: E402


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


def missing_runtime_files(folder: Path) -> list[str]:
    """What the libraries read at run time that the bundle lacks: the metadata of a runtime distribution, or a data
    file of one of its packages (kernels' python_depends.json, huggingface_hub's templates, ...)."""
    from importlib import metadata

    from PyInstaller.utils.hooks import collect_data_files

    internal = folder / "_internal"
    dists = runtime_distributions()
    have = {normalise(d.metadata["Name"]) for d in metadata.distributions(path=[str(internal)])}
    missing = [f"metadata of {d}" for d in dists if normalise(d) not in have]
    for pkg in runtime_import_packages(dists):
        for src, dest in collect_data_files(pkg):
            if is_runtime_data(src) and not (internal / dest / Path(src).name).is_file():
                missing.append(f"{dest}/{Path(src).name}")
    return missing


def locked_versions() -> str:
    """torch, transformers, peft and accelerate as the lock pins them (what `--version` must print)."""
    from deps import BY_NAME, ROOT, read_pins

    pins = read_pins(ROOT / BY_NAME[LOCK_TARGET].output)
    return ", ".join(f"{n} {pins[n].version}" for n in ("torch", "transformers", "peft", "accelerate"))


LOCK_TARGET = {"win32": "windows-x86_64", "darwin": "macos-arm64"}.get(sys.platform, "linux-x86_64-cpu")


def main() -> int:
    folder = bundle_dir()
    exe = folder / (APP + (".exe" if os.name == "nt" else ""))
    if not exe.is_file():
        print(f"no bundle at {folder}: build it first with `make bundle`", file=sys.stderr)
        return 2
    missing = missing_runtime_files(folder)
    print(f"runtime files: {'all there' if not missing else ', '.join(missing[:20])}")
    if missing:
        print(f"FAILED: the bundle lacks {len(missing)} file(s) its libraries read at run time", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="distill-smoke-") as tmp:
        env = clean_env(Path(tmp))
        want = version()
        locked = locked_versions()
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
            if locked not in text:       # the bundle runs what the lock pins, nothing resolved on the day
                print(f"FAILED: {what} should name the locked {locked}", file=sys.stderr)
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
