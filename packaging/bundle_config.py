"""What goes into the packaged app and what stays out (read by distill-studio.spec and build.py)."""
from __future__ import annotations

import sys
from pathlib import Path

APP = "DistillStudio"
HERE = Path(__file__).resolve().parent

# Imported by name at run time (runpy, transformers' lazy model modules), so PyInstaller cannot see them
HIDDEN_PACKAGES = (
    "distill_studio",
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
# Package metadata read at run time by the libraries that check their own (our version: build.py's VERSION file)
METADATA = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors",
            "huggingface-hub", "PySide6-Essentials", "pyqtgraph", "azure-ai-ml", "azure-identity", "keyring",
            "tqdm", "regex", "requests", "packaging", "filelock", "numpy", "pyyaml")

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
