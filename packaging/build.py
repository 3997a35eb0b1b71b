"""Build the packaged app: ``python packaging/build.py`` (``make bundle``).

Renders the icons from ``icons/distill-studio.svg``, runs PyInstaller on ``distill-studio.spec`` (one folder:
``dist/DistillStudio-<version>-<platform>/``), adds the ``distill`` command beside the app, and on Linux packs a
tarball (with a ``.desktop`` file and the icon) and, where ``dpkg-deb`` exists, a ``.deb``. Prints the size and the
build time. Runs on the platform it builds for: PyInstaller does not cross-compile.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bundle_config import APP  # noqa: E402


def version() -> str:
    """The one version: pyproject.toml's."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def platform_tag() -> str:
    system = {"linux": "linux", "win32": "windows", "darwin": "macos"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    return f"{system}-{machine}"


def render_icons(out: Path) -> None:
    """PNG (Linux, 256 px and the sizes a desktop asks for), ICO (Windows) and ICNS (macOS, where Qt can write it),
    drawn from the SVG with Qt's own renderer: no image tool needed."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QImageWriter, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    out.mkdir(parents=True, exist_ok=True)
    renderer = QSvgRenderer(str(HERE / "icons" / "distill-studio.svg"))
    formats = {bytes(f).decode() for f in QImageWriter.supportedImageFormats()}
    for size in (16, 32, 48, 64, 128, 256, 512):
        img = QImage(size, size, QImage.Format.Format_ARGB32)
        img.fill(Qt.GlobalColor.transparent)
        p = QPainter(img)
        renderer.render(p)
        p.end()
        img.save(str(out / f"distill-studio-{size}.png"))
        if size == 256:
            img.save(str(out / "distill-studio.png"))
            if "ico" in formats:
                img.save(str(out / "distill-studio.ico"))
            if "icns" in formats:
                img.save(str(out / "distill-studio.icns"))


def build(clean: bool = True) -> Path:
    v = version()
    name = f"{APP}-{v}-{platform_tag()}"
    dist, work = ROOT / "dist", ROOT / "build" / "pyinstaller"
    render_icons(HERE / "build-icons")
    stage = _stage_package(ROOT / "build" / "stage")
    if clean:
        shutil.rmtree(dist / name, ignore_errors=True)
    env = dict(os.environ, DISTILL_BUNDLE_NAME=name, DISTILL_VERSION=v, DISTILL_STAGE=str(stage))
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN", "--distpath", str(dist),
                    "--workpath", str(work), str(HERE / "distill-studio.spec")], check=True, env=env, cwd=ROOT)
    folder = dist / name
    _add_commands(folder)
    seconds = time.monotonic() - t0
    size = bundle_bytes(folder)
    print(f"bundle: {folder} ({size / 1e6:,.0f} MB, built in {seconds:,.0f} s)")
    if sys.platform.startswith("linux"):
        print(f"tarball: {_tarball(folder)}")
        deb = _deb(folder, v)
        if deb is not None:
            print(f"deb: {deb}")
    return folder


def bundle_bytes(folder: Path) -> int:
    """Bytes on disk of the bundle's files (links counted once, as the files they point to are)."""
    return sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def _stage_package(out: Path) -> Path:
    """``distill_studio`` as a plain package folder (engine/, gui/, resources/ under it, as installed): the checkout
    is installed editable, through an import hook PyInstaller cannot follow. No tests, no caches."""
    pkg = out / "distill_studio"
    shutil.rmtree(out, ignore_errors=True)
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Distill Studio (the packaged app)."""\n')
    (pkg / "VERSION").write_text(version() + "\n")      # engine/version.py reads it in the bundle
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "*.egg-info")
    for part in ("engine", "gui", "resources"):
        shutil.copytree(ROOT / part, pkg / part, ignore=skip)
    return out


def _add_commands(folder: Path) -> None:
    """Linux: the desktop entry, the icon and the per-user install script beside the two executables."""
    if sys.platform.startswith("linux"):
        shutil.copy(HERE / "linux" / "distill-studio.desktop", folder / "distill-studio.desktop")
        shutil.copy(HERE / "build-icons" / "distill-studio.png", folder / "distill-studio.png")
        shutil.copy(HERE / "linux" / "install.sh", folder / "install.sh")


def _tarball(folder: Path) -> Path:
    out = folder.with_name(folder.name + ".tar.gz")
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=folder.name)
    return out


def _deb(folder: Path, v: str) -> Path | None:
    """A .deb that installs the folder under /opt/distill-studio, the launcher and the desktop entry."""
    if shutil.which("dpkg-deb") is None:
        print("deb: dpkg-deb not found; skipped")
        return None
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
    root = ROOT / "build" / "deb" / folder.name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(folder, root / "opt" / "distill-studio", symlinks=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "distill-studio").symlink_to(f"/opt/distill-studio/{APP}")
    (root / "usr" / "bin" / "distill").symlink_to("/opt/distill-studio/distill")
    apps = root / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    desktop = (HERE / "linux" / "distill-studio.desktop").read_text().replace("Exec=distill-studio",
                                                                            "Exec=/usr/bin/distill-studio")
    (apps / "distill-studio.desktop").write_text(desktop)
    icons = root / "usr" / "share" / "icons" / "hicolor" / "256x256" / "apps"
    icons.mkdir(parents=True)
    shutil.copy(HERE / "build-icons" / "distill-studio.png", icons / "distill-studio.png")
    size_kb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: distill-studio\nVersion: {v}\nArchitecture: {arch}\nMaintainer: Distill Studio <team@distill.studio>\n"
        f"Installed-Size: {size_kb}\nDepends: libgl1, libegl1, libxkbcommon0, libfontconfig1, libdbus-1-3\n"
        "Section: science\nPriority: optional\nDescription: Plan, launch and watch knowledge-distillation runs\n"
        " Distill Studio plans knowledge distillation of large language models (student, method, hardware, time,\n"
        " cost, memory), runs it on this machine or on Azure Machine Learning, and shows its curves live.\n")
    out = folder.with_name(f"distill-studio_{v}_{arch}.deb")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z1", "--build", str(root), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


if __name__ == "__main__":
    build()
