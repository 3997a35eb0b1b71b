"""Distillation losses: per-token divergences, and the student head + loss computed in memory-bounded chunks.

Conventions (TRL's ``generalized_jsd_loss``, torchtune's KD losses):

* p is the teacher, q the student. Both are ``log_softmax(logits / T)`` computed in fp32 (fp64 inputs stay fp64, so
  tests can be exact) whatever the model dtype, and every divergence is multiplied by T**2 so that its gradient keeps
  the same scale across temperatures (Hinton et al. 2015).
* forward-kl = KL(p || q) (mode covering), reverse-kl = KL(q || p) (mode seeking), and jsd is the generalised
  Jensen-Shannon divergence of GKD (Agarwal et al. 2024): beta * KL(p || m) + (1 - beta) * KL(q || m) with
  m = beta * p + (1 - beta) * q. As in TRL, beta == 0 is exactly forward KL and beta == 1 exactly reverse KL. Note
  that this makes jsd discontinuous at both ends: jsd(beta) -> 0 as beta -> 0 (it behaves like beta * KL(p || q)), so
  beta = 1e-3 is not "almost forward KL" but about a thousandth of it.

A 262,144-token vocabulary makes the logits the largest tensors of a training step ([tokens, V] fp32 is 1 GiB per
1,024 tokens, and a KD loss keeps several of them for backward). :func:`distill_loss_sums` therefore takes hidden
states, not logits: it computes logits and losses one chunk of tokens at a time inside
``torch.utils.checkpoint``, so autograd keeps only each chunk's hidden states and recomputes that chunk's logits during
backward. The price is one extra student head matmul per chunk in backward, and the teacher's head matmul is redone
there too (its logits cannot be kept without keeping [tokens, V]). This module never imports Qt.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..estimate.core import loss_chunk_rows

IGNORE_INDEX = -100
LossKind = Literal["forward-kl", "reverse-kl", "jsd"]
_KINDS = ("forward-kl", "reverse-kl", "jsd")


def _check_args(loss: str, beta: float, temperature: float) -> None:
    if loss not in _KINDS:
        raise ValueError(f"loss must be one of {', '.join(_KINDS)}, not {loss!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], not {beta}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, not {temperature}")


def _check_ids(ids: Tensor, vocab: int, what: str) -> None:
    """Reject token ids outside [0, vocab): gather would fail later, deep inside backward's recomputation."""
    if ids.numel() == 0:
        return
    lo, hi = torch.aminmax(ids)
    if lo.item() < 0 or hi.item() >= vocab:
        raise ValueError(f"{what} must lie in [0, {vocab}) (the shared vocabulary); found ids in "
                         f"[{lo.item()}, {hi.item()}]")


def _upcast(x: Tensor) -> Tensor:
    # Softmax over 10^5 entries in bf16/fp16 loses the tail that KD is about; fp64 is kept so tests can be exact.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """[N, V] logits -> [N, V] log-probabilities at ``temperature``, in fp32 (or fp64)."""
    x = _upcast(logits)
    lp = torch.log_softmax(x / temperature if temperature != 1.0 else x, dim=-1)
    # A -inf logit (a masked-out vocabulary entry) gives log p = -inf, and then p * log p = 0 * inf = nan in the loss
    # and its gradient (torchtune masks these by hand). The lowest finite value makes those terms exactly 0 instead.
    return lp.clamp_min(torch.finfo(lp.dtype).min)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row: [N, V], [N, V] log-probabilities -> [N]."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _divergence(log_q: Tensor, log_p: Tensor, loss: str, beta: float) -> Tensor:
    """Student log-probs ``log_q`` [N, V] and teacher log-probs ``log_p`` [N, V] -> [N] divergence (no T**2)."""
    if loss == "forward-kl" or (loss == "jsd" and beta == 0.0):
        return _kl(log_p, log_q)
    if loss == "reverse-kl" or (loss == "jsd" and beta == 1.0):
        return _kl(log_q, log_p)
    # log m = log(beta * p + (1 - beta) * q), in log space: summing probabilities would underflow in the tail.
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def token_kd_loss(student_logits: Tensor, teacher_logits: Tensor, *, loss: LossKind, beta: float = 0.5,
                  temperature: float = 1.0) -> Tensor:
    """Per-token divergence between full-vocabulary distributions.

    student_logits [N, V], teacher_logits [N, V] (any float dtype) -> [N] fp32 (fp64 for fp64 inputs), times T**2.
    Nothing is detached: pass teacher logits that carry no graph.
    """
    _check_args(loss, beta, temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    div = _divergence(_log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature), loss, beta)
    return div * temperature**2


