"""Where the models live on the process group, and the launch contract.

A run starts under ``distill run --processes N`` (accelerate's launcher), ``torchrun``, or a cluster launcher that
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (Azure ML's PyTorch distribution).
:func:`join` forms the process group itself, with a join timeout of its own, so a node that never starts is an
error with a message after ``DISTILL_JOIN_TIMEOUT`` seconds, not a hang.

The placement comes from the planner (:func:`distill_studio.engine.planner.resolve_run`):

* sharding "none": the student under accelerate's DDP (:class:`Replicated`), the teacher whole on every process;
* "full" / "hybrid": the student under FSDP2 (``torch.distributed.fsdp.fully_shard``, one unit per decoder layer
  and the rest in the root unit) on a 1-D mesh of every process, or a 2-D mesh of nodes x processes per node
  (:class:`Sharded`); the teacher sharded the same way, forward only, or whole on every process where the planner
  replicates it.

Why FSDP2 directly rather than through accelerate's FSDP plugin: the same code then runs on the CPU with gloo (the
tests run it with two processes; accelerate's FSDP path is for accelerators only), the teacher is sharded as a
forward-only model beside the student (accelerate prepares the models it trains), and the hybrid mesh is ours to
state. Checkpoints of sharded state go through torch.distributed.checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn

from ..errors import RunError

JOIN_TIMEOUT_S = 600.0        # how long the processes of a run wait for each other to start
COLLECTIVE_TIMEOUT_S = 3600.0  # one collective (a teacher pass on one rank can make the others wait long)


@dataclass(frozen=True)
class Devices:
    """The accelerators this process finds: ``kind`` is "cuda" (NVIDIA), "rocm" (AMD, through HIP), "mps" (Apple),
    "xpu" (Intel) or "none"; ``names`` and ``memory_bytes`` one per device; ``note`` why none was found."""

    kind: str
    names: tuple[str, ...] = ()
    memory_bytes: tuple[int, ...] = ()
    note: str = ""

    def describe(self) -> str:
        if not self.names:
            return "no GPU" + (f" ({self.note})" if self.note else "")
        counted: dict[str, int] = {}
        for n in self.names:
            counted[n] = counted.get(n, 0) + 1
        return f"{len(self.names)} device(s): " + ", ".join(f"{c} × {n}" for n, c in counted.items())


def probe_devices() -> Devices:
    """What torch finds in this process (after CUDA_VISIBLE_DEVICES and the like)."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        props = [torch.cuda.get_device_properties(i) for i in range(n)]
        return Devices("rocm" if torch.version.hip else "cuda", tuple(p.name for p in props),
                       tuple(int(p.total_memory) for p in props))
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        n = xpu.device_count()
        return Devices("xpu", tuple(xpu.get_device_name(i) for i in range(n)))
    if torch.backends.mps.is_available():
        return Devices("mps", ("Apple GPU (MPS)",))
    if torch.version.cuda is None and torch.version.hip is None:
        note = f"torch {torch.__version__} is a build without CUDA"
    else:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else f"ROCm {torch.version.hip}"
        note = f"torch {torch.__version__} is a {build} build, but no device is visible: no driver, a driver too old " \
               f"for {build}, or none allowed"
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        note += f"; CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
    return Devices("none", note=note)


_KINDS = {"nvidia": "cuda", "amd": "rocm"}   # the torch device kind of a catalog vendor's GPUs


def _same_part(catalog_id: str, found_name: str) -> bool:
    """Whether a device torch names is the catalog's part: its model ("h100", "a100", "mi300x", "t4") as a word of
    the name ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"); "a10" is not "a100"."""
    import re

    part = catalog_id.split("-")[0].lower()
    return re.search(rf"(?<![a-z0-9]){re.escape(part)}(?![a-z0-9])", found_name.lower()) is not None


def device_problem(acc, per_node: int, found: Devices) -> str | None:
    """What keeps this process from running a plan for ``per_node`` × ``acc`` (a catalog Accelerator) on ``found``,
    or None. A CPU plan needs nothing."""
    if acc.vendor == "cpu":
        return None
    kind = _KINDS.get(acc.vendor)
    if not found.names:
        return f"finds {found.describe()}"
    if kind != found.kind or not all(_same_part(acc.id, n) for n in found.names):
        return f"finds {found.describe()}: another accelerator than the plan's"
    small = [m for m in found.memory_bytes if m < 0.9 * acc.hbm_gb * 1e9]
    if small:
        return (f"finds {found.describe()} with {min(small) / 1e9:.0f} GB each, less memory than the plan's "
                f"{acc.hbm_gb:g} GB: another accelerator than the plan's")
    if len(found.names) < per_node:
        return f"finds {found.describe()}: fewer than the plan's {per_node} per node"
    return None


