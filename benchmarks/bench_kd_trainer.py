"""Our distillation engine against TRL's GKD trainer: training throughput and peak memory on the same job.

    .venv/bin/python benchmarks/bench_kd_trainer.py            # 3 interleaved pairs of runs, 3 + 20 steps each
    .venv/bin/python benchmarks/bench_kd_trainer.py --quick    # smoke test, tiny sizes: ~35 s on a quiet machine
    .venv/bin/python benchmarks/bench_kd_trainer.py --case gemma   # Gemma 3's 262,144-token vocabulary, batch 2 x 256
    .venv/bin/python benchmarks/bench_kd_trainer.py --vocab 1024   # a small vocabulary

Needs TRL (``.venv/bin/pip install trl``). Nothing is downloaded: the models, the tokenizer and
the data are made here, in a temporary folder, from a fixed seed. Prints a table; writes it with the settings and
versions as markdown to ``--out`` (default /tmp/bench_kd_trainer.md).

What is compared
    ours: ``distill run PLAN --run-dir DIR`` (the CLI path, in-process in a child: ``distill_studio.engine.cli.main``),
          method logit-kd, loss jsd, kd_weight 1.0 (no CE term), teacher_mode online, adapter full.
    TRL:  ``trl.experimental.gkd.GKDTrainer`` with ``lmbda = 0`` (it generates on-policy when ``random() <= lmbda``,
          so never) and ``seq_kd = False``: supervised KD with TRL's ``generalized_jsd_loss`` on the dataset's
          completions, which is the loss our jsd implements (same beta; TRL's loss runs at temperature 1).
    Both: the same teacher (Qwen2, 4 layers) and student (Qwen2, 2 layers, "pretrained" = random weights saved with
          a fixed seed), a byte-level BPE tokenizer trained on synthetic words, and the same examples: each exactly
          ``seq_len`` tokens (a masked prompt of ``prompt_len`` tokens, completion, EOS), so no batch has padding and
          both trainers step on batches of identical shape and mask (the TRL child checks that TRL's collator gives
          the tokens and labels our encoding gives). fp32, full fine-tuning, torch AdamW, same learning rate, cosine
          schedule without warm-up, weight decay 0, clipping at norm 1.0, micro batch ``batch`` sequences, no
          gradient accumulation, no gradient checkpointing (TRL defaults to it: switched off), no evaluation, no
          checkpoint during the steps, one process, ``torch.set_num_threads(threads)`` in each child.
    threads defaults to 1: on a small machine shared with other work, two OpenMP threads per process stall each
    other whenever a core is taken (steps ran about 2x slower, both trainers at about the same rate), so one
    thread measures the trainers rather than the neighbours. ``--threads 2`` on a quiet machine.

How it is measured
    Each trainer runs ``warmup + steps`` optimiser steps in its own child process (fresh interpreter); the runs
    alternate ours, TRL, ours, TRL, ... (``repeats`` pairs) so that load from other work falls on both alike; the
    table shows medians over the repeats and the ratio ours / TRL.
    tokens/s: non-padding input tokens (attention-mask ones; ``batch * seq_len`` per step here, checked) of the
          timed steps, divided by the wall time from the end of step ``warmup`` to the end of the last step. Ours:
          ``time`` and ``tokens_seen`` of the ``metric`` events in events.jsonl. TRL: ``time.perf_counter()`` and
          ``state.num_input_tokens_seen`` (``include_num_input_tokens_seen = "non_padding"``) in a callback's
          ``on_step_end``. Both windows hold everything each trainer does between steps (data, logging).
    memory: resident set size (PyTorch keeps no statistics of CPU allocations). The kernel's peak is reset
          (``/proc/self/clear_refs`` = 5) when training starts (our ``Loop.run`` entered, through a wrapper that
          only takes the readings; TRL ``on_train_begin``) and read when it ends: "training adds" is the peak minus
          the RSS at the start. The process lifetime peak (``ru_maxrss``, and the peak before the reset) includes
          imports and loading; ours also saves a final checkpoint and the student after the steps, TRL saves nothing.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULT = "BENCH_RESULT "
# prompt + response (which starts with a space) + EOS; the prompt alone when add_generation_prompt
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                 "{% if not add_generation_prompt %}{{ eos_token }}{% endif %}")


@dataclass
class Settings:
    steps: int = 20  # timed steps
    warmup: int = 3  # steps run first, not timed
    repeats: int = 3  # interleaved pairs (ours, TRL)
    threads: int = 1  # see the module docstring
    batch: int = 8  # sequences per step (micro batch = global batch, no accumulation)
    seq_len: int = 256  # tokens per sequence, prompt + completion + EOS
    prompt_len: int = 64  # masked prompt tokens
    vocab: int = 8192
    hidden: int = 256
    intermediate: int = 1024
    heads: int = 4
    kv_heads: int = 2
    teacher_layers: int = 4
    student_layers: int = 2
    examples: int = 512
    learning_rate: float = 1e-4
    beta: float = 0.5
    temperature: float = 1.0
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


CASES = {"gemma": dict(vocab=262_144, batch=2, seq_len=256, prompt_len=64)}
TRAINED_VOCAB = 8192  # BPE merges learnt from the synthetic words; a larger vocabulary is padded (build_fixture)

QUICK = dict(steps=2, warmup=1, repeats=1, seq_len=64, prompt_len=16, examples=32, vocab=4096, hidden=128,
             intermediate=256, teacher_layers=2, student_layers=1)


# ---- fixture: tokenizer, models, data ---------------------------------------------------------------------------
def _words(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen: set[str] = set()
    while len(seen) < n:
        seen.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(seen)


def _fill(n_tokens: int, words: list[str], cum_weights: list[float], count: dict[str, int],
          rng: random.Random) -> list[str]:
    """Words whose tokens add up to exactly n_tokens (count[w]: tokens of w in the position it will have)."""
    out: list[str] = []
    while n_tokens > 0:
        w = rng.choices(words, cum_weights=cum_weights)[0]
        if count[w] <= n_tokens:
            out.append(w)
            n_tokens -= count[w]
    return out


def build_fixture(root: Path, s: Settings) -> dict[str, int]:
    """Teacher and student folders (random weights, fixed seed), a byte-level BPE tokenizer, train.jsonl, plan.toml.

    Returns the parameter count of each model."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # transformers loads the tokenizer of a qwen2 model folder as Qwen2Tokenizer whatever tokenizer_config.json
    # says: a byte-level BPE with Qwen's pre-tokenizer, rebuilt from tokenizer.json's vocabulary and merges. So the
    # tokenizer is one of that kind, trained here on the synthetic words (Zipf-like frequencies).
    rng = random.Random(s.seed)
    trained = min(s.vocab, TRAINED_VOCAB)
    words = _words(max(20_000, 2 * trained), rng)
    cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(words))))
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator((" ".join(rng.choices(words, cum_weights=cum, k=200)) for _ in range(2000)),
                            trainers.BpeTrainer(vocab_size=trained, special_tokens=["<pad>", "<s>", "</s>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    if s.vocab > trained:
        # Synthetic text cannot teach 262,144 merges, so the vocabulary is padded with entries no merge produces:
        # the heads, softmaxes and gradients are as wide as the real vocabulary's, the tokens of the text the same.
        spec = json.loads(tok.to_str())
        vocab = spec["model"]["vocab"]
        for i in range(len(vocab), s.vocab):
            vocab[f"\u0100\u0100{i}"] = i
        tok = Tokenizer.from_str(json.dumps(spec))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token=None,  # else Qwen2Tokenizer adds "<|endoftext|>" as its unk: one token more
                            model_max_length=s.seq_len).save_pretrained(root / "tokenizer")
    if tok.get_vocab_size() != s.vocab:
        raise RuntimeError(f"the BPE trainer made {tok.get_vocab_size()} tokens, not {s.vocab}")

    def config(layers: int) -> Qwen2Config:
        return Qwen2Config(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                           num_hidden_layers=layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                           max_position_embeddings=max(512, s.seq_len), tie_word_embeddings=False,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0)

    torch.manual_seed(s.seed)
    params = {}
    for name, layers in (("teacher", s.teacher_layers), ("student", s.student_layers)):
        model = Qwen2ForCausalLM(config(layers))
        params[name] = sum(p.numel() for p in model.parameters())
        model.save_pretrained(root / name)
        for f in (root / "tokenizer").iterdir():
            shutil.copy(f, root / name / f.name)

    # Every example: a prompt of exactly prompt_len tokens, a response of seq_len - prompt_len - 1 and EOS. The
    # response starts with a space, so that tokenising prompt and response apart (our engine) or joined (TRL's
    # chat-template collator) gives the same tokens: byte-level BPE never merges across " word" boundaries.
    loaded = AutoTokenizer.from_pretrained(root / "student")  # as both trainers load it
    first = dict(zip(words, map(len, loaded(words, add_special_tokens=False)["input_ids"])))
    later = dict(zip(words, map(len, loaded([" " + w for w in words], add_special_tokens=False)["input_ids"])))
    rows = []
    for _ in range(s.examples):
        w0 = rng.choices(words, cum_weights=cum)[0]
        while first[w0] >= s.prompt_len:
            w0 = rng.choices(words, cum_weights=cum)[0]
        prompt = " ".join([w0] + _fill(s.prompt_len - first[w0], words, cum, later, rng))
        response = " " + " ".join(_fill(s.seq_len - s.prompt_len - 1, words, cum, later, rng))
        rows.append({"prompt": prompt, "response": response})
    n_prompt = loaded([r["prompt"] for r in rows])["input_ids"]
    n_response = loaded([r["response"] for r in rows], add_special_tokens=False)["input_ids"]
    if any(len(p) != s.prompt_len or len(r) != s.seq_len - s.prompt_len - 1 for p, r in zip(n_prompt, n_response)):
        raise RuntimeError("an example does not have the intended number of tokens")
    with open(root / "train.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")

    (root / "plan.toml").write_text(f'''name = "bench-kd-trainer"
[teacher]
model = "{root / 'teacher'}"
[student]
model = "{root / 'student'}"
init = "pretrained"
[method]
kind = "logit-kd"
loss = "jsd"
beta = {s.beta}
temperature = {s.temperature}
kd_weight = 1.0
teacher_mode = "online"
[adapter]
kind = "full"
[data]
train = "train.jsonl"
seq_len = {s.seq_len}
global_batch_tokens = {s.batch * s.seq_len}
[hardware]
target = "local"
accelerator = "cpu"
[training]
learning_rate = {s.learning_rate}
warmup_steps = 0
weight_decay = 0.0
max_grad_norm = 1.0
max_steps = {s.total_steps}
micro_batch_size = {s.batch}
gradient_checkpointing = false
eval_every = 0
eval_samples = 0
checkpoint_every = 0
seed = {s.seed}
''')
    return params


# ---- memory helpers (Linux) -------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class TrainingMemory:
    """RSS when training starts, and the peak RSS from then on (the kernel's high-water mark, reset at start)."""

    def __init__(self) -> None:
        self.start_kib = self.peak_kib = 0
        self.peak_before_kib = 0

    def begin(self) -> None:
        self.peak_before_kib = _status_kib("VmHWM")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.start_kib = _status_kib("VmRSS")

    def end(self) -> None:
        self.peak_kib = _status_kib("VmHWM")

    def fields(self) -> dict:
        return {"train_start_mib": self.start_kib / 1024, "train_peak_mib": self.peak_kib / 1024}


def _lifetime_peak_mib(mem: TrainingMemory) -> float:
    # ru_maxrss follows the high-water mark that begin() reset, so keep the larger of it and the peak before
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, mem.peak_before_kib) / 1024


def _window(times: list[float], tokens: list[int], s: Settings) -> dict:
    """times[k], tokens[k]: clock and cumulative non-padding tokens at the end of step k + 1 (warmup >= 1)."""
    if len(times) != s.total_steps:
        raise RuntimeError(f"expected {s.total_steps} steps, saw {len(times)}")
    seconds = times[-1] - times[s.warmup - 1]
    n = tokens[-1] - tokens[s.warmup - 1]
    return {"timed_steps": s.steps, "timed_seconds": seconds, "timed_tokens": n, "tokens_per_second": n / seconds,
            "tokens_per_step": n / s.steps}


# ---- children ---------------------------------------------------------------------------------------------------
def child_ours(root: Path, run_dir: Path, s: Settings) -> dict:
    import torch

    torch.set_num_threads(s.threads)
    from distill_studio.engine import cli
    from distill_studio.engine.train import loop as loop_mod

    mem = TrainingMemory()
    original_run = loop_mod.Loop.run

    def run_measured(self, state):  # wraps, does not change, the loop: memory marks around it
        mem.begin()
        try:
            return original_run(self, state)
        finally:
            mem.end()

    loop_mod.Loop.run = run_measured
    code = cli.main(["run", str(root / "plan.toml"), "--run-dir", str(run_dir)])
    if code != 0:
        raise RuntimeError(f"distill run exited {code}; see {run_dir / 'logs' / 'run.log'}")
    metrics = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    metrics = [e for e in metrics if e["type"] == "metric"]
    out = _window([e["time"] for e in metrics], [e["tokens_seen"] for e in metrics], s)
    out["engine_step_seconds"] = sum(e["step_seconds"] for e in metrics[s.warmup:])  # the loop's own clock
    out["final_loss"] = metrics[-1]["loss"]
    return {**out, **mem.fields(), "lifetime_peak_mib": _lifetime_peak_mib(mem)}


def child_trl(root: Path, run_dir: Path, s: Settings) -> dict:
    import torch

    torch.set_num_threads(s.threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from distill_studio.engine.train.data import encode, read_records

    tokenizer = AutoTokenizer.from_pretrained(root / "student")
    tokenizer.chat_template = CHAT_TEMPLATE  # GKD's collator formats "messages" through the chat template
    records = read_records(root / "train.jsonl")
    data = Dataset.from_list([{"messages": [{"role": "user", "content": r["prompt"]},
                                            {"role": "assistant", "content": r["response"]}]} for r in records])
    student = AutoModelForCausalLM.from_pretrained(root / "student", dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(root / "teacher", dtype=torch.float32)

    mem = TrainingMemory()
    times: list[float] = []
    tokens: list[int] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            mem.begin()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())
            tokens.append(state.num_input_tokens_seen)

        def on_train_end(self, args, state, control, **kw):
            mem.end()

    config = GKDConfig(
        output_dir=str(run_dir), lmbda=0.0, beta=s.beta, temperature=s.temperature, seq_kd=False,
        max_length=s.seq_len, per_device_train_batch_size=s.batch, gradient_accumulation_steps=1,
        max_steps=s.total_steps, learning_rate=s.learning_rate, lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", gradient_checkpointing=False, bf16=False,
        fp16=False, use_cpu=True, seed=s.seed, logging_steps=1, report_to="none", save_strategy="no",
        eval_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding")
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=config, train_dataset=data,
                         processing_class=tokenizer, callbacks=[Clock()])

    # Same tokens in both trainers: TRL's collator on the first examples against our engine's encoding
    theirs = trainer.data_collator([data[i] for i in range(4)])
    ours = encode(records[:4], tokenizer, s.seq_len).examples
    same = (theirs["input_ids"].tolist() == [e.input_ids for e in ours]
            and theirs["labels"].tolist() == [e.labels for e in ours]
            and int(theirs["attention_mask"].sum()) == 4 * s.seq_len)
    if not same:
        raise RuntimeError("TRL's collator and our encoding disagree on the tokens; the comparison would be unfair")

    trainer.train()
    out = _window(times, tokens, s)
    out["final_loss"] = next(h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h)
    return {**out, **mem.fields(), "lifetime_peak_mib": _lifetime_peak_mib(mem)}


def child_main(which: str, root: Path, run_dir: Path, settings: dict) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    s = Settings(**settings)
    out = (child_ours if which == "ours" else child_trl)(root, run_dir, s)
    print(RESULT + json.dumps(out), flush=True)
    return 0


# ---- parent -----------------------------------------------------------------------------------------------------
def run_child(which: str, root: Path, n: int, s: Settings) -> dict:
    run_dir = root / "runs" / f"{which}-{n}"
    log = root / "logs" / f"{which}-{n}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--root", str(root), "--run-dir",
           str(run_dir), "--settings", json.dumps(asdict(s))]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{which} run {n} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return {**json.loads(lines[-1][len(RESULT):]), "process_seconds": wall}


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "trl", "accelerate", "datasets")}


