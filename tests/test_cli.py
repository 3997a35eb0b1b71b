"""`distill …` end to end: plan (text and JSON) on every demo plan, estimate, catalog, prices, and what bad input
gets back (exit code 2, one short message naming the field or file, never a traceback).

Most tests call ``main([...])`` in-process; a few run the installed console script where the process boundary is
the point (exit status, stderr). Every test points ``DISTILL_STUDIO_DATA_DIR`` at an empty folder so that no price
cache of the user's is read.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distill_studio.engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
PLANS_DIR = ROOT / "resources" / "plans"
DEMO_PLANS = sorted(PLANS_DIR.glob("*.toml"))
PLAN_IDS = [p.stem for p in DEMO_PLANS]
HF_CONFIGS = ROOT / "tests" / "data" / "hf_configs"
QWQ_3H = PLANS_DIR / "qwq32b-to-qwen7b-3h.toml"
DATA_DIR_ENV = "DISTILL_STUDIO_DATA_DIR"
ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")

LLAMA_8X_H100 = ["estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--gpus", "8",
                 "--seq-len", "8192", "--global-batch-tokens", "1048576"]
QWEN_8X_H100 = ["estimate", "--model", "qwen2.5-7b", "--accelerator", "h100-sxm", "--gpus", "8"]


def test_there_are_six_demo_plans():
    assert len(DEMO_PLANS) == 6, DEMO_PLANS


# --------------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "distill-data"))


def cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``main(argv)`` in-process: (exit code, stdout, stderr). Argparse's SystemExit becomes its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def cli_json(argv: list[str]):
    rc, out, err = cli([*argv, "--json"])
    assert rc == 0, err
    return strict_json(out)


def strict_json(text: str):
    """Parse as RFC 8259 JSON: NaN and Infinity (which Python's json writes and reads by default) are errors."""
    def reject(name):
        raise AssertionError(f"output is not valid JSON: it contains {name}")
    return json.loads(text, parse_constant=reject)


def distill_exe() -> list[str]:
    script = Path(sys.executable).with_name("distill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "distill_studio.engine.cli"]


def run_distill(args: list[str], data_dir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, DATA_DIR_ENV: str(data_dir)}
    return subprocess.run([*distill_exe(), *[str(a) for a in args]], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def assert_user_error(rc: int, err: str, *must_contain: str, max_lines: int = 3) -> None:
    """Exit 2, a short message on stderr naming what is wrong, and no traceback."""
    assert rc == 2, f"exit code {rc}, stderr: {err}"
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= max_lines, f"expected a short message, got {len(lines)} lines:\n{err}"
    assert "error" in lines[0].lower()
    for text in must_contain:
        assert text in err, f"{text!r} not in stderr: {err}"


_CACHE: dict[tuple, tuple[int, str, str]] = {}


def cached_cli(argv: list[str]) -> tuple[int, str, str]:
    """Plan runs are the slow part; every demo plan is analysed once per format. The data dir is set per test, and
    bundled prices do not depend on it while it is empty."""
    key = tuple(str(a) for a in argv)
    if key not in _CACHE:
        _CACHE[key] = cli(list(argv))
    return _CACHE[key]


def plan_doc(plan: Path) -> dict:
    rc, out, err = cached_cli(["plan", plan, "--json"])
    assert rc == 0, err
    return strict_json(out)


def plan_text(plan: Path) -> str:
    rc, out, err = cached_cli(["plan", plan])
    assert rc == 0, err
    assert err == ""
    return out


def with_budget_hours(plan: Path, hours: float, dest: Path) -> Path:
    text = plan.read_text(encoding="utf-8")
    new, n = re.subn(r"(?m)^hours = .*$", f"hours = {hours}", text)
    assert n == 1
    dest.write_text(new, encoding="utf-8")
    return dest


# --------------------------------------------------------------------------------------------------------
# distill plan: text


@pytest.mark.parametrize("plan", DEMO_PLANS, ids=PLAN_IDS)
def test_plan_text_has_an_answer_a_front_and_notes(plan):
    out = plan_text(plan)
    assert out.startswith(f"Plan {plan.stem}\n")
    assert ("\nRecommendation\n" in out) or ("\nNo option meets the budget: " in out)
    if "\nRecommendation\n" in out:
        block = out.split("\nRecommendation\n", 1)[1].split("\n\n", 1)[0]
        assert " × Standard_" in block and "GiB per GPU" in block and "tokens/s per GPU" in block
        assert re.search(r"\$[\d,]+", block), block
        assert "  why: " in block
    assert "\nPareto front, cost versus time (as planned)\n" in out
    assert re.search(r"^[\d,]+ of [\d,]+ options as planned meet the budget \([\d,]+ configurations swept\)$",
                     out, re.M), out
    assert "\nNotes\n  - " in out
    # the prices in use, with their date
    assert re.search(r"^  prices    eastus, bundled, from \d{4}-\d{2}-\d{2}$", out, re.M), out


@pytest.mark.parametrize("plan", [p for p in DEMO_PLANS if p.stem.startswith("phi4")], ids=lambda p: p.stem)
def test_phi4_plans_use_sequence_level_kd(plan):
    out = plan_text(plan)
    assert "method    sequence-level KD" in out
    assert "logit KD" not in out
    doc = plan_doc(plan)
    assert {o["teacher_mode"] for o in doc["options"]} == {"generate"}
    rec = doc["recommendation"]
    assert rec["teacher_mode"] == "generate" and rec["hours"]["teacher_pass"] > 0


@pytest.mark.parametrize("plan", [p for p in DEMO_PLANS if not p.stem.startswith("phi4")], ids=lambda p: p.stem)
def test_qwq_and_gemma_plans_note_that_padded_logits_are_sliced(plan):
    out = plan_text(plan)
    assert "method    logit KD" in out
    notes = out.split("\nNotes\n", 1)[1]
    sliced = [line for line in notes.splitlines() if "sliced" in line]
    assert len(sliced) == 1, notes
    assert "padded" in sliced[0] and "real tokens" in sliced[0]
    assert any("sliced" in n for n in plan_doc(plan)["notes"])


def test_plan_text_counts_agree_with_the_json():
    out, doc = plan_text(QWQ_3H), plan_doc(QWQ_3H)
    m = re.search(r"^([\d,]+) of ([\d,]+) options as planned meet the budget \(([\d,]+) configurations swept\)$",
                  out, re.M)
    meeting, planned, swept = (int(g.replace(",", "")) for g in m.groups())
    assert (meeting, planned, swept) == (doc["options_meeting_budget"], doc["options_as_planned"],
                                         doc["configurations_swept"])
    rejected = re.search(r"^Rejected: (.*)$", out, re.M).group(1)
    counts = {k: int(v.replace(",", "")) for k, v in re.findall(r"([a-z ]+) \(([\d,]+)\)", rejected)}
    assert meeting + sum(counts.values()) == planned
    by_reason: dict[str, int] = {}
    for o in doc["options"]:
        if not o["meets_budget"]:
            key = o["reason"].split(":")[0]
            by_reason[key] = by_reason.get(key, 0) + 1
    assert {k.strip(): v for k, v in counts.items()} == by_reason


def test_plan_text_recommendation_matches_the_json():
    out, rec = plan_text(QWQ_3H), plan_doc(QWQ_3H)["recommendation"]
    block = out.split("\nRecommendation\n", 1)[1].split("\n\n", 1)[0]
    assert f"{rec['nodes']} × {rec['sku']}" in block
    assert f"${rec['cost_usd']:,.0f}" in block
    assert f"{rec['hours']['total']:.1f} h" in block
    assert f"why: {rec['why']}" in block


# --------------------------------------------------------------------------------------------------------
# distill plan --json


@pytest.mark.parametrize("plan", DEMO_PLANS, ids=PLAN_IDS)
def test_plan_json_answers_the_budget(plan):
    doc = plan_doc(plan)
    for key in ("recommendation", "pareto", "options", "top", "configurations_swept", "prices", "budget", "notes"):
        assert key in doc, key
    budget = doc["budget"]
    assert budget["hours"] is not None
    assert ISO_DATE.fullmatch(doc["prices"]["date"]), doc["prices"]

    rec = doc["recommendation"]
    assert rec is not None, doc["impossible"]
    assert rec["sku"].startswith("Standard_") and isinstance(rec["nodes"], int) and rec["nodes"] >= 1
    assert rec["memory_gib_per_gpu"]["total"] > 0 and rec["fits"] is True
    assert isinstance(rec["why"], str) and rec["why"]
    assert rec["hours"]["total"] <= budget["hours"]
    assert rec["cost_usd"] is not None
    if budget["usd"] is not None:
        assert rec["cost_usd"] <= budget["usd"]

    # the recommendation is the cheapest option that meets the budget (ties: the faster), both at the plan's
    # confidence: the figures the budget is judged on
    meeting = [o for o in doc["options"] if o["meets_budget"]]
    assert meeting and len(meeting) == doc["options_meeting_budget"]
    at = rec["range"]["at_confidence"]
    cheapest = min(o["range"]["at_confidence"]["cost_usd"] for o in meeting)
    assert at["cost_usd"] == pytest.approx(cheapest)
    assert at["hours"] == pytest.approx(min(o["range"]["at_confidence"]["hours"] for o in meeting
                                            if o["range"]["at_confidence"]["cost_usd"] == at["cost_usd"]))
    assert any(o["index"] == rec["index"] for o in meeting)


@pytest.mark.parametrize("plan", DEMO_PLANS, ids=PLAN_IDS)
def test_plan_json_options_carry_reasons(plan):
    doc = plan_doc(plan)
    budget = doc["budget"]
    options = doc["options"]
    assert len(options) == doc["options_as_planned"] > 0
    assert len({o["index"] for o in options}) == len(options)
    for o in options:
        assert isinstance(o["reason"], str)
        assert o["meets_budget"] == (o["reason"] == ""), o
        if o["meets_budget"]:
            assert o["fits"] is True
            assert o["hours"]["total"] <= budget["hours"]
            assert o["cost_usd"] is not None
            if budget["usd"] is not None:
                assert o["cost_usd"] <= budget["usd"]
        elif o["reason"].startswith("does not fit"):
            assert o["fits"] is False
        elif o["reason"].startswith("misses the deadline"):
            # at the plan's confidence (P80), which lies inside the option's P10-P90 range
            assert o["range"]["hours"][1] > budget["hours"] and f"P{round(budget['confidence'] * 100)}" in o["reason"]
        elif o["reason"].startswith("over budget"):
            assert o["range"]["cost_usd"][1] > budget["usd"]
        else:
            assert o["reason"] == "price unknown in this region" and o["cost_usd"] is None, o
    # meeting options first, cheapest first at the plan's confidence
    flags = [o["meets_budget"] for o in options]
    assert flags == sorted(flags, reverse=True)
    costs = [o["range"]["at_confidence"]["cost_usd"] for o in options if o["meets_budget"]]
    assert costs == sorted(costs)


@pytest.mark.parametrize("plan", DEMO_PLANS, ids=PLAN_IDS)
def test_plan_json_pareto_front_is_a_front(plan):
    doc = plan_doc(plan)
    front = doc["pareto"]
    assert isinstance(front, list) and len(front) >= 2
    # time and cost at the plan's confidence, as the budget is judged
    hours = [p["range"]["at_confidence"]["hours"] for p in front]
    costs = [p["range"]["at_confidence"]["cost_usd"] for p in front]
    assert all(c is not None for c in costs)
    assert hours == sorted(hours), "front is not sorted by hours"
    assert all(a > b for a, b in zip(costs, costs[1:])), "cost does not strictly fall along the front"
    # nothing that fits dominates a point on the front
    runnable = [o["range"]["at_confidence"] for o in doc["options"] if o["fits"] and o["cost_usd"] is not None
                and o["hours"]["total"] is not None]
    for p, h, c in zip(front, hours, costs):
        assert not any(o["hours"] <= h and o["cost_usd"] < c - 0.005 for o in runnable), p
    # the recommendation (the cheapest in time) is on the front
    assert doc["recommendation"]["index"] in {p["index"] for p in front}


def test_plan_json_for_the_qwq_plan_sweeps_many_configurations():
    doc = plan_doc(QWQ_3H)
    assert doc["configurations_swept"] >= 10_000
    assert doc["configurations_swept"] > doc["options_as_planned"]
    assert doc["teacher"]["id"] == "qwq-32b" and doc["student"]["id"] == "qwen2.5-7b"
    assert doc["budget"] == {"hours": 3.0, "usd": 3000.0, "confidence": 0.8}


def test_plan_json_top_is_the_cheapest_options_meeting_the_budget():
    doc = plan_doc(QWQ_3H)
    top = doc["top"]
    assert len(top) == 10  # the default
    assert all(o["meets_budget"] for o in top)
    assert [o["index"] for o in top] == [o["index"] for o in doc["options"][:10]]
    assert top[0]["index"] == doc["recommendation"]["index"]


def test_plan_top_3_limits_the_list():
    doc = cli_json(["plan", QWQ_3H, "--top", "3"])
    assert len(doc["top"]) == 3
    assert len(doc["options"]) == doc["options_as_planned"] > 3  # --top does not cut the full list
    rc, out, _ = cli(["plan", QWQ_3H, "--top", "3"])
    assert rc == 0
    table = out.split("\nTop 3 by cost\n", 1)[1]
    rows = [line for line in table.splitlines()[1:] if re.match(r"^\s+[\d.]+ [hd]\s", line)]
    assert len(rows) == 3


def test_plan_json_has_no_nan_or_infinity_even_for_options_that_cannot_run():
    # the Phi-4 plans contain options whose teacher pass cannot run at all (infinite hours)
    for plan in DEMO_PLANS:
        rc, out, err = cached_cli(["plan", plan, "--json"])
        assert rc == 0, err
        assert "NaN" not in out and "Infinity" not in out, plan.stem
    phi = plan_doc(PLANS_DIR / "phi4-to-phi4mini-3h.toml")
    assert any(o["hours"]["total"] is None for o in phi["options"])


# --------------------------------------------------------------------------------------------------------
# distill estimate


def mem_parts_sum(mem: dict) -> float:
    return sum(v for k, v in mem.items() if k not in ("total", "usable"))


def test_estimate_json_plain_training():
    row = cli_json(LLAMA_8X_H100)
    for key in ("tokens_per_second_per_gpu", "mfu", "memory_gib_per_gpu", "fits", "hours"):
        assert key in row, key
    assert row["model"] == "llama-3.1-8b" and row["teacher"] is None and row["teacher_mode"] == "none"
    assert row["seq_len"] == 8192 and row["gpus"] == 8 and row["nodes"] == 1
    assert row["tokens_per_second_per_gpu"] > 0
    assert 0 < row["mfu"] < 1
    mem = row["memory_gib_per_gpu"]
    for part in ("weights", "gradients", "optimizer", "activations", "logits", "overhead", "total"):
        assert part in mem and mem[part] >= 0, part
    assert mem["teacher"] == 0
    assert mem["total"] == pytest.approx(mem_parts_sum(mem), abs=0.01)
    assert isinstance(row["fits"], bool)
    assert row["hours"]["total"] > 0
    # micro-batch × accumulation × GPUs × sequence = the global batch
    assert row["micro_batch_seqs"] * row["grad_accum_steps"] * 8 * 8192 == 1_048_576


def test_estimate_json_with_a_teacher():
    plain = cli_json(QWEN_8X_H100)
    kd = cli_json([*QWEN_8X_H100, "--teacher", "qwq-32b"])
    assert kd["model"] == "qwen2.5-7b" and kd["teacher"] == "qwq-32b" and kd["teacher_mode"] == "online"
    mem = kd["memory_gib_per_gpu"]
    assert mem["teacher"] > 1.0  # the online teacher's weights live beside the student
    assert mem["total"] == pytest.approx(mem_parts_sum(mem), abs=0.01)
    assert mem["total"] > plain["memory_gib_per_gpu"]["total"]
    # the teacher's forward pass costs time
    assert kd["tokens_per_second_per_gpu"] < plain["tokens_per_second_per_gpu"]


def test_estimate_recompute_trades_activation_memory_for_speed():
    off = cli_json([*QWEN_8X_H100, "--teacher", "qwq-32b"])
    on = cli_json([*QWEN_8X_H100, "--teacher", "qwq-32b", "--recompute"])
    sel = cli_json([*QWEN_8X_H100, "--teacher", "qwq-32b", "--recompute", "selective"])
    assert (on["recompute"], off["recompute"], sel["recompute"]) == ("full", "off", "selective")
    assert on["memory_gib_per_gpu"]["activations"] < off["memory_gib_per_gpu"]["activations"] / 2
    assert on["tokens_per_second_per_gpu"] < off["tokens_per_second_per_gpu"]
    # selective keeps the matmul outputs: between the two in memory, nearer to off in speed
    act = [r["memory_gib_per_gpu"]["activations"] for r in (on, sel, off)]
    assert act == sorted(act) and len(set(act)) == 3
    assert on["tokens_per_second_per_gpu"] < sel["tokens_per_second_per_gpu"] < off["tokens_per_second_per_gpu"]
    rc, out, _ = cli([*QWEN_8X_H100, "--recompute", "selective"])
    assert rc == 0 and "recompute selective" in out.splitlines()[1]
    rc, _, err = cli([*QWEN_8X_H100, "--recompute", "partly"])
    assert rc == 2 and "--recompute" in err and "selective" in err


def test_estimate_lora_lowers_optimizer_memory():
    full = cli_json(QWEN_8X_H100)
    lora = cli_json([*QWEN_8X_H100, "--adapter", "lora"])
    assert lora["adapter"] == "lora"
    assert full["memory_gib_per_gpu"]["optimizer"] > 1.0
    assert lora["memory_gib_per_gpu"]["optimizer"] < full["memory_gib_per_gpu"]["optimizer"] / 10
    assert lora["memory_gib_per_gpu"]["gradients"] < full["memory_gib_per_gpu"]["gradients"]


def test_estimate_unchunked_logits_cost_a_lot_of_memory_on_a_big_vocabulary():
    args = ["estimate", "--model", "gemma-3-4b", "--accelerator", "h100-sxm", "--gpus", "8", "--seq-len", "8192"]
    chunked = cli_json(args)
    full = cli_json([*args, "--unchunked-logits"])
    assert chunked["chunked_logits"] is True and full["chunked_logits"] is False
    c, f = chunked["memory_gib_per_gpu"]["logits"], full["memory_gib_per_gpu"]["logits"]
    assert f > 4 * c and f - c > 5.0, (c, f)  # 262k vocabulary × 8k tokens
    assert full["memory_gib_per_gpu"]["total"] > chunked["memory_gib_per_gpu"]["total"] + 5.0


def test_estimate_fp8_on_a100_is_refused_naming_precision():
    rc, out, err = cli(["estimate", "--model", "qwen2.5-7b", "--accelerator", "a100-80gb-sxm", "--precision", "fp8"])
    assert_user_error(rc, err, "--precision", "bf16")
    assert out == ""


def test_estimate_fp8_on_h100_is_faster_than_bf16():
    bf16 = cli_json(QWEN_8X_H100)
    fp8 = cli_json([*QWEN_8X_H100, "--precision", "fp8"])
    assert fp8["precision"] == "fp8"
    assert fp8["tokens_per_second_per_gpu"] > bf16["tokens_per_second_per_gpu"]


@pytest.mark.parametrize("target", ["folder", "file"])
def test_estimate_from_a_hugging_face_config(target):
    folder = HF_CONFIGS / "gemma-3-4b-it"
    path = folder if target == "folder" else folder / "config.json"
    args = ["--accelerator", "h100-sxm", "--gpus", "8", "--seq-len", "4096"]
    local = cli_json(["estimate", "--model-config", path, *args])
    catalog = cli_json(["estimate", "--model", "gemma-3-4b", *args])
    assert local["model"] == "local:gemma-3-4b-it"
    # the published config describes the catalog's Gemma 3 4B
    assert local["memory_gib_per_gpu"]["weights"] == pytest.approx(catalog["memory_gib_per_gpu"]["weights"],
                                                                   rel=0.02)
    assert local["tokens_per_second_per_gpu"] == pytest.approx(catalog["tokens_per_second_per_gpu"], rel=0.05)


def test_estimate_needs_exactly_one_model():
    rc, _, err = cli(["estimate", "--accelerator", "h100-sxm"])
    assert_user_error(rc, err, "--model", "--model-config")
    rc, _, err = cli(["estimate", "--model", "qwen2.5-7b", "--model-config", HF_CONFIGS / "gemma-3-4b-it",
                      "--accelerator", "h100-sxm"])
    assert_user_error(rc, err, "--model", "--model-config")


def test_estimate_refuses_logit_kd_across_tokenizers_and_points_to_seq_kd():
    args = ["estimate", "--model", "phi-4-mini", "--teacher", "phi-4", "--accelerator", "h100-sxm", "--gpus", "8"]
    for mode in ("online", "offline-topk"):
        rc, out, err = cli([*args, "--teacher-mode", mode])
        assert_user_error(rc, err, "seq-kd", "--teacher-mode generate", "tokenizer")
        assert out == ""
    row = cli_json([*args, "--teacher-mode", "generate"])
    assert row["teacher"] == "phi-4" and row["teacher_mode"] == "generate"


def test_estimate_text_reports_speed_memory_time_and_fit():
    rc, out, err = cli(LLAMA_8X_H100)
    assert rc == 0 and err == ""
    row = cli_json(LLAMA_8X_H100)
    assert out.startswith("Llama 3.1 8B on 8 × NVIDIA H100")
    assert f"{row['tokens_per_second_per_gpu']:,.0f} tokens/s per GPU" in out
    assert f"total {row['memory_gib_per_gpu']['total']:.1f}" in out
    assert f"{row['hours']['total']:.1f} h" in out  # the time for --tokens
    assert ("\n  fits\n" in out) == row["fits"]


def test_estimate_tokens_scale_the_time():
    one = cli_json([*QWEN_8X_H100, "--tokens", "1e9"])
    ten = cli_json([*QWEN_8X_H100, "--tokens", "1e10"])
    assert ten["hours"]["training"] == pytest.approx(10 * one["hours"]["training"], rel=1e-6)


# --------------------------------------------------------------------------------------------------------
# distill catalog


@pytest.mark.parametrize("what", ["models", "accelerators", "skus"])
def test_catalog_json_lists_entries_with_ids(what):
    rows = cli_json(["catalog", what])
    assert isinstance(rows, list) and len(rows) >= 3
    ids = [r["id"] for r in rows]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)
    rc, out, _ = cli(["catalog", what])
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == len(rows) + 1
    for r, line in zip(rows, lines[1:]):
        assert line.split()[0] == r["id"]


def test_catalog_text_columns_line_up():
    for what in ("models", "accelerators", "skus"):
        _, out, _ = cli(["catalog", what])
        header, *rows = out.splitlines()
        starts = [m.start() for m in re.finditer(r"(?<=  )\S", header)]
        for row in rows:
            for s in starts:
                assert row[s - 1] == " " and row[s] != " ", f"{what}: misaligned row {row!r}"


def test_every_catalog_model_id_is_accepted_by_estimate():
    models = cli_json(["catalog", "models"])
    ids = [m["id"] for m in models]
    assert {"qwq-32b", "qwen2.5-7b", "gemma-3-4b", "phi-4", "phi-4-mini", "llama-3.1-8b"} <= set(ids)
    for model in ids:
        row = cli_json(["estimate", "--model", model, "--accelerator", "h100-sxm", "--gpus", "8",
                        "--seq-len", "2048"])
        assert row["model"] == model
        assert row["tokens_per_second_per_gpu"] > 0


def test_every_catalog_sku_accelerator_is_an_azure_accelerator():
    accelerators = {a["id"]: a for a in cli_json(["catalog", "accelerators"])}
    skus = cli_json(["catalog", "skus"])
    for s in skus:
        acc = accelerators[s["accelerator"]]
        assert acc["comparison_only"] is False and acc["cloud"] == "azure", s["id"]
        assert s["id"].startswith("Standard_")


def test_tpus_are_comparison_only_accelerators_and_never_back_a_sku():
    accelerators = cli_json(["catalog", "accelerators"])
    tpus = [a for a in accelerators if "tpu" in a["id"].lower()]
    assert tpus, "the catalog lists TPUs for comparison"
    for a in tpus:
        assert a["comparison_only"] is True and a["cloud"] != "azure"
    tpu_ids = {a["id"] for a in tpus}
    assert not any(s["accelerator"] in tpu_ids or "tpu" in s["accelerator"].lower()
                   for s in cli_json(["catalog", "skus"]))
    _, text, _ = cli(["catalog", "accelerators"])
    for line in text.splitlines()[1:]:
        assert ("(comparison)" in line) == (line.split()[0] in tpu_ids), line
    # and the planner never offers one
    assert not any("tpu" in o["accelerator"] for o in plan_doc(QWQ_3H)["options"])


# --------------------------------------------------------------------------------------------------------
# Bad input: exit code 2, a short message naming the field or file, no traceback


def test_unknown_model_suggests_the_closest_ids(tmp_path):
    r = run_distill(["estimate", "--model", "qwen2.5-7", "--accelerator", "h100-sxm"], tmp_path)
    assert_user_error(r.returncode, r.stderr, "qwen2.5-7", "--model", "did you mean")
    suggested = r.stderr.split("did you mean:", 1)[1]
    assert suggested.strip().startswith("qwen2.5-7b")
    assert r.stdout == ""


def test_unknown_teacher_and_accelerator_name_their_option():
    rc, _, err = cli([*QWEN_8X_H100, "--teacher", "qwq-3"])
    assert_user_error(rc, err, "--teacher", "qwq-32b")
    rc, _, err = cli(["estimate", "--model", "qwen2.5-7b", "--accelerator", "h1000"])
    assert_user_error(rc, err, "--accelerator", "h1000", "h100")


def test_malformed_config_json_names_the_file_and_the_field(tmp_path):
    cfg = json.loads((HF_CONFIGS / "Qwen2.5-0.5B-Instruct" / "config.json").read_text(encoding="utf-8"))
    cfg["hidden_size"] = "big"
    folder = tmp_path / "bad-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    r = run_distill(["estimate", "--model-config", folder / "config.json", "--accelerator", "h100-sxm"],
                    tmp_path / "data")
    assert_user_error(r.returncode, r.stderr, str(folder / "config.json"), "hidden_size", "'big'")
    # the folder, and the folder given as --model, say the same
    rc, _, err = cli(["estimate", "--model", folder, "--accelerator", "h100-sxm"])
    assert_user_error(rc, err, "config.json", "hidden_size")


def test_config_json_that_is_not_json_gives_line_and_column(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{\n  "hidden_size": 896,\n  oops\n}\n', encoding="utf-8")
    rc, _, err = cli(["estimate", "--model-config", bad, "--accelerator", "h100-sxm"])
    assert_user_error(rc, err, str(bad), "line 3")


def test_plan_that_is_not_toml_gives_line_and_column(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "broken"\n[teacher\nmodel = "qwq-32b"\n', encoding="utf-8")
    r = run_distill(["plan", bad], tmp_path / "data")
    assert_user_error(r.returncode, r.stderr, str(bad), "not valid TOML")
    assert re.search(r"line 2, column \d+", r.stderr), r.stderr
    assert r.stdout == ""


def test_missing_plan_file_names_the_path(tmp_path):
    missing = tmp_path / "no-such-plan.toml"
    r = run_distill(["plan", missing], tmp_path / "data")
    assert_user_error(r.returncode, r.stderr, str(missing), "no such plan file")
    rc, _, err = cli(["plan", missing, "--json"])
    assert_user_error(rc, err, str(missing))


def test_a_folder_given_as_plan_is_a_clear_error(tmp_path):
    rc, _, err = cli(["plan", tmp_path])
    assert_user_error(rc, err, str(tmp_path))


def test_impossible_budget_names_the_fastest_and_the_cheapest(tmp_path):
    plan = with_budget_hours(QWQ_3H, 0.01, tmp_path / "impossible.toml")
    rc, out, err = cli(["plan", plan])
    # an answer, not an error
    assert rc == 0 and err == ""
    assert "\nRecommendation\n" not in out
    line = re.search(r"^No option meets the budget: (.*)$", out, re.M)
    assert line and "0.01 h" in line.group(1), out
    # durations in the unit that reads best (s, min, h, d)
    fastest = re.search(r"^  fastest:  ([\d.]+ (?:s|min|h|d)), cost (\S+) — (\d+) × (\S+)", out, re.M)
    cheapest = re.search(r"^  cheapest: \$([\d,]+), ([\d.]+ (?:s|min|h|d)) — (\d+) × (\S+)", out, re.M)
    assert fastest and cheapest, out
    assert "0 of " in out and "Top " not in out

    doc = cli_json(["plan", plan])
    assert doc["recommendation"] is None
    assert "0.01 h" in doc["impossible"]
    assert doc["options_meeting_budget"] == 0 and doc["top"] == []
    assert all(not o["meets_budget"] and o["reason"] for o in doc["options"])
    runnable = [o for o in doc["options"] if o["fits"] and o["hours"]["total"] is not None]
    f, c = doc["fastest"], doc["cheapest"]
    at = [o["range"]["at_confidence"] for o in runnable]      # ranked at the plan's confidence, as judged
    assert f["range"]["at_confidence"]["hours"] == pytest.approx(min(x["hours"] for x in at))
    assert f["hours"]["total"] > 0.01
    assert c["range"]["at_confidence"]["cost_usd"] == pytest.approx(
        min(x["cost_usd"] for x in at if x["cost_usd"] is not None))
    assert c["hours"]["total"] >= f["hours"]["total"]
    # the text shows the same two options
    assert hours_of(fastest.group(1)) == pytest.approx(f["hours"]["total"], rel=0.05, abs=0.05)
    assert (int(fastest.group(3)), fastest.group(4).rstrip(",")) == (f["nodes"], f["sku"])
    assert int(cheapest.group(1).replace(",", "")) == round(c["cost_usd"])
    assert hours_of(cheapest.group(2)) == pytest.approx(c["hours"]["total"], rel=0.05, abs=0.05)
    assert (int(cheapest.group(3)), cheapest.group(4).rstrip(",")) == (c["nodes"], c["sku"])


def hours_of(text: str) -> float:
    """ "24 min" -> 0.4 (the report's durations)."""
    value, unit = text.split()
    return float(value) * {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "d": 24.0}[unit]


def test_zero_gpus_names_the_option_and_the_range(tmp_path):
    r = run_distill(["estimate", "--model", "qwen2.5-7b", "--accelerator", "h100-sxm", "--gpus", "0"], tmp_path)
    assert_user_error(r.returncode, r.stderr, "--gpus", "0", "1 to 4,096")
    assert r.stdout == ""


@pytest.mark.parametrize("flag, value, allowed", [
    ("--seq-len", "-5", "16 to 1,048,576"),
    ("--seq-len", "0", "16 to 1,048,576"),
    ("--gpus", "-1", "1 to 4,096"),
    ("--global-batch-tokens", "0", "16 to 1,000,000,000"),
    ("--lora-rank", "0", "1 to 1,024"),
    ("--tokens", "0", "1 to"),
    ("--tokens", "nan", "1 to"),
    ("--gpus", "2.5", "1 to 4,096"),
    ("--seq-len", "long", "16 to 1,048,576"),
])
def test_out_of_range_numbers_name_the_option_and_the_range(flag, value, allowed):
    rc, out, err = cli(["estimate", "--model", "qwen2.5-7b", "--accelerator", "h100-sxm", f"{flag}={value}"])
    assert_user_error(rc, err, flag, value, allowed)
    assert err.count(flag) == 1, err  # named once, not "--gpus: --gpus: ..."
    assert "e+" not in err  # ranges in plain digits
    assert out == ""


def test_top_zero_is_refused():
    rc, _, err = cli(["plan", QWQ_3H, "--top", "0"])
    assert_user_error(rc, err, "--top", "1 to 10,000")


def test_plan_with_zero_epochs_names_the_field_and_the_range(tmp_path):
    text = QWQ_3H.read_text(encoding="utf-8")
    new, n = re.subn(r"(?m)^epochs = .*$", "epochs = 0", text)
    assert n == 1
    plan = tmp_path / "zero-epochs.toml"
    plan.write_text(new, encoding="utf-8")
    r = run_distill(["plan", plan], tmp_path / "data")
    assert_user_error(r.returncode, r.stderr, str(plan), "data.epochs", "greater than 0")


def test_plan_with_negative_seq_len_names_the_field(tmp_path):
    text = QWQ_3H.read_text(encoding="utf-8")
    plan = tmp_path / "neg.toml"
    plan.write_text(re.sub(r"(?m)^seq_len = .*$", "seq_len = -5", text), encoding="utf-8")
    rc, _, err = cli(["plan", plan])
    assert_user_error(rc, err, "data.seq_len", "-5", "at least 16")


def test_gpus_not_a_multiple_of_the_node_size_says_how_to_fix_it():
    rc, _, err = cli(["estimate", "--model", "qwen2.5-7b", "--accelerator", "h100-sxm", "--gpus", "12"])
    assert_user_error(rc, err, "--gpus", "12", "--gpus-per-node")
    row = cli_json(["estimate", "--model", "qwen2.5-7b", "--accelerator", "h100-sxm", "--gpus", "12",
                    "--gpus-per-node", "4"])
    assert (row["gpus"], row["nodes"]) == (12, 3)


def test_seq_len_beyond_the_models_context_is_refused():
    rc, _, err = cli(["estimate", "--model", "qwen2.5-7b", "--accelerator", "h100-sxm", "--seq-len", "65536"])
    assert_user_error(rc, err, "--seq-len", "32,768")


def test_no_command_is_a_usage_error():
    rc, out, err = cli([])
    assert rc == 2 and out == ""
    assert "Traceback" not in err and "command" in err


# --------------------------------------------------------------------------------------------------------
# distill prices


def test_prices_show_prints_the_date_of_the_prices(capsys):
    assert main(["prices", "show", "--region", "eastus"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert re.fullmatch(r"\d+ prices for eastus \((bundled|cache|live), from \d{4}-\d{2}-\d{2}\)", first), first
    rows = [line for line in out.splitlines() if line.startswith("  Standard_")]
    assert len(rows) == int(first.split()[0])
    assert all(re.search(r"\$\s*[\d,]+\.\d\d/h$", r) for r in rows)


def test_prices_show_for_a_region_without_prices_says_so(capsys):
    assert main(["prices", "show", "--region", "westeurope"]) == 0
    out = capsys.readouterr().out
    assert "from )" not in out
    assert "westeurope" in out.splitlines()[0]
    assert "unknown" in out and "distill prices refresh --region westeurope" in out


def test_prices_show_bad_region_is_a_clear_error():
    rc, _, err = cli(["prices", "show", "--region", "east us!"])
    assert_user_error(rc, err, "east us!", "region")


def test_plan_in_a_region_without_prices_has_no_empty_date(tmp_path):
    text = (PLANS_DIR / "gemma3-27b-to-4b-3h.toml").read_text(encoding="utf-8")
    plan = tmp_path / "westeurope.toml"
    plan.write_text(text.replace('region = "eastus"', 'region = "westeurope"'), encoding="utf-8")
    rc, out, err = cli(["plan", plan])
    assert rc == 0, err
    prices_line = re.search(r"^  prices    .*$", out, re.M).group(0)
    assert not prices_line.rstrip().endswith("from"), prices_line
    assert "westeurope" in prices_line
    doc = cli_json(["plan", plan])
    for o in doc["options"]:
        assert o["meets_budget"] == (o["reason"] == "")
    assert doc["options_meeting_budget"] == sum(o["meets_budget"] for o in doc["options"])


def test_an_impossible_budget_says_what_each_limit_alone_allows(tmp_path):
    text = QWQ_3H.read_text(encoding="utf-8").replace("usd = 3000", "usd = 60")
    plan = tmp_path / "tight.toml"
    plan.write_text(text, encoding="utf-8")
    doc = cli_json(["plan", plan])
    assert doc["recommendation"] is None
    why = doc["impossible"]
    assert "no option costs under $60 at P80" in why
    m = re.search(r"the cheapest option within 3 h at P80 costs \$([\d,]+) at P80 \((\d+) × (\S+)\)", why)
    assert m, why
    assert int(m.group(1).replace(",", "")) > 60        # what the cap would have to be for a 3 h run
