"""Activation recomputation: the plan's three modes, the engine's selective policy, the estimator's account of it."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from distill_studio.engine.errors import PlanError
from distill_studio.engine.plan import loads_plan
from distill_studio.engine.train import recompute

PLAN = """
name = "recompute"
[teacher]
model = "qwen2.5-7b-instruct"
[student]
model = "qwen2.5-0.5b-instruct"
[data]
train = "train.jsonl"
[training]
"""


def _training(extra: str):
    return loads_plan(PLAN + extra).training


def test_old_plans_gradient_checkpointing_reads_as_full_or_off():
    assert _training("gradient_checkpointing = true").recompute == "full"
    assert _training("gradient_checkpointing = false").recompute == "off"
    assert _training("").recompute == "off"
    assert _training('recompute = "selective"').recompute == "selective"
    # written back, the plan names the mode only
    plan = loads_plan(PLAN + "gradient_checkpointing = true")
    assert 'recompute = "full"' in plan.to_toml() and "gradient_checkpointing" not in plan.to_toml()


@pytest.mark.parametrize("extra, words", [
    ('recompute = "some"', ["recompute", "selective"]),
    ('gradient_checkpointing = true\nrecompute = "off"', ["gradient_checkpointing", "recompute", "disagree"]),
    ('gradient_checkpointing = "yes"', ["gradient_checkpointing", "true or false"]),
])
def test_a_bad_recompute_setting_is_named(extra, words):
    with pytest.raises(PlanError) as err:
        _training(extra)
    for w in words:
        assert w in str(err.value)


def _tiny(layers: int = 3):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=24, hidden_size=64, intermediate_size=256, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg)
    model.train()
    model.config.use_cache = False
    return model


def peak_bytes(step) -> int:
    """Highest running sum of the bytes torch allocates on the CPU during ``step()`` (profiler memory events)."""
    from torch import profiler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profiler.profile(activities=[profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
    running = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.nbytes()):
        running += nbytes
        peak = max(peak, running)
    return peak


def _step_peak_and_grads(mode: str, ids) -> tuple[int, torch.Tensor]:
    model = _tiny()
    recompute.enable(model, mode)
    model(input_ids=ids, labels=ids).loss.backward()     # first step: lazy allocations, the gradients' storage
    peak = peak_bytes(lambda: model(input_ids=ids, labels=ids).loss.backward())
    grads = torch.cat([p.grad.flatten() for p in model.parameters()]) / 2  # two steps accumulated
    return peak, grads


def test_selective_recompute_gives_the_same_gradients_with_memory_between_off_and_full():
    ids = torch.randint(0, 24, (4, 32), generator=torch.Generator().manual_seed(0))
    peaks, grads = {}, {}
    for mode in recompute.MODES:
        peaks[mode], grads[mode] = _step_peak_and_grads(mode, ids)
    for mode in ("full", "selective"):
        torch.testing.assert_close(grads[mode], grads["off"], rtol=1e-5, atol=1e-6)
    assert peaks["full"] < peaks["selective"] < peaks["off"], peaks


def test_the_selective_policy_keeps_matmuls_and_recomputes_the_rest():
    aten = torch.ops.aten
    assert recompute.selective_policy(None, aten.mm.default) == recompute.CheckpointPolicy.MUST_SAVE
    assert recompute.selective_policy(None, aten.addmm.default) == recompute.CheckpointPolicy.MUST_SAVE
    assert recompute.selective_policy(None, aten.bmm.default) == recompute.CheckpointPolicy.MUST_SAVE
    for op in (aten.mul.Tensor, aten.silu.default, aten.add.Tensor, aten.rsqrt.default):
        assert recompute.selective_policy(None, op) == recompute.CheckpointPolicy.PREFER_RECOMPUTE
    assert recompute.checkpoint_kwargs("off") is None
    assert "context_fn" not in recompute.checkpoint_kwargs("full")
    with pytest.raises(ValueError, match="training.recompute"):
        recompute.checkpoint_kwargs("partial")


# ---- the estimator -------------------------------------------------------------------------------------------------

DEMO_STUDENT = Path(__file__).resolve().parents[1] / "resources" / "demo" / "student"


def _sweep(student: str, accelerator: str, *, seq: int = 4096, micro: int | None = None, cpu: bool = False,
           precision: str = "bf16-mixed"):
    from distill_studio.engine.catalog.hardware import load_accelerators
    from distill_studio.engine.catalog.models import model_from_hf_config, resolve_model
    from distill_studio.engine.estimate.core import Job, evaluate
    from distill_studio.engine.estimate.shape import shape_of
    from distill_studio.engine.estimate.sweep import Machine, build_grid

    spec = model_from_hf_config(Path(student)) if Path(student).is_dir() else resolve_model(student)
    acc = load_accelerators()[accelerator]
    machine = Machine(id="local", accelerator=acc.id, gpus=1, peak_tflops=acc.bf16_dense_tflops, hbm_gb=acc.hbm_gb,
                      hbm_gb_per_s=acc.hbm_gb_per_s, intra_gb_per_s=0.0, inter_gb_per_s=0.0, usd_per_hour={},
                      max_nodes=1, priorities=("dedicated",), provision="local")
    job = Job(student=shape_of(spec), teacher=None, method="ce", seq_len=seq, tokens_per_epoch=1e9, epochs=1.0,
              global_batch_tokens=seq * (micro or 8), micro_batch_seqs=micro, precision=precision, cpu=cpu)
    grid, _ = build_grid([machine], has_teacher=False, teacher_modes=("none",), nodes=1)
    out = evaluate(job, grid)
    rows = {}
    for k, mode in enumerate(("off", "full", "selective")):
        rows[mode] = int(np.flatnonzero((grid.adapter == 0) & (grid.recompute == k))[0])
    return out, rows


def test_selective_costs_less_time_than_full_and_less_memory_than_off():
    out, i = _sweep("qwen2.5-7b", "h100-sxm", micro=2)
    speed = {m: out["tokens_per_second_per_gpu"][k] for m, k in i.items()}
    act = {m: out["mem_activations"][k] for m, k in i.items()}
    assert speed["full"] < speed["selective"] < speed["off"]
    # no matmul is recomputed: only the elementwise work, a few per cent of the step, not full's ~25%
    assert speed["selective"] / speed["off"] > 0.95 > 0.85 > speed["full"] / speed["off"]
    assert act["full"] < act["selective"] < act["off"]
    # MFU counts the work the method needs: the same for all three, so it follows the speed
    assert out["mfu"][i["selective"]] / out["mfu"][i["off"]] == pytest.approx(speed["selective"] / speed["off"])


def test_calibration_rows_say_what_they_recomputed(tmp_path):
    from distill_studio.engine.estimate.calibration import load_measurements

    rows = {m.id: m for m in load_measurements(Path(__file__).parent / "data" / "calibration_measurements.csv")}
    layer = rows["torchtitan-a100-llama2-13b-selective-layer-bs2"]
    assert (layer.checkpointing, layer.recompute_blocks) == ("full", 0.5)
    op = rows["torchtitan-a100-llama2-13b-selective-op-bs2"]
    assert op.checkpointing == "selective" and 0.3 < op.recompute_matmul_share < 0.45  # wk, wo, w3 of q k v o w1 w3 w2
    assert rows["ibm-blog-a100-llama2-13b"].recompute_blocks == 0.5
    assert rows["torchtitan-a100-llama2-13b-no-bs2"].checkpointing == "off"
    # a value the table does not know is named, with the row and what is valid
    bad = tmp_path / "bad.csv"
    text = (Path(__file__).parent / "data" / "calibration_measurements.csv").read_text().splitlines()
    bad.write_text("\n".join([text[0]] + [line.replace(",bf16,selective-op,", ",bf16,sometimes,", 1)
                                          for line in text[1:] if "selective-op" in line][:1]) + "\n")
    with pytest.raises(ValueError, match=r"row torchtitan.*activation_checkpointing 'sometimes'.*blocks:p/q"):
        load_measurements(bad)


def test_published_pairs_that_differ_only_in_recomputation_keep_their_ratio():
    """torchtitan's A100 Llama 2 13B runs (same cluster, batch and sequence): selective op, selective layer (every
    second block in full) and none. The model's ratios between them follow the measured ones within 5%."""
    from distill_studio.engine.estimate.calibration import load_measurements, predict

    rows = {m.id: m for m in load_measurements(Path(__file__).parent / "data" / "calibration_measurements.csv")}
    ids = ["torchtitan-a100-llama2-13b-no-bs2", "torchtitan-a100-llama2-13b-selective-op-bs2",
           "torchtitan-a100-llama2-13b-selective-layer-bs2"]
    pred = predict([rows[k] for k in ids])
    meas = np.array([rows[k].tokens_per_second_per_gpu for k in ids])
    assert pred[1:] / pred[0] == pytest.approx(meas[1:] / meas[0], rel=0.05)