def _topk_divergence(student_logits: Tensor, student_log_probs: Tensor | None, topk_logprobs: Tensor,
                     topk_ids: Tensor, loss: str, beta: float, temperature: float) -> Tensor:
    """[N, V], optional [N, V] student log-probs at T, [N, k], [N, k] -> [N], times T**2."""
    log_p = _log_probs(topk_logprobs, temperature)  # the teacher renormalised over its k ids
    if loss == "forward-kl":
        # Against the student's full-vocabulary distribution: the teacher's dropped tail has p = 0 and adds nothing,
        # and student mass outside the k ids is still pushed down (the sum over k is >= 0 since sum q[ids] <= 1).
        if student_log_probs is None:
            student_log_probs = _log_probs(student_logits, temperature)
        log_q = student_log_probs.gather(-1, topk_ids)
    else:
        # reverse KL and jsd weight by q, so q must be a distribution on the same support as p: both over the k ids.
        log_q = _log_probs(student_logits.gather(-1, topk_ids), temperature)
    return _divergence(log_q, log_p, loss, beta) * temperature**2


def topk_kd_loss(student_logits: Tensor, teacher_topk_logprobs: Tensor, teacher_topk_ids: Tensor, *,
                 loss: LossKind, beta: float = 0.5, temperature: float = 1.0) -> Tensor:
    """Per-token divergence against a teacher known only by its top-k (as cached by an offline pass).

    student_logits [N, V]; teacher_topk_logprobs [N, k], the teacher's log-probs at T = 1 (any float dtype);
    teacher_topk_ids [N, k] int, distinct ids in [0, V). -> [N] fp32, times T**2.

    The teacher at temperature T is ``log_softmax(teacher_topk_logprobs / T)``, i.e. renormalised over its k ids.
    forward-kl compares it with the student's full-vocabulary log-probs at those ids; reverse-kl and jsd renormalise
    the student over the same k ids too. With k == V all three equal :func:`token_kd_loss`.
    """
    _check_args(loss, beta, temperature)
    if teacher_topk_logprobs.shape != teacher_topk_ids.shape or teacher_topk_ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"top-k shapes {tuple(teacher_topk_logprobs.shape)}, {tuple(teacher_topk_ids.shape)} do not "
                         f"match student logits {tuple(student_logits.shape)}")
    ids = teacher_topk_ids.long()
    _check_ids(ids, student_logits.shape[-1], "teacher top-k ids")
    return _topk_divergence(student_logits, None, teacher_topk_logprobs, ids, loss, beta, temperature)


@dataclass
class LossSums:
    """Sums, not means, so the loop can normalise by the number of tokens of the whole global batch."""

    kd_sum: Tensor    # scalar fp32: per-token KD loss summed over unmasked tokens (0 without a teacher signal)
    ce_sum: Tensor    # scalar fp32: per-token cross-entropy at T = 1 summed over unmasked tokens
    n_tokens: int     # unmasked tokens
    top1_agree: int   # tokens where argmax(student) == argmax(teacher); 0 without a teacher signal
    has_kd: bool = False  # whether kd_sum holds a KD term (a teacher signal was given and compute_kd was set)


def _head(hidden: Tensor, weight: Tensor, bias: Tensor | None, vocab: int, softcap: float | None) -> Tensor:
    """[n, H] -> [n, V] fp32 logits. The matmul runs in the hidden dtype, as the model's lm_head would."""
    logits = _upcast(F.linear(hidden, weight[:vocab], None if bias is None else bias[:vocab]))
    if softcap is not None:  # Gemma-style soft capping, applied to both models alike
        logits = softcap * torch.tanh(logits / softcap)
    return logits


