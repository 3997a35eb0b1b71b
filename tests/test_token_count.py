"""The planner counts a plan's tokens with the tokenizer at hand, as training counts the tokens it trains; it says
when it only estimated them from bytes; counts are cached and very large data is counted on a sample.

The planner's count (``engine/data_scan.py``, torch-free) is checked against the engine's own: its data preparation
with transformers' tokenizer and torch's batch order, and a short real run's ``total_tokens``."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distill_studio.engine import data_scan
from distill_studio.engine.data_scan import count_plan_tokens, permutation, trained_tokens
from distill_studio.engine.plan import load_plan, loads_plan
from distill_studio.engine.planner import analyse, token_count
from distill_studio.engine.report import render_text, summary_dict

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"


def engine_count(plan_path: Path) -> tuple[int, int]:
    """(one epoch's tokens, the run's total_tokens) as training works them out (train/session.py): read_records,
    transformers' tokenizer, the chat templates, encode, and BatchOrder over the run's steps."""
    import math

    from distill_studio.engine.train import models as M
    from distill_studio.engine.train.data import BatchOrder, chat_format, encode, read_records

    plan = load_plan(plan_path)
    base = plan_path.parent
    records = read_records(plan.data.train, "data.train", base, plan.data.format, seq_len=plan.data.seq_len)
    s_tok = M.load_tokenizer(M.model_source(plan.student.model, base), "student.model")
    t_tok = M.load_tokenizer(M.model_source(plan.teacher.model, base), "teacher.model")
    chat = chat_format(s_tok, "student.model") or chat_format(t_tok, "teacher.model")
    examples = encode(records, s_tok, plan.data.seq_len, "data.train", chat=chat,
                      reasoning=plan.data.reasoning).examples
    seqs = plan.data.global_batch_tokens // plan.data.seq_len
    steps = plan.training.max_steps or max(1, math.ceil(plan.data.epochs * math.ceil(len(examples) / seqs)))
    lengths = [len(e.input_ids) for e in examples]
    return sum(lengths), BatchOrder(len(examples), seqs, plan.training.seed).tokens(lengths, steps)


# ------------------------------------------------------------------------------------------------------------------
# the bundled demos: planned tokens equal trained tokens

@pytest.mark.parametrize("name", ["chat-plan.toml", "plan.toml"])
def test_the_demos_planned_tokens_equal_the_engines_trained_tokens(name):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    path = DEMO / name
    a = analyse(load_plan(path), path.parent)
    per_epoch, trained = engine_count(path)
    assert a.tokens.how == "counted"
    assert a.tokens.per_epoch == per_epoch == a.sweep.job.tokens_per_epoch
    assert a.tokens.trained == trained == a.sweep.job.train_tokens
    # the review's figure for the chat demo: 162,563 trained (204,800 were planned from its bytes)
    assert trained == 162_563
    note = next(n for n in a.notes if n.startswith("token count"))
    assert note.startswith("token count counted with the student's tokenizer")
    assert f"the run's 100 steps train {trained:,}" in note
    doc = summary_dict(a, 3)
    assert doc["tokens"] == {"per_epoch": per_epoch, "trained": trained, "how": "counted", "note": note}
    assert note in doc["notes"]
    assert "; the run trains 163k in 100 steps (counted)" in render_text(a, 3)


def test_a_short_real_run_trains_the_tokens_the_planner_counted(tmp_path):
    """Conversations rendered with the chat template, a part second epoch (48 of 32 examples: the seeded order)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import tiny
    from distill_studio.engine.cli import main
    from distill_studio.engine.runs.events import read_events

    tiny.make_models(tmp_path)
    plan_path = tiny.write_plan(tmp_path, steps=6, extra="eval_at_start = false\nseed = 3")
    for f in ("train.jsonl", "eval.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / f).read_text().splitlines()]
        (tmp_path / f).write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}],
            "answer": r["answer"]}) + "\n" for r in rows))
    counted = token_count(load_plan(plan_path), tmp_path)
    assert counted.how == "counted" and counted.steps == 6
    assert main(["run", str(plan_path), "--run-dir", str(tmp_path / "run")]) == 0
    started = next(e for e in read_events(tmp_path / "run" / "events.jsonl") if e["type"] == "run_started")
    assert started["total_tokens"] == counted.trained
    assert (counted.per_epoch, counted.trained) == engine_count(plan_path)


