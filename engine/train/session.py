"""A run's set-up and training, between ``run.execute`` (process, events, exit codes) and ``loop.Loop`` (steps).

Set-up checks everything it can before loading a model: data files, weights, context length, tokenizers, what
this machine can run. Each refusal is a ``DistillError`` naming the plan's field or the file.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import sys
import time
from typing import Any

import torch

from ..errors import DataError, RunError
from ..estimate.watched import CpuMeter
from ..plan import Plan
from ..runs.eta import Eta, clock
from . import models as M
from . import parallel as P
from .checkpoint import checkpoint_dir, is_complete, last_write_seconds, latest_checkpoint, resume_checkpoint, \
    save_checkpoint
from ..chat import shape_of
from ..records import describe
from .data import BatchOrder, chat_format, conversation_ids, encode, has_prompt, read_records
from .optim import check_optimizer, make_optimizer, make_schedule
from .loop import DistillModule, Loop, LoopConfig, LoopState, TeacherSignal, heldout_metrics, task_score
from .teacher import TopkCache, generate_responses, merge_generated

log = logging.getLogger("distill_studio.run")

HANDOFF = "teacher-stage.json"   # in a teacher stage's run folder once its pass is complete
GRACE_ENV = "DISTILL_STOP_GRACE_S"
AZURE_GRACE_S = 30.0   # what a stop on Azure ML is assumed to leave before SIGKILL (docs/engine.md)


def stop_grace_seconds(mount: bool) -> float | None:
    """Seconds between a stop signal and the SIGKILL that follows it: ``DISTILL_STOP_GRACE_S``, else 30 on Azure ML
    (a run folder on a mount, or ``AZUREML_*`` variables), else None (a local stop waits for the checkpoint)."""
    raw = os.environ.get(GRACE_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value <= 86400:
            raise RunError(f"{GRACE_ENV}: {raw!r} is not a number of seconds; allowed: more than 0, up to 86400")
        return value
    if mount or any(k.startswith("AZUREML_") for k in os.environ):
        return AZURE_GRACE_S
    return None


def read_handoff(teacher_run, mode: str) -> dict:
    """What a finished teacher stage left for the student stage; a clear error when it is missing or another
    mode's."""
    import json
    from pathlib import Path

    if teacher_run is None:
        raise RunError("--teacher-run: the student stage trains on a teacher stage's output; give its run folder "
                       "(`distill run PLAN --stage teacher` makes one)")
    path = Path(teacher_run) / HANDOFF
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"--teacher-run: {teacher_run} holds no finished teacher stage ({HANDOFF} is missing); run "
                       f"or resume it first: `distill run --resume {teacher_run}`") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"--teacher-run: {path} cannot be read ({exc})") from None
    if not doc.get("complete") or doc.get("mode") != mode:
        raise RunError(f"--teacher-run: {teacher_run} holds a teacher stage of mode {doc.get('mode')!r}, not "
                       f"{mode!r}; run the teacher stage of this plan")
    return doc


