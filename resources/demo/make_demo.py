"""Build the bundled CPU distillation demo: task data, a character-level tokenizer, a tiny trained teacher and
the student's config.

The task is multi-digit addition written out with its working, column by column from the right with carries, and
ending in a GSM8K-style final line::

    prompt:   "4821+375="
    response: "1+5+0=6\\n2+7+0=9\\n8+3+0=11\\n4+0+1=5\\n#### 5196"
    answer:   "5196"

Each working line is ``<digit of a>+<digit of b>+<carry in>=<column sum>`` (a missing digit of the shorter operand
is written 0); the answer digits are the last digits of the column sums read from the bottom line up, with the last
carry in front.

Everything is seeded; run on the same CPU build of torch it reproduces the same files::

    HF_HUB_OFFLINE=1 .venv/bin/python resources/demo/make_demo.py --out resources/demo

Nothing is downloaded: the tokenizer is built here and the models are created from ``Qwen2Config``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import string
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# --------------------------------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------------------------------

MIN_DIGITS = 3
MAX_DIGITS = 4
ANSWER_MARK = "####"

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
CHARS = list("0123456789+=#") + [" ", "\n"]  # every character the prompts and responses use

# The demo models' chat template: a user turn is its text, an assistant turn its text and EOS; exactly the
# prompt + response encoding the teacher was trained on, so conversations reach the same score. The models know no
# system role, and the template says so rather than dropping one.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token }}"
    "{%- else -%}{{ raise_exception('the demo models know user and assistant turns only, not ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

N_TRAIN = 6000
N_EVAL = 200
N_PROMPTS = 2000


def sample_operand(rng: random.Random) -> int:
    n = rng.randint(MIN_DIGITS, MAX_DIGITS)
    return rng.randint(10 ** (n - 1), 10**n - 1)


def as_conversation(row: dict) -> dict:
    """A prompt + response row as a conversation record (``chat-train.jsonl``, ``chat-eval.jsonl``)."""
    return {"messages": [{"role": "user", "content": row["prompt"]},
                         {"role": "assistant", "content": row["response"]}], "answer": row["answer"]}


def write_chat_data(out: Path, train_rows: list[dict], eval_rows: list[dict]) -> None:
    write_jsonl(out / "chat-train.jsonl", [as_conversation(r) for r in train_rows])
    write_jsonl(out / "chat-eval.jsonl", [as_conversation(r) for r in eval_rows])


def make_prompt(a: int, b: int) -> str:
    return f"{a}+{b}="


def make_response(a: int, b: int) -> str:
    """The column-by-column working from the right, then ``#### <a+b>``."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry, lines = 0, []
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        lines.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    lines.append(f"{ANSWER_MARK} {a + b}")
    return "\n".join(lines)


def make_row(a: int, b: int) -> dict:
    return {"prompt": make_prompt(a, b), "response": make_response(a, b), "answer": str(a + b)}


def extract_answer(text: str) -> str | None:
    """The task's answer-extraction rule: the text after the last ``####``, stripped."""
    if ANSWER_MARK not in text:
        return None
    return text.rsplit(ANSWER_MARK, 1)[1].strip()


