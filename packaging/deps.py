"""The locked dependencies of every place Distill Studio runs: one set of pins, with hashes, made by one command.

    python packaging/deps.py lock [--upgrade]     # `make lock`: resolve every target again (uv pip compile)
    python packaging/deps.py lock --upgrade-package NAME    # one package's newest release
    python packaging/deps.py check                # pyproject.toml and the lock agree (offline; a test runs it)
    python packaging/deps.py install TARGET       # install TARGET's pins into this Python (pip, hashes required)

The targets (``TARGETS``) are the platforms we ship: the checkout, CI and the Linux bundle (CPU torch); the Windows
and macOS bundles; the Azure ML training node (its Python, CUDA torch) and the node's rehearsal on a CPU. They are
resolved in order, each later one constrained by the pins of those before it, so a package has the same version
everywhere it can (torch is the exception: each platform's build). ``pyproject.toml`` keeps its ranges for people
who ``pip install`` the package; the lock is what we build, test and ship.

Why uv for resolving and pip for installing: docs/decisions.md, "One lock".
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = ROOT / "lock"
UV_VERSION = "0.13.9"        # the resolver; `make lock` installs exactly this into .venv-lock
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"   # PyTorch's own index of its CPU builds (Linux)
FINGERPRINT = "# inputs-sha256: "


@dataclass(frozen=True)
class Target:
    name: str
    output: str                   # the lock file, relative to the checkout
    purpose: str
    platform: str                 # uv's --python-platform
    extras: tuple[str, ...]       # pyproject.toml's optional dependencies it takes
    inputs: tuple[str, ...]       # requirement files under lock/ it takes besides pyproject.toml
    constrained_by: tuple[str, ...] = ()    # targets whose pins (but torch) it keeps
    python: str = "3.11"
    cpu_torch: bool = False       # torch's CPU build, from PyTorch's index or a local wheel folder
    env: dict[str, str] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)   # the environment markers of the platform (check)


_LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64"}
TARGETS: tuple[Target, ...] = (
    Target("linux-x86_64-cpu", "lock/linux-x86_64-cpu.txt",
           "the checkout (make demo, make test), CI and the Linux bundle (make bundle)",
           "x86_64-manylinux_2_34", ("train", "gui", "azure", "dev", "bundle"),
           ("lock/torch-cpu.in", "lock/azure-node.in", "lock/build.in"), cpu_torch=True, markers=_LINUX),
    Target("windows-x86_64", "lock/windows-x86_64.txt", "the Windows bundle (packaging/README.md)",
           "x86_64-pc-windows-msvc", ("train", "gui", "azure", "bundle"), ("lock/torch.in", "lock/build.in"),
           ("linux-x86_64-cpu",),
           markers={"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt",
                    "platform_machine": "AMD64"}),
    Target("macos-arm64", "lock/macos-arm64.txt", "the macOS bundle, Apple silicon (packaging/README.md)",
           "aarch64-apple-darwin", ("train", "gui", "azure", "bundle"), ("lock/torch.in", "lock/build.in"),
           ("linux-x86_64-cpu",), env={"MACOSX_DEPLOYMENT_TARGET": "14.0"},   # torch's macOS wheels need 14
           markers={"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix",
                    "platform_machine": "arm64"}),
    Target("azure-node", "engine/azure/node_image/requirements.txt",
           "every Azure ML training node (the image's Python 3.11, engine/azure/node_image/Dockerfile)",
           "x86_64-manylinux_2_35", ("train",), ("lock/azure-node-torch.in", "lock/azure-node.in"),
           ("linux-x86_64-cpu",), markers=_LINUX),
    Target("azure-rehearsal", "engine/azure/rehearsal-requirements.txt",
           "the Azure node rehearsed on a CPU (distill azure rehearse): the node's pins, torch's CPU build",
           "x86_64-manylinux_2_34", ("train",), ("lock/torch-cpu.in", "lock/azure-node.in"),
           ("azure-node", "linux-x86_64-cpu"), cpu_torch=True, markers=_LINUX),
)
BY_NAME = {t.name: t for t in TARGETS}


class LockError(Exception):
    """What is wrong, in words a person can act on."""


# ---- reading a lock ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pin:
    name: str          # normalised (PEP 503)
    version: str
    line: str          # the whole requirement, hashes included, on one line

    @property
    def hashes(self) -> list[str]:
        return re.findall(r"--hash=(\S+)", self.line)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, Pin]:
    """The pins of a lock (or any requirements file with ``name==version`` lines, continuation lines joined)."""
    pins: dict[str, Pin] = {}
    logical, parts = [], []
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not text:
            continue
        if text.endswith("\\"):
            parts.append(text[:-1].strip())
            continue
        parts.append(text)
        logical.append(" ".join(parts))
        parts = []
    if parts:
        logical.append(" ".join(parts))
    for line in logical:
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if m:
            pins[normalise(m.group(1))] = Pin(normalise(m.group(1)), m.group(3), line)
    return pins


def requirement_lines(path: Path) -> list[str]:
    """A lock's requirements, one string each (``name==version --hash=... --hash=...``), in the file's order."""
    return [p.line for p in read_pins(path).values()]


# ---- what a target is made from ------------------------------------------------------------------------------------
def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _target_requirements(target: Target, project: dict | None = None) -> list[str]:
    """pyproject.toml's requirements a target takes (its core and its extras; ``all`` and self-references out)."""
    project = (project or _pyproject())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in target.extras:
        if extra not in project.get("optional-dependencies", {}):
            raise LockError(f"pyproject.toml: the lock's target {target.name} takes the extra [{extra}], which "
                            "[project.optional-dependencies] does not have")
        reqs += [r for r in project["optional-dependencies"][extra] if not r.startswith(project["name"])]
    return reqs