def test_selective_activation_memory_of_the_demo_student_is_where_it_is_measured():
    """The estimator's activations per mode against the peak of a real forward and backward of the demo's student
    (fp32 on the CPU, 32 x 64 tokens): the parts the modes differ by agree within 25%, and selective sits between
    full and off where the measurement puts it (within 0.1 of the way from full to off)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(DEMO_STUDENT)
    ids = torch.randint(3, cfg.vocab_size, (32, 64), generator=torch.Generator().manual_seed(0))
    measured = {}
    for mode in recompute.MODES:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.train()
        model.config.use_cache = False
        recompute.enable(model, mode)
        model(input_ids=ids, labels=ids).loss.backward()
        measured[mode] = peak_bytes(lambda: model(input_ids=ids, labels=ids).loss.backward())
    out, i = _sweep(str(DEMO_STUDENT), "cpu", seq=64, micro=32, cpu=True, precision="fp32")
    est = {m: float(out["mem_activations"][k]) for m, k in i.items()}
    assert est["off"] - est["selective"] == pytest.approx(measured["off"] - measured["selective"], rel=0.25)
    assert est["selective"] - est["full"] == pytest.approx(measured["selective"] - measured["full"], rel=0.25)
    share = lambda d: (d["selective"] - d["full"]) / (d["off"] - d["full"])  # noqa: E731
    assert share(est) == pytest.approx(share(measured), abs=0.1), (est, measured)
