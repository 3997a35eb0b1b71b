"""``distill azure rehearse PLAN``: the exact Azure ML job of a plan, run on this machine as a node would run it.

What is the job's own (``job.build()``, as ``submit`` builds it):

- **Code**: only the staged code folder that would be uploaded, as the working directory and ``PYTHONPATH``; the
  checkout's engine is not importable (the venv does not have the project installed, and the rehearsal checks that
  the engine a node process imports is the staged one).
- **Environment**: a venv of :func:`environment.rehearsal_requirements` (the node's locked pins, hashes checked,
  torch's CPU build), cached in the user cache folder under a hash of those requirements, so a second rehearsal
  reuses it.
- **Command line**: the Command job's, with ``${{inputs.X}}`` and ``${{outputs.run}}`` set to mount-like folders
  (``<rehearsal>/mnt/azureml/cr/j/<job>/cap/data-capability/wd/INPUT_x``, the inputs copied there, and ``…/wd/run``).
- **Process environment**: the job's ``environment_variables``; Azure ML's PyTorch distribution's per-process
  variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``NODE_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``); the ``AZUREML_*`` and ``MLFLOW_*`` variables Azure ML sets; nothing else of this shell's.
- **MLflow**: the node's mirror logs into a local MLflow store; the watcher's own reading code
  (:class:`watch.Watcher`, its ``runs/get`` and ``metrics/get-history`` documents served from that store) writes
  the local run folder's ``events.jsonl``, as it does for a job on Azure.

What differs (docs/azure.md, Rehearsal): the node's GPUs are CPU processes (one per GPU of the VM, or
``--processes N`` per node) talking over gloo, so the staged ``plan.toml``'s hardware is this machine's (a CPU
plan of the same world size and sharding; the job's own plan is kept beside it); the Hugging Face hub is offline.

``--kill-during-checkpoint``: the node is stopped with SIGKILL (every process of the node at once) while a
checkpoint is being copied to the output, and the same command is started again, as Azure ML restarts a job; the
run must continue from the last complete checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import AzureError

Say = Callable[[str], None]
VENV_STAMP = ".rehearsal-ready"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"   # PyTorch's index of its CPU builds (Linux)
MNT = Path("mnt") / "azureml" / "cr" / "j"
COPY_PAUSE_ENV = "DISTILL_CHECKPOINT_COPY_PAUSE_S"
COPY_PAUSE_S = 5.0          # how long the engine holds a checkpoint copy open before its marker, when asked to
COPYING = re.compile(r"copying checkpoint\D*(\d+)", re.I)
WORKSPACE = {"subscription": "00000000-0000-0000-0000-000000000000", "resource_group": "rehearsal",
             "workspace": "rehearsal"}
MLFLOW_BASE = "https://rehearsal.api.azureml.ms/mlflow/v1.0/rehearsal"   # never contacted: served from the store
# Variables of this shell a node process may see (locale and temp folder); nothing else of the desktop's.
PASS_THROUGH = ("LANG", "LC_ALL", "TMPDIR", "TZ")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- the venv ----------------------------------------------------------------------------------------------------
def venv_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("distill-studio", appauthor=False)) / "rehearsal"


def venv_key(requirements: list[str]) -> str:
    text = "\n".join([sys.version.split()[0], sys.platform, *requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(requirements: list[str], say: Say = _say, root: Path | None = None) -> Path:
    """The venv of ``requirements``, built on first use (minutes: torch and transformers), reused after. Built
    in place and marked ready last, so an interrupted build is never taken for a finished one."""
    from filelock import FileLock

    root = Path(root) if root is not None else venv_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"venv-{venv_key(requirements)}"
    with FileLock(str(root / f"{venv.name}.lock")):
        if (venv / VENV_STAMP).is_file():
            say(f"node environment: {venv} (built before)")
            return venv
        shutil.rmtree(venv, ignore_errors=True)         # an earlier build that did not finish
        say(f"node environment: building {venv} from the job's {len(requirements)} pins (the first time takes "
            "minutes)")
        t0 = time.monotonic()
        # built in place (a venv's scripts name its folder), and marked ready last
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the venv")
        req_file = venv / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        pip = [sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "install", "--progress-bar", "off",
               "--no-input"]
        shown = re.compile(r"^(Collecting|Installing|Successfully)")
        torch = next((r for r in requirements if re.match(r"^torch\s*==\s*\S+\+cpu\b", r)), None)
        if torch is not None:
            # torch's CPU build is not on PyPI: a wheel folder pip is configured with, else PyTorch's own index
            # (asked for torch alone, so pip never looks there for the other packages)
            one = venv / "torch-requirement.txt"
            one.write_text(torch + "\n", encoding="utf-8")
            try:
                _run(pip + ["--no-deps", "-r", str(one)], "installing torch's CPU build", say=say, show=shown)
            except AzureError:
                _run(pip + ["--no-deps", "--extra-index-url", TORCH_CPU_INDEX, "-r", str(one)],
                     f"installing torch's CPU build from {TORCH_CPU_INDEX}", say=say, show=shown)
        _run(pip + ["-r", str(req_file)], "installing the job's pins", say=say, show=shown)
        (venv / VENV_STAMP).write_text(json.dumps({"requirements": requirements,
                                                   "seconds": round(time.monotonic() - t0, 1)}), encoding="utf-8")
        say(f"node environment ready in {time.monotonic() - t0:.0f} s")
    return venv


def _run(cmd: list[str], what: str, say: Say | None = None, show: re.Pattern | None = None) -> None:
    """A set-up command; its output shown where ``show`` matches, and its end if it fails."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    tail: list[str] = []
    t0, last = time.monotonic(), [time.monotonic()]
    done = threading.Event()

    def heartbeat() -> None:      # pip says nothing while it unpacks torch: say that it goes on
        while not done.wait(5.0):
            if say is not None and time.monotonic() - last[0] >= 30:
                say(f"  … {what}, {time.monotonic() - t0:.0f} s")
                last[0] = time.monotonic()

    threading.Thread(target=heartbeat, daemon=True).start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-25:]
            if say is not None and show is not None and show.match(line):
                say(f"  {line.split(' (from ')[0][:160]}")
                last[0] = time.monotonic()
    finally:
        done.set()
    if proc.wait() != 0:
        raise AzureError(f"{what} failed (exit {proc.returncode}): this is what the node's image build would meet.\n"
                         + "\n".join(tail))