def sample_pairs(rng: random.Random, n: int, exclude: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """``n`` distinct operand pairs, none in ``exclude`` (which is extended with them)."""
    out = []
    while len(out) < n:
        pair = (sample_operand(rng), sample_operand(rng))
        if pair in exclude:
            continue
        exclude.add(pair)
        out.append(pair)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------------


def byte_level(ch: str) -> str:
    """GPT-2 / Qwen byte-level form of a one-byte character (" " is "Ġ", "\\n" is "Ċ", "7" is "7")."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    b = ch.encode("utf-8")
    assert len(b) == 1, ch
    if b[0] in printable:
        return chr(b[0])
    return chr(256 + [x for x in range(256) if x not in printable].index(b[0]))


def build_tokenizer():
    """A character-level tokenizer: one token per character, no automatic BOS/EOS (the trainer appends EOS).

    It is a ``Qwen2Tokenizer`` (byte-level BPE) whose vocabulary is the task's single characters and which has no
    merges, so every character is one token. It is built this way, rather than as a WordLevel model, because
    ``AutoTokenizer`` in transformers 5 always loads a folder whose config.json says ``model_type: qwen2`` with
    ``Qwen2Tokenizer``, which rebuilds the pipeline (Qwen's split regex, byte-level mapping, NFC) from the vocabulary
    and merges: a tokenizer shaped like that pipeline from the start reads the same however it is loaded.
    """
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [byte_level(c) for c in CHARS])}
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------

HIDDEN = 128
HEADS = 4
KV_HEADS = 2
TEACHER_LAYERS = 4
STUDENT_LAYERS = 2  # every other teacher layer: the engine copies teacher layers 0 and 2 (init = "from-teacher")


def model_config(tokenizer, n_layers: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        architectures=["Qwen2ForCausalLM"],
        dtype="float32",
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=n_layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=128,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def encode_rows(tokenizer, rows: list[dict]) -> list[tuple[list[int], int]]:
    """(ids of prompt + response + EOS, number of prompt tokens) per row."""
    out = []
    for r in rows:
        p = tokenizer.encode(r["prompt"], add_special_tokens=False)
        s = tokenizer.encode(r["response"], add_special_tokens=False)
        out.append((p + s + [tokenizer.eos_token_id], len(p)))
    return out


def collate(encoded, pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding: loss on the response only)."""
    import torch

    n = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), n), dtype=torch.long)
    labels = torch.full((len(encoded), n), -100, dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(encoded):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
    return ids, mask, labels


def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 256) -> list[str]:
    """Greedy generations, batched by prompt length so that no padding is needed."""
    import torch

    by_len: dict[int, list[int]] = {}
    enc = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    for i, ids in enumerate(enc):
        by_len.setdefault(len(ids), []).append(i)
    out: list[str] = [""] * len(prompts)
    model.eval()
    with torch.no_grad():
        for idx in by_len.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                x = torch.tensor([enc[i] for i in chunk])
                gen = model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
                for row, i in zip(gen[:, x.shape[1] :].tolist(), chunk):
                    out[i] = tokenizer.decode(row, skip_special_tokens=True)
    return out


def exact_match(model, tokenizer, rows: list[dict]) -> float:
    gens = greedy_generate(model, tokenizer, [r["prompt"] for r in rows])
    return sum(extract_answer(g) == r["answer"] for g, r in zip(gens, rows)) / len(rows)


