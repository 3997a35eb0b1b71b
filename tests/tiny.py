"""Tiny models, tokenizer and data for engine tests: built from configs in a temporary folder, nothing downloaded."""
from __future__ import annotations

import json
import random
from pathlib import Path



DEMO_TOKENIZER = Path(__file__).resolve().parents[1] / "resources" / "demo" / "teacher"


def char_tokenizer():
    """The bundled demo's character-level tokenizer (19 ids: digits, + = # space newline and specials)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_TOKENIZER)


def qwen2_config(layers: int, hidden: int = 32, vocab: int = 24):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def make_models(root: Path, teacher_layers: int = 2, student_layers: int = 1, student_weights: bool = False,
                seed: int = 0) -> tuple[Path, Path]:
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    tok = char_tokenizer()
    teacher, student = root / "teacher", root / "student"
    Qwen2ForCausalLM(qwen2_config(teacher_layers)).save_pretrained(teacher)
    tok.save_pretrained(teacher)
    cfg = qwen2_config(student_layers)
    if student_weights:
        Qwen2ForCausalLM(cfg).save_pretrained(student)
    else:
        student.mkdir(parents=True, exist_ok=True)
        cfg.save_pretrained(student)
    tok.save_pretrained(student)
    return teacher, student


def make_data(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            f.write(json.dumps({"prompt": f"{a}+{b}=", "response": f"#### {a + b}", "answer": str(a + b)}) + "\n")
    return path


def write_plan(root: Path, *, kind: str = "logit-kd", mode: str = "online", adapter: str = "full",
               init: str = "from-teacher", steps: int = 4, extra: str = "", data_n: int = 32,
               global_batch: int = 8, micro: int = 2, eval_n: int = 8, hardware: str = "",
               teacher: str = "", name: str = "plan.toml") -> Path:
    make_data(root / "train.jsonl", data_n, seed=1)
    make_data(root / "eval.jsonl", eval_n, seed=2)
    seq = 16
    text = f'''name = "tiny"
[teacher]
model = "teacher"
{teacher}
[student]
model = "student"
init = "{init}"
[method]
kind = "{kind}"
teacher_mode = "{mode}"
temperature = 2.0
kd_weight = 0.5
top_k = 8
[adapter]
kind = "{adapter}"
rank = 4
[data]
train = "train.jsonl"
eval = "eval.jsonl"
seq_len = {seq}
global_batch_tokens = {global_batch * seq}
[hardware]
target = "local"
accelerator = "cpu"
{hardware}
[training]
learning_rate = 0.01
warmup_steps = 1
micro_batch_size = {micro}
max_steps = {steps}
eval_samples = 4
max_new_tokens = 6
{extra}
'''
    overridden = {line.split("=")[0].strip() for line in extra.splitlines() if "=" in line}
    text = "\n".join(line for line in text.splitlines()
                     if not (line.split("=")[0].strip() in overridden and line not in extra.splitlines()))
    plan = root / name
    plan.write_text(text + "\n")
    return plan
