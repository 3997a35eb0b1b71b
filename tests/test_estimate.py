"""The estimator: calibration against published measurements, memory and time arithmetic, Pareto front, solver."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_studio.engine.catalog.hardware import load_accelerators
from distill_studio.engine.catalog.models import resolve_model
from distill_studio.engine.estimate.calibration import errors, load_measurements
from distill_studio.engine.estimate.ranges import at_confidence
from distill_studio.engine.estimate.core import ADAPTERS, GIB, TEACHER_MODES, Job, evaluate
from distill_studio.engine.estimate.shape import lora_params, shape_of
from distill_studio.engine.estimate.solve import decide, reason
from distill_studio.engine.estimate.sweep import Machine, build_grid, pareto_front, run_sweep
from distill_studio.engine.plan import load_plan
from distill_studio.engine.planner import analyse

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "calibration_measurements.csv"


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))


# --- calibration ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measurements():
    return load_measurements(TABLE)


def test_calibration_table_covers_what_the_fit_claims(measurements):
    fitted = [m for m in measurements if m.fitted]
    assert len(fitted) >= 15
    assert len({m.source for m in fitted}) >= 2
    assert {m.accelerator for m in fitted} >= {"a100-80gb-sxm", "h100-sxm"}
    sizes = [m.shape.params / 1e9 for m in fitted]
    assert min(sizes) <= 1.5 and max(sizes) >= 65
    seqs = [m.seq_len for m in fitted]
    assert min(seqs) <= 2048 and max(seqs) >= 8192


def test_throughput_within_published_measurements(measurements):
    fitted = [m for m in measurements if m.fitted]
    err = np.abs(errors(fitted))
    assert np.median(err) <= 0.15, f"median error {np.median(err):.1%}"
    worst = fitted[int(np.argmax(err))]
    assert err.max() <= 0.35, f"{worst.id} off by {err.max():.1%}"


def test_estimate_never_exceeds_faster_stacks(measurements):
    ceilings = [m for m in measurements if m.ceiling]
    assert ceilings, "the table keeps Megatron/NeMo rows as ceilings"
    assert np.all(errors(ceilings) < 0), "a faster stack's figure is a ceiling our estimate must not pass"


# --- one configuration ----------------------------------------------------------------------------------------------

def _machine(acc_id: str = "h100-sxm", gpus: int = 8, nodes: int = 1) -> Machine:
    a = load_accelerators()[acc_id]
    return Machine(id="m", accelerator=a.id, gpus=gpus, peak_tflops=a.bf16_dense_tflops, hbm_gb=a.hbm_gb,
                   hbm_gb_per_s=a.hbm_gb_per_s, intra_gb_per_s=450.0, inter_gb_per_s=400.0 if nodes > 1 else 0.0,
                   usd_per_hour={"dedicated": 100.0}, max_nodes=nodes, priorities=("dedicated",))


def _one(student="llama-3.1-8b", teacher=None, *, acc="h100-sxm", gpus=8, nodes=1, seq=4096, adapter="full",
         mode=None, recompute=False, tprec="bf16", shard_all=None, chunked=True, tokens=1e9, optimizer="adamw"):
    s = resolve_model(student)
    t = resolve_model(teacher) if teacher else None
    mode = mode or ("online" if t else "none")
    job = Job(student=shape_of(s), teacher=shape_of(t) if t else None,
              method="ce" if t is None else ("seq-kd" if mode == "generate" else "logit-kd"),
              seq_len=seq, tokens_per_epoch=tokens, epochs=1, global_batch_tokens=1 << 20,
              lora_params=lora_params(s, 16), chunked_logits=chunked, optimizer=optimizer)
    grid, labels = build_grid([_machine(acc, gpus, nodes)], has_teacher=t is not None, teacher_modes=(mode,),
                              nodes=nodes)
    out = evaluate(job, grid)
    pick = (grid.adapter == ADAPTERS.index(adapter)) & (grid.recompute == recompute)
    pick &= grid.teacher_mode == TEACHER_MODES.index(mode)
    pick &= grid.extra["teacher_precision"] == labels["teacher_precision"].index(tprec if t else "bf16")
    if shard_all is None:
        shard_all = nodes > 1
    pick &= grid.sharding == (2 if shard_all else 1 if gpus > 1 else 0)
    i = int(np.flatnonzero(pick)[0])
    return {k: v[i] for k, v in out.items()}


def test_memory_total_is_the_sum_of_its_parts():
    r = _one(teacher="qwq-32b", student="qwen2.5-7b")
    parts = sum(r[k] for k in r if k.startswith("mem_") and k not in ("mem_total", "mem_usable"))
    assert r["mem_total"] == pytest.approx(parts)


def test_full_training_states_are_16_bytes_per_parameter_sharded():
    r = _one(gpus=8)
    p = resolve_model("llama-3.1-8b").params
    states = r["mem_weights"] + r["mem_gradients"] + r["mem_optimizer"]
    # fp32 master weights, fp32 gradients and two Adam moments, split over 8 GPUs, plus two gathered bf16 blocks
    # and the root group (embeddings, head), gathered in bf16 for the whole micro-step
    shape = shape_of(resolve_model("llama-3.1-8b"))
    block, root = shape.layer_params, shape.params - shape.num_layers * shape.layer_params
    assert states == pytest.approx(16 * p / 8 + 2 * 2 * block + 2 * root, rel=0.01)


def test_lora_keeps_frozen_bf16_weights_and_tiny_optimizer():
    full, lora = _one(gpus=1, adapter="full"), _one(gpus=1, adapter="lora")
    p = resolve_model("llama-3.1-8b").params
    assert lora["mem_optimizer"] < full["mem_optimizer"] / 100
    assert lora["mem_weights"] == pytest.approx(2 * p, rel=0.05)
    assert lora["tokens_per_second_per_gpu"] > full["tokens_per_second_per_gpu"]


def test_8bit_adamw_keeps_a_quarter_of_the_optimiser_state():
    plain, eight = _one(gpus=8), _one(gpus=8, optimizer="adamw-8bit")
    p = resolve_model("llama-3.1-8b").params
    assert eight["mem_optimizer"] == pytest.approx(2 * p / 8, rel=0.05)  # two uint8 moments and block scales
    assert plain["mem_optimizer"] / eight["mem_optimizer"] == pytest.approx(4, rel=0.05)
    assert eight["mem_total"] < plain["mem_total"] and eight["mem_weights"] == plain["mem_weights"]
    lora_plain, lora_eight = _one(gpus=1, adapter="lora"), _one(gpus=1, adapter="lora", optimizer="adamw-8bit")
    assert lora_eight["mem_optimizer"] < lora_plain["mem_optimizer"] / 3.9


def test_recomputation_trades_speed_for_activation_memory():
    off, on = _one(recompute=False), _one(recompute=True)
    assert on["mem_activations"] < off["mem_activations"] / 5
    assert on["tokens_per_second_per_gpu"] < off["tokens_per_second_per_gpu"]
    # recomputation adds one forward pass: about a third more work
    assert off["tokens_per_second_per_gpu"] / on["tokens_per_second_per_gpu"] == pytest.approx(4 / 3, rel=0.1)


def test_chunked_logits_matter_for_a_262k_vocabulary():
    chunked = _one("gemma-3-4b", "gemma-3-27b", seq=8192, chunked=True)
    whole = _one("gemma-3-4b", "gemma-3-27b", seq=8192, chunked=False)
    v = resolve_model("gemma-3-4b").vocab_size
    # unchunked: 8192 tokens x 262k x (10 student + 6 teacher) bytes, about 32 GiB
    assert whole["mem_logits"] == pytest.approx(8192 * v * 16, rel=0.01)
    assert whole["mem_logits"] / chunked["mem_logits"] == pytest.approx(8, rel=0.01)


def test_quantised_teacher_needs_less_memory_and_runs_slower():
    r = {p: _one("qwen2.5-7b", "qwq-32b", gpus=1, adapter="lora", recompute=True, tprec=p) for p in ("bf16", "int8", "int4")}
    assert r["bf16"]["mem_teacher"] > r["int8"]["mem_teacher"] > r["int4"]["mem_teacher"]
    assert r["bf16"]["mem_teacher"] == pytest.approx(2 * resolve_model("qwq-32b").params, rel=0.05)
    assert not r["bf16"]["fits"] and r["int4"]["fits"]
    assert r["int8"]["tokens_per_second_per_gpu"] < r["bf16"]["tokens_per_second_per_gpu"]


def test_offline_topk_trains_faster_than_online_but_pays_a_teacher_pass():
    online = _one("qwen2.5-7b", "qwq-32b", adapter="lora", mode="online")
    offline = _one("qwen2.5-7b", "qwq-32b", adapter="lora", mode="offline-topk")
    assert offline["tokens_per_second_per_gpu"] > 2 * online["tokens_per_second_per_gpu"]
    assert online["prepass_hours"] == 0 and offline["prepass_hours"] > 0
    assert offline["mem_teacher"] == 0 and online["mem_teacher"] > 0


def test_generation_is_bandwidth_bound_and_scales_with_tokens():
    small = _one("phi-4-mini", "phi-4", mode="generate", tokens=1e8)
    big = _one("phi-4-mini", "phi-4", mode="generate", tokens=2e8)
    assert big["prepass_hours"] == pytest.approx(2 * small["prepass_hours"], rel=1e-6)
    h100 = _one("phi-4-mini", "phi-4", mode="generate", tokens=1e8, acc="h200")
    assert h100["prepass_hours"] < small["prepass_hours"]  # more HBM bandwidth, faster decoding


def test_a_teacher_too_big_for_a_node_cannot_generate():
    r = _one("qwen2.5-0.5b", "qwq-32b", mode="generate", acc="t4", gpus=1)
    assert not r["fits_prepass"] and not r["fits"]


def test_more_nodes_cost_more_gpu_hours_but_finish_sooner():
    one, four = _one(nodes=1, tokens=1e10), _one(nodes=4, tokens=1e10)
    assert four["train_hours"] < one["train_hours"] / 3
    assert four["tokens_per_second_per_gpu"] <= one["tokens_per_second_per_gpu"] * 1.001


def test_cost_is_hours_times_nodes_times_price():
    r = _one(nodes=2)
    assert r["cost_usd"] == pytest.approx(r["total_hours"] * 2 * 100.0)


# --- Pareto front and solver ----------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 100), st.floats(1, 1e5)), min_size=1, max_size=60))
def test_pareto_front_is_exactly_the_undominated_points(points):
    h = np.array([p[0] for p in points])
    c = np.array([p[1] for p in points])
    front = set(pareto_front(h, c).tolist())
    for i in range(len(points)):
        dominated = np.any((h <= h[i]) & (c <= c[i]) & ((h < h[i]) | (c < c[i])))
        if dominated:
            assert i not in front
    # every undominated (time, cost) pair is represented on the front
    for i in range(len(points)):
        if not np.any((h <= h[i]) & (c <= c[i]) & ((h < h[i]) | (c < c[i]))):
            assert any(h[j] == h[i] and c[j] == c[i] for j in front)
    f = sorted(front, key=lambda j: h[j])
    assert all(c[a] > c[b] for a, b in zip(f, f[1:]))


@pytest.fixture(scope="module")
def qwq_sweep():
    plan = load_plan(ROOT / "resources" / "plans" / "qwq32b-to-qwen7b-3h.toml")
    import os

    os.environ.setdefault("DISTILL_STUDIO_DATA_DIR", "/nonexistent-distill-cache")
    return plan, analyse(plan)


def test_sweep_is_large_and_complete(qwq_sweep):
    _, a = qwq_sweep
    assert len(a.sweep) >= 10_000
    rows = {(a.sweep.label("machine", i), int(a.sweep.grid.nodes[i])) for i in range(len(a.sweep))}
    assert ("Standard_ND96isr_H100_v5", 16) in rows and ("Standard_ND96isr_H100_v5", 1) in rows


def test_recommendation_is_the_cheapest_option_meeting_the_budget(qwq_sweep):
    plan, a = qwq_sweep
    d, o = a.decision, a.sweep.out
    assert d.recommended is not None
    i = d.recommended
    # judged and ranked at the plan's confidence (P80): its time and cost at P80, not its medians
    hq, cq = at_confidence(a.sweep, plan.budget.confidence)
    assert hq[i] <= plan.budget.hours and cq[i] <= plan.budget.usd
    meets = np.flatnonzero(d.meets & np.isfinite(o["cost_usd"]))
    assert cq[i] == pytest.approx(cq[meets].min())


def test_every_rejected_option_has_a_reason(qwq_sweep):
    plan, a = qwq_sweep
    o = a.sweep.out
    seen = set()
    for i in np.flatnonzero(a.planned & ~a.decision.meets):
        r = a.reason(int(i))
        assert r, f"option {i} rejected without a reason"
        seen.add(r.split(":")[0])
        if r.startswith("does not fit"):
            assert not o["fits"][i]
        if r.startswith("misses the deadline"):   # at the plan's confidence (P80): its upper figure
            assert at_confidence(a.sweep, plan.budget.confidence)[0][i] > plan.budget.hours
    assert {"does not fit", "misses the deadline"} <= seen
    for i in np.flatnonzero(a.decision.meets)[:50]:
        assert a.reason(int(i)) in ("", "price unknown in this region")


def test_an_impossible_budget_names_the_fastest_and_cheapest(qwq_sweep):
    plan, a = qwq_sweep
    d = decide(a.sweep, a.planned, hours_cap=0.01, usd_cap=None)
    assert d.recommended is None
    assert "0.01 h" in d.impossible
    o = a.sweep.out
    assert d.fastest is not None and d.cheapest is not None
    assert o["total_hours"][d.fastest] == pytest.approx(o["total_hours"][d.candidates].min())
    priced = d.candidates & np.isfinite(o["cost_usd"])
    assert o["cost_usd"][d.cheapest] == pytest.approx(o["cost_usd"][priced].min())


def test_cost_cap_alone_picks_the_fastest_under_it(qwq_sweep):
    _, a = qwq_sweep
    o = a.sweep.out
    d = decide(a.sweep, a.planned, hours_cap=None, usd_cap=300.0)
    i = d.recommended
    assert o["cost_usd"][i] <= 300.0
    under = a.planned & o["fits"] & (o["cost_usd"] <= 300.0)
    assert o["total_hours"][i] == pytest.approx(o["total_hours"][under].min())


def test_reason_over_budget_names_the_figures(qwq_sweep):
    _, a = qwq_sweep
    o = a.sweep.out
    ok = np.flatnonzero(a.planned & o["fits"] & np.isfinite(o["cost_usd"]))
    i = int(ok[np.argmax(o["cost_usd"][ok])])
    text = reason(a.sweep, i, hours_cap=None, usd_cap=1.0, planned=a.planned)
    assert text.startswith("over budget: $") and "> $1" in text


def test_sweep_runs_on_a_local_machine():
    s = resolve_model("qwen2.5-0.5b")
    job = Job(student=shape_of(s), teacher=None, method="ce", seq_len=1024, tokens_per_epoch=1e6, epochs=1,
              global_batch_tokens=65536)
    sw = run_sweep(job, [_machine("a10", 1)], ("none",))
    assert len(sw) == 3 * 3  # adapters x recomputation (off, full, selective), one node, one priority
    assert np.all(sw.out["fits"][sw.grid.adapter == 1])  # LoRA on a 0.5B model fits a 24 GB card
    assert np.all(sw.out["mem_total"] > 1.5 * GIB)


def test_sliding_window_bounds_attention_work():
    from dataclasses import replace

    gemma = resolve_model("gemma-3-4b")
    long = 32768
    full = replace(gemma, sliding_window_tokens=0)
    all_local = replace(gemma, global_attention_every=0)
    a, b, c = (shape_of(m).attention_flops_fwd(long) for m in (full, gemma, all_local))
    assert a > b > c  # every layer global > 1 in 6 global > every layer windowed
    assert c == pytest.approx(4.0 * shape_of(gemma).attn_width * gemma.num_layers * gemma.sliding_window_tokens)
