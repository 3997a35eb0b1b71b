"""Activation recomputation of the student's decoder layers: off, full or selective (``training.recompute``).

* ``full``: each decoder layer keeps only its input; backward re-runs the layer's whole forward (matmuls included).
* ``selective``: each decoder layer is checkpointed with a policy (torch's selective checkpoint contexts) that
  keeps the outputs of its matmuls and of scaled-dot-product attention and recomputes everything else (norms,
  activation functions, products, rotary embeddings, casts): backward re-runs only the cheap elementwise work, and
  the layer keeps its matmul outputs instead of every intermediate.

Both go through transformers' ``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` before 5.25;
non-reentrant ``torch.utils.checkpoint``), which wraps each decoder layer's ``__call__``; FSDP2 (``parallel.shard``)
shards the same layers afterwards, so a layer's all-gather runs inside the checkpointed call and again for its
recomputation, as with full recomputation.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

MODES = ("off", "full", "selective")


def _saved_ops() -> frozenset:
    """The ops whose outputs selective recomputation keeps: matmuls and fused attention (the ones that exist)."""
    aten = torch.ops.aten
    names = [("mm", "default"), ("addmm", "default"), ("bmm", "default"), ("baddbmm", "default"),
             ("linear", "default"), ("_scaled_dot_product_flash_attention", "default"),
             ("_scaled_dot_product_efficient_attention", "default"),
             ("_scaled_dot_product_cudnn_attention", "default"),
             ("_scaled_dot_product_flash_attention_for_cpu", "default")]
    ops = set()
    for name, overload in names:
        packet = getattr(aten, name, None)
        if packet is not None and hasattr(packet, overload):
            ops.add(getattr(packet, overload))
    return frozenset(ops)


SAVED_OPS = _saved_ops()


def selective_policy(ctx, func, *args, **kwargs) -> CheckpointPolicy:
    """Keep matmul and attention outputs, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if func in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_kwargs(mode: str) -> dict | None:
    """Keyword arguments of ``torch.utils.checkpoint.checkpoint`` for ``mode`` (None: no recomputation)."""
    if mode not in MODES:
        raise ValueError(f"training.recompute must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return None
    kwargs: dict = {"use_reentrant": False}
    if mode == "selective":
        # a fresh pair of contexts per checkpointed call, as torch.utils.checkpoint asks of context_fn
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, selective_policy)
    return kwargs


def enable(model, mode: str) -> None:
    """Checkpoint ``model``'s decoder layers (a transformers model) as ``mode`` says; nothing for "off"."""
    kwargs = checkpoint_kwargs(mode)
    if kwargs is None:
        return
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25 (the older name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
