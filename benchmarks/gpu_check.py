"""The engine's training loop on one GPU, measured, against the estimator: tokens/s and peak memory; and the
sharded engine on every GPU of the machine.

    python benchmarks/gpu_check.py                        # on a GPU machine (H100 / H200), from the repository root
    python benchmarks/gpu_check.py --multi                # every GPU: `distill run --processes N`, FSDP student and
                                                          # sharded teacher, bf16, Qwen2.5-1.5B -> 0.5B shapes
                                                          # (benchmarks/bench_sharding.py --gpu; the default when
                                                          # the machine has more than one GPU)
    python benchmarks/gpu_check.py --device cpu --tiny    # smoke test on a CPU with a scaled-down pair

Qwen2.5-1.5B (teacher, online, under no_grad) -> Qwen2.5-0.5B (student, full fine-tuning), both randomly initialised
from configs written here from their published dimensions (nothing downloaded, nothing saved), logit KD with the
forward KL, 2,048-token sequences. The training is the engine's own: ``Loop`` from engine/train/loop.py over
``DistillModule`` (student forward + the chunked KD loss), AdamW and a cosine schedule, through accelerate with
bf16 autocast, and the models held in bf16, exactly as engine/train/session.py sets it up on CUDA. Each run does
3 warm-up steps and 20 timed steps (one micro-batch per step); tokens/s is every timed step's tokens over their
seconds, memory is ``torch.cuda.max_memory_allocated`` over the timed steps (``max_memory_reserved`` beside it).

The estimator (engine/estimate/core.py) is asked for the same configuration: the accelerator from the GPU's name
(h100-sxm, h100-nvl or h200 in engine/catalog/data/accelerators.toml), the shapes from the same configs through
``model_from_hf_config``, the same micro-batch, chunk and recomputation (off at each micro-batch, then selective and
full at ``--recompute-micro-batch``: engine/train/recompute.py), and two precisions: ``bf16`` (what the
engine does: weights, gradients and AdamW moments in bf16) and the planner's default ``bf16-mixed`` (fp32 master
weights and moments). Memory is compared like with like: the estimate without its runtime overhead (CUDA context,
workspaces, allocator fragmentation) against torch-allocated bytes.

Results: a table on stdout, and JSON in ``$OUT/gpu_check.json`` when OUT is set (and in ``--json PATH``), written
after every run so a cut-off check keeps what it measured. The package need not be installed: run from anywhere,
the script maps ``distill_studio.engine`` to the repository's engine/ folder itself when the import fails.
Budget: about 4 minutes on an H100 (``--budget`` seconds; runs that would not fit are skipped and say so).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
T_START = time.perf_counter()


def ensure_package() -> str:
    """Make ``distill_studio.engine`` importable: installed, or mapped onto ROOT/engine (pyproject's package-dir)."""
    try:
        import distill_studio.engine.estimate.core  # noqa: F401
        return "installed"
    except ImportError:
        for name in [m for m in sys.modules if m == "distill_studio" or m.startswith("distill_studio.")]:
            del sys.modules[name]
    pkg = types.ModuleType("distill_studio")
    pkg.__path__ = []  # a namespace-like parent: only the subpackages registered below exist
    pkg.__package__ = "distill_studio"
    sys.modules["distill_studio"] = pkg
    for sub in ("engine", "resources"):
        folder = ROOT / sub
        if not (folder / "__init__.py").is_file():
            continue
        spec = importlib.util.spec_from_file_location(f"distill_studio.{sub}", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(pkg, sub, module)
    import distill_studio.engine.estimate.core  # noqa: F401,F811  (fails loudly if the mapping is wrong)
    return f"mapped onto {ROOT / 'engine'}"


PACKAGE = ensure_package()

import torch  # noqa: E402

from distill_studio.engine.catalog.hardware import load_accelerators  # noqa: E402
from distill_studio.engine.catalog.models import model_from_hf_config  # noqa: E402
from distill_studio.engine.estimate.core import ADAPTERS, RECOMPUTE, TEACHER_MODES, Job, coefficients, evaluate  # noqa: E402
from distill_studio.engine.estimate.shape import shape_of  # noqa: E402
from distill_studio.engine.estimate.sweep import Machine, build_grid  # noqa: E402
from distill_studio.engine.train import recompute as recompute_mode  # noqa: E402
from distill_studio.engine.train.parallel import Replicated  # noqa: E402
from distill_studio.engine.train.data import BatchOrder, Example  # noqa: E402
from distill_studio.engine.train.loop import DistillModule, Loop, LoopConfig, LoopState, TeacherSignal  # noqa: E402

GIB = 1024**3

QWEN = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_act="silu", vocab_size=151936,
            max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
            use_sliding_window=False, sliding_window=32768, attention_dropout=0.0, initializer_range=0.02,
            bos_token_id=151643, eos_token_id=151643, use_cache=False)
TEACHER = {**QWEN, "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
           "intermediate_size": 8960, "max_window_layers": 28}       # Qwen2.5-1.5B
STUDENT = {**QWEN, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
           "intermediate_size": 4864, "max_window_layers": 24}       # Qwen2.5-0.5B
TINY = dict(vocab_size=8192, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, bos_token_id=1, eos_token_id=2)

# Training settings: the plan's defaults (engine/plan.py Training / Method) unless the check needs otherwise.
LR, WEIGHT_DECAY, MAX_GRAD_NORM, KD_WEIGHT, TEMPERATURE, LOSS, CHUNK = 2e-4, 0.0, 1.0, 0.9, 1.0, "forward-kl", 1024


def accelerator_id(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    if "h200" in name or "gh200" in name:
        return "h200"
    if "h100" in name:
        return "h100-nvl" if "nvl" in name else "h100-sxm"
    if "a100" in name:
        return "a100-80gb-sxm" if torch.cuda.get_device_properties(device).total_memory > 60 * GIB else "a100-40gb-sxm"
    return "h100-sxm"


def hf_config(d: dict):
    from transformers import AutoConfig

    return AutoConfig.for_model(**{k: v for k, v in d.items() if k != "architectures"})


def train_dtype(device: torch.device) -> torch.dtype:
    """engine/train/models.py train_dtype (not imported: that module needs pydantic, for the plan)."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def build(cfg: dict, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: a 1.5B model's random init on the CPU takes a while
        model = AutoModelForCausalLM.from_config(hf_config(cfg), dtype=dtype)
    model.config.use_cache = False
    return model.to(device)


def predict(t_cfg: dict, s_cfg: dict, *, seq: int, micro: int, recompute: str, precision: str, acc_id: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for who, cfg in (("teacher", t_cfg), ("student", s_cfg)):
            folder = Path(tmp) / who
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(cfg))
            specs.append(model_from_hf_config(folder))
    t_spec, s_spec = specs
    a = load_accelerators()[acc_id]
    machine = Machine(id="local", accelerator=a.id, gpus=1, peak_tflops=a.bf16_dense_tflops, hbm_gb=a.hbm_gb,
                      hbm_gb_per_s=a.hbm_gb_per_s, intra_gb_per_s=0.0, inter_gb_per_s=0.0, usd_per_hour={},
                      max_nodes=1, priorities=("dedicated",), provision="local")
    tokens = seq * micro
    job = Job(student=shape_of(s_spec), teacher=shape_of(t_spec), method="logit-kd", seq_len=seq,
              tokens_per_epoch=float(tokens) * 1000, epochs=1.0, global_batch_tokens=tokens, micro_batch_seqs=micro,
              chunked_logits=True, precision=precision, kd_loss=LOSS)
    coeffs = coefficients()
    if coeffs["memory"]["logits_chunk_tokens"] != CHUNK:
        coeffs = {**coeffs, "memory": {**coeffs["memory"], "logits_chunk_tokens": CHUNK}}
    grid, labels = build_grid([machine], has_teacher=True, teacher_modes=("online",), nodes=1, coeffs=coeffs)
    out = evaluate(job, grid, coeffs)
    pick = (grid.adapter == ADAPTERS.index("full")) & (grid.recompute == RECOMPUTE.index(recompute)) & ~grid.shard_all
    pick &= grid.teacher_mode == TEACHER_MODES.index("online")
    pick &= grid.extra["teacher_precision"] == labels["teacher_precision"].index("bf16")
    i = int(pick.nonzero()[0][0])
    mem = {k[4:]: float(v[i]) for k, v in out.items() if k.startswith("mem_") and k != "mem_usable"}
    return {"precision": precision, "tokens_per_second": float(out["tokens_per_second_per_gpu"][i]),
            "mfu": float(out["mfu"][i]), "memory_bytes": mem,
            "memory_without_overhead_bytes": mem["total"] - mem["overhead"], "fits": bool(out["fits"][i]),
            "student_params_catalog": s_spec.params, "teacher_params_catalog": t_spec.params}


def run_one(acc, teacher, student, *, device, seq: int, micro: int, recompute: str, warmup: int, steps: int) -> dict:
    """``steps`` optimiser steps of the engine's Loop after ``warmup`` ones; tokens/s and peak memory."""
    from transformers import get_cosine_schedule_with_warmup

    student.gradient_checkpointing_disable()
    recompute_mode.enable(student, recompute)  # as models.load_student does with training.recompute
    vocab = min(teacher.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0])
    module = DistillModule(student, student, vocab_size=vocab, loss=LOSS, beta=0.5, temperature=TEMPERATURE,
                           chunk_tokens=CHUNK, softcap=None)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    total = warmup + steps
    scheduler = get_cosine_schedule_with_warmup(optimizer, 0, total)
    module, optimizer = acc.prepare(module, optimizer)
    g = torch.Generator().manual_seed(0)
    n_examples = micro * total
    ids = torch.randint(0, vocab, (n_examples, seq), generator=g).tolist()
    examples = [Example(input_ids=x, labels=x) for x in ids]  # every position trained (no prompt)
    order = BatchOrder(len(examples), micro, seed=0)
    cfg = LoopConfig(total_steps=total, micro_batch=micro, kd_weight=KD_WEIGHT, max_grad_norm=MAX_GRAD_NORM,
                     eval_every=0, checkpoint_every=0, pad_id=0, max_new_tokens=1, eval_samples=0)
    metrics: list[dict] = []
    start = {}

    def on_metric(m: dict) -> None:
        metrics.append(m)
        if m["step"] == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                start["allocated"] = torch.cuda.memory_allocated()
            start["t"] = time.perf_counter()

    loop = Loop(acc, module, optimizer, scheduler, order, examples, TeacherSignal(mode="online", teacher=teacher),
                cfg, on_metric=on_metric, on_eval=lambda step: None, on_checkpoint=lambda step: None,
                should_stop=lambda: False, par=Replicated(acc))
    status = loop.run(LoopState())
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start["t"]
    timed = [m for m in metrics if m["step"] > warmup]
    tokens = micro * seq * len(timed)
    secs = [m["step_seconds"] for m in timed]
    row = {"status": status, "micro_batch": micro, "seq_len": seq, "recompute": recompute, "warmup_steps": warmup,
           "timed_steps": len(timed), "tokens_per_second": tokens / sum(secs),
           "tokens_per_second_wall": tokens / wall, "step_seconds_median": sorted(secs)[len(secs) // 2],
           "step_seconds": secs, "loss_first": metrics[0]["loss"], "loss_last": metrics[-1]["loss"],
           "loss_finite": all(math.isfinite(m["loss"]) for m in metrics)}
    if device.type == "cuda":
        row.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(), start_allocated_bytes=start["allocated"])
    # free the optimiser's moments before the next run, so that its peak is its own
    acc.free_memory(module, optimizer)
    del module, optimizer, scheduler, loop, params
    student.zero_grad(set_to_none=True)
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _gib(b) -> str:
    return "-" if b is None else f"{b / GIB:.2f}"


def write(doc: dict, paths: list[Path]) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=1))


