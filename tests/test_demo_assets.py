"""The bundled CPU demo under resources/demo/ is consistent: data well formed and disjoint, tokenizer loads offline
from both model folders and covers every character, teacher and student configs agree, and the shipped teacher
actually solves the task.

``resources/demo/make_demo.py`` writes these assets; these tests only read them. The data tests need nothing beyond
the standard library; the tokenizer and model tests skip where the ``train`` extra (torch, transformers) is not
installed.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub: the folders alone must be enough
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEMO = Path(__file__).resolve().parent.parent / "resources" / "demo"
TEACHER, STUDENT = DEMO / "teacher", DEMO / "student"
PROMPT_RE = re.compile(r"^([1-9]\d{2,3})\+([1-9]\d{2,3})=$")
LINE_RE = re.compile(r"^(\d)\+(\d)\+([01])=(\d{1,2})$")
MAX_WEIGHTS_BYTES = 10 * 1024 * 1024


def read_jsonl(name: str) -> list[dict]:
    with (DEMO / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def train_rows() -> list[dict]:
    return read_jsonl("train.jsonl")


@pytest.fixture(scope="module")
def eval_rows() -> list[dict]:
    return read_jsonl("eval.jsonl")


@pytest.fixture(scope="module")
def prompt_rows() -> list[dict]:
    return read_jsonl("prompts.jsonl")


def extract_answer(text: str) -> str | None:
    """The demo's task-score rule: the text after the last ``####``, stripped."""
    return text.rsplit("####", 1)[1].strip() if "####" in text else None


