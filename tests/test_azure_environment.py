"""The node's environment: an image pinned by version, pins that resolve for the node's Python and platform as the
image build resolves them (against PyPI: this test needs the network and fails, never skips, without it), the job
built on exactly that context, and the NCCL/Hugging Face variables per VM size."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distill_studio.engine.azure import environment as env

ROOT = Path(__file__).resolve().parents[1]
PLANS = sorted(p for p in (ROOT / "resources" / "plans").glob("*.toml") if 'target = "azure"' in p.read_text())


def dockerfile() -> str:
    return env.DOCKERFILE.read_text(encoding="utf-8")


# ---- the image ----------------------------------------------------------------------------------------------------

def test_the_base_image_is_pinned_by_version():
    name, sep, tag = env.IMAGE.rpartition(":")
    assert sep and name.startswith("mcr.microsoft.com/azureml/curated/acpt-pytorch-")
    assert tag != "latest" and re.fullmatch(r"\d+", tag), f"{env.IMAGE}: pin the curated image to a version"
    # one FROM, and nothing else in the build is taken at a moving version
    assert len(re.findall(r"(?im)^\s*FROM\s", dockerfile())) == 1
    for url in re.findall(r"https://\S+", dockerfile()):
        assert "azhpc-images/" not in url or re.search(r"/[0-9a-f]{40}/", url), f"{url}: pin it to a commit"


def test_the_image_installs_exactly_the_pins_into_its_own_python():
    text = dockerfile()
    assert f"python={env.NODE_PYTHON} " in text
    assert "COPY requirements.txt" in text
    assert "pip install --no-cache-dir --require-hashes -r /opt/distill/requirements.txt" in text
    assert "ENV PATH=/opt/distill/bin:$PATH" in text       # the job's `python` is that interpreter
    # every requirement is pinned to one version and its files' hashes (the node builds what CI resolved, not what
    # is newest that day, and no file other than the one resolved)
    reqs = env.node_requirements()
    pattern = r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+]+( --hash=sha256:[0-9a-f]{64})+"
    assert reqs and all(re.fullmatch(pattern, r) for r in reqs), [r for r in reqs if not re.fullmatch(pattern, r)]
    names = list(env.pinned_versions(reqs))
    assert len(names) == len(reqs) == len(set(names))
    for needed in ("torch", "transformers", "accelerate", "peft", "mlflow-skinny", "azureml-mlflow",
                   "azure-identity", "azure-keyvault-secrets", "filelock", "psutil", "platformdirs"):
        assert needed in names


def test_the_rehearsal_installs_the_node_pins_with_torchs_cpu_build():
    """The rehearsal's venv: every package of the node at the node's version, but CUDA's and torch, which is the CPU
    build the checkout runs (the same line of the checkout's lock, hashes and all)."""
    node, rehearsal = env.pinned_versions(env.node_requirements()), env.pinned_versions(env.rehearsal_requirements())
    cuda = {n for n in node if n.startswith(("nvidia-", "cuda-")) or n in ("triton", "torch")}
    assert cuda and {n for n in node if n not in cuda} <= set(rehearsal)
    assert all(rehearsal[n] == v for n, v in node.items() if n not in cuda)
    assert not any(n.startswith(("nvidia-", "cuda-")) for n in rehearsal)
    assert rehearsal["torch"].endswith("+cpu") and node["torch"] != rehearsal["torch"]
    checkout = env.read_requirements(ROOT / "lock" / "linux-x86_64-cpu.txt")
    torch_line = next(r for r in env.rehearsal_requirements() if r.startswith("torch=="))
    assert torch_line in checkout
    # what the rehearsal adds besides torch is only what torch's CPU build needs beyond the node's (setuptools)
    assert set(rehearsal) - set(node) <= {"setuptools"}


def test_node_torch_is_a_cuda_12_build_on_pypi():
    """The driver of Azure ML's GPU nodes (R535) runs CUDA 12.x builds only: torch's own PyPI wheel must be one.
    Read from the resolution's report (metadata only), so a torch whose PyPI wheel moved to CUDA 13 fails here."""
    report = resolve()
    torch = next(i for i in report["install"] if i["metadata"]["name"] == "torch")
    nvidia = [i["metadata"]["name"] for i in report["install"] if i["metadata"]["name"].startswith("nvidia-")]
    assert "nvidia-nccl-cu12" in nvidia and "nvidia-cuda-runtime-cu12" in nvidia, nvidia
    assert not [n for n in nvidia if n.endswith("-cu13") or n in ("nvidia-cublas", "nvidia-cuda-runtime")], nvidia
    assert "+" not in torch["metadata"]["version"], "the node's torch comes from PyPI, not a local or CPU build"


# ---- CI resolves the pins as the image build would ---------------------------------------------------------------

_REPORT: dict = {}


def resolve() -> dict:
    """pip's resolution of the node's requirements for the node's Python and platform, from PyPI, with this
    machine's pip configuration (local wheel folders, constraints) switched off: what the image build does."""
    if _REPORT:
        return _REPORT
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    environ.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_DEFAULT_TIMEOUT="60")
    cmd = env.pip_resolve_command(sys.executable, env.ENVIRONMENT_FILE) + ["--index-url", "https://pypi.org/simple"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=600)
    assert done.returncode == 0, (f"the node's requirements ({env.ENVIRONMENT_FILE.name}) do not resolve for "
                                  f"Python {env.NODE_PYTHON} on linux x86_64:\n{done.stderr[-3000:]}")
    _REPORT.update(json.loads(done.stdout))
    return _REPORT