class Session:
    def __init__(self, plan: Plan, paths, accelerator, events, stop, resolved=None, stage: str = "all",
                 teacher_run=None, checkpoint_local=None) -> None:
        self.plan, self.paths, self.accelerator, self.events, self.stop = plan, paths, accelerator, events, stop
        # the run folder is a mount (an Azure ML output): checkpoints are written here on the node, then copied
        self.checkpoint_local = checkpoint_local
        self._checkpoint_seconds: float | None = None  # how long the last checkpoint took to write (and copy)
        self.resolved = resolved  # planner.ResolvedRun: placement and the estimate (None: one process, no planner)
        # "teacher": the teacher's pass alone, its cache left in this run folder for a "student" run, which trains
        # on the cache of ``teacher_run`` without loading the teacher (a split-hardware plan's two stages)
        self.stage, self.teacher_run = stage, teacher_run
        self.handoff: dict | None = None
        self._eta = Eta()         # the progress line's ETA, computed as the app's monitor computes it
        self.state = LoopState()
        self.started = False  # set once training begins: failures after it keep the checkpoint and say so
        self._last_print = 0.0

    # ---- helpers -------------------------------------------------------------------------------------------
    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def emit(self, type: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.emit(type, **fields)

    def info(self, message: str) -> None:
        if self.main:
            log.info(message)
            self.emit("log", level="info", message=message)

    def warn(self, message: str) -> None:
        if self.main:
            log.warning(message)
            self.emit("log", level="warning", message=message)

    def _progress(self, what: str):
        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if self.main and (now - self._last_print > 2 or done == total):
                self._last_print = now
                print(f"{what}: {done}/{total}", file=sys.stderr, flush=True)
        return report

    # ---- set-up --------------------------------------------------------------------------------------------
    def setup(self, resume: bool) -> None:
        plan, acc = self.plan, self.accelerator
        device = acc.device
        base = self.paths.plan_base
        if self.resolved is not None:
            self.info(f"as planned: {self.resolved.why}")
            for note in self.resolved.notes:
                self.info(note)
        if plan.data.train is None:
            raise DataError("data.train: a run needs a data file; `data.tokens` only sizes a plan")
        M.check_runnable(plan, device)
        check_optimizer(plan.training.optimizer, device)
        mode = self._teacher_mode()
        self.mode = mode
        if self.stage != "all" and mode not in ("offline-topk", "generate"):
            raise RunError(f"--stage {self.stage}: the plan's teacher has no pass of its own (teacher mode {mode}); "
                           'use method.teacher_mode = "offline-topk" or method.kind = "seq-kd"')
        if self.stage == "student":
            self.handoff = read_handoff(self.teacher_run, mode)
        fmt = plan.data.format
        records = read_records(plan.data.train, "data.train", base, fmt, seq_len=plan.data.seq_len)
        self.info(f"data.train: {describe(records)}" + (" (data.format auto)" if fmt == "auto" else ""))
        eval_records = (read_records(plan.data.eval, "data.eval", base, fmt, seq_len=plan.data.seq_len)
                        if plan.data.eval else [])
        prompts = []
        if mode == "generate":
            rows = (read_records(plan.data.prompts, "data.prompts", base, fmt, seq_len=plan.data.seq_len)
                    if plan.data.prompts else records)
            prompts = [r for r in rows if has_prompt(r)]
            if not prompts:
                raise DataError("data.prompts: no record has a `prompt` or a user turn for the teacher to answer")

        t_src = M.model_source(plan.teacher.model, base)
        s_src = M.model_source(plan.student.model, base)
        if not M.has_weights(t_src):
            raise RunError(f"teacher.model: {t_src} has no weights (model.safetensors or pytorch_model.bin)")
        if plan.student.init == "pretrained" and not M.has_weights(s_src):
            raise RunError(f'student.model: {s_src} has no weights; give a pretrained model, or set '
                           'student.init = "from-teacher" to start from the teacher\'s layers')
        t_tok = M.load_tokenizer(t_src, "teacher.model")
        s_tok = M.load_tokenizer(s_src, "student.model")
        t_cfg, s_cfg = M.load_config(t_src, "teacher.model"), M.load_config(s_src, "student.model")
        for who, cfg in (("student", s_cfg), ("teacher", t_cfg)):
            ctx = M.context_length(cfg)
            if ctx is not None and plan.data.seq_len > ctx:
                raise DataError(f"data.seq_len: {plan.data.seq_len} is longer than the {who}'s context "
                                f"({ctx} tokens, max_position_embeddings); allowed: at most {ctx}")
        logit = plan.method.kind == "logit-kd"
        self.vocab = M.shared_vocab_size(t_tok, s_tok, t_cfg, s_cfg, plan.method.kind) if logit else None
        if not logit and s_tok.get_vocab() == t_tok.get_vocab():
            self.vocab = M.shared_vocab_size(t_tok, s_tok, t_cfg, s_cfg, "logit-kd")  # eval KL still possible
        self.tokenizer = s_tok
        self.teacher_tokenizer = t_tok
        self._chat_formats(t_tok, s_tok, records + eval_records + prompts, logit)
        self.eval_rows = [r for r in eval_records if "answer" in r and has_prompt(r)][: plan.training.eval_samples]
        enc = dict(chat=self.chat, reasoning=plan.data.reasoning)
        train_enc = encode(records, s_tok, plan.data.seq_len, "data.train", **enc) if mode != "generate" else None
        trainable = [r for r in eval_records if shape_of(r) != "prompt"
                     and ("messages" not in r or any(m["role"] == "assistant" for m in r["messages"]))]
        self.eval_examples = encode(trainable, s_tok, plan.data.seq_len, "data.eval", **enc).examples \
            if trainable else []

        # global batch and steps
        seqs = plan.data.global_batch_tokens // plan.data.seq_len
        self.micro = plan.training.micro_batch_size or 1  # resolved by the planner before the run (run.py)
        per_step = self.micro * acc.num_processes
        if seqs % per_step:
            raise RunError(f"data.global_batch_tokens: {plan.data.global_batch_tokens} tokens = {seqs} sequences of "
                           f"{plan.data.seq_len}, not a multiple of training.micro_batch_size "
                           f"({self.micro}) x {acc.num_processes} processes; allowed: a multiple "
                           f"of {per_step * plan.data.seq_len} tokens")
        self.global_seqs = seqs

        # placement: the planner's (run.py resolved it); one process is never sharded
        r = self.resolved
        self.sharding = r.sharding if r is not None and acc.num_processes > 1 else "none"
        self.teacher_sharded = self.sharding != "none" and plan.teacher.placement == "sharded" and mode != "none"
        mesh = P.mesh_for(self.sharding, r.nodes, r.gpus_per_node, device) if self.sharding != "none" else None
        if self.teacher_sharded and plan.teacher.precision != "bf16":
            raise RunError(f'teacher.placement: a {plan.teacher.precision} teacher (bitsandbytes) cannot be sharded; '
                           'use teacher.placement = "replicated" or teacher.precision = "bf16"')

        # models: the teacher first (the student may start from its layers); the student stage of a split run
        # trains on the teacher stage's cache and loads the teacher only to take its layers
        self.teacher_id = t_src
        teacher = None
        if self.stage != "student" or plan.student.init == "from-teacher":
            self.info(f"loading the teacher from {t_src}")
            teacher = M.load_teacher(plan, t_src, device, place=not self.teacher_sharded)
        student = None
        if self.stage != "teacher":
            self.info(f"{'initialising the student from the teacher' if plan.student.init == 'from-teacher' else 'loading the student'} ({s_src})")
            student = M.load_student(plan, s_src, device, teacher=teacher)
            if student.layer_map is not None:
                self.info(f"student layers from teacher layers {student.layer_map}")
            self.softcap = M.logit_softcap(student.base)
        self.student = student
        self.teacher_score = None
        if self.stage == "student":
            teacher = None
            gc.collect()
        else:
            teacher = P.TeacherHidden(teacher)
            if self.teacher_sharded:
                P.shard(teacher, teacher.lm, mesh, device)
        self.par = P.Sharded(acc, mesh, student.base) if self.sharding != "none" else P.Replicated(acc)

        coll = P.Collective(acc)
        self.parameter_bytes = {"teacher": coll.gather(P.local_parameter_bytes(teacher))
                                if mode != "none" and teacher is not None else []}
        t_pass = time.monotonic()
        signal = TeacherSignal(mode="none")
        if mode == "none" and self.vocab is not None and self.eval_examples:
            signal = TeacherSignal(mode="online", teacher=teacher, train=False)  # held-out KL and agreement only
        elif mode == "online":
            signal = TeacherSignal(mode="online", teacher=teacher)
        elif mode == "offline-topk":
            signal = self._prepass(teacher, train_enc.examples) if self.stage != "student" else \
                self._cached_pass(train_enc.examples)
        elif mode == "generate":
            train_enc = self._generate(teacher, prompts, records) if self.stage != "student" else \
                self._mix_generated(self.teacher_run / "generated" / "teacher.jsonl", records)
        self.teacher_pass_seconds = time.monotonic() - t_pass if mode in ("offline-topk", "generate") else 0.0
        self.signal = signal
        self._teacher_for_score = teacher
        # the teacher's held-out score, once per run, before the student is on the GPU (the estimator's teacher
        # pass holds the teacher alone); a resumed run has it in its checkpoint
        if self.stage == "student":
            self.teacher_score = self.handoff.get("teacher_task_score")
        elif not (resume and latest_checkpoint(self.paths.run_dir) is not None):
            self.teacher_score = self._score(teacher)
        if self.stage == "teacher":     # the pass is done: hand it over, no student here
            self.examples = train_enc.examples
            self._teacher_for_score = None
            return
        if signal.teacher is None:  # training does not need it: its memory is free before the student arrives
            self._teacher_for_score = teacher = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.examples = train_enc.examples
        if train_enc.truncated:
            self.info(f"{train_enc.truncated} training examples were cut at data.seq_len = {plan.data.seq_len}")
        if train_enc.dropped:
            self.info(f"{train_enc.dropped} training examples had nothing to train on (no answer, or none left "
                      "within data.seq_len) and were left out")
        if len(self.examples) < self.global_seqs:
            self.info(f"the data has {len(self.examples)} examples, fewer than one global batch ({self.global_seqs}); "
                      "batches repeat examples")
        steps_per_epoch = math.ceil(len(self.examples) / self.global_seqs)
        self.total_steps = plan.training.max_steps or max(1, math.ceil(plan.data.epochs * steps_per_epoch))
        self.order = BatchOrder(len(self.examples), self.global_seqs, plan.training.seed)

        # optimiser, schedule, wrappers
        module = DistillModule(student.model, student.base, vocab_size=self.vocab or s_cfg.get_text_config().vocab_size,
                               loss=plan.method.loss, beta=plan.method.beta, temperature=plan.method.temperature,
                               chunk_tokens=plan.training.loss_chunk_tokens, softcap=self.softcap)
        self.n_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        self.student_config = s_cfg  # sharded, the student is saved from its gathered weights into a new shell

        def optimizer_for(mod):
            return make_optimizer([p for p in mod.parameters() if p.requires_grad], plan.training, device)

        if self.par.sharded:  # the optimiser is made after sharding: it must hold the sharded parameters
            self.module, self.optimizer = self.par.prepare(module, lambda: optimizer_for(module))
            raw_optimizer = self.optimizer
        else:
            raw_optimizer = optimizer_for(module)
            self.module, self.optimizer = self.par.prepare(module, raw_optimizer)
        self.parameter_bytes["student"] = P.Collective(acc).gather(P.local_parameter_bytes(self.module))
        scheduler = make_schedule(raw_optimizer, plan.training, self.total_steps)
        # Not prepared: accelerate's scheduler wrapper steps once per process (it assumes each process sees its
        # own batches), which would make the schedule run N times too fast. Our step is one global batch.
        self.scheduler = scheduler
        if not self.par.sharded:
            self.accelerator.register_for_checkpointing(scheduler)

        self.resumed_from = None
        if resume:
            ckpt, state = resume_checkpoint(self.par, self.paths.run_dir, self.module, self.optimizer,
                                            self.scheduler, self.accelerator.num_processes,
                                            collective=P.Collective(acc), mount=self.checkpoint_local is not None,
                                            say=self.warn)
            if ckpt is not None:
                self.state = LoopState(step=state["step"], tokens_seen=state["tokens_seen"])
                self.teacher_score = state.get("teacher_task_score")
                self.info(f"resumed from {ckpt.name}")
            self.resumed_from = self.state.step

    def _chat_formats(self, t_tok, s_tok, records: list[dict], logit: bool) -> None:
        """The chat templates a run uses: the student's for training (the teacher's when the student's tokenizer
        has none), the teacher's for its generation prompts. Logit KD compares the two models token by token, so
        both must render a conversation to the same ids."""
        teacher = chat_format(t_tok, "teacher.model")
        student = chat_format(s_tok, "student.model")
        self.chat = student or teacher
        self.teacher_chat = teacher or student
        conversations = [r for r in records if "messages" in r]
        if not conversations:
            return
        if self.chat is None:
            raise DataError("data: the records are conversations (`messages`) but neither the teacher's nor the "
                            "student's tokenizer has a chat template; add `chat_template` to tokenizer_config.json, "
                            "or give `prompt` + `response` records")
        if student is None:
            self.info("the student's tokenizer has no chat template: conversations are rendered with the teacher's")
        if logit and teacher is not None and student is not None:
            sample = next((r for r in conversations if any(m["role"] == "assistant" for m in r["messages"])), None)
            if sample is not None:
                reasoning = self.plan.data.reasoning
                a = conversation_ids(teacher, sample["messages"], t_tok, reasoning)
                b = conversation_ids(student, sample["messages"], s_tok, reasoning)
                if a != b:
                    at = next((i for i, (x, y) in enumerate(zip(a[0], b[0])) if x != y), min(len(a[0]), len(b[0])))
                    raise DataError("method.kind: logit KD compares the teacher and the student token by token, but "
                                    "their chat templates render the first conversation differently (first "
                                    f"difference at token {at}: teacher {t_tok.decode(a[0][at:at + 3])!r}, student "
                                    f"{s_tok.decode(b[0][at:at + 3])!r}); give the student the teacher's "
                                    "chat_template, or use method.kind = \"seq-kd\"")

    def finish_teacher_stage(self) -> None:
        """Write ``teacher-stage.json``: the pass is complete and what a student stage needs from it."""
        self.accelerator.wait_for_everyone()
        if not self.main:
            return
        doc = {"v": 1, "mode": self.mode, "teacher": str(self.teacher_id), "teacher_task_score": self.teacher_score,
               "plan": self.plan.name, "teacher_pass_seconds": round(self.teacher_pass_seconds, 3),
               "examples": len(self.examples), "complete": True}
        from ..files import write_json_atomic

        write_json_atomic(self.paths.run_dir / HANDOFF, doc)
        self.info(f"teacher stage finished: its {'top-k cache' if self.mode == 'offline-topk' else 'answers'} are in "
                  f"{self.paths.run_dir}; train the student with `distill run PLAN --stage student --teacher-run "
                  f"{self.paths.run_dir}`")

    def _teacher_mode(self) -> str:
        method = self.plan.method
        if method.kind == "ce":
            return "none"
        if method.kind == "seq-kd":
            return "generate"
        # "auto" was resolved by the planner before the run started (run.py); "online" where it was not
        return "online" if method.teacher_mode in ("auto", "online") else "offline-topk"

    def _prepass(self, teacher, examples) -> TeacherSignal:
        """The offline top-k pass, split over every process (each writes its own shards; rank 0 the manifest)."""
        plan, acc = self.plan, self.accelerator
        cache = TopkCache(self.paths.run_dir / "teacher-topk" / "train")
        eval_cache = TopkCache(self.paths.run_dir / "teacher-topk" / "eval") if self.eval_examples else None
        kw = dict(top_k=min(plan.method.top_k, self.vocab), vocab_size=self.vocab, teacher_id=self.teacher_id)
        coll = P.Collective(acc)
        for c, ex, what in ((cache, examples, "train"), (eval_cache, self.eval_examples, "eval")):
            if c is None or c.is_complete_for(ex, **kw):
                continue
            self.info(f"teacher pre-pass ({what}): caching the top {kw['top_k']} log-probs of {len(ex)} examples"
                      + (f" on {coll.world} processes" if coll.world > 1 else ""))
            done = c.build(teacher, ex, device=acc.device, pad_id=self.tokenizer.pad_token_id,
                           batch_size=self.micro, softcap=M.logit_softcap(teacher.lm),
                           progress=self._progress(f"teacher pre-pass ({what})"), should_stop=self.stop,
                           collective=coll, lockstep=self.teacher_sharded, **kw)
            if coll.any(not done):
                raise KeyboardInterrupt
        acc.wait_for_everyone()
        return TeacherSignal(mode="offline-topk", cache=cache, eval_cache=eval_cache)

    def _cached_pass(self, examples) -> TeacherSignal:
        """The teacher stage's top-k cache (``--teacher-run``), checked against this run's examples."""
        kw = dict(top_k=min(self.plan.method.top_k, self.vocab), vocab_size=self.vocab)
        caches = {}
        for what, ex in (("train", examples), ("eval", self.eval_examples)):
            if what == "eval" and not ex:
                caches[what] = None
                continue
            cache = TopkCache(self.teacher_run / "teacher-topk" / what)
            teacher_id = cache.teacher() or self.teacher_id
            if not cache.is_complete_for(ex, teacher_id=teacher_id, **kw):
                raise RunError(f"--teacher-run: the teacher's top-k cache in {cache.folder} is not this run's "
                               f"({what} data, method.top_k, data.seq_len or the tokenizers differ, or the pass did "
                               "not finish); run the teacher stage again with this plan")
            caches[what] = cache
        self.info(f"training on the teacher stage's top-{kw['top_k']} cache in {self.teacher_run}")
        return TeacherSignal(mode="offline-topk", cache=caches["train"], eval_cache=caches["eval"])

    def _generate(self, teacher, prompts, records):
        """Sequence-level KD data: each process answers every world-th prompt into its own file; the files are
        merged in the prompts' order."""
        plan, acc = self.plan, self.accelerator
        coll = P.Collective(acc)
        folder = self.paths.run_dir / "generated"
        out = folder / "teacher.jsonl"
        part = folder / f"teacher.rank-{coll.rank:03d}-of-{coll.world:03d}.jsonl"
        self.info(f"the teacher writes responses to {len(prompts)} prompts"
                  + (f" on {coll.world} processes" if coll.world > 1 else ""))
        with P.gathered(teacher, reshard=False):
            done = generate_responses(teacher, self.teacher_tokenizer, prompts[coll.rank :: coll.world], part,
                                      device=acc.device, max_new_tokens=plan.training.max_new_tokens,
                                      progress=self._progress("teacher generation"), should_stop=self.stop,
                                      collective=coll, lockstep=self.teacher_sharded, filler=prompts[0],
                                      chat=self.teacher_chat)
        if coll.any(not done):
            raise KeyboardInterrupt
        acc.wait_for_everyone()
        if self.main:
            merge_generated([folder / f"teacher.rank-{r:03d}-of-{coll.world:03d}.jsonl" for r in range(coll.world)],
                            out)
        acc.wait_for_everyone()
        return self._mix_generated(out, records)

    def _mix_generated(self, out, records):
        """The teacher's answers, mixed with the original examples at method.generated_share."""
        plan = self.plan
        generated = read_records(out, "generated data")
        share = plan.method.generated_share
        originals = [r for r in records if shape_of(r) in ("prompt-response", "text")
                     or ("messages" in r and r["messages"][-1]["role"] == "assistant")]
        n_orig = min(len(originals), round(len(generated) * (1 - share) / share))
        mixed = generated + originals[:n_orig]
        self.info(f"training on {len(generated)} generated and {n_orig} original examples")
        return encode(mixed, self.tokenizer, plan.data.seq_len, "generated data", chat=self.chat,
                      reasoning=plan.data.reasoning)

    def _score(self, teacher) -> float | None:
        """The teacher's held-out task score: on the main process, or on every process when it is sharded."""
        if teacher is None or not self.eval_rows:
            return None
        if self.teacher_sharded:
            with P.gathered(teacher, reshard=False):
                return task_score(teacher.lm, self.teacher_tokenizer, self.eval_rows, self.accelerator.device,
                                  self.plan.training.max_new_tokens, collective=P.Collective(self.accelerator),
                                  chat=self.teacher_chat)
        if not self.main:
            return None
        return task_score(teacher.lm, self.teacher_tokenizer, self.eval_rows, self.accelerator.device,
                          self.plan.training.max_new_tokens, chat=self.teacher_chat)

    # ---- training ------------------------------------------------------------------------------------------
    def train(self) -> str:
        plan = self.plan
        if self.stage == "teacher":
            self.emit("run_started", plan=plan.model_dump(mode="json", exclude_none=True), total_steps=0,
                      total_tokens=0, examples=len(self.examples), processes=self.accelerator.num_processes,
                      device=str(self.accelerator.device), teacher_mode=self.mode, stage="teacher",
                      **self._placement_fields())
            self.started = True
            self._t_start = self._t_trained = time.monotonic()
            self._tokens_trained, self._first_step = 0, self.state.step
            self.finish_teacher_stage()
            return "succeeded"
        cfg = LoopConfig(total_steps=self.total_steps, micro_batch=self.micro,
                         kd_weight=plan.method.kd_weight if self.mode != "generate" else 0.0,
                         max_grad_norm=plan.training.max_grad_norm, eval_every=plan.training.eval_every,
                         checkpoint_every=plan.training.checkpoint_every, pad_id=self.tokenizer.pad_token_id,
                         max_new_tokens=plan.training.max_new_tokens, eval_samples=plan.training.eval_samples,
                         log_every=plan.training.log_every)
        if self.signal.teacher is None:
            self._teacher_for_score = None  # the teacher is not needed any more: free its memory
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        total_tokens = self.order.tokens([len(e.input_ids) for e in self.examples], self.total_steps)
        self.total_tokens = total_tokens
        self.emit("run_started", plan=plan.model_dump(mode="json", exclude_none=True), total_steps=self.total_steps,
                  total_tokens=total_tokens,
                  examples=len(self.examples), global_batch=self.global_seqs, processes=self.accelerator.num_processes,
                  device=str(self.accelerator.device), trainable_parameters=self.n_trainable,
                  teacher_mode=self.mode, **self._placement_fields(),
                  **({"stage": "student", "teacher_run": str(self.teacher_run)} if self.stage == "student" else {}),
                  **({"resumed_from_step": self.resumed_from} if self.resumed_from is not None else {}))
        self.started = True
        self._t_start = time.monotonic()
        self.meter = CpuMeter()   # CPU time and the machine's load over training (estimate/watched.py)
        self._tokens_trained, self._tokens_before = 0, self.state.tokens_seen
        self._first_step = self.state.step
        if self.state.step == 0 and plan.training.eval_at_start:
            self.evaluate(0)
        if self.state.step >= self.total_steps:
            self.info("the run had already finished its steps; saving the student again")
            self._save_student()
            return "succeeded"
        loop = Loop(self.accelerator, self.module, self.optimizer, self.scheduler, self.order, self.examples,
                    self.signal, cfg, on_metric=self._on_metric, on_eval=self.evaluate, on_checkpoint=self.checkpoint,
                    should_stop=self.stop, par=self.par)
        status = loop.run(self.state)
        self._t_trained = time.monotonic()
        self.meter.stop()
        if self._final_checkpoint_wanted(status):
            self.checkpoint(self.state.step)
        if status == "cancelled":
            return status
        self.evaluate(self.state.step)
        self._save_student()
        return status

    def _placement_fields(self) -> dict:
        """What ``run_started`` says about where the models live, and the planner's estimate for this run."""
        r = self.resolved
        teacher = "none"
        if self.mode in ("online", "offline-topk", "generate") or self.signal.teacher is not None:
            teacher = "sharded" if self.teacher_sharded else "replicated"
        fields = {"world_size": self.accelerator.num_processes, "nodes": r.nodes if r is not None else 1,
                  "sharding": self.sharding, "teacher_placement": teacher}
        if r is not None:
            fields["estimate"] = r.estimate
        return fields

    def measure(self) -> dict:
        """What this run measured, for ``run_finished`` beside ``run_started``'s estimate. Every process calls it."""
        coll = P.Collective(self.accelerator)
        peaks = coll.gather(P.peak_memory_bytes(self.accelerator.device))
        steps = self.state.step - self._first_step
        seconds = getattr(self, "_t_trained", time.monotonic()) - self._t_start
        return {"peak_memory_bytes_per_rank": peaks, "parameter_bytes_per_rank": self.parameter_bytes,
                "teacher_pass_seconds": round(self.teacher_pass_seconds, 3),
                "training_seconds": round(seconds, 3), "steps": steps,
                "tokens_per_second_per_device": (self._tokens_trained / seconds / coll.world) if seconds > 0 else None,
                "memory_kind": "allocated" if self.accelerator.device.type == "cuda" else "resident"}

    def _on_metric(self, metric: dict) -> None:
        self._tokens_trained += metric.get("tokens_seen", 0) - self._tokens_before
        self._tokens_before = metric.get("tokens_seen", 0)
        if not self.main:
            return
        self.emit("metric", **{k: v for k, v in metric.items() if v is not None})
        now = time.monotonic()
        if self._eta.total_steps != self.total_steps:
            t = self.plan.training
            self._eta = Eta(self.total_steps, t.eval_every, t.checkpoint_every)
        self._eta.add(metric["step"], time.time(), metric.get("step_seconds") or 0.0)
        if now - self._last_print > 2 or metric["step"] in (1, self.total_steps):
            self._last_print = now
            left = self._eta.remaining()
            eta = (f"ETA {clock(left[0])} ({clock(left[1])}–{clock(left[2])})" if left and left[2] > left[1]
                   else f"ETA {clock(left[0])}" if left else "")
            kd = f" kd {metric['kd_loss']:.4f}" if metric.get("kd_loss") is not None else ""
            ce = f" ce {metric['ce_loss']:.4f}" if metric.get("ce_loss") is not None else ""
            print(f"step {metric['step']}/{self.total_steps} loss {metric['loss']:.4f}{kd}{ce} "
                  f"lr {metric['lr']:.2e} {metric['tokens_per_second']:,.0f} tok/s {eta}",
                  file=sys.stderr, flush=True)

    def evaluate(self, step: int) -> None:
        if not self.eval_examples and not self.eval_rows:
            return
        metrics = heldout_metrics(self.accelerator, self.module, self.eval_examples, self.signal,
                                  self.tokenizer.pad_token_id, self.micro) \
            if self.eval_examples else {}
        score = None
        if self.eval_rows and self.par.sharded:  # every process answers its share, the student gathered
            with P.gathered(self.module):
                score = task_score(self.module.model, self.tokenizer, self.eval_rows, self.accelerator.device,
                                   self.plan.training.max_new_tokens, collective=P.Collective(self.accelerator),
                                   chat=self.chat)
        elif self.main and self.eval_rows:
            model = self.par.unwrap(self.module).model
            score = task_score(model, self.tokenizer, self.eval_rows, self.accelerator.device,
                               self.plan.training.max_new_tokens, chat=self.chat)
        self.accelerator.wait_for_everyone()
        if self.main:
            fields = {**metrics, "task_score": score, "teacher_task_score": self.teacher_score}
            self.emit("eval", step=step, **{k: v for k, v in fields.items() if v is not None})
            shown = ", ".join(f"{k} {v:.4f}" for k, v in fields.items() if v is not None)
            print(f"eval at step {step}: {shown}", file=sys.stderr, flush=True)

    def _final_checkpoint_wanted(self, status: str) -> bool:
        """Whether to checkpoint where the loop ended. Not when a complete checkpoint of this step is there (a
        stop right after a periodic one, or a resume stopped before its first step), nor when a stop's grace
        period cannot hold it: the last checkpoint measured takes longer than what is left before the SIGKILL.
        Then the last periodic checkpoint is what a resume uses, and the run says so. The main process decides."""
        coll = P.Collective(self.accelerator)
        run_dir, step = self.paths.run_dir, self.state.step
        if coll.any(self.main and is_complete(checkpoint_dir(run_dir, step))):
            return False
        skip = None
        if self.main and status == "cancelled":
            grace = stop_grace_seconds(self.checkpoint_local is not None)
            took = self._checkpoint_seconds if self._checkpoint_seconds is not None else last_write_seconds(run_dir)
            asked = getattr(self.stop, "at", None)
            if grace is not None and took is not None:
                left = grace - (time.monotonic() - asked if asked is not None else 0.0)
                if took > left:
                    last = latest_checkpoint(run_dir)
                    skip = (f"no checkpoint at the stop (step {step}): the last one took {took:.1f} s to write"
                            f"{' and copy' if self.checkpoint_local is not None else ''}, and {max(left, 0):.1f} s "
                            f"of the {grace:g} s grace period ({GRACE_ENV}) are left; "
                            + (f"a resume continues from {last.name}, the last periodic checkpoint" if last is not None
                               else "no checkpoint was written before: a resume starts again from the beginning"))
        if coll.any(skip is not None):
            if skip:
                self.warn(skip)
            return False
        return True

    def checkpoint(self, step: int) -> None:
        offset = self.events.offset() if self.events is not None else None
        path, seconds = save_checkpoint(self.accelerator, self.paths.run_dir, step,
                                        {"tokens_seen": self.state.tokens_seen, "events_offset": offset,
                                         "teacher_task_score": self.teacher_score, "total_steps": self.total_steps},
                                        keep=self.plan.training.keep_checkpoints, par=self.par, module=self.module,
                                        optimizer=self.optimizer, scheduler=self.scheduler,
                                        local=self.checkpoint_local, say=self.info)
        self._checkpoint_seconds = seconds
        if self.main:
            self.emit("checkpoint", step=step, path=str(path.relative_to(self.paths.run_dir)),
                      seconds=round(seconds, 3))

    def _save_student(self) -> None:
        self.accelerator.wait_for_everyone()
        full = self.par.full_state_dict(self.module) if self.par.sharded else None  # every process gathers
        if not self.main:
            return
        out = self.paths.run_dir / "student"
        # on a mount (an Azure ML output) the student is written on the node's disk and copied file by file:
        # a directory is never renamed there
        tmp = out.with_name(".tmp-student") if self.checkpoint_local is None else \
            self.checkpoint_local / f"student-{os.getpid()}"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:  # the gathered weights into a student without storage of its own
            model = M.empty_student(self.plan, self.student_config)
            model.load_state_dict({k.removeprefix("model."): v for k, v in full.items()}, strict=True, assign=True)
            model.tie_weights()  # assigned one by one, a tied head and embedding are two tensors until tied again
        else:
            model = self.par.unwrap(self.module).model
        adapter = self.plan.adapter
        if adapter.kind in ("lora", "qlora"):
            model.save_pretrained(tmp / "adapter")
            self.tokenizer.save_pretrained(tmp / "adapter")
            # a student made from the teacher's layers has no base model anywhere else: save it merged
            if adapter.merge or self.plan.student.init == "from-teacher":
                model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        if self.checkpoint_local is None:
            tmp.replace(out)
        else:
            from .checkpoint import copy_files

            copy_files(tmp, out)
            shutil.rmtree(tmp, ignore_errors=True)
        self.info(f"student saved to {out}")