def expected_working(a: int, b: int) -> list[tuple[int, int, int, int]]:
    """(digit of a, digit of b, carry in, column sum) per column, from the right."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry, cols = 0, []
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        cols.append((x, y, carry, x + y + carry))
        carry = (x + y + carry) // 10
    return cols


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


def test_files_exist():
    for path in ("make_demo.py", "README.md", "train.jsonl", "eval.jsonl", "prompts.jsonl",
                 "teacher/config.json", "teacher/model.safetensors", "teacher/tokenizer.json",
                 "teacher/tokenizer_config.json", "student/config.json", "student/tokenizer.json",
                 "student/tokenizer_config.json"):
        assert (DEMO / path).is_file(), path
    assert not list(STUDENT.glob("*.safetensors")) and not list(STUDENT.glob("*.bin")), "the engine builds the student"


@pytest.mark.parametrize("name", ["train.jsonl", "eval.jsonl"])
def test_rows_are_well_formed(name: str):
    rows = read_jsonl(name)
    assert rows
    for row in rows:
        assert set(row) == {"prompt", "response", "answer"}, row
        m = PROMPT_RE.match(row["prompt"])
        assert m, row["prompt"]
        a, b = int(m.group(1)), int(m.group(2))
        assert row["answer"] == str(a + b), row
        lines = row["response"].split("\n")
        assert lines[-1] == f"#### {row['answer']}", row
        assert extract_answer(row["response"]) == row["answer"]
        cols = [LINE_RE.match(line) for line in lines[:-1]]
        assert all(cols), row["response"]
        assert [tuple(int(g) for g in c.groups()) for c in cols] == expected_working(a, b), row


def test_sizes_and_disjoint_splits(train_rows, eval_rows, prompt_rows):
    assert len(eval_rows) == 200
    assert 4000 <= len(train_rows) <= 8000
    assert len(prompt_rows) >= 1000
    train_p = [r["prompt"] for r in train_rows]
    eval_p = [r["prompt"] for r in eval_rows]
    gen_p = [r["prompt"] for r in prompt_rows]
    for ps in (train_p, eval_p, gen_p):
        assert len(set(ps)) == len(ps), "duplicate prompts"
    assert not set(eval_p) & set(train_p), "eval prompts leak into train"
    assert not set(eval_p) & set(gen_p), "eval prompts leak into prompts.jsonl"


def test_prompts_file_is_prompts_only(prompt_rows):
    for row in prompt_rows:
        assert set(row) == {"prompt"}
        assert PROMPT_RE.match(row["prompt"]), row


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers_():
    transformers = pytest.importorskip("transformers")
    return {d.name: transformers.AutoTokenizer.from_pretrained(d) for d in (TEACHER, STUDENT)}


def test_tokenizer_loads_offline_and_round_trips(tokenizers_, train_rows, eval_rows, prompt_rows):
    texts = [r["prompt"] + r["response"] for r in train_rows + eval_rows] + [r["prompt"] for r in prompt_rows]
    chars = sorted(set("".join(texts)))
    t, s = tokenizers_["teacher"], tokenizers_["student"]
    assert t.get_vocab() == s.get_vocab()
    for tok in (t, s):
        assert tok.eos_token_id is not None and tok.pad_token_id is not None and tok.bos_token_id is not None
        assert len({tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}) == 3
        for ch in chars:  # every character is exactly one ordinary token
            ids = tok.encode(ch, add_special_tokens=False)
            assert len(ids) == 1 and ids[0] not in tok.all_special_ids, repr(ch)
            assert tok.decode(ids) == ch, repr(ch)
        enc = tok(texts, add_special_tokens=False)["input_ids"]
        for text, ids in zip(texts, enc):
            assert len(ids) == len(text), text
            assert tok.decode(ids) == text, text
    assert t(texts[0])["input_ids"] == t(texts[0], add_special_tokens=False)["input_ids"], "no automatic BOS/EOS"


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


def test_teacher_weights_are_small():
    assert (TEACHER / "model.safetensors").stat().st_size < MAX_WEIGHTS_BYTES


def test_student_config_matches_teacher_but_for_depth():
    t = json.loads((TEACHER / "config.json").read_text())
    s = json.loads((STUDENT / "config.json").read_text())
    assert t["model_type"] == s["model_type"] == "qwen2"
    assert s["num_hidden_layers"] < t["num_hidden_layers"]
    assert t["num_hidden_layers"] % s["num_hidden_layers"] == 0, "from-teacher init takes every k-th layer"
    for cfg in (t, s):
        assert len(cfg.get("layer_types", [None] * cfg["num_hidden_layers"])) == cfg["num_hidden_layers"]
    per_depth = {"num_hidden_layers", "layer_types", "architectures", "dtype", "torch_dtype", "transformers_version"}
    assert {k: v for k, v in t.items() if k not in per_depth} == {k: v for k, v in s.items() if k not in per_depth}


@pytest.fixture(scope="module")
def teacher_model():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(TEACHER).eval()


def test_teacher_loads_and_matches_tokenizer(teacher_model, tokenizers_):
    tok = tokenizers_["teacher"]
    cfg = teacher_model.config
    assert cfg.model_type == "qwen2" and cfg.tie_word_embeddings
    assert cfg.vocab_size == len(tok)
    assert (cfg.eos_token_id, cfg.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


def test_teacher_solves_held_out_prompts(teacher_model, tokenizers_, eval_rows):
    import torch

    tok = tokenizers_["teacher"]
    rows = eval_rows[:20]
    by_length: dict[int, list[dict]] = {}  # one batched greedy generation per prompt length: no padding needed
    for row in rows:
        by_length.setdefault(len(tok.encode(row["prompt"], add_special_tokens=False)), []).append(row)
    correct = 0
    with torch.no_grad():
        for group in by_length.values():
            x = torch.tensor([tok.encode(r["prompt"], add_special_tokens=False) for r in group])
            out = teacher_model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=64,
                                         do_sample=False, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id)
            for r, ids in zip(group, out[:, x.shape[1]:]):
                correct += extract_answer(tok.decode(ids, skip_special_tokens=True)) == r["answer"]
    assert correct / len(rows) >= 0.9, f"{correct}/{len(rows)}"