def _chunk_sums(h, w, b, y, th, tw, tb, t_lp, t_ids, *, vocab, loss, beta, temperature, softcap, compute_kd):
    """One chunk of unmasked tokens: h [c, H], y [c], teacher rows [c, Ht] or [c, k] -> (kd, ce, agree) scalars."""
    s = _head(h, w, b, vocab, softcap)
    log_q1 = _log_probs(s, 1.0)
    ce = -log_q1.gather(-1, y[:, None]).sum()
    kd = ce.new_zeros(())
    agree = torch.zeros((), dtype=torch.long, device=h.device)
    if not compute_kd or (th is None and t_lp is None):
        return kd, ce, agree
    log_qt = log_q1 if temperature == 1.0 else _log_probs(s, temperature)
    with torch.no_grad():
        s_top1 = s.argmax(-1)
    if th is not None:
        with torch.no_grad():  # teacher hidden states arrive detached; its head's weights get no gradient either
            t = _head(th, tw, tb, vocab, softcap)
            t_top1 = t.argmax(-1)
            log_pt = _log_probs(t, temperature)
            del t  # one [c, V] tensor fewer alive while the divergence runs
        kd = _divergence(log_qt, log_pt, loss, beta).sum() * temperature**2
    else:
        kd = _topk_divergence(s, log_qt, t_lp, t_ids, loss, beta, temperature).sum()
        t_top1 = t_ids.gather(-1, t_lp.argmax(-1, keepdim=True)).squeeze(-1)
    return kd, ce, (s_top1 == t_top1).sum()


def _prepare(student_hidden, student_head_weight, labels, teacher_hidden, teacher_head_weight, teacher_topk,
             vocab_size, loss, beta, temperature):
    """Validate and flatten the inputs: -> (h_all [N, H], y_all [N], teacher rows or None, k-pairs or None, V)."""
    _check_args(loss, beta, temperature)
    if (teacher_hidden is None) != (teacher_head_weight is None):
        raise ValueError("online distillation needs both teacher_hidden and teacher_head_weight")
    if teacher_hidden is not None and teacher_topk is not None:
        raise ValueError("give either teacher hidden states (online) or teacher_topk (cached), not both")
    h_all = student_hidden.reshape(-1, student_hidden.shape[-1])
    y_all = labels.reshape(-1).long()  # gather and cross_entropy want int64
    if h_all.shape[0] != y_all.shape[0]:
        raise ValueError(f"student_hidden {tuple(student_hidden.shape)} and labels {tuple(labels.shape)} disagree")
    heads = [student_head_weight.shape[0]] + ([teacher_head_weight.shape[0]] if teacher_head_weight is not None else [])
    vocab = min(heads) if vocab_size is None else vocab_size
    if not 0 < vocab <= min(heads):
        raise ValueError(f"vocab_size {vocab} must lie in [1, {min(heads)}] (the smaller head's rows)")
    th_all = None if teacher_hidden is None else teacher_hidden.detach().reshape(y_all.shape[0], -1)
    topk = None
    if teacher_topk is not None:
        lp, ids = teacher_topk
        k = lp.shape[-1]
        if ids.shape != lp.shape or lp.numel() != y_all.shape[0] * k:
            raise ValueError(f"teacher_topk shapes {tuple(lp.shape)}, {tuple(ids.shape)} do not match labels "
                             f"{tuple(labels.shape)}")
        topk = (lp.detach().reshape(-1, k), ids.reshape(-1, k).long())
    return h_all, y_all, th_all, topk, vocab


def _trained_rows(rows, h_all, y_all, th_all, topk, vocab):
    """The rows ``rows`` (the trained tokens) of every per-token input, ids checked: -> (h, y, th, t_lp, t_ids)."""
    h, y = h_all.index_select(0, rows), y_all.index_select(0, rows)
    _check_ids(y, vocab, "labels")
    th = None if th_all is None else th_all.index_select(0, rows)
    t_lp = t_ids = None
    if topk is not None:
        t_lp, t_ids = topk[0].index_select(0, rows), topk[1].index_select(0, rows)
        _check_ids(t_ids, vocab, "teacher top-k ids")
    return h, y, th, t_lp, t_ids


