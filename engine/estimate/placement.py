"""How each model is placed on the GPUs of a run: the one decision the estimator and the engine share.

The estimator evaluates it for every configuration of a sweep (numpy arrays); the engine evaluates it for the one
configuration it runs (plain numbers) through :func:`distill_studio.engine.planner.resolve_run`, which reads the
estimator's result. Both go through :func:`teacher_replicated`, so they cannot disagree about where the teacher's
weights live, and so about its memory and the speed of its pass.

Sharding (``[hardware] sharding``):

* ``none``: every GPU holds both models whole; gradients are averaged over every GPU (DDP).
* ``within-node``: each model is sharded over the GPUs of a node and replicated across nodes (hybrid sharding,
  a 2-D device mesh of nodes x GPUs per node).
* ``all-gpus``: each model is sharded over every GPU of the run (full sharding, a 1-D mesh).
* ``auto``: the planner's choice, written into the run's plan when the run starts.

The teacher (``[teacher] placement``) is sharded like the student, or replicated on every GPU when it fits one GPU
beside the student: then it needs no collectives at all and the teacher pass is plain data parallel. ``auto``
replicates it where it fits if the sharding was also left to the planner; a plan that names its sharding shards
both models (that is what it asked for) unless it says ``placement = "replicated"``.
"""
from __future__ import annotations

import numpy as np

SHARDINGS = ("none", "within-node", "all-gpus")   # index = Grid.sharding
PLACEMENTS = ("auto", "sharded", "replicated")


def shard_degree(sharding, nodes, gpus_per_node):
    """GPUs that share one copy of a model: 1 (none), a node's GPUs (within-node), or every GPU (all-gpus).

    ``sharding`` is an index into :data:`SHARDINGS` (array or int)."""
    nodes, gpn = np.asarray(nodes, dtype=float), np.asarray(gpus_per_node, dtype=float)
    s = np.asarray(sharding)
    return np.select([s == 0, s == 1], [np.ones_like(nodes * gpn), gpn * np.ones_like(nodes)], nodes * gpn)


def sharding_kind(sharding: str, nodes: int, gpus_per_node: int) -> str:
    """What a run reports: "full", "hybrid" or "none", as it really runs (one GPU is never sharded; a node's
    sharding on one node is full sharding)."""
    degree = int(shard_degree(SHARDINGS.index(sharding), nodes, gpus_per_node))
    if degree <= 1:
        return "none"
    return "full" if degree == nodes * gpus_per_node else "hybrid"


def teacher_replicated(shard, placement, sharding_auto, full_teacher_fits):
    """Whether the teacher is replicated on every GPU (True) or sharded like the student (False).

    shard: the student's shard degree (array or number); placement: one of :data:`PLACEMENTS`; sharding_auto: the
    plan left the sharding to the planner; full_teacher_fits: the whole teacher fits one GPU beside the student
    (array or bool, from the estimator's memory model)."""
    shard = np.asarray(shard)
    if placement == "replicated":
        return np.ones(shard.shape, dtype=bool) if shard.shape else True
    single = shard <= 1
    if placement == "sharded":
        return single
    return single | (np.asarray(full_teacher_fits, dtype=bool) & bool(sharding_auto))