# ---- the job as a node sees it -----------------------------------------------------------------------------------
@dataclass
class Node:
    """Where one rehearsal lays the job out: ``<root>/mnt/azureml/cr/j/<job>/{exe/wd, cap/data-capability/wd}``."""

    root: Path
    job: str
    code: Path = field(init=False)
    wd: Path = field(init=False)
    output: Path = field(init=False)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        base = self.root / MNT / self.job
        self.code = base / "exe" / "wd"
        self.wd = base / "cap" / "data-capability" / "wd"
        self.output = self.wd / "run"
        self.logs = self.root / "logs" / "user_logs"


def mount_inputs(job, wd: Path) -> dict[str, str]:
    """Each input copied where Azure ML mounts it (``INPUT_<name>``: the folder, or the file inside it)."""
    paths: dict[str, str] = {}
    for name, value in job.inputs.items():
        source = str(getattr(value, "path", "") or "")
        if re.match(r"^(azureml|https?|wasbs?|abfss?)://", source):
            raise AzureError(f"input {name}: {source} is on Azure; a rehearsal reads local inputs only (give the "
                             "plan's data and models as local paths)")
        src = Path(source)
        dest = wd / f"INPUT_{name}"
        if not src.exists():
            raise AzureError(f"input {name}: {src} does not exist")
        if dest.exists():
            shutil.rmtree(dest)
        if getattr(value, "type", "") == "uri_file":
            dest.mkdir(parents=True)
            shutil.copy2(src, dest / src.name)
            paths[name] = str(dest / src.name)
        else:
            shutil.copytree(src, dest)
            paths[name] = str(dest)
    return paths