def distill_loss_sums(student_hidden: Tensor, student_head_weight: Tensor, labels: Tensor, *,
                      teacher_hidden: Tensor | None = None, teacher_head_weight: Tensor | None = None,
                      teacher_topk: tuple[Tensor, Tensor] | None = None, vocab_size: int | None = None,
                      loss: LossKind = "forward-kl", beta: float = 0.5, temperature: float = 1.0,
                      compute_kd: bool = True, chunk_size: int = 1024, logit_softcap: float | None = None,
                      student_head_bias: Tensor | None = None, teacher_head_bias: Tensor | None = None) -> LossSums:
    """KD and CE sums from hidden states, never holding more than one chunk's [chunk_size, V] logits.

    student_hidden [..., H] aligned so that position i predicts labels[i] (the caller shifts); labels [...] int64
    with IGNORE_INDEX on prompt and padding; student_head_weight [Vs, H]. Teacher signal: teacher_hidden [..., Ht]
    with teacher_head_weight [Vt, Ht] (online), or teacher_topk = (log-probs [..., k], ids [..., k]) (cached), or
    neither (CE only). vocab_size (default: the smaller head's rows) slices padded heads to the shared vocabulary.
    Masked tokens cost nothing and count nowhere; with none unmasked the sums are exact zeros that still reach the
    student's hidden states, head weight and bias in backward (see :func:`combine`).
    """
    h_all, y_all, th_all, topk, vocab = _prepare(student_hidden, student_head_weight, labels, teacher_hidden,
                                                 teacher_head_weight, teacher_topk, vocab_size, loss, beta, temperature)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
    # Select the unmasked rows first: prompt and padding then cost no logits at all. index_select's backward needs
    # only the indices, so autograd keeps nothing of size [N, V] here either.
    rows = (y_all != IGNORE_INDEX).nonzero().squeeze(1)
    n = rows.numel()
    h, y, th, t_lp, t_ids = _trained_rows(rows, h_all, y_all, th_all, topk, vocab)
    has_kd = compute_kd and (th is not None or t_lp is not None)
    fn = functools.partial(_chunk_sums, vocab=vocab, loss=loss, beta=beta, temperature=temperature,
                           softcap=logit_softcap, compute_kd=has_kd)
    # Start from an empty matmul: exactly 0, but with a graph to hidden, weight and bias, so an all-masked
    # micro-batch still gives every student parameter a (zero) gradient.
    kd_sum = ce_sum = _head(h[:0], student_head_weight, student_head_bias, vocab, None).sum()
    agree = torch.zeros((), dtype=torch.long, device=h.device)
    for i in range(0, n, chunk_size):
        c = slice(i, i + chunk_size)
        args = (h[c], student_head_weight, student_head_bias, y[c], None if th is None else th[c],
                teacher_head_weight, teacher_head_bias, None if t_lp is None else t_lp[c],
                None if t_ids is None else t_ids[c])
        if torch.is_grad_enabled() and n > chunk_size:
            # One chunk only: recomputing it in backward would not lower the peak (backward holds the same [n, V]
            # tensors either way, beside the same activations), only cost a second head matmul for each model.
            # Non-reentrant checkpoint: the chunk's logits and softmaxes are dropped after forward and recomputed
            # in backward one chunk at a time. No randomness inside, so the RNG state need not be saved.
            kd_c, ce_c, agree_c = checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)
        else:
            kd_c, ce_c, agree_c = fn(*args)
        kd_sum, ce_sum, agree = kd_sum + kd_c, ce_sum + ce_c, agree + agree_c
    return LossSums(kd_sum=kd_sum, ce_sum=ce_sum, n_tokens=n, top1_agree=int(agree.item()), has_kd=has_kd)