# ------------------------------------------------------------------------------------------------------------------
# the batch order, reproduced without torch

@pytest.mark.parametrize("n,seed", [(1, 0), (2, 5), (97, 0), (6000, 0), (1000, 1_000_003 * 7 + 2),
                                    (500, 2**33 + 5)])
def test_the_permutation_is_torchs(n, seed):
    torch = pytest.importorskip("torch")
    assert permutation(n, seed) == torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def test_trained_tokens_are_the_batch_orders_over_whole_and_part_epochs():
    pytest.importorskip("torch")
    from distill_studio.engine.train.data import BatchOrder

    rng = random.Random(1)
    for n, batch, seed in ((5, 3, 4), (37, 8, 0), (200, 32, 9)):
        lengths = [rng.randint(1, 64) for _ in range(n)]
        for steps in (1, 2, 5, 7, 13):
            assert trained_tokens(lengths, batch, steps, seed) == BatchOrder(n, batch, seed).tokens(lengths, steps)


# ------------------------------------------------------------------------------------------------------------------
# the note says how the tokens were obtained

def demo_copy(tmp_path: Path, data: str = "train.jsonl", **replace: str) -> Path:
    """The demo plan in tmp_path, its models where they are (absolute paths), its data copied."""
    text = (DEMO / "plan.toml").read_text()
    text = text.replace('model = "teacher"', f'model = "{DEMO / "teacher"}"')
    text = text.replace('model = "student"', f'model = "{DEMO / "student"}"')
    for old, new in replace.items():
        text = text.replace(old, new)
    if data == "train.jsonl":
        shutil.copy(DEMO / "train.jsonl", tmp_path / "train.jsonl")
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_without_a_tokenizer_the_note_says_the_tokens_are_estimated_from_bytes(tmp_path):
    folder = tmp_path / "student-without-tokenizer"
    folder.mkdir()
    shutil.copy(DEMO / "student" / "config.json", folder / "config.json")
    path = demo_copy(tmp_path)
    text = path.read_text().replace(str(DEMO / "student"), str(folder)).replace(str(DEMO / "teacher"), str(folder))
    path.write_text(text)
    count = token_count(load_plan(path), tmp_path)
    size = (tmp_path / "train.jsonl").stat().st_size
    assert count.how == "estimated" and count.trained is None and count.per_epoch == size / 4
    assert count.note == (f"token count estimated from {size:,} bytes of data at 4 bytes a token (no tokenizer at "
                          "hand: neither the student nor the teacher is a local folder with a tokenizer.json)")


def test_data_that_cannot_be_counted_is_estimated_and_the_note_names_the_line(tmp_path):
    path = demo_copy(tmp_path)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    lines[2] = '{"prompt": "1+1=", "response": '
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    count = token_count(load_plan(path), tmp_path)
    assert count.how == "estimated"
    assert "not counted with the tokenizer" in count.note and "train.jsonl:3: not valid JSON" in count.note


def test_a_plan_giving_its_token_count_keeps_it_unless_its_data_can_be_counted(tmp_path):
    path = demo_copy(tmp_path)
    text = path.read_text().replace('train = "train.jsonl"\n', "tokens = 123456\n")
    count = token_count(loads_plan(text), tmp_path)
    assert (count.per_epoch, count.trained, count.how, count.note) == (123456.0, None, "given", "")
    # a data file and a count (the wizard's scan writes one): the data counted as training reads it wins
    both = loads_plan(path.read_text().replace('train = "train.jsonl"\n', 'train = "train.jsonl"\ntokens = 123456\n'))
    count = token_count(both, tmp_path)
    assert count.how == "counted" and count.trained == 162_563
    assert count.note.endswith("(data.tokens = 123,456 set aside: the data itself was counted)")
    # ...and where it cannot be counted, the given count stands
    (tmp_path / "train.jsonl").write_text("not json\n")
    assert token_count(both, tmp_path).how == "given"


# ------------------------------------------------------------------------------------------------------------------
# the cache