def command_line(job, inputs: dict[str, str], output: Path, world: int | None = None) -> str:
    """The job's command with its ``${{inputs.X}}`` and ``${{outputs.run}}`` set to local paths; ``world``: the
    process count the rehearsal launches, where it differs from the job's GPUs."""
    import shlex

    text = job.command

    def sub(m: re.Match) -> str:
        kind, name = m.group(1), m.group(2)
        if kind == "inputs":
            if name not in inputs:
                raise AzureError(f"the job's command names input '{name}', which the job does not have")
            return shlex.quote(inputs[name])
        if name != "run":
            raise AzureError(f"the job's command names output '{name}', which the job does not have")
        return shlex.quote(str(output))

    text = re.sub(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}", sub, text)
    if "${{" in text:
        raise AzureError(f"the job's command has a placeholder the rehearsal cannot fill: {text}")
    if world is not None:
        text = re.sub(r"--expect-world-size \d+", f"--expect-world-size {world}", text)
    return text


def cpu_plan(code: Path, nodes: int, per_node: int, keep: Path) -> None:
    """The staged plan with this machine's hardware: ``per_node`` CPU processes on each of ``nodes`` nodes, sharded
    as the job is. The job's own plan is kept at ``keep``."""
    from ..plan import load_plan, save_plan

    plan = load_plan(code / "plan.toml")
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(code / "plan.toml", keep)
    hw = plan.hardware.model_dump()
    hw.update(target="local", accelerator="cpu", gpus=per_node, nodes=nodes, sku=None, split="no",
              teacher_pass=None, usd_per_hour=None)
    plan = plan.model_copy(update={"hardware": type(plan.hardware).model_validate(hw)})
    save_plan(plan, code / "plan.toml")


def read_azureml_names(code: Path) -> set[str]:
    """The ``AZUREML_*`` variables the staged engine reads."""
    found: set[str] = set()
    for path in code.rglob("*.py"):
        if path.name == "rehearse.py":          # the rehearsal's own list of them
            continue
        found |= set(re.findall(r"\bAZUREML_[A-Z0-9_]+\b", path.read_text(encoding="utf-8", errors="replace")))
    return found