def distill_loss_sums_reference(student_hidden: Tensor, student_head_weight: Tensor, labels: Tensor, *,
                                teacher_hidden: Tensor | None = None, teacher_head_weight: Tensor | None = None,
                                teacher_topk: tuple[Tensor, Tensor] | None = None, vocab_size: int | None = None,
                                loss: LossKind = "forward-kl", beta: float = 0.5, temperature: float = 1.0,
                                compute_kd: bool = True, chunk_size: int = 1024, logit_softcap: float | None = None,
                                student_head_bias: Tensor | None = None,
                                teacher_head_bias: Tensor | None = None) -> LossSums:
    """:func:`distill_loss_sums` written plainly: full [N, V] logits for every row, masked after; no checkpoint.

    For tests and the memory benchmark; ``chunk_size`` is accepted and ignored. Masked rows must hold finite values.
    """
    h_all, y_all, th_all, topk, vocab = _prepare(student_hidden, student_head_weight, labels, teacher_hidden,
                                                 teacher_head_weight, teacher_topk, vocab_size, loss, beta, temperature)
    mask = y_all != IGNORE_INDEX
    _check_ids(y_all[mask], vocab, "labels")
    s = _head(h_all, student_head_weight, student_head_bias, vocab, logit_softcap)
    ce_sum = F.cross_entropy(s, y_all, ignore_index=IGNORE_INDEX, reduction="sum")
    kd_sum, agree, has_kd = s.new_zeros(()), 0, compute_kd and (th_all is not None or topk is not None)
    if has_kd and th_all is not None:
        with torch.no_grad():
            t = _head(th_all, teacher_head_weight, teacher_head_bias, vocab, logit_softcap)
        per = token_kd_loss(s, t, loss=loss, beta=beta, temperature=temperature)
        t_top1 = t.argmax(-1)
    elif has_kd:
        lp, ids = topk
        _check_ids(ids[mask], vocab, "teacher top-k ids")
        ids = torch.where(mask[:, None], ids, 0)  # masked rows may hold any ids; keep gather in range
        per = topk_kd_loss(s, lp, ids, loss=loss, beta=beta, temperature=temperature)
        t_top1 = ids.gather(-1, lp.argmax(-1, keepdim=True)).squeeze(-1)
    if has_kd:
        kd_sum = per[mask].sum()
        agree = int(((s.argmax(-1) == t_top1) & mask).sum().item())
    return LossSums(kd_sum=kd_sum, ce_sum=ce_sum, n_tokens=int(mask.sum().item()), top1_agree=agree, has_kd=has_kd)


def combine(sums: LossSums, kd_weight: float, n_tokens_global: int) -> tuple[Tensor, Tensor, Tensor]:
    """-> (loss, kd_mean, ce_mean), scalars; the two means are detached, for logging.

    loss = (kd_weight * kd_sum + (1 - kd_weight) * ce_sum) / n_tokens_global, or ce_sum / n without a KD term.
    n_tokens_global is the unmasked token count of the whole global batch (all ranks, all accumulation steps), so
    that every token weighs the same however tokens fall across micro-batches. When it is 0 (every token masked),
    the loss is the sums themselves: exact zeros that still have a graph to the student's parameters, so each DDP
    rank runs the same backward and the gradient all-reduce does not hang waiting for a rank that skipped it.
    """
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight must lie in [0, 1], not {kd_weight}")
    if n_tokens_global < sums.n_tokens:
        raise ValueError(f"n_tokens_global ({n_tokens_global}) is below this micro-batch's {sums.n_tokens} tokens")
    denom = max(n_tokens_global, 1)
    w = kd_weight if sums.has_kd else 0.0
    loss = (w * sums.kd_sum + (1.0 - w) * sums.ce_sum) / denom
    return loss, (sums.kd_sum / denom).detach(), (sums.ce_sum / denom).detach()


