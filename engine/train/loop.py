"""The training loop on accelerate: gradient accumulation, clipping, cosine schedule, evaluation, checkpoints.

One ``step`` is one optimiser update over a global batch. The loss of a step is the sum over its trained tokens
divided by the number of trained tokens in the whole global batch, so one process with 4 micro-batches and two
processes with 2 each compute the same gradient (DDP averages over processes, hence the factor ``world``).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .data import BatchOrder, Example, collate, has_prompt, prompt_ids
from .losses import fused_distill_loss
from .teacher import TopkCache, generate_greedy, teacher_head, teacher_hidden


class DistillModule(nn.Module):
    """What accelerate wraps (DDP / FSDP): the student's forward and the chunked loss, in one ``forward``.

    The loss needs the head's weight and the final hidden states, not the full logits; computing it inside
    ``forward`` keeps it under the wrapper's hooks (gradient sync, parameter gathering).
    """

    def __init__(self, model: nn.Module, base: nn.Module, *, vocab_size: int, loss: str, beta: float,
                 temperature: float, chunk_tokens: int, softcap: float | None) -> None:
        super().__init__()
        self.model = model  # registered, so that wrappers see the trainable parameters (LoRA or full)
        self._base = [base]  # not a submodule twice
        self.kw = dict(vocab_size=vocab_size, loss=loss, beta=beta, temperature=temperature,
                       chunk_size=chunk_tokens, logit_softcap=softcap)

    def forward(self, input_ids, attention_mask, labels, teacher_hidden=None, teacher_head=None,
                topk_logprobs=None, topk_ids=None, compute_kd: bool = True, kd_weight: float = 1.0,
                scale: float = 1.0, need_ce: bool = True, need_top1: bool = False):
        """-> (loss to call backward on, kd_sum, ce_sum (nan when not computed), tokens, top-1 agreements)."""
        base = self._base[0]
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                    use_cache=False).last_hidden_state
        topk = (topk_logprobs, topk_ids) if topk_logprobs is not None else None
        out = fused_distill_loss(hidden, base.get_output_embeddings().weight, labels, teacher_hidden=teacher_hidden,
                                 teacher_head_weight=teacher_head, teacher_topk=topk, compute_kd=compute_kd,
                                 kd_weight=kd_weight, scale=scale, need_ce=need_ce, need_top1=need_top1,
                                 student_head_bias=getattr(base.get_output_embeddings(), "bias", None), **self.kw)
        ce = out.ce_sum if out.ce_sum is not None else torch.tensor(float("nan"))
        # a tuple of tensors: what DDP knows how to walk
        return (out.loss, out.kd_sum, ce, torch.tensor(float(out.n_tokens)),
                torch.tensor(float(out.top1_agree or 0)))


@dataclass
class TeacherSignal:
    mode: str  # online | offline-topk | none
    teacher: nn.Module | None = None
    cache: TopkCache | None = None
    eval_cache: TopkCache | None = None
    train: bool = True  # False: the teacher only serves evaluation (kind "ce")

    def inputs(self, batch: dict[str, torch.Tensor], indices: list[int], device, *, eval: bool = False) -> dict:
        if self.mode == "online":
            hidden = teacher_hidden(self.teacher, batch["input_ids"], batch["attention_mask"])
            return {"teacher_hidden": hidden, "teacher_head": teacher_head(self.teacher)}
        if self.mode == "offline-topk":
            cache = self.eval_cache if eval else self.cache
            if cache is None:
                return {}
            logprobs, ids = cache.batch(indices, batch["labels"].cpu())
            return {"topk_logprobs": logprobs.to(device), "topk_ids": ids.to(device)}
        return {}


@dataclass
class LoopConfig:
    total_steps: int
    micro_batch: int
    kd_weight: float
    max_grad_norm: float
    eval_every: int
    checkpoint_every: int
    pad_id: int
    max_new_tokens: int
    eval_samples: int
    log_every: int = 1


@dataclass
class LoopState:
    step: int = 0
    tokens_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def answer_of(text: str) -> str:
    """The final answer: the text after the last ``####`` (GSM8K's convention), stripped."""
    return text.rsplit("####", 1)[-1].strip() if "####" in text else ""