def node_environment(job, node: Node, venv: Path, store: Path, run_id: str, experiment_id: str) -> dict[str, str]:
    """What every process of the job starts with, before its rank's variables."""
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    home = node.root / "home"
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = venv_python(venv).parent
    env.update({
        "PATH": os.pathsep.join([str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "VIRTUAL_ENV": str(venv),
        "PYTHONPATH": str(node.code),
        "PYTHONNOUSERSITE": "1",
        # Azure ML's job context
        "AZUREML_RUN_ID": node.job,
        "AZUREML_ARM_SUBSCRIPTION": WORKSPACE["subscription"],
        "AZUREML_ARM_RESOURCEGROUP": WORKSPACE["resource_group"],
        "AZUREML_ARM_WORKSPACE_NAME": WORKSPACE["workspace"],
        "AZUREML_EXPERIMENT_NAME": getattr(job, "experiment_name", "") or "",
        "AZUREML_CR_DATA_CAPABILITY_PATH": str(node.wd.parent),
        "AZUREML_CR_EXECUTION_WORKING_DIR_PATH": str(node.code),
        "AZUREML_NODE_COUNT": str(job.resources.instance_count or 1),
        "AZ_BATCHAI_CLUSTER_NAME": str(job.compute or ""),
        # MLflow as Azure ML sets it: the run of this job, in the workspace's store (here a local one)
        "MLFLOW_TRACKING_URI": store.as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "MLFLOW_EXPERIMENT_NAME": getattr(job, "experiment_name", "") or "",
        # this machine: CPU processes (the node's GPUs), no hub
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
    })
    env["DISTILL_LOCAL_DISK"] = str(node.root / "local-disk")     # the node's own disk (Azure ML: its NVMe/temp disk)
    for key, value in (job.environment_variables or {}).items():
        value = str(value)
        if value.startswith("/mnt/") or value.startswith("/tmp/"):  # a folder on the node: the same under the root
            value = str(node.root / value.lstrip("/"))
            Path(value).mkdir(parents=True, exist_ok=True)
        env[key] = value
    return env


def rank_environment(base: dict[str, str], *, rank: int, local_rank: int, node_rank: int, per_node: int,
                     world: int, port: int) -> dict[str, str]:
    """Azure ML's PyTorch distribution: one process per GPU, each told its place."""
    threads = max(1, (os.cpu_count() or 1) // world)
    return {**base, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(per_node), "NODE_RANK": str(node_rank), "GROUP_RANK": str(node_rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "AZ_BATCH_MASTER_NODE": f"127.0.0.1:{port}", "AZUREML_PROCESS_NAME": f"rank_{rank}",
            "OMP_NUM_THREADS": str(threads)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- MLflow: the store and the watcher's view of it --------------------------------------------------------------
_MLFLOW_SETUP = r"""
import json, sys, mlflow
from mlflow.tracking import MlflowClient
client = MlflowClient()
name, job = sys.argv[1], sys.argv[2]
exp = client.get_experiment_by_name(name)
exp_id = exp.experiment_id if exp else client.create_experiment(name)
run = client.create_run(exp_id, run_name=job, tags={"mlflow.runName": job})
print(json.dumps({"experiment_id": exp_id, "run_id": run.info.run_id}))
"""

_MLFLOW_DUMP = r"""
import json, sys
from mlflow.tracking import MlflowClient
from mlflow.utils.proto_json_utils import message_to_json
client = MlflowClient()
run = client.get_run(sys.argv[1])
out = {"run": json.loads(message_to_json(run.to_proto())), "history": {}}
for key in run.data.metrics:
    out["history"][key] = [json.loads(message_to_json(m.to_proto())) for m in client.get_metric_history(run.info.run_id, key)]
json.dump(out, sys.stdout)
"""


def _venv_call(venv: Path, script: str, args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([str(venv_python(venv)), "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise AzureError(f"the local MLflow store could not be read: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def mlflow_env(store: Path, base: dict[str, str]) -> dict[str, str]:
    return {**base, "MLFLOW_TRACKING_URI": store.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}


class StoreReader:
    """The MLflow REST documents the watcher asks for (``runs/get``, ``metrics/get-history``), answered from the
    local store with MLflow's own client and its protobuf-to-JSON (the REST API's own encoding)."""

    def __init__(self, venv: Path, env: dict[str, str], run_id: str, job: str = "") -> None:
        self.venv, self.env, self.run_id, self.job = venv, env, run_id, job or run_id
        self.doc: dict = {}

    def refresh(self) -> None:
        self.doc = _venv_call(self.venv, _MLFLOW_DUMP, [self.run_id], self.env)

    def get(self, url: str) -> dict:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        # Azure ML's MLflow run of a job is named as the job; a local store names its runs itself
        if query.get("run_id") not in (self.run_id, self.job):
            raise AzureError(f"the watcher asked for run {query.get('run_id')}, not this job's {self.job}")
        if parts.path.endswith("/api/2.0/mlflow/runs/get"):
            return {"run": self.doc.get("run", {})}
        if parts.path.endswith("/api/2.0/mlflow/metrics/get-history"):
            return {"metrics": self.doc.get("history", {}).get(query.get("metric_key", ""), [])}
        raise AzureError(f"the watcher asked for {parts.path}, which a rehearsal does not serve")


def local_watcher(run_dir: Path, reader: StoreReader, say: Say | None):
    """The desktop's :class:`watch.Watcher` over the local store: its own ``_read_events`` (cursor, metric and
    tag paging, ``from_mlflow``, the end message) with the REST GETs answered by ``reader``."""
    from .watch import Watcher

    class RehearsalWatcher(Watcher):
        def _get_json(self, url: str) -> dict:
            return reader.get(url)

    return RehearsalWatcher(run_dir, az=None, say=say)   # type: ignore[arg-type]  (no Azure: nothing is sent)


# ---- the node's processes ----------------------------------------------------------------------------------------
class Attempt:
    """One start of the job on the node: every process in one process group (a node that dies takes them all)."""

    def __init__(self, command: str, envs: list[dict[str, str]], cwd: Path, logs: Path, n: int, say: Say) -> None:
        self.procs: list[subprocess.Popen] = []
        self.pgid = 0
        logs.mkdir(parents=True, exist_ok=True)
        self._threads = []
        for rank, env in enumerate(envs):
            log = open(logs / f"std_log_process_{rank}{'' if n == 1 else f'_attempt_{n}'}.txt", "w",
                       encoding="utf-8")
            proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace",
                                    process_group=self.pgid)
            if rank == 0:
                self.pgid = proc.pid
            self.procs.append(proc)
            t = threading.Thread(target=self._copy, args=(proc, log, say if rank == 0 else None), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _copy(proc: subprocess.Popen, log, say: Say | None) -> None:
        assert proc.stdout is not None
        with log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if say is not None:
                    say(f"  | {line.rstrip()}")

    def poll(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()

    def wait(self, timeout: float | None = None) -> list[int]:
        codes = [p.wait(timeout=timeout) for p in self.procs]
        for t in self._threads:
            t.join(timeout=5)
        return codes


def checkpoint_copy_in_progress(output: Path, events_seen: list[dict]) -> tuple[int, int] | None:
    """(step being copied, last complete step) when a checkpoint is being copied to the output while an earlier
    one is complete there: a copy started (the engine's ``log`` event) that has no ``checkpoint`` event yet."""
    complete = [int(e.get("step", 0)) for e in events_seen if e.get("type") == "checkpoint"]
    if not complete:
        return None
    last = max(complete)
    for e in reversed(events_seen):
        if e.get("type") == "log":
            m = COPYING.search(str(e.get("message", "")))
            if m and int(m.group(1)) > last:
                return int(m.group(1)), last
    for tmp in (output / "checkpoints").glob(".tmp-step-*"):     # an engine that writes aside and renames
        m = re.search(r"(\d+)$", tmp.name)
        if m and int(m.group(1)) > last:
            return int(m.group(1)), last
    return None


def _events(path: Path) -> list[dict]:
    from ..runs.events import read_events

    return list(read_events(path)) if path.exists() else []


# ---- the rehearsal -----------------------------------------------------------------------------------------------
@dataclass
class Result:
    code: int
    task_score: float | None
    run_dir: Path
    root: Path
    resumed_from: int | None = None
    killed_at: tuple[int, int] | None = None


def rehearse(plan_path: Path, *, processes: int | None = None, kill_during_checkpoint: bool = False,
             root: Path | None = None, requirements: list[str] | None = None, venv_cache: Path | None = None,
             say: Say = _say, echo: bool = True, timeout_s: float = 3600.0) -> Result:
    """Rehearse ``plan_path``'s job here; returns its exit code (0: succeeded, with every check) and task score."""
    from ..plan import load_plan
    from .environment import rehearsal_requirements
    from .job import build, job_name

    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    if os.name == "nt":
        raise AzureError("a rehearsal runs the job as an Azure ML node (Linux) runs it; run it on Linux or macOS")
    if processes is not None and processes < 1:
        raise AzureError(f"--processes: {processes}; give 1 or more processes per node")
    name = job_name(plan.name, time.strftime("%Y%m%d-%H%M%S"))
    if root is None:
        from ..runs.folders import runs_root

        root = runs_root() / "rehearsals" / name
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise AzureError(f"{root} is not empty; give a new folder for the rehearsal")
    node = Node(root, name)
    say(f"rehearsal of {plan_path} in {root}")

    # the job exactly as `submit` builds it, its code staged where a node has it
    spec = build(plan_path, name, node.code)
    job = spec.job
    for note in spec.notes:
        say(note)
    per_node = processes or spec.gpus_per_node
    world = spec.nodes * per_node
    say(f"the job: {spec.nodes} × {spec.sku} with {spec.gpus_per_node} GPU(s) each; rehearsed as {spec.nodes} node(s) "
        f"× {per_node} CPU process(es)")
    cpu_plan(node.code, spec.nodes, per_node, root / "job" / "plan.toml")
    inputs = mount_inputs(job, node.wd)
    node.output.mkdir(parents=True, exist_ok=True)
    command = command_line(job, inputs, node.output, world=world)
    (root / "job").mkdir(parents=True, exist_ok=True)
    (root / "job" / "command.txt").write_text(command + "\n", encoding="utf-8")

    reqs = list(requirements) if requirements is not None else rehearsal_requirements()
    venv = ensure_venv(reqs, say, root=venv_cache)

    # MLflow: Azure ML makes the job's run before the job starts; the node logs into it
    store = root / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    base_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(root / "home"), "PYTHONNOUSERSITE": "1"}
    made = _venv_call(venv, _MLFLOW_SETUP, [getattr(job, "experiment_name", "") or "distill-studio", name],
                      mlflow_env(store, base_env))
    env = node_environment(job, node, venv, store, made["run_id"], made["experiment_id"])
    _check_isolation(venv, node, env)

    # the desktop's run folder, as `submit` leaves it, read back by the watcher
    run_dir = root / "run"
    _local_run_folder(run_dir, plan_path, spec, name)
    reader = StoreReader(venv, mlflow_env(store, base_env), made["run_id"], job=name)
    watcher = local_watcher(run_dir, reader, say=None)
    watcher.meta["mlflow"] = MLFLOW_BASE

    from .jobs import write_meta

    reading: list = [None, None]      # the read-back under way (a thread), and its error

    def read_back() -> None:
        reader.refresh()
        watcher._read_events(name)
        write_meta(run_dir, watcher.meta)

    def read_back_aside() -> None:
        """While the node runs: off the loop, which must see a checkpoint copy within its pause."""
        def work() -> None:
            try:
                read_back()
            except BaseException as exc:  # noqa: BLE001 — raised again by settle()
                reading[1] = exc

        if reading[0] is None or not reading[0].is_alive():
            reading[0] = threading.Thread(target=work, daemon=True)
            reading[0].start()

    def settle() -> None:
        if reading[0] is not None:
            reading[0].join()
        if reading[1] is not None:
            raise reading[1]

    port = free_port()
    envs = [rank_environment(env, rank=n * per_node + r, local_rank=r, node_rank=n, per_node=per_node, world=world,
                             port=port) for n in range(spec.nodes) for r in range(per_node)]
    missing = sorted(read_azureml_names(node.code) - set(envs[0]))
    if missing:
        say(f"note: the engine reads {', '.join(missing)}, which the rehearsal does not set")
    if kill_during_checkpoint:
        for e in envs:
            e[COPY_PAUSE_ENV] = str(COPY_PAUSE_S)
    out_events = node.output / "events.jsonl"
    result = Result(code=1, task_score=None, run_dir=run_dir, root=root)
    deadline = time.monotonic() + timeout_s
    attempt = None
    try:
        say(f"attempt 1: {command}")
        attempt = Attempt(command, envs, node.code, node.logs, 1, say if echo else (lambda _t: None))
        next_read = time.monotonic() + 20
        while None in attempt.poll():
            if time.monotonic() > deadline:
                attempt.kill()
                raise AzureError(f"the rehearsal did not end within {timeout_s:.0f} s; its logs are in {node.logs}")
            if kill_during_checkpoint and result.killed_at is None:
                found = checkpoint_copy_in_progress(node.output, _events(out_events))
                if found is not None:
                    attempt.kill()
                    result.killed_at = found
                    say(f"node stopped (SIGKILL to every process) while checkpoint step {found[0]} was being copied; "
                        f"the last complete one is step {found[1]}")
                    break
            if time.monotonic() > next_read:
                read_back_aside()
                next_read = time.monotonic() + 20
            time.sleep(0.05)
        codes = attempt.wait()
        if result.killed_at is None and kill_during_checkpoint:
            raise AzureError("the node was to be stopped during a checkpoint copy, but no copy was seen after a "
                             "complete checkpoint; checkpoint more often (training.checkpoint_every)")
        if result.killed_at is not None:
            settle()
            read_back()
            env_restart = [{k: v for k, v in e.items() if k != COPY_PAUSE_ENV} for e in envs]
            port = free_port()
            for e in env_restart:
                e["MASTER_PORT"], e["AZ_BATCH_MASTER_NODE"] = str(port), f"127.0.0.1:{port}"
            say(f"attempt 2 (the job restarted): {command}")
            attempt = Attempt(command, env_restart, node.code, node.logs, 2, say if echo else (lambda _t: None))
            codes = attempt.wait(timeout=max(1.0, deadline - time.monotonic()))
        settle()
        read_back()
    except BaseException:
        if attempt is not None:
            attempt.kill()          # never a node process left behind
        raise
    finally:
        if reading[0] is not None:
            reading[0].join(timeout=120)
        watcher.close()
    code = next((c for c in codes if c != 0), 0)
    return _conclude(result, code, run_dir, out_events, say)


def _conclude(result: Result, code: int, run_dir: Path, out_events: Path, say: Say) -> Result:
    engine = _events(out_events)
    seen = _events(run_dir / "events.jsonl")
    problems = []
    if result.killed_at is not None:
        started = [e for e in engine if e.get("type") == "run_started"]
        resumed = started[-1].get("resumed_from_step") if started else None
        result.resumed_from = resumed
        if resumed != result.killed_at[1]:
            problems.append(f"the restarted job resumed from step {resumed}, not from the last complete "
                            f"checkpoint (step {result.killed_at[1]})")
        else:
            say(f"the restarted job resumed from step {resumed}, the last complete checkpoint")
    end = next((e for e in reversed(seen) if e.get("type") == "run_finished"), None)
    evals = [e for e in seen if e.get("type") == "eval"]
    if not any(e.get("type") == "metric" for e in seen):
        problems.append("the watcher read no training metrics from MLflow")
    if end is None:
        problems.append("the watcher read no end of the run from MLflow")
    elif end.get("status") != "succeeded":
        problems.append(f"the run ended {end.get('status')}: {end.get('message', '')}")
    score = next((e.get("task_score") for e in reversed(evals) if e.get("task_score") is not None), None)
    result.task_score = score
    if score is None:
        problems.append("the watcher read no task score from MLflow")
    if code != 0:
        problems.append(f"a node process exited with {code} (logs in {result.root / 'logs' / 'user_logs'})")
    for p in problems:
        say(f"rehearsal: {p}")
    result.code = code or (1 if problems else 0)
    say(f"events read back by the watcher: {run_dir / 'events.jsonl'}")
    if score is not None:
        say(f"task score: {score:.4g}")
    return result


def _check_isolation(venv: Path, node: Node, env: dict[str, str]) -> None:
    """The node's processes import the staged engine, and nothing else could stand in for it."""
    probe = "import distill_studio.engine as e, os; print(os.path.realpath(e.__file__))"
    found = subprocess.run([str(venv_python(venv)), "-c", probe], cwd=node.code, env=env, capture_output=True,
                           text=True, timeout=120)
    where = found.stdout.strip()
    if found.returncode != 0 or not where.startswith(str(node.code.resolve())):
        raise AzureError(f"the node's Python imports the engine from {where or found.stderr.strip()[-500:]}, not "
                         f"from the staged code in {node.code}")
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    other = subprocess.run([str(venv_python(venv)), "-c", "import distill_studio"], cwd=venv, env=bare,
                           capture_output=True, text=True, timeout=120)
    if other.returncode == 0:
        raise AzureError(f"the rehearsal venv {venv} has distill_studio installed: it would hide a file missing "
                         "from the staged code; delete that venv")


def _local_run_folder(run_dir: Path, plan_path: Path, spec, name: str) -> None:
    """The desktop's folder of the run, as `submit` leaves it: the plan and azure.json."""
    from .jobs import write_meta

    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(plan_path, run_dir / "plan.toml")
    write_meta(run_dir, {"job": name, "jobs": [name], "status": "Running", "sku": spec.sku, "nodes": spec.nodes,
                         "priority": spec.priority, "output": spec.output_uri, "plan_path": str(plan_path.resolve()),
                         "rehearsal": True, **WORKSPACE})


def cmd_rehearse(args) -> int:
    """``distill azure rehearse PLAN``."""
    result = rehearse(args.plan, processes=args.processes, kill_during_checkpoint=args.kill_during_checkpoint,
                      root=args.dir, timeout_s=args.timeout)
    print(json.dumps({"task_score": result.task_score, "run_dir": str(result.run_dir), "code": result.code,
                      "resumed_from_step": result.resumed_from}) if args.json else
          f"task score: {result.task_score if result.task_score is not None else 'none'} (run folder "
          f"{result.run_dir})")
    return result.code