def check_devices(resolved, found: Devices | None = None, probe=probe_devices) -> None:
    """Refuse a run whose plan needs GPUs that this process does not find (none, fewer than the plan's per node,
    or another accelerator), naming what it found: a GPU plan never trains on the CPU, or on other hardware than
    the one it was planned and priced for. ``found`` (or ``probe()``) is what this process sees."""
    from ..catalog.hardware import load_accelerators, resolve_sku

    plan = resolved.plan
    hw = plan.hardware
    option = resolved.estimate.get("option", {}) if isinstance(resolved.estimate, dict) else {}
    acc_id = option.get("accelerator")
    sku = option.get("sku") or (hw.sku if hw.target == "azure" else None)
    if not acc_id:
        acc_id = resolve_sku(sku).accelerator if hw.target == "azure" else hw.accelerator
    acc = load_accelerators().get(acc_id)
    if acc is None or acc.vendor == "cpu":
        return
    found = found if found is not None else probe()
    problem = device_problem(acc, resolved.gpus_per_node, found)
    if problem is None:
        return
    where = (f"{resolved.nodes} × {sku}, {resolved.gpus_per_node} × {acc.name} each" if hw.target == "azure"
             else f"hardware.accelerator = \"{acc_id}\", {resolved.gpus_per_node} × {acc.name}")
    fix = ("check the node's GPU driver (nvidia-smi) and that the environment's torch is a GPU build"
           if hw.target == "azure" else
           'run it where those GPUs are, or plan for this machine (hardware.accelerator = "cpu", or the '
           "accelerator it has)")
    raise RunError(f"hardware: the plan needs {resolved.gpus_per_node} GPU(s) per node ({where}), but this "
                   f"process {problem}. Refused rather than run on other hardware than planned (a GPU plan never "
                   f"trains on the CPU): {fix}")


def die_with_launcher() -> bool:
    """Under a launcher that starts ranks in sessions of their own (torchrun, ``accelerate launch``): end this rank
    the moment its launcher ends (Linux's parent-death signal). A SIGKILL to the run's process group kills the
    launcher but cannot reach the ranks; without this a rank trains on, and checkpoints, until a collective
    notices, seconds later, holding its GPU's memory meanwhile. False where not applicable (one process, no
    launcher, not Linux)."""
    import sys

    if not sys.platform.startswith("linux") or not os.environ.get("TORCHELASTIC_RUN_ID"):
        return False
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:   # PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:   # the launcher ended before the signal was set: as if it had come
        os._exit(128 + int(signal.SIGKILL))
    return True


def join(cuda: bool) -> None:
    """Form the process group of a multi-process launch (no-op for one process or when already formed)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return
    die_with_launcher()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RunError(f"WORLD_SIZE is {world} but {', '.join(missing)} is not set; start the run with "
                       "`distill run --processes N`, torchrun, or a launcher that sets RANK, WORLD_SIZE, "
                       "LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
    rank = int(os.environ["RANK"])
    if cuda:  # NCCL binds each rank's communicator to its GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    wait = float(os.environ.get("DISTILL_JOIN_TIMEOUT", JOIN_TIMEOUT_S))
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=timedelta(seconds=wait)))
        # the master's store waits for every rank to connect (up to ``wait``), the others retry as long
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        raise RunError(f"the run's {world} processes did not all join within {wait:g} s at {where} (rank {rank}): "
                       "check that every node was started and can reach MASTER_ADDR:MASTER_PORT "
                       f"({type(exc).__name__})") from None
    collective = timedelta(seconds=float(os.environ.get("DISTILL_COLLECTIVE_TIMEOUT", COLLECTIVE_TIMEOUT_S)))
    store.set_timeout(collective)
    # as init_process_group does with a store it makes itself: a prefix, so that the group's keys never meet the
    # launcher's own in a store it shares with it (torchrun's agent store)
    dist.init_process_group("nccl" if cuda else "gloo", store=dist.PrefixStore("default_pg", store), rank=rank,
                            world_size=world, timeout=collective)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (each one FSDP unit)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise RunError(f"{type(model).__name__}: cannot find its decoder layers to shard; use "
                       'hardware.sharding = "none"')
    return list(layers)


def mesh_for(kind: str, nodes: int, per_node: int, device: torch.device):
    from torch.distributed.device_mesh import init_device_mesh

    if kind == "hybrid":
        return init_device_mesh(device.type, (nodes, per_node), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device.type, (nodes * per_node,), mesh_dim_names=("shard",))


def _mp_policy(device: torch.device, root: bool = False):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    # a root's inputs are left as they are: the student's include the teacher's cached fp16 log-probs, which a
    # cast to bf16 would coarsen (autocast decides the compute dtype)
    if device.type == "cuda":  # bf16 compute and all-gathers, fp32 gradient reduction
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                    cast_forward_inputs=not root)
    return MixedPrecisionPolicy(cast_forward_inputs=not root)


def shard(root: nn.Module, model: nn.Module, mesh, device: torch.device) -> nn.Module:
    """FSDP2 over ``root``: one unit per decoder layer of ``model`` (inside ``root``), the rest in the root's unit.
    Parameters move to ``device`` shard by shard, so a model loaded on the CPU never lands whole on one GPU."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=_mp_policy(device), reshard_after_forward=True)
    fully_shard(root, mesh=mesh, mp_policy=_mp_policy(device, root=True))
    # Decide now that ``root`` is the root: otherwise the first module to run forward becomes it, and generation
    # (which enters through the inner model, not ``root``) would make a layer the root.
    root._get_fsdp_state()._lazy_init()
    return root


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def gathered(root: nn.Module, reshard: bool = True):
    """The root unit's parameters (embeddings, final norm, head) whole while the body runs, for code that enters
    the model elsewhere than ``root.forward`` (generation). Layers gather themselves in their own forward."""
    if not is_sharded(root):
        yield
        return
    root.unshard()
    try:
        yield
    finally:
        if reshard:
            root.reshard()