def task_score(model, tokenizer, rows: list[dict], device, max_new_tokens: int, batch_size: int = 50,
               collective=None, chat=None) -> float | None:
    """Share of held-out prompts whose greedy answer equals the row's ``answer``; None without answers. A row is a
    ``prompt`` or a conversation (asked up to its last assistant turn through ``chat``, the model's template).

    With ``collective`` (a sharded model) every rank answers its share of the prompts in lockstep (each decoding
    step of a sharded model is a collective) and the counts are summed."""
    rows = [r for r in rows if "answer" in r and has_prompt(r)]
    if not rows:
        return None
    mine = rows[collective.rank :: collective.world] if collective is not None else rows
    n_batches = math.ceil(len(mine) / batch_size)
    if collective is not None:
        n_batches = collective.max(n_batches)
    right = 0
    for b in range(n_batches):
        part = mine[b * batch_size : (b + 1) * batch_size]
        prompts = [prompt_ids(r, tokenizer, chat) for r in part or rows[:1]]  # a filler keeps the ranks in step
        outs = generate_greedy(model, tokenizer, prompts, device, max_new_tokens, synced=collective is not None,
                               chat=chat)
        right += sum(answer_of(o) == str(r["answer"]).strip() for o, r in zip(outs, part))
    if collective is not None:
        right = collective.sum(right)
    return right / len(rows)