# ---- the fused head + loss: gradients in closed form, in forward ----------------------------------------------
# On a CPU, rows of a chunk are also bounded by bytes: each [rows, V] fp32 temporary stays under 24 MiB, below
# glibc's largest mmap threshold (32 MiB, which the engine sets: ``train.run.tune_cpu_allocator``), so the chunk's
# temporaries are reused from the heap instead of being mapped, page-faulted in and unmapped chunk after chunk. At a
# 262,144-token vocabulary that is 24 rows a chunk; measured side by side at that vocabulary, 24 MiB chunks ran at
# 1.4x the tokens/s of 128 MiB ones, at a lower peak (BENCHMARKS.md). A GPU's caching allocator reuses its blocks,
# and there larger chunks read the head fewer times: ``chunk_size`` alone bounds them. The estimator counts the
# same rows (one constant, in ``estimate.core``).


@dataclass
class FusedLoss:
    """What :func:`fused_distill_loss` gives: the loss to call backward on, and detached sums for logging."""

    loss: Tensor               # scalar: (kd_weight * kd_sum + (1 - kd_weight) * ce_sum) * scale, with a gradient
    kd_sum: Tensor             # scalar fp32, detached (0 without a KD term)
    ce_sum: Tensor | None      # scalar fp32, detached; None when it was not needed and not asked for
    n_tokens: int
    top1_agree: int | None     # None unless asked for
    has_kd: bool


def _kd_rows_and_grad(log_q: Tensor, log_p: Tensor, loss: str, beta: float) -> tuple[Tensor, Tensor]:
    """Per-row divergence [n] and its gradient with respect to the student's tempered logits u (log_q =
    log_softmax(u)), [n, V], in closed form:

    forward KL(p || q): q - p.   reverse KL(q || p): q * (log q - log p - KL).
    jsd(beta): (1 - beta) * q * (log q - log m - KL(q || m)), m = beta p + (1 - beta) q (d jsd / d q = (1 - beta)
    log(q / m); the softmax Jacobian gives the rest). beta 0 and 1 are exactly forward and reverse KL, as above.
    """
    q = log_q.exp()
    if loss == "forward-kl" or (loss == "jsd" and beta == 0.0):
        p = log_p.exp()
        rows = (p * (log_p - log_q)).sum(-1)
        return rows, q.sub_(p)
    if loss == "reverse-kl" or (loss == "jsd" and beta == 1.0):
        diff = log_q - log_p
        rows = (q * diff).sum(-1)
        return rows, diff.sub_(rows[:, None]).mul_(q)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    p = log_p.exp()
    kl_pm = (p * (log_p - log_m)).sum(-1)
    diff = log_q - log_m
    kl_qm = (q * diff).sum(-1)
    rows = beta * kl_pm + (1.0 - beta) * kl_qm
    return rows, diff.sub_(kl_qm[:, None]).mul_(q).mul_(1.0 - beta)