class TeacherHidden(nn.Module):
    """A teacher under FSDP: its forward is the decoder's last hidden states; the head is read by the loss.

    The root unit (embeddings, final norm, head) is not resharded after forward (FSDP's rule for a root), so the
    head's weight stays whole for the loss in forward and in backward's recomputation."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask):
        return self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                     use_cache=False).last_hidden_state

    def head_weight(self) -> torch.Tensor:
        return self.lm.get_output_embeddings().weight


# ---- the student's training under each placement ---------------------------------------------------------------

class Replicated:
    """The student whole on every process: accelerate (DDP across processes, or nothing for one)."""

    sharded = False

    def __init__(self, accelerator) -> None:
        self.acc = accelerator

    def prepare(self, module: nn.Module, optimizer):
        return self.acc.prepare(module, optimizer)

    def sync(self, module, last: bool):
        return contextlib.nullcontext() if last else self.acc.no_sync(module)

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def clip(self, params, max_norm: float) -> float:
        return float(self.acc.clip_grad_norm_(params, max_norm))

    def unwrap(self, module: nn.Module) -> nn.Module:
        return self.acc.unwrap_model(module)

    def save_state(self, folder: Path, module, optimizer) -> None:
        self.acc.save_state(str(folder), safe_serialization=True)

    def load_state(self, folder: Path, module, optimizer) -> None:
        self.acc.load_state(str(folder))


class Sharded:
    """The student under FSDP2. Gradients are reduce-scattered (averaged over every process, as DDP does), the
    clipping norm is the global one, and checkpoints are torch.distributed.checkpoint folders of the sharded state."""

    sharded = True

    def __init__(self, accelerator, mesh, model: nn.Module) -> None:
        self.acc, self.mesh, self.model = accelerator, mesh, model

    def prepare(self, module: nn.Module, optimizer_factory):
        shard(module, self.model, self.mesh, self.acc.device)
        return module, optimizer_factory()

    def sync(self, module, last: bool):
        # Gradients are reduce-scattered after every micro-batch and accumulate sharded: skipping it would keep
        # every layer's whole gradient (in fp32) until the last micro-batch, the memory sharding is there to save.
        # Across the replicas of hybrid sharding they are all-reduced once a step, on the last micro-batch.
        module.set_requires_all_reduce(last)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip(self, params, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def unwrap(self, module: nn.Module) -> nn.Module:
        return module

    @staticmethod
    def _options(full: bool = False, load: bool = False):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        # a checkpoint holds the trainable parameters only (a LoRA run's frozen base is rebuilt from its source),
        # so loading it leaves the frozen ones as they are
        return StateDictOptions(full_state_dict=full, cpu_offload=full, ignore_frozen_params=not full,
                                strict=not load)

    def save_state(self, folder: Path, module, optimizer) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(module, optimizer, options=self._options())
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(folder / "sharded"))
        torch.save(_rng_state(), folder / f"rng-{self.acc.process_index}.pt")

    def load_state(self, folder: Path, module, optimizer) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(module, optimizer, options=self._options())
        state = {"model": model_sd, "optimizer": optim_sd}
        dcp.load(state, checkpoint_id=str(folder / "sharded"))
        set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=self._options(load=True))
        _set_rng_state(torch.load(folder / f"rng-{self.acc.process_index}.pt", weights_only=False))

    def full_state_dict(self, module) -> dict[str, torch.Tensor]:
        """Every parameter and buffer whole, on the CPU of rank 0 (empty elsewhere); every rank must call it."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(module, options=self._options(full=True))


def _rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Collective:
    """Small agreements between the processes of a run (counts, flags), on the run's device; one process: local."""

    def __init__(self, accelerator) -> None:
        self.device = accelerator.device
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index

    def _reduce(self, value: float, op: str) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([float(value)], device=self.device)
        dist.all_reduce(t, op={"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}[op])
        return float(t.item())

    def max(self, value: int) -> int:
        return int(self._reduce(value, "max"))

    def min(self, value: int) -> int:
        return int(self._reduce(value, "min"))

    def sum(self, value: float) -> float:
        return self._reduce(value, "sum")

    def any(self, flag: bool) -> bool:
        return self.max(1 if flag else 0) > 0

    def gather(self, value) -> list:
        """Every process's ``value`` (a small picklable object), in rank order, on every process."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def local_parameter_bytes(module: nn.Module | None) -> int:
    """Bytes of parameters this process holds for ``module``: its shards of a sharded model, all of a whole one."""
    if module is None:
        return 0
    total = 0
    for p in module.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total


def peak_memory_bytes(device: torch.device) -> int:
    """This process's peak: allocated device memory on a GPU, the resident set size on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