def train_teacher(model, tokenizer, rng: random.Random, exclude: set, steps: int, batch: int, lr: float,
                  warmup: int, log_every: int = 100) -> None:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0 = time.time()
    for step in range(steps):
        pairs = []
        while len(pairs) < batch:  # fresh problems every step, never an eval prompt
            pair = (sample_operand(rng), sample_operand(rng))
            if pair not in exclude:
                pairs.append(pair)
        ids, mask, labels = collate(encode_rows(tokenizer, [make_row(a, b) for a, b in pairs]), tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step == 0:
            print(f"  step {step + 1:5d}/{steps}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{time.time() - t0:6.0f}s", flush=True)


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------


README = string.Template("""\
# CPU distillation demo: column addition

A tiny teacher that adds numbers, a student half its depth, and the data to distil one into the other on two CPU
cores in a few minutes. Everything in this folder is written by `make_demo.py` (seeded, nothing downloaded); the
teacher was trained by it on this folder's machine.

## The task

Add two numbers of 3 or 4 digits, writing the working column by column from the right, then the answer on a
GSM8K-style final line. One row of `train.jsonl`:

```json
$example
```

that is, the model reads the prompt `$prompt` and must write

```
$response_block
```

Each working line is `<digit of a>+<digit of b>+<carry in>=<column sum>` (a digit past the end of the shorter number
is written 0); the answer's digits are the last digits of the column sums read from the bottom line up, behind the
last carry. Operand lengths (3 or 4) and values are uniform; 4-digit + 4-digit sums can have 5 digits.

**Task score** (what the demo reports): the share of the 200 prompts of `eval.jsonl` whose greedy generation,
started from the prompt's tokens alone (no BOS) and stopped at `</s>` or after 64 new tokens, has a text after the
last `####` that, stripped, equals the row's `answer`. A generation without `####` scores 0.

## Files

| file | what |
| --- | --- |
| `train.jsonl` | $n_train rows `{"prompt", "response", "answer"}`: what the student is distilled on |
| `eval.jsonl` | $n_eval held-out rows, same fields; no prompt in common with the other two files |
| `prompts.jsonl` | $n_prompts rows `{"prompt"}` for `teacher_mode = "generate"` (seq-KD); disjoint from both |
| `teacher/` | `config.json`, `generation_config.json`, `model.safetensors` ($teacher_mb MB, fp32), tokenizer files |
| `student/` | `config.json` and the same tokenizer files, no weights: the engine builds the student |
| `make_demo.py` | the script that wrote all of the above |

Sequences (prompt + response + `</s>`) are $tokens_min to $tokens_max tokens long, $tokens_mean on average:
`seq_len = 64` holds every row.

## Tokenizer

One token per character; $vocab ids: `<pad>` 0, `<s>` 1, `</s>` 2, `<unk>` 3, then `0`-`9`, `+`, `=`, `#`, space and
newline. Nothing is added automatically (no BOS, no EOS): training sequences are prompt + response + `</s>`, padded
with `<pad>`, with the loss on the response and its `</s>` only. It is saved as a `Qwen2Tokenizer` (byte-level BPE
whose vocabulary is those characters, with no merges) because transformers 5's `AutoTokenizer` loads any folder
whose `config.json` says `model_type: qwen2` as a `Qwen2Tokenizer` and rebuilds its pipeline (Qwen's split regex,
byte-level mapping, NFC): a tokenizer built in that shape reads the same whichever class loads it. In its
vocabulary space is `Ġ` and newline `Ċ`, as in every byte-level BPE; `decode` gives back the text.

## Models

* **Teacher**: `Qwen2ForCausalLM`, $teacher_layers layers, hidden $hidden, $heads attention heads ($kv_heads KV
  heads), MLP $intermediate, RoPE, 128 positions, tied input/output embeddings: $teacher_params parameters.
* **Student** (`student/config.json`): the same config with $student_layers layers, $student_params parameters once
  built. With `init = "from-teacher"` the engine copies the embeddings (tied with the LM head), the final norm and
  teacher layers $copied_layers into student layers 0, 1, ...; on its own that student scores 0 (it must be
  trained).

## How they were made

```
$command
```

The teacher trains on fresh random problems every step (a second random stream, seed + 1), never on an eval
prompt: $steps steps of $batch sequences, AdamW (betas 0.9/0.98, weight decay 0.01), peak learning rate $lr
after $warmup warm-up steps, cosine decay to a tenth of it, gradient clipping at 1, fp32, $threads threads, loss on
the response tokens only. It took $train_minutes minutes here on a 2-core CPU shared with other work (torch $torch,
transformers $transformers). The data and tokenizer depend on the seed alone; rerunning the command on the same
machine and torch build gave byte-identical weights too (checked on short runs), but another CPU or torch build
may differ in the last bits.

**Teacher's held-out task score: $teacher_em ($eval_correct of $n_eval prompts of `eval.jsonl`).**
$distill_notes""")

# What the plain-torch check of the distillation showed (copied into README.md; see the report that came with it).
DISTILL_NOTES = """
## Distilling it: what was measured

A plain-torch check on these assets (not the engine): the 2-layer student built from teacher layers 0 and 2,
trained on `train.jsonl` in micro batches of 32 rows (right-padded, at most 57 tokens), AdamW (betas 0.9/0.98,
weight decay 0.01), learning rate 1e-3 after 10 warm-up steps then cosine to 0, gradient clipping at 1, loss on
the response tokens. KD is the forward KL(teacher || student) over the response tokens at temperature T, times
T^2, with the teacher's forward pass under `no_grad`; loss = 0.9 * KD + 0.1 * CE. Each row of the table is one
seed (student init and data order), shared by its three runs. Held-out task score on `eval.jsonl`:

| steps | seed | CE only | KD, T = 1 | KD, T = 2 |
| ---: | ---: | ---: | ---: | ---: |
| 100 | 1 | 0.900 | 0.895 | 0.940 |
| 100 | 2 | 0.900 | 0.905 | 0.945 |
| 100 | 3 | 0.890 | 0.885 | 0.970 |
| 150 | 0 | 0.980 | 0.985 | 1.000 |
| 400 | 1 | 1.000 | | 1.000 |

The teacher scores 1.000 and the untrained student 0.000.

* **Use T = 2.** At T = 1, KD and CE-only stay within a prompt or two of each other (either may lead): the
  teacher is right and nearly certain at every response token, so its distribution is almost the one-hot label.
  At T = 2 the softened distribution also says which other tokens the teacher finds close, and the student gets
  there faster: 4 to 8 points ahead at 100 steps in every seed tried, at or above 94% of the teacher.
* **Keep the budget short (about 100 steps).** The student made from teacher layers recovers fast: by 300 to 400
  steps both runs reach 1.000 and the comparison shows nothing.
* **Time.** On two free cores 100 steps took about 24 s with KD (teacher forward included) and 14 s CE-only, and a
  greedy evaluation of the 200 eval prompts about 1 s; with other work on the same cores, 5 to 10 times longer
  (the teacher's last 100 steps, with the cores nearly free, ran at 0.65 s a step: about 11 minutes for all 1000).
* A 1-layer student (teacher layer 0 alone) does not learn the task in 400 steps (at most 5%), with KD or without.

Suggested plan settings: `max_steps = 100`, micro batch 32, `seq_len = 64`, learning rate 1e-3, 10 warm-up steps
(cosine), forward KL with `temperature = 2.0` (scaled by T^2), `kd_weight = 0.9`, teacher online.
"""


def write_readme(out: Path, stats: dict, example: dict) -> None:
    fields = dict(stats)
    fields.update(
        example=json.dumps(example, ensure_ascii=False),
        prompt=example["prompt"],
        response_block=example["response"],
        n_train=N_TRAIN,
        n_eval=N_EVAL,
        n_prompts=N_PROMPTS,
        teacher_mb=f"{stats['teacher_safetensors_bytes'] / 1e6:.1f}",
        teacher_layers=TEACHER_LAYERS,
        student_layers=STUDENT_LAYERS,
        copied_layers=" and ".join(str(i) for i in range(0, TEACHER_LAYERS, TEACHER_LAYERS // STUDENT_LAYERS)),
        hidden=HIDDEN,
        heads=HEADS,
        kv_heads=KV_HEADS,
        intermediate=4 * HIDDEN,
        teacher_params=f"{stats['teacher_parameters']:,}",
        student_params=f"{stats['student_parameters']:,}",
        train_minutes=f"{stats['train_seconds'] / 60:.0f}",
        teacher_em=f"{stats['eval_exact_match']:.3f}",
        distill_notes=DISTILL_NOTES,
    )
    (out / "README.md").write_text(README.substitute(fields), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--steps", type=int, default=1000, help="teacher training steps")
    ap.add_argument("--batch", type=int, default=64, help="teacher micro batch (sequences)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-only", action="store_true", help="write the data and tokenizer, skip the teacher")
    args = ap.parse_args(argv)

    import torch
    import transformers
    from transformers import AutoTokenizer, GenerationConfig, Qwen2ForCausalLM

    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    # Data: eval first, then train and prompts, all pairwise disjoint.
    data_rng = random.Random(args.seed)
    used: set[tuple[int, int]] = set()
    eval_pairs = sample_pairs(data_rng, N_EVAL, used)
    train_pairs = sample_pairs(data_rng, N_TRAIN, used)
    prompt_pairs = sample_pairs(data_rng, N_PROMPTS, used)
    eval_rows = [make_row(a, b) for a, b in eval_pairs]
    train_rows = [make_row(a, b) for a, b in train_pairs]
    write_jsonl(out / "train.jsonl", train_rows)
    write_jsonl(out / "eval.jsonl", eval_rows)
    write_jsonl(out / "prompts.jsonl", [{"prompt": make_prompt(a, b)} for a, b in prompt_pairs])
    write_chat_data(out, train_rows, eval_rows)
    print(f"data: {len(train_rows)} train, {len(eval_rows)} eval, {len(prompt_pairs)} prompts -> {out}")

    tokenizer = build_tokenizer()
    lengths = [len(ids) for ids, _ in encode_rows(tokenizer, train_rows + eval_rows)]
    print(f"tokens per sequence (prompt + response + EOS): min {min(lengths)}, max {max(lengths)}, "
          f"mean {sum(lengths) / len(lengths):.1f}")

    teacher_dir, student_dir = out / "teacher", out / "student"
    for d in (teacher_dir, student_dir):
        d.mkdir(exist_ok=True)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(d)
        reloaded = AutoTokenizer.from_pretrained(d)  # offline: the folder alone must be enough
        sample = train_rows[0]["prompt"] + train_rows[0]["response"]
        assert reloaded.decode(reloaded.encode(sample, add_special_tokens=False)) == sample, d
    student_cfg = model_config(tokenizer, STUDENT_LAYERS)
    student_cfg.save_pretrained(student_dir)
    if args.data_only:
        return 0

    # Teacher: trained on fresh problems drawn with another seed (never an eval prompt), loss on the response only.
    torch.manual_seed(args.seed)
    teacher = Qwen2ForCausalLM(model_config(tokenizer, TEACHER_LAYERS))
    n_params = sum(p.numel() for p in teacher.parameters())
    print(f"teacher: {TEACHER_LAYERS} layers, hidden {HIDDEN}, {n_params:,} parameters; training {args.steps} steps "
          f"x {args.batch} sequences, lr {args.lr}")
    eval_set = set(eval_pairs)
    t0 = time.time()
    train_teacher(teacher, tokenizer, random.Random(args.seed + 1), eval_set, args.steps, args.batch, args.lr,
                  args.warmup)
    train_s = time.time() - t0
    em = exact_match(teacher, tokenizer, eval_rows)
    print(f"teacher trained in {train_s:.0f}s; held-out exact match {em:.3f} ({round(em * len(eval_rows))}/"
          f"{len(eval_rows)})")

    teacher.generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    teacher.save_pretrained(teacher_dir, safe_serialization=True)
    layer_params = sum(p.numel() for p in teacher.model.layers[0].parameters())
    stats = {
        "command": f"HF_HUB_OFFLINE=1 python resources/demo/make_demo.py --out resources/demo --steps {args.steps} "
                   f"--batch {args.batch} --lr {args.lr} --warmup {args.warmup} --seed {args.seed} "
                   f"--threads {args.threads}",
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "warmup": args.warmup,
        "threads": args.threads,
        "vocab": len(tokenizer),
        "train_seconds": round(train_s),
        "teacher_parameters": n_params,
        "student_parameters": n_params - (TEACHER_LAYERS - STUDENT_LAYERS) * layer_params,
        "teacher_safetensors_bytes": (teacher_dir / "model.safetensors").stat().st_size,
        "eval_exact_match": em,
        "eval_correct": round(em * len(eval_rows)),
        "tokens_min": min(lengths),
        "tokens_max": max(lengths),
        "tokens_mean": round(sum(lengths) / len(lengths), 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print("STATS " + json.dumps(stats), flush=True)
    write_readme(out, stats, train_rows[0])
    print(f"saved {teacher_dir} ({stats['teacher_safetensors_bytes'] / 1e6:.1f} MB safetensors), student config in "
          f"{student_dir} ({stats['student_parameters']:,} parameters once built), README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