def _fused_chunk(h, w, b, y, th, tw, tb, t_lp, t_ids, *, vocab, loss, beta, temperature, softcap, kd_weight, scale,
                 has_kd, need_ce, need_top1, need_grad):
    """One chunk: -> (kd_sum, ce_sum or None, top1 or None, g [c, V] = d(loss) / d(student logits) or None)."""
    s = _head(h, w, b, vocab, None)  # fp32 (fp64 stays)
    z = s if softcap is None else softcap * torch.tanh(s / softcap)
    kd = z.new_zeros(())
    ce = None
    top1 = None
    g = None
    w_ce = 1.0 - kd_weight if has_kd else 1.0
    if has_kd:
        log_qt = _log_probs(z, temperature)
        with torch.no_grad():
            if th is not None:
                t = _head(th, tw, tb, vocab, softcap)
                if need_top1:
                    t_top1 = t.argmax(-1)
                log_p = _log_probs(t, temperature)
                del t
                rows, g_u = _kd_rows_and_grad(log_qt, log_p, loss, beta)
                del log_p
            else:
                log_p = _log_probs(t_lp, temperature)  # the teacher renormalised over its k ids
                if need_top1:
                    t_top1 = t_ids.gather(-1, t_lp.argmax(-1, keepdim=True)).squeeze(-1)
                if loss == "forward-kl":
                    # against the full student distribution: d/du = q * sum(p) - scatter(p) = q - scatter(p)
                    rows = (log_p.exp() * (log_p - log_qt.gather(-1, t_ids))).sum(-1)
                    g_u = log_qt.exp().scatter_add_(-1, t_ids, -log_p.exp())
                else:  # reverse KL and jsd: both renormalised over the k ids, the gradient lives on them
                    log_qk = _log_probs(z.gather(-1, t_ids), temperature)
                    rows, g_k = _kd_rows_and_grad(log_qk, log_p, loss, beta)
                    g_u = torch.zeros_like(z).scatter_(-1, t_ids, g_k)
            kd = rows.sum() * temperature**2
            if temperature == 1.0 and (need_ce or w_ce > 0.0) and not (need_grad and w_ce > 0.0):
                ce = -log_qt.gather(-1, y[:, None]).sum()  # log q at T = 1 is already there: CE is a gather
            del log_qt
            if need_grad:
                # d(T^2 * div(u)) / dz with u = z / T: T * g_u
                g = g_u.mul_(kd_weight * temperature * scale)
            else:
                del g_u
    with torch.no_grad():
        if need_top1:
            top1 = (z.argmax(-1) == t_top1).sum()
        if ce is None and (need_ce or w_ce > 0.0):
            lse = torch.logsumexp(z if z.dtype in (torch.float32, torch.float64) else z.float(), -1)
            ce = (lse - z.gather(-1, y[:, None]).squeeze(1)).sum()
            if need_grad and w_ce > 0.0:
                # d ce / dz = softmax(z) - onehot(y)
                sm = (z - lse[:, None]).exp_().mul_(w_ce * scale)
                sm.scatter_add_(-1, y[:, None], sm.new_full((y.shape[0], 1), -w_ce * scale))
                g = sm if g is None else g.add_(sm)
                del sm
        if need_grad and g is None:
            g = torch.zeros_like(z)
        if need_grad and softcap is not None:
            g.mul_(1.0 - (z / softcap).square())  # d z / d s for z = cap * tanh(s / cap)
    return kd, ce, top1, g


class _FusedHeadLoss(torch.autograd.Function):
    """The loss of every chunk, with d(loss)/d(hidden, head weight, bias) worked out in forward; backward only
    scales them by the incoming gradient (1 for ``loss.backward()``)."""

    @staticmethod
    def forward(ctx, h, w, b, run):
        loss, grads = run()
        ctx.grads = grads
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        gh, gw, gb = ctx.grads
        ctx.grads = None
        out = []
        for g in (gh, gw, gb):
            out.append(None if g is None else g.mul_(grad_out.to(g.dtype)))
        return out[0], out[1], out[2], None


