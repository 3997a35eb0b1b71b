"""The software of an Azure ML training node: the base image and the pinned packages installed on it.

One place answers what a node runs, for the three that need it: the job (``job.py``: the azure-ai-ml
``Environment``), the rehearsal on this machine (``rehearse.py``: a venv of the same pins, CPU torch where there
is no GPU) and CI (which resolves the pins for the node's platform and Python).
"""
from __future__ import annotations

import re
from pathlib import Path

IMAGE = "mcr.microsoft.com/azureml/curated/acpt-pytorch-2.2-cuda12.1:latest"
ENVIRONMENT_FILE = Path(__file__).with_name("environment.yml")
CPU_TORCH = "torch==2.13.0"     # the CPU build on developers' and CI's machines (constraints.txt)


def node_requirements() -> list[str]:
    """The pip requirement lines the node installs, in order, as the environment file pins them."""
    lines, inside = [], False
    for raw in ENVIRONMENT_FILE.read_text(encoding="utf-8").splitlines():
        text = raw.split("#", 1)[0].rstrip()
        if re.match(r"^\s*-\s*pip:\s*$", text):
            inside = True
            continue
        if inside:
            m = re.match(r"^\s+-\s+(\S.*)$", text)
            if m:
                lines.append(m.group(1).strip())
            elif text.strip():
                inside = False
    return lines


def rehearsal_requirements() -> list[str]:
    """The node's requirements with torch replaced by the CPU build this machine has (everything else as pinned)."""
    return [CPU_TORCH if re.match(r"^torch\s*(==|>=|~=|$)", r) else r for r in node_requirements()]


def build_environment():
    """The azure-ai-ml ``Environment`` of every job."""
    from azure.ai.ml.entities import Environment

    return Environment(image=IMAGE, conda_file=str(ENVIRONMENT_FILE))