class Loop:
    """Runs steps ``state.step .. total_steps``; the caller owns set-up, events and saving."""

    def __init__(self, accelerator, module, optimizer, scheduler, order: BatchOrder, examples: list[Example],
                 signal: TeacherSignal, cfg: LoopConfig, *, on_metric: Callable[[dict], None],
                 on_eval: Callable[[int], None], on_checkpoint: Callable[[int], None],
                 should_stop: Callable[[], bool], par) -> None:
        self.acc = accelerator
        self.par = par  # parallel.Replicated or parallel.Sharded
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.order = order
        self.examples = examples
        self.signal = signal
        self.cfg = cfg
        self.on_metric, self.on_eval, self.on_checkpoint = on_metric, on_eval, on_checkpoint
        self.should_stop = should_stop
        # the parameters the optimiser updates, whose gradients are clipped: the optimiser's own, never what the
        # module lists at this moment. Sharded, a module whose root unit (embeddings, final norm, head) is still
        # gathered from a forward (the evaluation before the first step) lists the gathered copies, whose gradients
        # are moved to the shards in the backward: the clipping would miss the root unit, and a run resumed (no
        # evaluation first) would clip differently from one that was not.
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]

    def _global_tokens(self, step: int) -> int:
        return sum(self.examples[i].trained_tokens for i in self.order.global_batch_indices(step))

    def run(self, state: LoopState) -> str:
        """Returns "succeeded" or "cancelled" (a stop request is honoured between steps)."""
        acc, cfg = self.acc, self.cfg
        world, rank = acc.num_processes, acc.process_index
        self.module.train()
        first = state.step
        while state.step < cfg.total_steps:
            if self._stop_requested():
                return "cancelled"
            t0 = time.perf_counter()
            n_global = self._global_tokens(state.step)
            micro = self.order.micro_batches(state.step, rank, world, cfg.micro_batch)
            kd_sum = ce_sum = 0.0
            local_tokens = 0
            # metrics the loss does not need are worked out on logging steps only
            logging = (state.step + 1) % cfg.log_every == 0 or state.step + 1 in (cfg.total_steps, first + 1)
            has_kd = bool(self.signal.mode != "none" and self.signal.train and cfg.kd_weight > 0)
            # DDP and FSDP average gradients over processes; the loss is over the whole global batch
            scale = world / max(n_global, 1)
            for j, indices in enumerate(micro):
                batch = {k: v.to(acc.device) for k, v in collate([self.examples[i] for i in indices], cfg.pad_id).items()}
                local_tokens += int(batch["attention_mask"].sum())
                teacher = self.signal.inputs(batch, indices, acc.device) if self.signal.train else {}
                sync = self.par.sync(self.module, last=j == len(micro) - 1)
                with sync, acc.autocast():
                    loss, kd, ce, _, _ = self.module(**batch, **teacher, compute_kd=cfg.kd_weight > 0,
                                                     kd_weight=cfg.kd_weight if teacher else 0.0, scale=scale,
                                                     need_ce=logging or not has_kd)
                    self.par.backward(loss)
                kd_sum += float(kd)
                ce_sum += float(ce)
            grad_norm = self.par.clip(self.params, cfg.max_grad_norm)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            totals = acc.reduce(torch.tensor([kd_sum, ce_sum, float(local_tokens)], device=acc.device), "sum")
            state.tokens_seen += int(totals[2])
            kd_mean, ce_mean = float(totals[0]) / n_global, float(totals[1]) / n_global
            ce_known = not math.isnan(ce_mean)
            loss_value = (cfg.kd_weight * kd_mean + (1 - cfg.kd_weight) * ce_mean if cfg.kd_weight < 1 else kd_mean) \
                if has_kd else ce_mean
            seconds = time.perf_counter() - t0
            if logging:
                self.on_metric({"step": state.step, "tokens_seen": state.tokens_seen, "loss": loss_value,
                                "kd_loss": kd_mean if has_kd else None, "ce_loss": ce_mean if ce_known else None,
                                "lr": lr, "grad_norm": float(grad_norm),
                                "tokens_per_second": float(totals[2]) / seconds, "step_seconds": seconds})
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"the loss became {loss_value} at step {state.step}; lower "
                                         "training.learning_rate or raise training.warmup_steps")
            last = state.step == cfg.total_steps
            if cfg.eval_every and state.step % cfg.eval_every == 0 and not last:
                self.on_eval(state.step)
                self.module.train()
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and not last:
                self.on_checkpoint(state.step)
        return "succeeded"

    def _stop_requested(self) -> bool:
        # every process must agree, or one would wait forever in a collective the others left
        flag = torch.tensor([1.0 if self.should_stop() else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(flag, "sum").item() > 0) if self.acc.num_processes > 1 else bool(flag.item())


@torch.no_grad()
def heldout_metrics(acc, module, examples: list[Example], signal: TeacherSignal, pad_id: int,
                    micro_batch: int) -> dict[str, float | None]:
    """Held-out KL to the teacher (forward, T = 1), perplexity and top-1 agreement, over every process's share.
    Every process runs the same number of forwards (a sharded model needs all of them in each all-gather): one
    whose share ran out runs a filler batch and adds nothing."""
    module.eval()
    world, rank = acc.num_processes, acc.process_index
    mine = list(range(rank, len(examples), world))
    totals = torch.zeros(4, device=acc.device)
    n_batches = math.ceil(math.ceil(len(examples) / world) / micro_batch)
    for b in range(n_batches):
        indices = mine[b * micro_batch : (b + 1) * micro_batch]
        filler = not indices
        indices = indices or [0]
        batch = {k: v.to(acc.device) for k, v in collate([examples[j] for j in indices], pad_id).items()}
        teacher = signal.inputs(batch, indices, acc.device, eval=True)
        with acc.autocast():
            _, kd, ce, n, top1 = module(**batch, **teacher, compute_kd=bool(teacher), need_top1=bool(teacher))
        if not filler:
            totals += torch.stack([kd.float(), ce.float(), n.to(acc.device), top1.to(acc.device)])
    totals = acc.reduce(totals, "sum") if world > 1 else totals
    kd, ce, n, top1 = (float(x) for x in totals)
    has_teacher = signal.mode != "none" and (signal.mode != "offline-topk" or signal.eval_cache is not None)
    if n == 0:
        return {"kl": None, "perplexity": None, "top1_agreement": None}
    return {"kl": kd / n if has_teacher else None, "perplexity": math.exp(min(ce / n, 50.0)),
            "top1_agreement": top1 / n if has_teacher else None}