def table(doc: dict) -> str:
    engine, planner = doc["precisions"]
    lines = [f"device: {doc['device_name']} ({doc['accelerator']}), torch {doc['torch']}, transformers "
             f"{doc['transformers']}, package {doc['package']}",
             f"teacher {doc['teacher_params'] / 1e9:.3f}B, student {doc['student_params'] / 1e9:.3f}B parameters "
             f"(catalog count: {doc['teacher_params_catalog'] / 1e9:.3f}B, {doc['student_params_catalog'] / 1e9:.3f}B)",
             "",
             f"| run | tokens/s measured | predicted | ratio | peak allocated GiB | predicted {engine} GiB | ratio "
             f"| predicted {planner} GiB | ratio | reserved GiB | predicted total ({engine}) GiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['name']} | {r.get('skipped') or r.get('error')} |")
            continue
        pb, pm = r["predicted"][engine], r["predicted"][planner]
        peak = r.get("peak_allocated_bytes")
        ratio = (lambda p: f"{p / peak:.2f}" if peak else "-")
        lines.append(
            f"| {r['name']} | {r['tokens_per_second']:,.0f} | {pb['tokens_per_second']:,.0f} "
            f"| {pb['tokens_per_second'] / r['tokens_per_second']:.2f} | {_gib(peak)} "
            f"| {_gib(pb['memory_without_overhead_bytes'])} | {ratio(pb['memory_without_overhead_bytes'])} "
            f"| {_gib(pm['memory_without_overhead_bytes'])} | {ratio(pm['memory_without_overhead_bytes'])} "
            f"| {_gib(r.get('peak_reserved_bytes'))} | {_gib(pb['memory_bytes']['total'])} |")
    lines.append("")
    lines.append("ratio = predicted / measured. Predicted memory excludes the estimator's runtime overhead (CUDA "
                 "context, workspaces, fragmentation); 'predicted total' includes it, to set beside reserved.")
    for r in doc["runs"]:
        if "predicted" in r:
            parts = r["predicted"][engine]["memory_bytes"]
            lines.append(f"  {r['name']}: estimator parts ({engine}, GiB): "
                         + ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items() if k != "total"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="scaled-down models and steps (a smoke test)")
    ap.add_argument("--seq-len", type=int, default=None, help="default 2048 (--tiny: 128)")
    ap.add_argument("--micro-batch", type=int, nargs="+", default=None,
                    help="micro-batches to run without recomputation (default 8 4; --tiny: 2)")
    ap.add_argument("--recompute-micro-batch", type=int, default=None,
                    help="micro-batch of the runs with selective and full recomputation (default 8; --tiny: 2; "
                    "0: none)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20; --tiny: 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; --tiny: 1)")
    ap.add_argument("--budget", type=float, default=210.0, help="seconds; runs that would not fit are skipped")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--multi", action="store_true",
                    help="every GPU of this machine through the engine itself, both models sharded (default with >1 GPU)")
    args = ap.parse_args(argv)
    if args.multi or (args.device == "cuda" and torch.cuda.device_count() > 1):
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_sharding

        out = args.json or (Path(os.environ["OUT"]) / "gpu_check_multi.json" if os.environ.get("OUT") else None)
        bench_sharding.gpu(out)
        return 0
    tiny = args.tiny
    seq = args.seq_len or (128 if tiny else 2048)
    micros = args.micro_batch or ([2] if tiny else [8, 4])
    rc_micro = args.recompute_micro_batch if args.recompute_micro_batch is not None else (2 if tiny else 8)
    steps, warmup = args.steps or (3 if tiny else 20), args.warmup or (1 if tiny else 3)
    t_cfg, s_cfg = (({**TEACHER, **TINY, "num_hidden_layers": 4}, {**STUDENT, **TINY, "num_hidden_layers": 2})
                    if tiny else (TEACHER, STUDENT))
    outs = [Path(os.environ["OUT"]) / "gpu_check.json"] if os.environ.get("OUT") else []
    if args.json:
        outs.append(args.json)

    import accelerate
    import transformers
    from accelerate import Accelerator

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    acc_id = accelerator_id(device)
    acc = Accelerator(cpu=device.type != "cuda", mixed_precision="bf16" if device.type == "cuda" else "no")
    dtype = train_dtype(device)
    t0 = time.perf_counter()
    teacher = build(t_cfg, device, dtype).eval().requires_grad_(False)
    student = build(s_cfg, device, torch.float32).train()  # full training: fp32 weights under bf16 autocast
    build_s = time.perf_counter() - t0
    doc = {"check": "gpu_check", "device": str(device), "accelerator": acc_id,
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
           "python": platform.python_version(), "package": PACKAGE, "tiny": tiny, "dtype": str(dtype),
           "teacher_config": t_cfg, "student_config": s_cfg, "loss": LOSS, "chunk_tokens": CHUNK,
           "kd_weight": KD_WEIGHT, "learning_rate": LR, "model_build_seconds": build_s,
           "teacher_params": sum(p.numel() for p in teacher.parameters()),
           "student_params": sum(p.numel() for p in student.parameters()), "runs": []}
    # the precision the engine trains in here (models.train_dtype), and the planner's default
    precisions = ("bf16" if dtype == torch.bfloat16 else "fp32", "bf16-mixed")
    doc["precisions"] = list(precisions)
    plan = [(f"micro {m}", m, "off") for m in micros] + (
        [(f"micro {rc_micro}, recompute {mode}", rc_micro, mode) for mode in ("selective", "full")] if rc_micro else [])
    per_step = None
    for name, micro, recompute in plan:
        preds = {p: predict(t_cfg, s_cfg, seq=seq, micro=micro, recompute=recompute, precision=p, acc_id=acc_id)
                 for p in precisions}
        doc["teacher_params_catalog"] = preds[precisions[0]]["teacher_params_catalog"]
        doc["student_params_catalog"] = preds[precisions[0]]["student_params_catalog"]
        elapsed = time.perf_counter() - T_START
        if per_step is not None:
            need = per_step * micro * (1.4 if recompute != "off" else 1.0) * (warmup + steps) + 10
            if elapsed + need > args.budget:
                doc["runs"].append({"name": name, "skipped": f"over the {args.budget:.0f} s budget "
                                    f"({elapsed:.0f} s spent, ~{need:.0f} s needed)", "predicted": preds})
                continue
        row = None
        try:
            row = run_one(acc, teacher, student, device=device, seq=seq, micro=micro, recompute=recompute,
                          warmup=warmup, steps=steps)
        except Exception as exc:  # noqa: BLE001 - out of memory or a failure of the loop: record it, go on
            import traceback

            what = "out of memory" if isinstance(exc, torch.cuda.OutOfMemoryError) else type(exc).__name__
            doc["runs"].append({"name": name, "error": f"{what}: {(str(exc).splitlines() or [''])[0][:300]}",
                                "traceback": traceback.format_exc()[-3000:], "predicted": preds})
            write(doc, outs)
            print(f"{name}: {doc['runs'][-1]['error']}", file=sys.stderr, flush=True)
        if row is None:  # the failed run's tensors are free once the exception is gone
            import gc

            acc.free_memory()
            student.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        per_step = max(per_step or 0.0, row["step_seconds_median"] / micro / (1.4 if recompute != "off" else 1.0))
        engine_pred = preds[precisions[0]]
        row.update(name=name, predicted=preds,
                   mfu_measured=engine_pred["mfu"] * row["tokens_per_second"] / engine_pred["tokens_per_second"])
        doc["runs"].append(row)
        doc["elapsed_seconds"] = time.perf_counter() - T_START
        write(doc, outs)
        print(f"{name}: {row['tokens_per_second']:,.0f} tokens/s, peak {_gib(row.get('peak_allocated_bytes'))} GiB, "
              f"loss {row['loss_first']:.3f} -> {row['loss_last']:.3f}", file=sys.stderr, flush=True)
    doc["elapsed_seconds"] = time.perf_counter() - T_START
    write(doc, outs)
    print(table(doc))
    print(f"\n{doc['elapsed_seconds']:.0f} s in all (models built in {build_s:.0f} s)"
          + (f"; results in {', '.join(map(str, outs))}" if outs else ""))
    return 0 if all("error" not in r for r in doc["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