def test_the_node_requirements_resolve_for_the_nodes_python_and_platform():
    report = resolve()
    got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in report["install"]}
    for name, version in env.pinned_versions(env.node_requirements()).items():
        assert got.get(name) == version, (name, version, got.get(name))
    # wheels only, each for this platform and Python
    for item in report["install"]:
        wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
        assert wheel.endswith(".whl"), wheel
        platforms = wheel[:-len(".whl")].split("-")[-1].split(".")
        assert platforms == ["any"] or any(t in env.node_platform_tags() for t in platforms), wheel


def test_a_conflicting_pin_fails_the_resolution(tmp_path):
    """The resolution check fails where the image build would: the pins this file had before
    (mlflow-skinny 3.17.2 beside azureml-mlflow 1.62.0.post6, which accepts up to 3.15.0)."""
    bad = tmp_path / "requirements.txt"
    bad.write_text("mlflow-skinny==3.17.2\nazureml-mlflow==1.62.0.post6\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    environ.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_DEFAULT_TIMEOUT="60")
    cmd = env.pip_resolve_command(sys.executable, bad) + ["--index-url", "https://pypi.org/simple"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=300)
    assert done.returncode != 0
    assert "ResolutionImpossible" in done.stderr or "conflict" in done.stderr.lower(), done.stderr[-2000:]


def test_the_platform_tags_reach_back_to_manylinux2014():
    tags = env.node_platform_tags()
    assert tags[0] == "manylinux_2_35_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert not any("aarch64" in t or "macosx" in t for t in tags)


# ---- the job is built on that context, with the variables of its size ---------------------------------------------

def test_build_environment_is_the_context_folder_hashed_by_content(tmp_path):
    from azure.ai.ml.entities import BuildContext, Environment

    built = env.build_environment()
    assert Path(built.build.path) == env.CONTEXT_DIR and built.image is None and built.conda_file is None
    assert sorted(p.name for p in env.CONTEXT_DIR.iterdir() if p.is_file()) == ["Dockerfile", "requirements.txt"]
    # a changed pin is a new environment version (Azure ML builds it again), an unchanged folder is the same one
    import shutil

    copy = tmp_path / "ctx"
    shutil.copytree(env.CONTEXT_DIR, copy)
    assert Environment(build=BuildContext(path=str(copy))).version == built.version
    (copy / "requirements.txt").write_text(env.ENVIRONMENT_FILE.read_text().replace("peft==", "peft==0.0.1#"))
    assert Environment(build=BuildContext(path=str(copy))).version != built.version


@pytest.mark.parametrize("sku,family", [
    ("Standard_ND96asr_v4", "ndv4"), ("Standard_ND96amsr_A100_v4", "ndv4"),
    ("Standard_ND96isr_H100_v5", "ndv5"), ("Standard_ND96isr_H200_v5", "ndv5"),
    ("Standard_NC24ads_A100_v4", ""), ("Standard_NC80adis_H100_v5", ""), ("Standard_NC4as_T4_v3", ""),
    ("Standard_ND96isr_MI300X_v5", ""),
])
def test_nccl_variables_for_the_nd_sizes_only(sku, family):
    variables = env.nccl_env(sku)
    if not family:
        assert variables == {}
        return
    assert variables == {"NCCL_IB_PCI_RELAXED_ORDERING": "1",
                         "NCCL_TOPO_FILE": f"/opt/distill/topology/{family}-topo.xml",
                         "NCCL_IGNORE_CPU_AFFINITY": "1", "NCCL_SOCKET_IFNAME": "eth0"}
    # the topology file the variable names is one the image installs
    assert re.search(rf"\sADD \S+/topology/{family}-topo\.xml /opt/distill/topology/{family}-topo\.xml", dockerfile())


def test_the_hugging_face_cache_is_expanded_on_the_node_into_the_jobs_folder(tmp_path):
    """huggingface_hub expands HF_HOME itself: on a node it is the job's folder on the local disk."""
    wd = tmp_path / "mnt" / "azureml" / "cr" / "j" / "job1" / "exe" / "wd"
    code = "import huggingface_hub.constants as c; print(c.HF_HOME); print(c.HF_HUB_CACHE)"
    environ = {**os.environ, "HF_HOME": env.HF_HOME, "AZUREML_CR_EXECUTION_WORKING_DIR_PATH": str(wd)}
    environ.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    home, hub = out.stdout.split()
    assert home == str(wd / ".cache" / "huggingface") and hub == str(wd / ".cache" / "huggingface" / "hub")


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_each_bundled_azure_job_carries_its_sizes_variables_and_the_pinned_context(plan, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    from distill_studio.engine.azure.job import JOB_ENV, export

    for spec, path, _ in export(plan, tmp_path / "job.yaml"):
        variables = spec.job.environment_variables
        assert variables["HF_HOME"] == env.HF_HOME
        for key, value in JOB_ENV.items():
            assert variables[key] == value
        nccl = {k: v for k, v in variables.items() if k.startswith(("NCCL_", "UCX_"))}
        assert nccl == env.nccl_env(spec.sku)
        assert bool(nccl) == bool(env.nd_family(spec.sku))
        assert Path(spec.job.environment.build.path) == env.CONTEXT_DIR
        # the exported file says the same (what `az ml job create -f` submits)
        text = path.read_text()
        assert "node_image" in text and "HF_HOME" in text
