"""Peak memory of one real training step of the engine, measured, against the estimator's prediction.

    .venv/bin/python benchmarks/bench_memory.py            # full: ~10 min on 2 busy cores (the large vocabulary)
    .venv/bin/python benchmarks/bench_memory.py --quick    # under a minute: smaller body, 256 tokens, chunk 32
    .venv/bin/python benchmarks/bench_memory.py --json results.json

Cases: the bundled demo pair (resources/demo/{teacher,student}; a stand-in of the same kind until they exist),
with and without recomputation, 64-token sequences x 32; and a Gemma 3 vocabulary (262,144 logits) on a small body
(hidden 256, 4 teacher / 2 student layers) at 4 x 512 tokens with the KD loss in chunks of 1,024 and 256 tokens and
unchunked. A case that would not fit in this machine's free RAM runs with half the micro-batch (and says so).

One step is what ``engine/train/loop.py`` does for one micro-batch: the teacher's forward under no_grad
(``teacher_hidden``), ``DistillModule`` (student forward + the fused KD loss, ``fused_distill_loss``, which works out
its gradients chunk by chunk in forward), backward, gradient clipping, an AdamW step and ``zero_grad(set_to_none=True)``. The optimiser's moments are
created before the measured step (one AdamW step on zero gradients), so the step measured is a steady-state one.
"Unchunked" replaces the loss by ``distill_loss_sums_reference`` (full [tokens, V] logits, autograd keeps them).

What is measured:
* on a CPU, the peak of torch-allocated bytes: the bytes alive when the step starts (parameters, buffers, AdamW
  moments, the batch: counted from their storages) plus the highest running sum of the allocations and frees that
  ``torch.profiler`` records as memory events during the step. RSS is reported separately (the peak resident set
  during the step, and the resident set before it): for small models it is dominated by the Python/torch runtime.
* on CUDA, ``torch.cuda.max_memory_allocated`` over the step (after ``reset_peak_memory_stats``).

What it is compared with: the estimator's per-GPU breakdown (``engine/estimate/core.py``) for the same models,
micro-batch and chunk, excluding its runtime overhead (the CUDA context and NCCL/cuBLAS workspaces, 1.5 GiB, and
8% caching-allocator fragmentation), which torch-allocated bytes do not contain: like is compared with like. The
engine trains in fp32 on a CPU (``models.train_dtype``), so the estimate is made with ``Job.precision = "fp32"``;
on CUDA with ``"bf16"`` (the engine loads the models in bf16 and gives their parameters to AdamW).

Each case runs in a fresh subprocess, so that RSS figures are not those of an earlier case (``--quick``: every case
in one subprocess, to stay under a minute; its RSS figures are then only indicative). Every token of the micro-batch
is trained (no prompt masking), as the estimator assumes. The loss is the forward KL (the plan's default).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
GIB = 1024**3
MIB = 1024**2

# Stand-in for the bundled demo pair while resources/demo/{teacher,student} do not exist yet.
DEMO_STANDIN = dict(model_type="qwen2", vocab_size=20, hidden_size=192, intermediate_size=768, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6,
                    tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2,
                    pad_token_id=0)
# A Gemma 3 vocabulary (262,144 logits) on a small body: the logits, not the body, set the memory.
GEMMA_LIKE = dict(model_type="gemma3_text", vocab_size=262144, hidden_size=256, intermediate_size=1024,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
                  sliding_window=512, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  final_logit_softcapping=None, bos_token_id=2, eos_token_id=1, pad_token_id=0)


@dataclass(frozen=True)
class Case:
    name: str
    group: str                  # cases of one group share their models when they run in one process (--quick)
    teacher: dict               # Hugging Face config.json fields
    student: dict
    seq_len: int
    micro_batch: int
    chunk: int | None           # loss chunk (tokens); None: the unchunked reference, full [tokens, V] logits
    loss: str = "forward-kl"
    recompute: bool = False     # gradient checkpointing of the student's blocks
    teacher_weights: str = ""   # a folder to load the teacher's weights from (the demo assets), else random

    @property
    def tokens(self) -> int:
        return self.seq_len * self.micro_batch


def demo_configs() -> tuple[dict, dict, str, str]:
    """(teacher config, student config, teacher weights folder or "", label): the bundled pair or its stand-in."""
    t, s = DEMO / "teacher" / "config.json", DEMO / "student" / "config.json"
    if t.is_file() and s.is_file():
        weights = str(t.parent) if any((t.parent / f).exists() for f in ("model.safetensors", "pytorch_model.bin")) else ""
        return json.loads(t.read_text()), json.loads(s.read_text()), weights, "resources/demo"
    return {**DEMO_STANDIN, "num_hidden_layers": 6}, {**DEMO_STANDIN, "num_hidden_layers": 3}, "", "stand-in"


def cases(quick: bool) -> tuple[list[Case], str]:
    """Full: the demo pair (with and without recomputation), and the 262,144-token vocabulary on a 256-wide body at
    4 x 512 tokens, chunks of 1,024 and 256 tokens and unchunked. Quick: the demo pair, and the same vocabulary on a
    64-wide body at 256 tokens, chunks of 32 and unchunked."""
    t, s, weights, label = demo_configs()
    out = [Case("demo", "demo", t, s, seq_len=64, micro_batch=32, chunk=1024, teacher_weights=weights)]
    if not quick:
        out.append(Case("demo, recompute", "demo", t, s, seq_len=64, micro_batch=32, chunk=1024, recompute=True,
                        teacher_weights=weights))
    body = dict(hidden_size=64, intermediate_size=256, num_attention_heads=2, head_dim=32) if quick else {}
    gt, gs = {**GEMMA_LIKE, **body, "num_hidden_layers": 4}, {**GEMMA_LIKE, **body, "num_hidden_layers": 2}
    seq, mb, chunks = (256, 1, (32,)) if quick else (512, 4, (1024, 256))
    for c in chunks:
        out.append(Case(f"V=262k, chunk {c}", "gemma", gt, gs, seq_len=seq, micro_batch=mb, chunk=c))
    out.append(Case("V=262k, unchunked", "gemma", gt, gs, seq_len=seq, micro_batch=mb, chunk=None))
    return out, label


# ---------------------------------------------------------------------------------------------------------------
# Measurement (in a worker process; imports torch)
# ---------------------------------------------------------------------------------------------------------------

def _hf_config(d: dict):
    from transformers import AutoConfig

    d = {k: v for k, v in d.items() if not k.startswith("_") and k not in ("architectures", "transformers_version",
                                                                            "torch_dtype", "dtype")}
    return AutoConfig.for_model(**d)


def build_models(case: Case, device, dtype):
    """(teacher, student): the engine's way (models.load_teacher / load_student), from configs, nothing saved."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    if case.teacher_weights:
        teacher = AutoModelForCausalLM.from_pretrained(case.teacher_weights, dtype=dtype)
    else:
        teacher = AutoModelForCausalLM.from_config(_hf_config(case.teacher), dtype=dtype)
    teacher.to(device).eval().requires_grad_(False)
    student = AutoModelForCausalLM.from_config(_hf_config(case.student), dtype=dtype).to(device)
    student.config.use_cache = False
    student.train()
    return teacher, student