def fused_distill_loss(student_hidden: Tensor, student_head_weight: Tensor, labels: Tensor, *,
                       teacher_hidden: Tensor | None = None, teacher_head_weight: Tensor | None = None,
                       teacher_topk: tuple[Tensor, Tensor] | None = None, vocab_size: int | None = None,
                       loss: LossKind = "forward-kl", beta: float = 0.5, temperature: float = 1.0,
                       kd_weight: float = 1.0, scale: float = 1.0, compute_kd: bool = True, need_ce: bool = True,
                       need_top1: bool = False, chunk_size: int = 1024, logit_softcap: float | None = None,
                       student_head_bias: Tensor | None = None, teacher_head_bias: Tensor | None = None) -> FusedLoss:
    """The same loss as ``combine(distill_loss_sums(...), kd_weight, n)`` times ``scale * n``, and the same
    gradient, computed chunk by chunk in one pass: each chunk's gradient with respect to its logits has a closed form
    (see :func:`_kd_rows_and_grad`), which is folded into the gradients of the hidden states, the head weight and
    the bias at once (as Liger-Kernel's fused linear JSD does). Nothing is recomputed in backward and no [chunk, V]
    tensor outlives its chunk. Pass ``scale = 1 / n_tokens_global`` (times the process count under DDP/FSDP, which
    average) to get the loop's loss.

    ``need_ce``: the CE sum for logging even where the loss does not need it (``kd_weight == 1``); ``need_top1``:
    top-1 agreement (held-out metrics). Arguments as :func:`distill_loss_sums`.
    """
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight must lie in [0, 1], not {kd_weight}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
    h_all, y_all, th_all, topk, vocab = _prepare(student_hidden, student_head_weight, labels, teacher_hidden,
                                                 teacher_head_weight, teacher_topk, vocab_size, loss, beta, temperature)
    rows = (y_all != IGNORE_INDEX).nonzero().squeeze(1)
    n = rows.numel()
    w, b = student_head_weight, student_head_bias
    need_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (student_hidden, w, b))
    has_kd = compute_kd and (th_all is not None or topk is not None)
    width = 8 if h_all.dtype == torch.float64 else 4
    chunk = loss_chunk_rows(chunk_size, vocab, width, cpu=h_all.device.type == "cpu")
    kw = dict(vocab=vocab, loss=loss, beta=beta, temperature=temperature, softcap=logit_softcap,
              kd_weight=kd_weight, scale=scale, has_kd=has_kd, need_ce=need_ce, need_top1=need_top1 and has_kd,
              need_grad=need_grad)
    sums = {"kd": None, "ce": None, "top1": None}

    def run():
        with torch.no_grad():
            h, y, th, t_lp, t_ids = _trained_rows(rows, h_all.detach(), y_all, th_all, topk, vocab)
            acc = torch.float64 if h.dtype == torch.float64 else torch.float32
            kd_sum = torch.zeros((), dtype=acc, device=h.device)
            ce_sum = torch.zeros((), dtype=acc, device=h.device) if kw["need_ce"] or kd_weight < 1 or not has_kd \
                else None
            top1 = torch.zeros((), dtype=torch.long, device=h.device) if kw["need_top1"] else None
            gh = gw = gb = gh_rows = None
            if need_grad:
                gh_rows = torch.empty_like(h) if student_hidden.requires_grad else None
                gw = torch.zeros_like(w) if w.requires_grad else None
                gb = torch.zeros_like(b) if b is not None and b.requires_grad else None
            # the gradient matmuls in the compute dtype: autocast's (bf16 on a GPU; these in-place and out= calls
            # escape autocast) or the head's; the weight's gradient accumulates in its own dtype
            dt = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else w.dtype
            w_dt = w[:vocab].to(dt) if gh_rows is not None else None
            for i in range(0, n, chunk):
                c = slice(i, i + chunk)
                kd_c, ce_c, top1_c, g = _fused_chunk(
                    h[c], w, b, y[c], None if th is None else th[c], teacher_head_weight, teacher_head_bias,
                    None if t_lp is None else t_lp[c], None if t_ids is None else t_ids[c], **kw)
                kd_sum += kd_c
                if ce_sum is not None and ce_c is not None:
                    ce_sum += ce_c
                if top1 is not None:
                    top1 += top1_c
                if g is not None:
                    if gb is not None:
                        gb[:vocab] += g.sum(0).to(gb.dtype)
                    g = g.to(dt)
                    if gh_rows is not None:
                        if gh_rows.dtype == dt:
                            torch.matmul(g, w_dt, out=gh_rows[c])
                        else:
                            gh_rows[c] = g @ w_dt
                    if gw is not None:
                        if gw.dtype == dt:
                            gw[:vocab].addmm_(g.t(), h[c].to(dt))
                        else:
                            gw[:vocab] += g.t() @ h[c].to(dt)
                    del g
            if need_grad and gh_rows is not None:
                gh = torch.zeros_like(h_all).index_copy_(0, rows, gh_rows).reshape(student_hidden.shape)
            w_ce = 1.0 - kd_weight if has_kd else 1.0
            value = kd_weight * kd_sum if has_kd else kd_sum.new_zeros(())
            if w_ce > 0.0:
                value = value + w_ce * ce_sum
            sums.update(kd=kd_sum, ce=ce_sum, top1=top1)
            return (value * scale).to(acc), (gh, gw, gb)

    if need_grad:
        value = _FusedHeadLoss.apply(student_hidden, w, b, run)
    else:
        value, _ = run()
    return FusedLoss(loss=value, kd_sum=sums["kd"], ce_sum=sums["ce"], n_tokens=n,
                     top1_agree=None if sums["top1"] is None else int(sums["top1"].item()), has_kd=has_kd)
