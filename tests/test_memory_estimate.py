"""The estimator's memory per device against the measured peak of one real training step of the engine.

A 32,768-token vocabulary at 512 tokens per micro-batch, trained in fp32 on the CPU as the engine does there: the
torch-allocated peak (profiler memory events plus the storages alive when the step starts, as
benchmarks/bench_memory.py measures it) must be within 25% of the estimator's breakdown without its runtime
overhead (CUDA context, workspaces and allocator slack, which torch-allocated bytes do not contain), chunked and
unchunked; and chunking the KD loss must cut the peak well below the unchunked reference's.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torch.profiler")

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "benchmarks" / "bench_memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


B = _bench()
CONFIG = dict(model_type="qwen2", vocab_size=32768, hidden_size=64, intermediate_size=256, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-6,
              tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
SEQ, MICRO, CHUNK = 128, 4, 128


def case(chunk: int | None, name: str):
    return B.Case(name, "small", {**CONFIG, "num_hidden_layers": 2}, {**CONFIG, "num_hidden_layers": 1},
                  seq_len=SEQ, micro_batch=MICRO, chunk=chunk)


@pytest.fixture(scope="module")
def measured():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: a second thread only spins on a busy runner
    try:
        group = [case(CHUNK, "chunked"), case(None, "unchunked")]
        rows = B.measure_group(group, "cpu")
    except AttributeError:  # torch.profiler's memory events are a private API
        pytest.skip("this torch's profiler does not expose memory events")
    finally:
        torch.set_num_threads(before)
    return {c.name: (c, r) for c, r in zip(group, rows)}


@pytest.mark.parametrize("name", ["chunked", "unchunked"])
def test_estimate_is_within_25_percent_of_the_measured_peak(measured, name):
    c, row = measured[name]
    assert row["tokens"] == SEQ * MICRO == 512
    assert row["end_bytes"] == pytest.approx(row["start_bytes"], abs=1 << 20)  # the step frees what it allocates
    predicted = B.predict(c, precision="fp32")
    assert predicted["overhead"] > 0 and predicted["without_overhead"] < predicted["total"]
    ratio = predicted["without_overhead"] / row["peak_bytes"]
    assert 0.75 <= ratio <= 1.25, (name, ratio, predicted, row)


def test_chunked_loss_peak_is_far_below_unchunked(measured):
    chunked, unchunked = measured["chunked"][1]["peak_bytes"], measured["unchunked"][1]["peak_bytes"]
    logits = SEQ * MICRO * CONFIG["vocab_size"] * 4  # one [tokens, V] fp32 tensor: 64 MiB
    assert unchunked - chunked > 4 * logits  # the reference holds several [tokens, V] tensors at once
    assert chunked < 0.4 * unchunked, (chunked, unchunked)


def test_default_precision_is_unchanged_and_fp32_doubles_activations():
    c = case(CHUNK, "chunked")
    mixed, pure, fp32 = (B.predict(c, precision=p) for p in ("bf16-mixed", "bf16", "fp32"))
    assert fp32["activations"] == pytest.approx(2 * mixed["activations"])
    assert fp32["teacher"] == pytest.approx(2 * mixed["teacher"])
    assert mixed["weights"] + mixed["gradients"] + mixed["optimizer"] == pytest.approx(16 * mixed["student_params"])
    assert pure["weights"] + pure["gradients"] + pure["optimizer"] == pytest.approx(8 * pure["student_params"])
    assert fp32["logits"] == mixed["logits"] and fp32["loss_temporaries"] == mixed["loss_temporaries"] > 0