def live_bytes(*objs) -> int:
    """Bytes of the distinct storages held by modules (parameters, gradients, buffers), optimisers and tensors."""
    import torch

    seen: dict[int, int] = {}

    def add(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()

    for o in objs:
        if isinstance(o, torch.nn.Module):
            for p in o.parameters():
                add(p)
                add(p.grad)
            for b in o.buffers():
                add(b)
        elif isinstance(o, torch.optim.Optimizer):
            for state in o.state.values():
                for v in state.values():
                    add(v)
        elif isinstance(o, dict):
            for v in o.values():
                add(v)
        else:
            add(o)
    return sum(seen.values())


def _vm(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def cpu_peak(step) -> tuple[int, int, int]:
    """(peak, net, events) of torch-allocated bytes during ``step()``, relative to its start, from profiler events."""
    from torch import profiler

    with profiler.profile(activities=[profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    cur = top = 0
    for _, nbytes in events:
        cur += nbytes
        top = max(top, cur)
    return top, cur, len(events)


def _reference_loss(hidden, weight, labels, *, kd_weight, scale, need_ce=True, need_top1=False, **kw):
    """The plain loss (full [tokens, V] logits, autograd keeps what it needs) in the fused loss's place."""
    from distill_studio.engine.train import losses as L

    sums = L.distill_loss_sums_reference(hidden, weight, labels, **kw)
    loss = (kd_weight * sums.kd_sum + (1.0 - kd_weight) * sums.ce_sum) * scale
    return L.FusedLoss(loss=loss, kd_sum=sums.kd_sum.detach(), ce_sum=sums.ce_sum.detach(), n_tokens=sums.n_tokens,
                       top1_agree=sums.top1_agree, has_kd=sums.has_kd)


def make_step(module, teacher, optimizer, batch, params, *, device, chunk):
    """One optimiser step over one micro-batch, as ``Loop.run`` does it (kd_weight 0.9, clipping at 1.0)."""
    import torch

    from distill_studio.engine.train import loop as loop_mod
    from distill_studio.engine.train import losses as L
    from distill_studio.engine.train.teacher import teacher_hidden

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())
    n_global = int((batch["labels"] != L.IGNORE_INDEX).sum())

    def step():
        patch = contextlib.nullcontext()
        if chunk is None:
            from unittest import mock
            patch = mock.patch.object(loop_mod, "fused_distill_loss", _reference_loss)
        with patch, autocast:
            th = teacher_hidden(teacher, batch["input_ids"], batch["attention_mask"])
            loss, kd, ce, n, top1 = module(**batch, teacher_hidden=th,
                                           teacher_head=teacher.get_output_embeddings().weight, kd_weight=0.9,
                                           scale=1.0 / max(n_global, 1))
            loss.backward()
        del th, kd, ce, loss
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure_group(group: list[Case], device_name: str) -> list[dict]:
    import torch

    from distill_studio.engine.train.loop import DistillModule
    from distill_studio.engine.train.models import train_dtype

    device = torch.device(device_name)
    dtype = train_dtype(device)
    results, built, recomputing = [], None, False
    for case in group:
        if built != case.group:  # cases of one group share their models (and the optimiser's moments)
            teacher = student = optimizer = params = None
            recomputing = False
            gc.collect()
            teacher, student = build_models(case, device, dtype)
            params = [p for p in student.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
            for p in params:  # create the AdamW moments: the step measured is a steady-state one
                p.grad = torch.zeros_like(p)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            vocab = min(teacher.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0])
            built = case.group
        if case.recompute and not recomputing:  # as models.load_student does with training.gradient_checkpointing
            student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif recomputing and not case.recompute:
            student.gradient_checkpointing_disable()
        recomputing = case.recompute
        module = DistillModule(student, student, vocab_size=vocab, loss=case.loss, beta=0.5, temperature=1.0,
                               chunk_tokens=case.chunk or 1024, softcap=None)
        g = torch.Generator().manual_seed(1)
        shape = (case.micro_batch, case.seq_len)
        batch = {"input_ids": torch.randint(0, vocab, shape, generator=g).to(device),
                 "attention_mask": torch.ones(shape, dtype=torch.long).to(device),
                 "labels": torch.randint(0, vocab, shape, generator=g).to(device)}
        step = make_step(module, teacher, optimizer, batch, params, device=device, chunk=case.chunk)
        row = {"case": case.name, "device": device_name, "dtype": str(dtype).removeprefix("torch."),
               "student_params": sum(p.numel() for p in student.parameters()),
               "teacher_params": sum(p.numel() for p in teacher.parameters()), "tokens": case.tokens}
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
            start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            row.update(start_bytes=start, peak_bytes=torch.cuda.max_memory_allocated(),
                       end_bytes=torch.cuda.memory_allocated(), how="torch.cuda.max_memory_allocated")
        else:
            start = live_bytes(student, teacher, optimizer, batch)
            rss0 = _vm("VmRSS")
            hwm_ok = _reset_hwm()
            peak, net, n_events = cpu_peak(step)
            row.update(start_bytes=start, peak_bytes=start + peak, end_bytes=start + net, memory_events=n_events,
                       rss_before_bytes=rss0, rss_peak_bytes=_vm("VmHWM") if hwm_ok else None,
                       how="torch.profiler memory events + live storages")
        row["step_seconds"] = time.perf_counter() - t0
        results.append(row)
        del step, module, batch
    return results


def worker(spec: str, device: str) -> int:
    group = [Case(**d) for d in json.loads(spec)]
    print(json.dumps(measure_group(group, device)))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The estimator's prediction (no torch)
# ---------------------------------------------------------------------------------------------------------------

MEM_PARTS = ("weights", "gradients", "optimizer", "activations", "logits", "loss_temporaries", "teacher")


def predict(case: Case, *, precision: str, accelerator: str = "cpu") -> dict:
    """The estimator's per-GPU memory for ``case`` on one device: each part, the total and the total without the
    runtime overhead (what torch-allocated bytes compare with), in bytes."""
    from distill_studio.engine.catalog.hardware import load_accelerators
    from distill_studio.engine.catalog.models import model_from_hf_config
    from distill_studio.engine.estimate.core import ADAPTERS, TEACHER_MODES, Job, coefficients, evaluate
    from distill_studio.engine.estimate.shape import shape_of
    from distill_studio.engine.estimate.sweep import Machine, build_grid

    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for who, cfg in (("teacher", case.teacher), ("student", case.student)):
            folder = Path(tmp) / who
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(cfg))
            specs.append(model_from_hf_config(folder))
    t_spec, s_spec = specs
    acc = load_accelerators()[accelerator]
    machine = Machine(id="local", accelerator=acc.id, gpus=1, peak_tflops=acc.bf16_dense_tflops, hbm_gb=acc.hbm_gb,
                      hbm_gb_per_s=acc.hbm_gb_per_s, intra_gb_per_s=0.0, inter_gb_per_s=0.0, usd_per_hour={},
                      max_nodes=1, priorities=("dedicated",), provision="local")
    job = Job(student=shape_of(s_spec), teacher=shape_of(t_spec), method="logit-kd", seq_len=case.seq_len,
              tokens_per_epoch=float(case.tokens), epochs=1.0, global_batch_tokens=case.tokens,
              micro_batch_seqs=case.micro_batch, chunked_logits=case.chunk is not None, precision=precision,
              kd_loss=case.loss, cpu=accelerator == "cpu")
    coeffs = copy.deepcopy(coefficients())
    if case.chunk is not None:
        coeffs["memory"]["logits_chunk_tokens"] = case.chunk
    grid, labels = build_grid([machine], has_teacher=True, teacher_modes=("online",), nodes=1, coeffs=coeffs)
    out = evaluate(job, grid, coeffs)
    pick = (grid.adapter == ADAPTERS.index("full")) & (grid.recompute == case.recompute)
    pick &= grid.teacher_mode == TEACHER_MODES.index("online") & ~grid.shard_all
    pick &= grid.extra["teacher_precision"] == labels["teacher_precision"].index("bf16")
    i = int(next(iter(pick.nonzero()[0])))
    parts = {k: float(out[f"mem_{k}"][i]) for k in MEM_PARTS if f"mem_{k}" in out}
    return {**parts, "overhead": float(out["mem_overhead"][i]), "total": float(out["mem_total"][i]),
            "without_overhead": float(out["mem_total"][i] - out["mem_overhead"][i]),
            "student_params": s_spec.params, "teacher_params": t_spec.params}


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------

def fit_in_ram(case: Case, precision: str) -> Case:
    """The case, or (when this machine's free RAM cannot hold it) the same case with half the micro-batch, and so on;
    its name says so. The unchunked reference at 2,048 tokens of a 262,144-token vocabulary needs about 19 GiB."""
    free = _meminfo("MemAvailable")
    while free and case.micro_batch > 1:
        need = predict(case, precision=precision)["without_overhead"] * 1.15 + 1.5 * GIB  # + the runtime's RSS
        if need <= free:
            break
        case = replace(case, micro_batch=case.micro_batch // 2,
                       name=f"{case.name.split(' (')[0]} ({case.micro_batch // 2 * case.seq_len:,} tokens: RAM)")
    return case


def _meminfo(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_groups(groups: list[list[Case]], device: str, timeout: float = 1800) -> list[dict]:
    rows = []
    for group in groups:
        spec = json.dumps([asdict(c) for c in group])
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run([sys.executable, __file__, "--worker", spec, "--device", device], capture_output=True,
                              text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"the worker for {[c.name for c in group]} failed (exit {proc.returncode})")
        rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def _mib(b) -> str:
    return "-" if b is None else f"{b / MIB:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small large-vocabulary case, every case in one process")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device is None:
        try:
            import torch
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            args.device = "cpu"
    if args.worker:
        return worker(args.worker, args.device)

    t0 = time.perf_counter()
    all_cases, demo_label = cases(args.quick)
    precision = "fp32" if args.device == "cpu" else "bf16"
    accelerator = "cpu" if args.device == "cpu" else "h100-sxm"
    if args.device == "cpu":
        all_cases = [fit_in_ram(c, precision) for c in all_cases]
    groups = [all_cases] if args.quick else [[c] for c in all_cases]
    measured = run_groups(groups, args.device)
    rows = []
    for case, m in zip(all_cases, measured):
        p = predict(case, precision=precision, accelerator=accelerator)
        rows.append({"case": case.name, "tokens": case.tokens, "chunk": case.chunk, "loss": case.loss,
                     "recompute": case.recompute, "measured": m, "predicted": p,
                     "ratio": p["without_overhead"] / m["peak_bytes"]})

    print(f"Peak memory of one training step (forward + KD loss + backward + AdamW), device {args.device}, "
          f"{measured[0]['dtype']}; demo pair: {demo_label}")
    print("Measured: torch-allocated peak" + (" (profiler memory events + storages alive at the start)"
                                              if args.device == "cpu" else " (max_memory_allocated)")
          + f". Predicted: the estimator (precision {precision!r}) without its runtime overhead.\n")
    print("| case | tokens | student / teacher params | measured peak MiB | predicted MiB | predicted / measured "
          "| RSS before MiB | RSS peak MiB | step s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        m, p = r["measured"], r["predicted"]
        print(f"| {r['case']} | {r['tokens']:,} | {m['student_params'] / 1e6:.2f}M / {m['teacher_params'] / 1e6:.2f}M "
              f"| {_mib(m['peak_bytes'])} | {_mib(p['without_overhead'])} | {r['ratio']:.2f} "
              f"| {_mib(m.get('rss_before_bytes'))} | {_mib(m.get('rss_peak_bytes'))} | {m['step_seconds']:.1f} |")
    print("\nThe estimator's parts (MiB):\n")
    print("| case | " + " | ".join(MEM_PARTS) + " | overhead (excluded) |")
    print("|---|" + "---:|" * (len(MEM_PARTS) + 1))
    for r in rows:
        p = r["predicted"]
        print(f"| {r['case']} | " + " | ".join(_mib(p.get(k, 0.0)) for k in MEM_PARTS) + f" | {_mib(p['overhead'])} |")
    big = [r for r in rows if r["case"].startswith("V=262k")]
    ref = next((r for r in big if r["chunk"] is None), None)
    if ref is not None:
        ref_peak = ref["measured"]["peak_bytes"]
        print(f"\nLarge vocabulary, measured peak chunked / unchunked (unchunked: {ref['tokens']:,} tokens, "
              f"{_mib(ref_peak)} MiB): " + ", ".join(
                  f"chunk {r['chunk']} at {r['tokens']:,} tokens {r['measured']['peak_bytes'] / ref_peak:.2f}"
                  for r in big if r["chunk"]))
        full = next((c for c in cases(args.quick)[0] if c.name.startswith("V=262k") and c.chunk is None), None)
        if full is not None and full.tokens != ref["tokens"]:
            p = predict(full, precision=precision, accelerator=accelerator)
            print(f"(the unchunked reference at {full.tokens:,} tokens did not fit in this machine's free RAM; the "
                  f"estimator puts it at {_mib(p['without_overhead'])} MiB, logits {_mib(p['logits'])} MiB + loss "
                  f"temporaries {_mib(p['loss_temporaries'])} MiB)")
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"\nlargest |predicted / measured - 1|: {worst:.0%} (target 25%); {time.perf_counter() - t0:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "precision": precision, "demo": demo_label,
                                         "quick": args.quick, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