def fingerprint(target: Target, pyproject: dict | None = None) -> str:
    """A hash of everything the target is resolved from: pyproject.toml's requirements, the input files, the target's
    definition and the locks that constrain it. It changes exactly when ``make lock`` has something new to do."""
    data = pyproject or _pyproject()
    project = data["project"]
    doc = {
        "requires-python": project.get("requires-python"),
        "build-system": data.get("build-system", {}).get("requires", []),
        "requirements": _target_requirements(target, data),
        "target": asdict(target),
        "inputs": {p: (ROOT / p).read_text(encoding="utf-8") for p in target.inputs},
        "constrained-by": {n: _body(ROOT / BY_NAME[n].output) for n in target.constrained_by},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _body(path: Path) -> str:
    """A lock without its header comments (what another target's constraints come from)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines() if not line.startswith("# "))


# ---- make the lock -------------------------------------------------------------------------------------------------
def _local_torch_folder() -> str | None:
    """A folder of wheels this machine's pip is configured with (``find-links``) that holds a CPU build of torch."""
    candidates = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
        candidates += [v for k, v in re.findall(r"^(\S*find-links)='([^']*)'", out, re.M) for v in v.split()]
    except (OSError, subprocess.SubprocessError):
        pass
    for folder in candidates:
        if Path(folder).is_dir() and any(Path(folder).glob("torch-*+cpu-*.whl")):
            return folder
    return None


def _uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise LockError(f"uv is not installed: `make lock` installs uv {UV_VERSION} into .venv-lock")
    return uv


def lock(upgrade: bool = False, only: list[str] | None = None, packages: list[str] | None = None,
         say=print) -> None:
    """Resolve the targets again with uv, each keeping its pins where it can (``upgrade``: the newest releases
    allowed; ``packages``: those packages only), and write their locks with the header ``check`` reads."""
    uv = _uv()
    data = _pyproject()
    local = _local_torch_folder()
    with tempfile.TemporaryDirectory(prefix="distill-lock-", dir=None) as tmp:
        for target in TARGETS:
            if only and target.name not in only:
                continue
            out = ROOT / target.output
            cmd = [uv, "pip", "compile", "pyproject.toml", *target.inputs, "--quiet", "--no-header",
                   "--generate-hashes", "--python-version", target.python, "--python-platform", target.platform,
                   "-o", target.output]
            for extra in target.extras:
                cmd += ["--extra", extra]
            if upgrade:
                cmd.append("--upgrade")
            for name in packages or ():
                cmd += ["--upgrade-package", name]
            shown = {}
            for name in target.constrained_by:
                pins = read_pins(ROOT / BY_NAME[name].output)
                cfile = Path(tmp) / f"{name}.pins"
                cfile.write_text("".join(f"{p.name}=={p.version}\n" for p in pins.values() if p.name != "torch"))
                cmd += ["-c", str(cfile)]
                shown[str(cfile)] = BY_NAME[name].output
            if target.cpu_torch:
                cmd += ["--find-links", local] if local else ["--torch-backend", "cpu"]
            say(f"lock: {target.name} -> {target.output}")
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **target.env})
            if done.returncode != 0:
                raise LockError(f"{target.name}: uv could not resolve it:\n{done.stderr.strip()}")
            body = out.read_text(encoding="utf-8")
            for tmp_path, real in shown.items():
                body = body.replace(tmp_path, real)
            inputs = ", ".join(["pyproject.toml" + (f" [{','.join(target.extras)}]")] + list(target.inputs))
            header = (f"# Distill Studio's locked dependencies: {target.name}, for {target.purpose}.\n"
                      f"# Python {target.python}, {target.platform}. Made by `make lock` (packaging/deps.py) from "
                      f"{inputs}; do not edit.\n"
                      f"# Install: python packaging/deps.py install {target.name}\n"
                      f"{FINGERPRINT}{fingerprint(target, data)}\n")
            out.write_text(header + body, encoding="utf-8")


