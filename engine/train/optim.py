"""The optimiser and the learning-rate schedule of a run.

AdamW runs as torch's fused kernel where torch has one for the device and the parameters (CUDA, CPU, MPS; plain
tensors), else as its multi-tensor ``foreach`` form (FSDP's sharded DTensor parameters): both do the same update as
the per-parameter loop, without its temporaries. On a 262,144-token vocabulary the loop's temporaries cost a third
of a CPU step (BENCHMARKS.md). ``adamw-8bit`` is bitsandbytes' 8-bit AdamW (moments in 8 bits, blockwise scaled),
on CUDA only; the estimator counts its state at 2 bytes a parameter (``estimate.core.OPTIMIZER_STATE``).
"""
from __future__ import annotations

import torch

from ..errors import RunError

SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def adamw_kind(params: list[torch.Tensor], device: torch.device) -> str:
    """"fused" or "foreach": what torch's AdamW can run on these parameters."""
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in params):
        return "foreach"
    fused_devices = ("cuda", "cpu", "mps", "xpu")
    floats = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in params)
    return "fused" if device.type in fused_devices and floats else "foreach"


def check_optimizer(name: str, device: torch.device) -> None:
    if name == "adamw-8bit":
        if device.type != "cuda":
            raise RunError('training.optimizer: "adamw-8bit" (bitsandbytes) needs an NVIDIA GPU; this machine has '
                           'none. Use training.optimizer = "adamw" here')
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise RunError('training.optimizer: "adamw-8bit" needs bitsandbytes (pip install bitsandbytes)') from None


def make_optimizer(params: list[torch.Tensor], training, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over ``params`` with the plan's learning rate and weight decay."""
    kw = dict(lr=training.learning_rate, weight_decay=training.weight_decay)
    if training.optimizer == "adamw-8bit":
        check_optimizer(training.optimizer, device)
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kw)
    kind = adamw_kind(params, device)
    return torch.optim.AdamW(params, **kw, **{kind: True})


def make_schedule(optimizer: torch.optim.Optimizer, training, total_steps: int):
    """Linear warm-up over ``training.warmup_steps``, then cosine or linear decay to 0 at ``total_steps``, or the
    learning rate held."""
    from transformers import get_scheduler

    return get_scheduler(SCHEDULES[training.lr_schedule], optimizer, num_warmup_steps=training.warmup_steps,
                         num_training_steps=total_steps)
