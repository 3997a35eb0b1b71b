"""Runs on conversations, the optimiser and schedule options, and what a run says about its data: tiny models on
the CPU, nothing downloaded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from distill_studio.engine.cli import main  # noqa: E402
from distill_studio.engine.plan import load_plan  # noqa: E402
from distill_studio.engine.runs.events import read_events  # noqa: E402
from distill_studio.engine.train.data import BatchOrder  # noqa: E402
from distill_studio.engine.train.optim import adamw_kind, make_optimizer, make_schedule  # noqa: E402

import tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def as_chats(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                                     {"role": "assistant", "content": r["response"]}],
                                        "answer": r["answer"]}) + "\n" for r in rows))


def test_a_run_on_conversations_trains_through_the_chat_template(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=6, extra="log_every = 2\neval_at_start = false")
    plan.write_text(plan.read_text().replace("kd_weight = 0.5", "kd_weight = 1.0"))
    as_chats(tmp_path / "train.jsonl")
    as_chats(tmp_path / "eval.jsonl")
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "run")]) == 0
    events = read_events(tmp_path / "run" / "events.jsonl")
    logs = " ".join(e.get("message", "") for e in events if e["type"] == "log")
    assert "data.train: 32 conversations (messages) (data.format auto)" in logs
    metrics = [e for e in events if e["type"] == "metric"]
    assert [m["step"] for m in metrics] == [1, 2, 4, 6]  # the first step, then every log_every-th
    assert all("ce_loss" in m and "kd_loss" in m for m in metrics)  # worked out on the logged steps
    assert [e["step"] for e in events if e["type"] == "eval"] == [6]  # eval_at_start = false
    started = next(e for e in events if e["type"] == "run_started")
    # exactly the tokens the six steps read: 8 examples each from the seeded order
    from transformers import AutoTokenizer

    from distill_studio.engine.train.data import chat_format, encode, read_records

    tok = AutoTokenizer.from_pretrained(tmp_path / "student")
    examples = encode(read_records(tmp_path / "train.jsonl"), tok, 16, chat=chat_format(tok, "s")).examples
    order = BatchOrder(len(examples), 8, 0)
    exact = sum(len(examples[i].input_ids) for step in range(6) for i in order.global_batch_indices(step))
    assert started["total_tokens"] == exact == metrics[-1]["tokens_seen"]


def test_batch_order_counts_tokens_exactly_across_epochs():
    lengths = [3, 5, 7, 11, 13]
    order = BatchOrder(5, 3, seed=4)
    for steps in (1, 2, 5, 7):
        brute = sum(lengths[i] for s in range(steps) for i in order.global_batch_indices(s))
        assert order.tokens(lengths, steps) == brute
    assert order.tokens(lengths, 7, first=2) == order.tokens(lengths, 7) - order.tokens(lengths, 2)


def test_seq_kd_on_conversations_writes_turns_and_trains_on_them(tmp_path):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, kind="seq-kd", mode="generate", steps=2)
    as_chats(tmp_path / "train.jsonl")
    as_chats(tmp_path / "eval.jsonl")
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "run")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "generated" / "teacher.jsonl").read_text().splitlines()]
    assert len(lines) == 32
    assert all([m["role"] for m in line["messages"]] == ["user", "assistant"] for line in lines)


def test_logit_kd_refuses_templates_that_render_differently(tmp_path, capsys):
    teacher, student = tiny.make_models(tmp_path)
    (student / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'user' %}={% endif %}{% endfor %}")
    plan = tiny.write_plan(tmp_path, steps=1)
    as_chats(tmp_path / "train.jsonl")
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "render the first conversation differently" in err and "Traceback" not in err


def test_explicit_format_names_the_line_of_another_shape(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=1)
    plan.write_text(plan.read_text().replace('[data]\n', '[data]\nformat = "messages"\n'))
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert 'train.jsonl:1: data.format is "messages" but this record is prompt-response' in err


# ---- optimiser and schedule -------------------------------------------------------------------------------------
def test_adamw_is_fused_on_plain_cpu_tensors_and_matches_the_loop():
    torch.manual_seed(0)
    params = [torch.randn(7, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    assert adamw_kind(params, torch.device("cpu")) == "fused"
    twins = [p.detach().clone().requires_grad_() for p in params]

    class T:
        learning_rate, weight_decay, optimizer, warmup_steps, lr_schedule = 0.1, 0.01, "adamw", 0, "constant"

    fused = make_optimizer(params, T, torch.device("cpu"))
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW(twins, lr=0.1, weight_decay=0.01, foreach=False)
    for _ in range(3):
        for group in (params, twins):
            for p in group:
                p.grad = torch.ones_like(p) * p.detach().sum()
        fused.step()
        loop.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params, twins))


@pytest.mark.parametrize("schedule, expected", [
    ("cosine", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ("linear", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
])
def test_schedules_warm_up_then_decay_or_hold(schedule, expected):
    class T:
        learning_rate, weight_decay, optimizer, warmup_steps, lr_schedule = 1.0, 0.0, "adamw", 2, schedule

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_schedule(opt, T, total_steps=4)
    seen = []
    for _ in range(5):
        seen.append(round(sched.get_last_lr()[0], 6))
        opt.step()
        sched.step()
    assert seen == expected


def test_8bit_adamw_is_refused_without_a_gpu(tmp_path, capsys):
    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=1, extra='optimizer = "adamw-8bit"')
    assert main(["run", str(plan), "--run-dir", str(tmp_path / "run")]) != 0
    assert 'training.optimizer: "adamw-8bit" (bitsandbytes) needs an NVIDIA GPU' in capsys.readouterr().err
    assert load_plan(plan).training.optimizer == "adamw-8bit"


def test_the_engine_keeps_freed_memory_for_reuse_on_linux():
    import sys

    from distill_studio.engine.train.run import tune_cpu_allocator

    assert tune_cpu_allocator() is sys.platform.startswith("linux")


def test_the_allocator_setting_can_be_left_off(monkeypatch):
    from distill_studio.engine.train.run import tune_cpu_allocator

    monkeypatch.setenv("DISTILL_CPU_ALLOCATOR", "default")
    assert tune_cpu_allocator() is False