# ---- check that pyproject.toml and the lock agree -----------------------------------------------------------------
def check(pyproject_text: str | None = None) -> list[str]:
    """Every way the lock disagrees with pyproject.toml and its inputs, one sentence each (empty when they agree)."""
    from packaging.requirements import InvalidRequirement, Requirement

    data = tomllib.loads(pyproject_text) if pyproject_text is not None else _pyproject()
    problems: list[str] = []
    for target in TARGETS:
        path = ROOT / target.output
        if not path.is_file():
            problems.append(f"{target.output} is missing: run `make lock`")
            continue
        pins = read_pins(path)
        env = {"python_version": target.python, "python_full_version": target.python + ".0",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", **target.markers}
        wanted: list[tuple[str, str]] = [(r, "pyproject.toml") for r in _target_requirements(target, data)]
        for p in target.inputs:
            wanted += [(r.split(" #")[0].strip(), p) for r in (ROOT / p).read_text(encoding="utf-8").splitlines()
                       if r.split("#")[0].strip()]
        for text, source in wanted:
            try:
                req = Requirement(text)
            except InvalidRequirement as exc:
                problems.append(f"{source}: {text!r} is not a valid requirement ({exc})")
                continue
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue                                  # not for this platform
            pin = pins.get(normalise(req.name))
            if pin is None:
                problems.append(f"{target.output} ({target.name}) has no {req.name}, which {source} asks for "
                                f"({text}): run `make lock`")
            elif not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{target.output} ({target.name}) pins {req.name}=={pin.version}, outside "
                                f"{source}'s {text!r}: run `make lock`")
        for pin in pins.values():
            if not pin.hashes:
                problems.append(f"{target.output}: {pin.name}=={pin.version} has no hash: run `make lock`")
        recorded = next((line[len(FINGERPRINT):].strip() for line in path.read_text(encoding="utf-8").splitlines()
                         if line.startswith(FINGERPRINT)), None)
        if recorded != fingerprint(target, data):
            problems.append(f"{target.output} ({target.name}) was made from other inputs than pyproject.toml, "
                            f"{', '.join(target.inputs)} and the locks before it now hold: run `make lock`")
    return problems


# ---- install -------------------------------------------------------------------------------------------------------
def install(target: Target, editable: bool = True, say=print) -> None:
    """``target``'s pins into this Python with pip (the locked pip first), every file checked against its hash; then
    the checkout itself (editable, no dependencies of its own: the lock has them all), then ``pip check``."""
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if have != target.python:
        raise LockError(f"{target.output} is made for Python {target.python}; this is Python {have} "
                        f"({sys.executable}). Use Python {target.python} (`make PYTHON=python{target.python} ...` "
                        "after `make clean`).")
    lockfile = ROOT / target.output
    pip = [sys.executable, "-m", "pip", "install", "--require-hashes", "--progress-bar", "off", "--no-input"]
    pins = read_pins(lockfile)
    if "pip" in pins:             # the locked pip first: the one a venv comes with may be years older
        with tempfile.TemporaryDirectory() as tmp:
            one = Path(tmp) / "pip.txt"
            one.write_text(pins["pip"].line + "\n", encoding="utf-8")
            _run(pip + ["--quiet", "--no-deps", "-r", str(one)])
    torch = pins.get("torch")
    if target.cpu_torch and torch is not None:
        # torch's CPU build is not on PyPI: a wheel folder pip is configured with, else PyTorch's own index. Asked
        # first without that index, so pip never looks there for the other packages.
        with tempfile.TemporaryDirectory() as tmp:
            one = Path(tmp) / "torch.txt"
            one.write_text(torch.line + "\n", encoding="utf-8")
            if subprocess.run(pip + ["--no-deps", "--quiet", "-r", str(one)]).returncode != 0:
                say(f"torch {torch.version}: not in a local wheel folder; from {TORCH_CPU_INDEX}")
                _run(pip + ["--no-deps", "--extra-index-url", TORCH_CPU_INDEX, "-r", str(one)])
    _run(pip + ["--quiet", "-r", str(lockfile)])
    if editable:
        _run([sys.executable, "-m", "pip", "install", "-qq", "--no-deps", "--no-build-isolation", "-e", str(ROOT)])
    _run([sys.executable, "-m", "pip", "check"])


def _run(cmd: list[str]) -> None:
    if subprocess.run(cmd).returncode != 0:
        raise LockError(f"failed: {' '.join(cmd)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="packaging/deps.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lk = sub.add_parser("lock", help="resolve every target again and write its lock")
    lk.add_argument("--upgrade", action="store_true", help="take the newest releases pyproject.toml allows")
    lk.add_argument("--upgrade-package", action="append", metavar="NAME", help="the newest release of NAME only")
    lk.add_argument("--only", action="append", choices=list(BY_NAME), help="only these targets")
    sub.add_parser("check", help="pyproject.toml and the lock agree")
    ins = sub.add_parser("install", help="install a target's pins into this Python")
    ins.add_argument("target", choices=list(BY_NAME))
    ins.add_argument("--no-editable", action="store_true", help="the pins only, not the checkout itself")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "lock":
            lock(upgrade=args.upgrade, only=args.only, packages=args.upgrade_package)
            problems = check()
        elif args.cmd == "check":
            problems = check()
        else:
            install(BY_NAME[args.target], editable=not args.no_editable)
            problems = []
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for p in problems:
        print(f"lock: {p}", file=sys.stderr)
    if args.cmd == "check" and not problems:
        print(f"lock: pyproject.toml and the {len(TARGETS)} targets of lock/ agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