def test_the_count_is_cached_and_counted_again_when_what_decides_it_changes(tmp_path, monkeypatch):
    path = demo_copy(tmp_path)
    plan = load_plan(path)
    first = count_plan_tokens(plan, tmp_path)
    assert len(list(data_scan.cache_folder().glob("*.json"))) == 1
    calls = []
    real = data_scan.FileTokenizer
    monkeypatch.setattr(data_scan, "FileTokenizer", lambda folder: calls.append(folder) or real(folder))
    assert count_plan_tokens(plan, tmp_path) == first and calls == []         # read from the cache
    # another step count reuses the counted examples: only the run's sum changes
    fewer = count_plan_tokens(plan.model_copy(update={"training": plan.training.model_copy(
        update={"max_steps": 10})}), tmp_path)
    assert calls == [] and fewer.per_epoch == first.per_epoch and fewer.trained < first.trained
    # a shorter seq_len, the data changed, the tokenizer changed: counted again
    shorter = count_plan_tokens(plan.model_copy(update={"data": plan.data.model_copy(update={"seq_len": 16})}),
                                tmp_path)
    assert len(calls) == 1 and shorter.per_epoch < first.per_epoch
    with open(tmp_path / "train.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "1+2=", "response": "3", "answer": "3"}) + "\n")
    more = count_plan_tokens(plan, tmp_path)
    assert len(calls) == 2 and more.examples == first.examples + 1
    student = tmp_path / "student"
    shutil.copytree(DEMO / "student", student)
    plan2 = load_plan(path).model_copy(update={"student": plan.student.model_copy(update={"model": str(student)})})
    count_plan_tokens(plan2, tmp_path)
    assert len(calls) == 2                                                   # the same tokenizer files: cached
    (student / "tokenizer.json").write_text((student / "tokenizer.json").read_text().replace("\n", "\n "))
    count_plan_tokens(plan2, tmp_path)
    assert len(calls) == 3                                                   # its tokenizer.json changed


def test_a_cache_that_cannot_be_written_only_means_counting_again(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the data folder would be")
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(blocked))
    path = demo_copy(tmp_path)
    assert count_plan_tokens(load_plan(path), tmp_path).how == "counted"


# ------------------------------------------------------------------------------------------------------------------
# very large data: a sample


def test_large_data_is_counted_on_a_sample_and_extrapolated(tmp_path, monkeypatch):
    path = demo_copy(tmp_path)
    plan = load_plan(path)
    exact = count_plan_tokens(plan, tmp_path, cache=False)
    monkeypatch.setattr(data_scan, "SAMPLE_BYTES", 256 << 10)      # the demo's 600 KB count as "large" here
    monkeypatch.setattr(data_scan, "WINDOW_BYTES", 8 << 10)
    monkeypatch.setattr(data_scan, "SAMPLE_WINDOWS", 16)
    sampled = count_plan_tokens(plan, tmp_path, cache=False)
    assert sampled.how == "sampled"
    assert re.search(r"on a sample of 1[23]\d KiB of the 601 KiB of data \(1,2\d\d examples", sampled.note), \
        sampled.note                                                    # 16 stretches of 8 KiB, whole lines
    assert abs(sampled.per_epoch / exact.per_epoch - 1) < 0.03
    assert abs(sampled.examples / exact.examples - 1) < 0.03
    assert abs(sampled.trained / exact.trained - 1) < 0.03
    # deterministic: the same sample again
    assert count_plan_tokens(plan, tmp_path, cache=False) == sampled


def test_a_large_txt_file_is_sampled_by_documents(tmp_path, monkeypatch):
    rng = random.Random(0)
    docs = ["\n".join(" ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(3, 30)))
                      for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    (tmp_path / "train.txt").write_text("\n\n".join(docs) + "\n")
    path = demo_copy(tmp_path, data="train.txt", **{'train = "train.jsonl"': 'train = "train.txt"'})
    plan = load_plan(path)
    exact = count_plan_tokens(plan, tmp_path, cache=False)
    monkeypatch.setattr(data_scan, "SAMPLE_BYTES", 64 << 10)
    monkeypatch.setattr(data_scan, "WINDOW_BYTES", 8 << 10)
    monkeypatch.setattr(data_scan, "SAMPLE_WINDOWS", 16)
    sampled = count_plan_tokens(plan, tmp_path, cache=False)
    assert sampled.how == "sampled" and exact.how == "counted"
    assert abs(sampled.per_epoch / exact.per_epoch - 1) < 0.05
    assert abs(sampled.examples / exact.examples - 1) < 0.05


# ------------------------------------------------------------------------------------------------------------------
# the planner path stays light

def test_counting_the_demo_imports_neither_torch_nor_transformers(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        tried = []
        class Recorder:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    tried.append(name)
                return None
        sys.meta_path.insert(0, Recorder())
        from distill_studio.engine.planner import token_count
        from distill_studio.engine.plan import load_plan
        from pathlib import Path
        c = token_count(load_plan({str(DEMO / 'plan.toml')!r}), Path({str(DEMO)!r}))
        print(json.dumps({{"how": c.how, "tried": sorted(set(tried))}}))
    """)
    env = {**os.environ, "DISTILL_STUDIO_DATA_DIR": str(tmp_path / "data")}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"how": "counted", "tried": []}


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_a_large_table_is_sampled_by_runs_of_rows(tmp_path, monkeypatch, suffix):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from pyarrow import ipc

    rows = [json.loads(line) for line in (DEMO / "train.jsonl").read_text().splitlines()]
    table = pa.Table.from_pylist(rows)
    data = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, data, row_group_size=500)
    else:
        with ipc.new_stream(str(data), table.schema) as w:
            w.write_table(table, max_chunksize=500)
    path = demo_copy(tmp_path, data=data.name, **{'train = "train.jsonl"': f'train = "{data.name}"'})
    plan = load_plan(path)
    exact = count_plan_tokens(plan, tmp_path, cache=False)
    assert exact.how == "counted" and exact.trained == 162_563            # the table holds the demo's records
    monkeypatch.setattr(data_scan, "SAMPLE_BYTES", data.stat().st_size // 4)
    monkeypatch.setattr(data_scan, "WINDOW_BYTES", data.stat().st_size // 100)
    monkeypatch.setattr(data_scan, "SAMPLE_WINDOWS", 8)
    sampled = count_plan_tokens(plan, tmp_path, cache=False)
    assert sampled.how == "sampled"
    assert re.search(r"on a sample of \d+ KiB of the \d+ KiB of data \(\d+ examples", sampled.note), sampled.note
    assert abs(sampled.per_epoch / exact.per_epoch - 1) < 0.05
    assert abs(sampled.examples / exact.examples - 1) < 0.05


# ------------------------------------------------------------------------------------------------------------------
# the tokenizer read from tokenizer.json answers as transformers' does, on the published chat templates

RECORDS = [
    {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "Why?"},
                  {"role": "assistant", "content": "Because.", "reasoning_content": "Think it over first."}]},
    {"messages": [{"role": "user", "content": "Long " * 40}, {"role": "assistant", "content": "answer " * 60}]},
    {"messages": [{"role": "user", "content": "No answer"}]},
    {"prompt": "7+8=", "response": "15"},
    {"text": "plain text, trained whole " * 5},
]


@pytest.mark.parametrize("reasoning", ["keep", "strip"])
@pytest.mark.parametrize("name", ["gemma-3", "phi-4", "phi-4-mini", "qwen2.5", "qwq"])
def test_the_file_tokenizer_encodes_as_training_does(tmp_path, name, reasoning):
    pytest.importorskip("transformers")
    from test_chat import tiny_tokenizer
    from transformers import AutoTokenizer

    from distill_studio.engine.train.data import chat_format, encode

    tiny_tokenizer(name).save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    trained_with = AutoTokenizer.from_pretrained(tmp_path)
    ours = data_scan.FileTokenizer(tmp_path)
    assert ours.eos_token_id == trained_with.eos_token_id is not None
    expected = encode(RECORDS, trained_with, 96, chat=chat_format(trained_with, "student.model"), reasoning=reasoning)
    counted = encode(RECORDS, ours, 96, chat=data_scan.load_chat(str(tmp_path / "tokenizer.json"), "student.model"),
                     reasoning=reasoning)
    assert [(e.input_ids, e.labels) for e in counted.examples] == [(e.input_ids, e.labels) for e in expected.examples]
    assert (counted.truncated, counted.dropped) == (expected.truncated, expected.dropped) and expected.truncated
