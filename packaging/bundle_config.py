"""What goes into the packaged app and what stays out (read by distill-studio.spec and build.py)."""
from __future__ import annotations

import sys
from pathlib import Path

APP = "DistillStudio"
HERE = Path(__file__).resolve().parent

# Imported by name at run time (runpy, transformers' lazy model modules), so PyInstaller cannot see them
HIDDEN_PACKAGES = (
    "distill_studio",
    "kernels",                      # transformers' hub kernels, imported inside functions
    # the architectures of the catalog's models and of the demo (transformers imports a model's module lazily)
    "transformers.models.auto",
    "transformers.models.qwen2",
    "transformers.models.qwen3",
    "transformers.models.llama",
    "transformers.models.gemma",
    "transformers.models.gemma2",
    "transformers.models.gemma3",
    "transformers.models.phi3",
    "transformers.models.mistral",
    "peft.tuners.lora",
    "azure.ai.ml",
    "azure.identity",
    "azure.mgmt.compute",
    "keyring.backends",
)

# ---- what the libraries load at run time --------------------------------------------------------------------------
# transformers, peft, accelerate and their plug-ins import modules lazily, read data files next to their code
# (kernels' python_depends.json, huggingface_hub's card templates, jsonschema's schemas) and ask package metadata
# whether a package is installed and which version (transformers' is_*_available, accelerate's checks). So the bundle
# carries, for every distribution the app's extras need at run time (their closure, from the installed metadata):
# its metadata, and the data files of its import packages. Left to PyInstaller's own hooks, which know them better:
# Qt, torch, numpy and pyarrow (thousands of files, their hooks keep what runs).
BUNDLED_EXTRAS = ("train", "gui", "azure")
HOOKED = {"PySide6", "shiboken6", "torch", "torchgen", "functorch", "numpy", "pyarrow", "setuptools", "pkg_resources",
          "_distutils_hack", "pyqtgraph"}
# files that are never read at run time: type markers, C/Cython sources and headers, and test data
_NOT_DATA = (".py", ".pyc", ".pyi", ".typed", ".pyx", ".pxd", ".pxi", ".h", ".c", ".cpp", ".cu", ".cmake")


def normalise(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions() -> list[str]:
    """The distributions the bundled extras need at run time: distill-studio's requirements for ``BUNDLED_EXTRAS``
    and theirs, transitively, as installed (markers evaluated here; tools of the dev and bundle extras left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    def wanted(req: Requirement, extras: tuple[str, ...]) -> bool:
        return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras)

    try:
        roots = [Requirement(r) for r in metadata.requires("distill-studio") or []]
    except metadata.PackageNotFoundError:
        raise SystemExit("distill-studio is not installed in this Python: install the lock first "
                         "(python packaging/deps.py install TARGET; `make bundle` does)") from None
    todo = [(normalise(r.name), tuple(sorted(r.extras))) for r in roots if wanted(r, BUNDLED_EXTRAS)]
    seen: dict[str, str] = {}
    while todo:
        name, extras = todo.pop()
        if name in seen or name == "distill-studio":
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue              # a requirement for another platform or Python
        seen[name] = dist.metadata["Name"]
        for text in dist.requires or []:
            req = Requirement(text)
            if wanted(req, ("",) + extras):
                todo.append((normalise(req.name), tuple(sorted(req.extras))))
    return sorted(seen.values(), key=str.lower)


def runtime_import_packages(dists: list[str]) -> list[str]:
    """The top-level import packages of ``dists`` (``huggingface-hub`` -> ``huggingface_hub``), less ``HOOKED``."""
    from importlib import metadata

    wanted = {normalise(d) for d in dists}
    tops = {top for top, owners in metadata.packages_distributions().items()
            if any(normalise(o) in wanted for o in owners)}
    import importlib.util

    def is_package(top: str) -> bool:     # found without importing it; a plain module has no data folder
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return False
        return spec is not None and spec.submodule_search_locations is not None

    return sorted(t for t in tops if t not in HOOKED and not t.startswith("_") and t.isidentifier() and is_package(t))


def is_runtime_data(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    return not parts[-1].endswith(_NOT_DATA) and not any(
        d.startswith("test") or d in ("examples", "benchmarks", "__pycache__") for d in parts[:-1])

# Never in the bundle: GUI toolkits and notebooks we do not use, test suites, what pyqtgraph's optional paths drag in,
# and the Qt modules the app does not import (QML/Quick, WebEngine, 3D, multimedia, charts, PDF).
EXCLUDES = [
    "datasets", "tkinter", "matplotlib", "scipy", "IPython", "jupyter", "notebook", "pytest", "hypothesis",
    "pandas", "sklearn", "cv2", "PyQt5", "PyQt6", "gi", "OpenGL", "mlflow", "tensorflow", "jax", "flax",
    "torch.utils.tensorboard", "torchvision", "torchaudio", "triton",
    "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtQuickWidgets", "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets", "PySide6.Qt3DCore", "PySide6.QtMultimedia", "PySide6.QtCharts",
    "PySide6.QtPdf", "PySide6.QtNetwork", "PySide6.QtSql", "PySide6.QtDesigner", "PySide6.QtHelp",
    "PySide6.QtBluetooth", "PySide6.QtPositioning", "PySide6.QtSerialPort", "PySide6.QtTextToSpeech",
]


# Files left out by their path in the bundle: torch's test suite, test binaries and C++ headers (nothing at run time
# uses them), any CUDA runtime (this is the CPU bundle), and Arrow's Flight RPC and Substrait (parquet needs neither)
DROP = ("torch/test/", "torch/bin/", "torch/include/", "torch/share/", "torch/lib/libtorchbind_test",
        "torch/lib/libaoti_custom_ops", "libcudart", "libcublas", "libcudnn", "libnccl", "libnvrtc", "libcusparse",
        "libcufft", "libcurand", "libcusolver", "libnvJitLink", "libarrow_flight", "libarrow_python_flight",
        "libarrow_substrait", "pyarrow/include/", "pyarrow/tests/", "pyarrow/_flight", "pyarrow/_substrait",
        "distill_studio.egg-info", "/tests/", "/__pycache__/")


KEEP = ("torch/bin/torch_shm_manager",)   # torch will not import without its shared-memory manager


def dropped(dest: str) -> bool:
    path = dest.replace("\\", "/")
    if any(path.startswith(k) or f"/{k}" in path for k in KEEP):
        return False
    return any(part in path or path.startswith(part) for part in DROP)


def icon_path() -> str | None:
    """The platform's icon file, made by build.py from icons/distill-studio.svg (None before it exists)."""
    name = {"win32": "distill-studio.ico", "darwin": "distill-studio.icns"}.get(sys.platform, "distill-studio.png")
    path = HERE / "build-icons" / name
    return str(path) if path.exists() else None