def table(results: dict[str, list[dict]]) -> list[str]:
    """Medians over the runs of each trainer, and their ratio."""
    def med(who: str, value) -> float:
        return statistics.median(value(r) for r in results[who])

    rows = [("tokens/s (non-padding input tokens)", lambda r: r["tokens_per_second"], "{:,.0f}"),
            ("seconds per step", lambda r: r["timed_seconds"] / r["timed_steps"], "{:.2f}"),
            ("peak RSS during training (MiB)", lambda r: r["train_peak_mib"], "{:,.0f}"),
            ("RSS when training starts (MiB)", lambda r: r["train_start_mib"], "{:,.0f}"),
            ("training adds (peak - start, MiB)", lambda r: r["train_peak_mib"] - r["train_start_mib"], "{:,.0f}"),
            ("peak RSS, process lifetime (MiB)", lambda r: r["lifetime_peak_mib"], "{:,.0f}"),
            ("child process wall time (s)", lambda r: r["process_seconds"], "{:.0f}")]
    out = ["| median over runs | ours (distill run) | TRL GKDTrainer | ours / TRL |", "|---|---:|---:|---:|"]
    for label, value, fmt in rows:
        a, b = med("ours", value), med("trl", value)
        out.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, help=f"timed steps per run (default {Settings.steps})")
    ap.add_argument("--warmup", type=int, help=f"untimed steps before them, at least 1 (default {Settings.warmup})")
    ap.add_argument("--repeats", type=int, help=f"interleaved pairs of runs (default {Settings.repeats})")
    ap.add_argument("--threads", type=int, help=f"torch.set_num_threads in each child (default {Settings.threads})")
    ap.add_argument("--case", choices=sorted(CASES), help="a preset: " + "; ".join(
        f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in CASES.items()))
    ap.add_argument("--vocab", type=int, help=f"vocabulary size (default {Settings.vocab})")
    ap.add_argument("--batch", type=int, help=f"sequences per step (default {Settings.batch})")
    ap.add_argument("--seq-len", type=int, help=f"tokens per sequence (default {Settings.seq_len})")
    ap.add_argument("--prompt-len", type=int, help=f"masked prompt tokens (default {Settings.prompt_len})")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_kd_trainer.md"), help="markdown report")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (models, runs, child logs)")
    ap.add_argument("--child", choices=("ours", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, args.root, args.run_dir, json.loads(args.settings))

    s = Settings(**(QUICK if args.quick else {}))
    for key, value in CASES.get(args.case, {}).items():
        setattr(s, key, value)
    for key in ("steps", "warmup", "repeats", "threads", "vocab", "batch", "seq_len", "prompt_len"):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    if s.warmup < 1 or s.steps < 1 or s.repeats < 1:
        ap.error("--steps, --warmup and --repeats must be at least 1")
    if importlib.util.find_spec("trl") is None:
        ap.error("TRL is not installed: .venv/bin/pip install trl")

    root = Path(tempfile.mkdtemp(prefix="bench-kd-trainer-"))
    t_start = time.perf_counter()
    try:
        print(f"work folder {root}; building models and data", file=sys.stderr, flush=True)
        params = build_fixture(root, s)
        results: dict[str, list[dict]] = {"ours": [], "trl": []}
        for n in range(s.repeats):
            for who in ("ours", "trl"):
                r = run_child(who, root, n, s)
                if r["tokens_per_step"] != s.batch * s.seq_len:  # no padding: every input token counts
                    raise SystemExit(f"{who} counted {r['tokens_per_step']} tokens per step, not "
                                     f"{s.batch * s.seq_len}")
                results[who].append(r)
                print(f"run {n + 1}/{s.repeats} {who:4}: {r['tokens_per_second']:,.0f} tok/s, "
                      f"{r['timed_seconds'] / s.steps:.3f} s/step, training peak {r['train_peak_mib']:,.0f} MiB "
                      f"(start {r['train_start_mib']:,.0f}), lifetime peak {r['lifetime_peak_mib']:,.0f} MiB, "
                      f"final loss {r['final_loss']:.4f}", file=sys.stderr, flush=True)
        lines = table(results)
        print("\n".join(lines))
        write_report(args.out, s, params, results, lines, args, time.perf_counter() - t_start)
        print(f"\nreport: {args.out}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def write_report(path: Path, s: Settings, params: dict[str, int], results: dict, lines: list[str], args,
                 seconds: float) -> None:
    v = versions()
    cmd = " ".join([".venv/bin/python benchmarks/bench_kd_trainer.py", *(a for a in sys.argv[1:] if a != "--keep")])
    pairs = "\n".join(
        f"| {n + 1} | {o['tokens_per_second']:,.0f} | {t['tokens_per_second']:,.0f} | "
        f"{o['tokens_per_second'] / t['tokens_per_second']:.2f} | {o['train_peak_mib']:,.0f} | "
        f"{t['train_peak_mib']:,.0f} | {o['final_loss']:.4f} | {t['final_loss']:.4f} |"
        for n, (o, t) in enumerate(zip(results["ours"], results["trl"])))
    settings = [
        f"teacher Qwen2 {s.teacher_layers} layers ({params['teacher'] / 1e6:.1f}M parameters), student Qwen2 "
        f"{s.student_layers} layers ({params['student'] / 1e6:.1f}M); hidden {s.hidden}, MLP {s.intermediate}, "
        f"{s.heads} heads / {s.kv_heads} KV heads, untied head; random weights saved with seed {s.seed} "
        "(student init \"pretrained\")",
        f"byte-level BPE tokenizer of {s.vocab:,} tokens (Qwen2's pre-tokenizer) trained on synthetic words"
        + (f" ({min(s.vocab, TRAINED_VOCAB):,} learnt, the rest vocabulary entries no merge produces: heads and "
           "softmaxes as wide as the vocabulary)" if s.vocab > TRAINED_VOCAB else ""),
        f"{s.examples} examples of exactly {s.seq_len} tokens: {s.prompt_len} masked prompt tokens, completion, "
        "EOS; no padding; TRL's collator and our encoding checked to give the same tokens and labels",
        f"micro batch {s.batch} sequences = {s.batch * s.seq_len:,} tokens per step, no gradient accumulation",
        f"generalised JSD, beta {s.beta}, temperature {s.temperature}, no CE term; full fine-tuning, fp32; torch "
        f"AdamW, lr {s.learning_rate:g}, cosine without warm-up, weight decay 0, clip at norm 1.0 (ours: AdamW fused, "
        "the engine's default on a CPU; TRL: `optim adamw_torch`, its default)",
        "no gradient checkpointing, no evaluation, no checkpoint during the steps; one process, "
        f"`torch.set_num_threads({s.threads})`",
        "ours: `distill run PLAN --run-dir DIR` (in a child, through `distill_studio.engine.cli.main`), "
        "kind logit-kd, loss jsd, kd_weight 1.0, teacher_mode online, adapter full, loss_chunk_tokens 1024 and "
        "log_every 1 (defaults)",
        "TRL: `trl.experimental.gkd.GKDTrainer`, lmbda 0 (no student generation), seq_kd False, optim adamw_torch, "
        "gradient_checkpointing False and bf16 False (TRL's defaults are True), use_cpu, logging_steps 1, "
        "save_strategy no, a chat template that joins prompt and completion and adds EOS",
        f"{s.warmup} untimed + {s.steps} timed steps per run, each run in its own child process, alternating ours, "
        f"TRL ({s.repeats} pairs); medians",
    ]
    text = "\n".join([
        "## Distillation steps against TRL's GKDTrainer (CPU)",
        "",
        f"Command: `{cmd}`" + (" (smoke mode: not a measurement)" if args.quick else ""),
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {os.cpu_count()} CPU cores shared with other work, "
        f"no GPU; the whole benchmark took {seconds / 60:.1f} min. Versions: "
        + ", ".join(f"{k} {x}" for k, x in v.items()) + f", Python {sys.version.split()[0]}.",
        "",
        "Settings (the same in both unless named):",
        "",
        *(f"- {line}" for line in settings),
        "",
        "tokens/s: non-padding input tokens (attention-mask ones) of the timed steps divided by the wall time from "
        "the end of the last untimed step to the end of the last step, everything between steps included. Memory: "
        "resident set of the child (PyTorch keeps no CPU allocation statistics); the kernel's peak is reset when "
        "training starts, so \"training adds\" is what the steps add on top of the loaded models.",
        "",
        *lines,
        "",
        "Per pair of runs:",
        "",
        "| pair | ours tok/s | TRL tok/s | ratio | ours training peak MiB | TRL training peak MiB | ours final loss "
        "| TRL final loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        pairs,
        "",
    ])
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
