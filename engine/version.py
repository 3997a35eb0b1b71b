"""The one version of Distill Studio: ``pyproject.toml``'s, as installed (package metadata, which the packaged app
carries too). Shown by ``distill --version``, ``distill-studio --version``, the About box and the bundle's file
names (packaging/build.py reads pyproject.toml itself)."""
from __future__ import annotations


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("distill-studio")
    except metadata.PackageNotFoundError:
        pass
    import tomllib
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent
    try:                                      # the packaged app: written by packaging/build.py
        return (here / "VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        pass
    pyproject = here / "pyproject.toml"       # a checkout that is not installed
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "unknown"


VERSION = _version()

# The libraries a run's numbers depend on, in the order people ask for them
LIBRARIES = ("torch", "transformers", "peft", "accelerate")


def library_versions() -> dict[str, str | None]:
    """The installed versions of ``LIBRARIES`` (None where one is not installed), from package metadata: nothing is
    imported, so ``--version`` stays instant."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def version_text(program: str = "distill") -> str:
    """What ``--version`` prints: the product's version, then the versions it runs with."""
    libs = ", ".join(f"{name} {v or 'not installed'}" for name, v in library_versions().items())
    return f"{program} {VERSION}\n{libs}"
