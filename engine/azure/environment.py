"""The software of an Azure ML training node: the base image, the pinned packages installed on it, and the
environment variables its processes start with (NCCL on the ND sizes' InfiniBand, the Hugging Face cache).

One place answers what a node runs, for the three that need it: the job (``job.py``: the azure-ai-ml
``Environment``, a Docker build context), the rehearsal on this machine (``rehearse.py``: a venv of the same pins,
CPU torch where there is no GPU) and CI (which resolves the pins for the node's platform and Python, as the image
build would). Why this image and this torch: docs/azure.md, "The node's software".
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

CONTEXT_DIR = Path(__file__).with_name("node_image")     # the Docker build context: Dockerfile, requirements.txt
DOCKERFILE = CONTEXT_DIR / "Dockerfile"
# The node's pins and the rehearsal's, with hashes: both outputs of the project's one lock (`make lock`,
# packaging/deps.py), resolved with the checkout's own pins as constraints, so every package but torch has the same
# version on the node, in the rehearsal and in CI.
ENVIRONMENT_FILE = CONTEXT_DIR / "requirements.txt"
REHEARSAL_FILE = Path(__file__).with_name("rehearsal-requirements.txt")   # the node's pins with torch's CPU build

# What the image build installs into: the node's Python and platform (Dockerfile: ``python=3.11`` on Ubuntu 22.04,
# glibc 2.35, x86_64). CI resolves the pins for exactly these.
NODE_PYTHON = "3.11"
NODE_GLIBC = (2, 35)
NODE_ARCH = "x86_64"


def _base_image() -> str:
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*FROM\s+(\S+)", line, re.IGNORECASE)
        if m:
            return m.group(1)
    raise RuntimeError(f"{DOCKERFILE}: no FROM line")


IMAGE = _base_image()   # mcr.microsoft.com/azureml/curated/acpt-pytorch-2.8-cuda12.6:<version>, never :latest


def read_requirements(path: Path) -> list[str]:
    """A requirements file's requirements, one string each, continuation lines joined (``name==1.0 --hash=...``)."""
    out, parts = [], []
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].strip()
        if not text:
            continue
        if text.endswith("\\"):
            parts.append(text[:-1].strip())
            continue
        out.append(" ".join([*parts, text]))
        parts = []
    if parts:
        out.append(" ".join(parts))
    return out


def node_requirements() -> list[str]:
    """The requirements the node installs (``node_image/requirements.txt``), hashes included."""
    return read_requirements(ENVIRONMENT_FILE)


def rehearsal_requirements() -> list[str]:
    """The node's requirements for a machine with no GPU: the same pins, torch's CPU build and none of CUDA's."""
    return read_requirements(REHEARSAL_FILE)


def pinned_versions(requirements: list[str]) -> dict[str, str]:
    """``{name: version}`` of ``name==version`` requirements (names lower case, ``_`` and ``.`` as ``-``)."""
    out = {}
    for req in requirements:
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", req)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def node_platform_tags() -> list[str]:
    """The wheel platform tags the node's pip accepts (manylinux up to the image's glibc), for ``pip --platform``:
    pip given one ``--platform`` accepts that tag only, not the older manylinux tags a real install would."""
    major, newest = NODE_GLIBC
    tags = [f"manylinux_{major}_{minor}_{NODE_ARCH}" for minor in range(newest, 4, -1)]
    return tags + [f"manylinux2014_{NODE_ARCH}", f"manylinux2010_{NODE_ARCH}", f"manylinux1_{NODE_ARCH}",
                   f"linux_{NODE_ARCH}"]


def pip_resolve_command(python: str, requirements: Path, report: str = "-") -> list[str]:
    """``pip install --dry-run`` of ``requirements`` as the image build installs them: the node's Python and
    platform, wheels only (the build compiles nothing), all dependencies, nothing of this machine installed."""
    cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", report,
           "--python-version", NODE_PYTHON, "--implementation", "cp",
           "--abi", "cp" + NODE_PYTHON.replace(".", ""), "--abi", "abi3", "--abi", "none",
           "--only-binary=:all:"]
    for tag in node_platform_tags():
        cmd += ["--platform", tag]
    return cmd + ["-r", str(requirements)]


def build_environment():
    """The azure-ai-ml ``Environment`` of every job: the ``node_image`` folder, built by Azure ML into the
    workspace's registry once per content (azure-ai-ml hashes the folder; an unchanged one is not built again)."""
    from azure.ai.ml.entities import BuildContext, Environment

    return Environment(build=BuildContext(path=str(CONTEXT_DIR)),
                       description="Distill Studio training node (engine/azure/node_image)")


# ---------------------------------------------------------------------------------------------------------------
# The processes' environment on the node

# NCCL on the ND sizes' InfiniBand, as Azure's HPC images configure it (Azure/azhpc-images,
# components/customizations/ndv4.sh and ndv5.sh write these into /etc/nccl.conf; setup_sku_customizations.sh maps
# the VM sizes to them) and as their NCCL tests run (tests/test-definitions.sh: NCCL_SOCKET_IFNAME=eth0). The
# topology files are the HPC images' own, copied into the image at /opt/distill/topology (Dockerfile).
ND_FAMILIES = {                      # VM size pattern (lower case, fnmatch) -> topology family
    "standard_nd*v4": "ndv4",                    # ND A100 v4 (ND96asr_v4) and NDm A100 v4 (ND96amsr_A100_v4)
    "standard_nd96is*_h[1-2]00_v5": "ndv5",      # ND H100 v5 and ND H200 v5
}
TOPOLOGY_DIR = "/opt/distill/topology"


def nd_family(sku: str) -> str:
    """"ndv4" or "ndv5" for an NVIDIA ND size with InfiniBand, else "" (NC sizes have none; MI300X is not CUDA)."""
    low = sku.lower()
    return next((fam for pattern, fam in ND_FAMILIES.items() if fnmatch.fnmatchcase(low, pattern)), "")


def nccl_env(sku: str) -> dict[str, str]:
    """The NCCL variables of a job on ``sku``: Azure's settings for the ND sizes' InfiniBand, nothing elsewhere.

    No UCX variables: UCX carries MPI's traffic (Azure sets ``UCX_TLS``/``UCX_IB_PCI_RELAXED_ORDERING`` for
    ``mpirun``), and these jobs start their processes with Azure ML's PyTorch launcher, whose collectives are NCCL's
    own InfiniBand transport."""
    family = nd_family(sku)
    if not family:
        return {}
    return {
        "NCCL_IB_PCI_RELAXED_ORDERING": "1",
        "NCCL_TOPO_FILE": f"{TOPOLOGY_DIR}/{family}-topo.xml",
        "NCCL_IGNORE_CPU_AFFINITY": "1",
        "NCCL_SOCKET_IFNAME": "eth0",
    }


# The Hugging Face cache (the teacher's and student's weights) in the job's own folder on the node's local disk,
# not the container's home: Azure ML starts the job in ``$AZUREML_CR_EXECUTION_WORKING_DIR_PATH``
# (/mnt/azureml/cr/j/<job>/exe/wd, on the VM's local temporary disk). huggingface_hub expands the variable itself
# (its constants read HF_HOME through os.path.expandvars), so the job spec holds no node path.
HF_HOME = "$AZUREML_CR_EXECUTION_WORKING_DIR_PATH/.cache/huggingface"


def node_env(sku: str) -> dict[str, str]:
    """The environment variables a job on ``sku`` adds to Azure ML's own, besides the engine's (``job.JOB_ENV``)."""
    return {"HF_HOME": HF_HOME, **nccl_env(sku)}
