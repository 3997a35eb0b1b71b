"""Sharded runs measured against one process and against the estimator: what each rank holds, the teacher's pass
split over ranks, and peak memory per rank next to the planner's per-GPU breakdown.

    .venv/bin/python benchmarks/bench_sharding.py                # CPU: 2 processes over gloo, about 6 minutes
    .venv/bin/python benchmarks/bench_sharding.py --json out.json
    python benchmarks/bench_sharding.py --gpu                    # every GPU of this machine (see gpu_check.py)
    .venv/bin/python benchmarks/bench_sharding.py --gpu --smoke  # the same path on the CPU, scaled down (~30 s)

Every figure comes from real `distill run` processes and the run's own events: ``run_started`` carries the
planner's estimate for the configuration, ``run_finished`` what the run measured (parameter bytes and peak memory
per rank, teacher-pass and training seconds, tokens/s per device).

CPU cases (random weights built from configs, nothing downloaded; the bundled demo's character tokenizer):
a Qwen2-shaped teacher of 8 layers and student of 4 (hidden 1,024, intermediate 4,096; about 122M and 61M
parameters), full fine-tuning in fp32 (as the engine trains on a CPU), logit KD with the forward KL, 64-token
sequences, 4 steps of 16 sequences:
* one process; two processes with DDP (sharding "none"); two processes with both models sharded (FSDP2, "all-gpus");
* the offline top-k pre-pass over 512 examples with one process and with two (teacher replicated, and sharded).

On the CPU the peak is the resident set, which also holds the Python/torch runtime: the comparison adds the
resident set of an idle process that imported the same libraries (measured here) to the estimate without its GPU
runtime overhead (CUDA context, workspaces, fragmentation), so like is compared with like. Each process runs with
one thread (OMP_NUM_THREADS=1), so one process against two is work split, on a machine with two cores.

``--gpu``: Qwen2.5-1.5B -> Qwen2.5-0.5B shapes (on Llama's architecture with attention biases) with random weights and a 151,665-token vocabulary (a word-level
tokenizer of that size, so the logits are the real width), bf16, 2,048-token sequences, on every GPU of the machine
under ``distill run --processes N`` with the student and the teacher sharded; prints tokens/s and peak allocated
memory per GPU against the estimate.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_TOKENIZER = ROOT / "resources" / "demo" / "teacher"
GIB = 1024**3
MIB = 1024**2
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _qwen2(layers: int, hidden: int, inter: int, vocab: int, heads: int, kv: int, ctx: int, tie: bool):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=ctx,
                       tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _llama_as_qwen25(layers: int, hidden: int, inter: int, vocab: int, heads: int, kv: int, ctx: int, tie: bool):
    """Qwen2.5's dimensions on Llama's architecture (Qwen2 is Llama with biases on the attention projections):
    transformers gives a qwen2 model folder Qwen2's own tokenizer class, which cannot hold the word-level stand-in
    tokenizer, and a llama folder the tokenizer as saved."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=ctx,
                       tie_word_embeddings=tie, attention_bias=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0)


def make_pair(root: Path, teacher_cfg, student_cfg, tokenizer, dtype) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    for name, cfg in (("teacher", teacher_cfg), ("student", student_cfg)):
        model = AutoModelForCausalLM.from_config(cfg).to(dtype)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        del model


def word_tokenizer(vocab: int):
    """A word-level tokenizer of ``vocab`` entries ("w0" ... ): the real width of a model's logits, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i + 4 for i in range(vocab - 4)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def write_data(path: Path, n: int, words_per_example: int, vocab: int | None, seed: int = 0) -> None:
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            if vocab is None:  # the demo tokenizer: digits and signs
                a, b = rng.randint(0, 10**6), rng.randint(0, 10**6)
                text = " ".join(f"{a}+{b}={a + b}" for _ in range(words_per_example // 20 + 1))
            else:
                text = " ".join(f"w{rng.randrange(vocab - 4)}" for _ in range(words_per_example))
            f.write(json.dumps({"text": text}) + "\n")


def write_plan(root: Path, name: str, *, gpus: int, sharding: str, mode: str, accelerator: str, seq: int,
               global_seqs: int, micro: int, steps: int, placement: str = "auto", data: str = "train.jsonl") -> Path:
    plan = root / f"{name}.toml"
    plan.write_text(f'''name = "{name}"
[teacher]
model = "teacher"
placement = "{placement}"
[student]
model = "student"
[method]
kind = "logit-kd"
teacher_mode = "{mode}"
temperature = 2.0
kd_weight = 0.9
[adapter]
kind = "full"
[data]
train = "{data}"
seq_len = {seq}
global_batch_tokens = {global_seqs * seq}
[hardware]
target = "local"
accelerator = "{accelerator}"
gpus = {gpus}
sharding = "{sharding}"
[training]
learning_rate = 0.0001
micro_batch_size = {micro}
max_steps = {steps}
eval_samples = 0
''')
    return plan


def run(plan: Path, run_dir: Path, processes: int) -> dict:
    """``distill run`` in fresh processes; the run's estimate, measurements, losses and wall time."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "distill_studio.engine.cli", "run", str(plan), "--run-dir", str(run_dir)]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{plan.name}: distill run failed\n{proc.stderr[-4000:]}")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    started = next(e for e in events if e["type"] == "run_started")
    finished = events[-1]
    return {"wall_seconds": wall, "estimate": started["estimate"], "measured": finished["measured"],
            "sharding": started["sharding"], "teacher_placement": started["teacher_placement"],
            "losses": [e["loss"] for e in events if e["type"] == "metric"], "run_dir": str(run_dir)}


def idle_rss() -> int:
    """Resident set of a process that imported what a training process imports, and nothing else."""
    code = ("import resource, torch, transformers, peft, accelerate\n"
            "from transformers import AutoModelForCausalLM\n"
            "import distill_studio.engine.train.session\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    return int(subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                              check=True).stdout.split()[-1])


def max_weight_difference(a: str, b: str) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(str(Path(a) / "student" / "model.safetensors")), load_file(str(Path(b) / "student" / "model.safetensors"))
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def cpu(out_json: Path | None) -> dict:
    import torch
    from transformers import AutoTokenizer

    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, no GPU"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
        vocab = 24
        make_pair(root, _qwen2(8, 1024, 4096, vocab, 8, 2, 256, False), _qwen2(4, 1024, 4096, vocab, 8, 2, 256, False),
                  tok, torch.float32)
        write_data(root / "train.jsonl", 64, 200, None)
        write_data(root / "prepass.jsonl", 512, 200, None, seed=1)
        common = dict(accelerator="cpu", seq=64, global_seqs=16, micro=8, steps=4)
        rss0 = idle_rss()
        results["idle_process_rss_mib"] = rss0 / MIB
        cases = {
            "one process": (write_plan(root, "one", gpus=1, sharding="none", mode="online", **common), 1),
            "two processes, DDP": (write_plan(root, "ddp", gpus=2, sharding="none", mode="online", **common), 2),
            "two processes, sharded": (write_plan(root, "fsdp", gpus=2, sharding="all-gpus", mode="online",
                                                  **common), 2),
        }
        runs = {}
        for label, (plan, n) in cases.items():
            runs[label] = run(plan, root / f"run-{plan.stem}", n)
            print(f"{label}: {runs[label]['wall_seconds']:.1f} s", file=sys.stderr)
        ref = runs["one process"]
        rows = []
        for label, r in runs.items():
            m, e = r["measured"], r["estimate"]
            est_mib = (e["memory_gib_per_gpu"] - e["memory_breakdown_gib"]["overhead"]) * 1024 + rss0 / MIB
            peaks = [p / MIB for p in m["peak_memory_bytes_per_rank"]]
            rows.append({
                "case": label, "sharding": r["sharding"], "teacher": r["teacher_placement"],
                "student_mib_per_rank": [b / MIB for b in m["parameter_bytes_per_rank"]["student"]],
                "teacher_mib_per_rank": [b / MIB for b in m["parameter_bytes_per_rank"]["teacher"]],
                "peak_rss_mib_per_rank": peaks, "estimate_mib_per_rank": est_mib,
                "measured_over_estimate": statistics.median(peaks) / est_mib,
                "estimate_breakdown_gib": e["memory_breakdown_gib"],
                "max_weight_difference_vs_one_process": max_weight_difference(ref["run_dir"], r["run_dir"]),
                "max_loss_difference_vs_one_process": max(abs(a - b) for a, b in zip(ref["losses"], r["losses"])),
                "tokens_per_second_per_device": m["tokens_per_second_per_device"],
            })
        results["training"] = rows

        pre = {}
        for label, n, sharding, placement in (("one process", 1, "none", "auto"),
                                              ("two processes, teacher replicated", 2, "all-gpus", "replicated"),
                                              ("two processes, teacher sharded", 2, "all-gpus", "sharded")):
            plan = write_plan(root, f"pre-{n}-{placement}", gpus=n, sharding=sharding, mode="offline-topk",
                              placement=placement, data="prepass.jsonl", **{**common, "steps": 1})
            r = run(plan, root / f"run-{plan.stem}", n)
            pre[label] = {"teacher_pass_seconds": r["measured"]["teacher_pass_seconds"],
                          "teacher_placement": r["teacher_placement"],
                          "estimated_teacher_pass_hours": r["estimate"]["hours"]["teacher_pass"]}
            print(f"pre-pass, {label}: {pre[label]['teacher_pass_seconds']:.1f} s", file=sys.stderr)
        base = pre["one process"]["teacher_pass_seconds"]
        for v in pre.values():
            v["speed_up_over_one_process"] = base / v["teacher_pass_seconds"]
        results["prepass"] = pre
    _report(results)
    if out_json:
        out_json.write_text(json.dumps(results, indent=1))
    return results


def _report(res: dict) -> None:
    print(f"\nidle process resident set: {res['idle_process_rss_mib']:.0f} MiB")
    print("| case | sharding | teacher | student MiB/rank | teacher MiB/rank | peak RSS MiB/rank | estimate MiB | "
          "measured/estimate | max weight diff vs 1 | max loss diff vs 1 |")
    print("|---|---|---|---|---|---|---:|---:|---:|---:|")
    for r in res["training"]:
        f = lambda xs: " / ".join(f"{x:,.0f}" for x in xs)  # noqa: E731
        print(f"| {r['case']} | {r['sharding']} | {r['teacher']} | {f(r['student_mib_per_rank'])} | "
              f"{f(r['teacher_mib_per_rank'])} | {f(r['peak_rss_mib_per_rank'])} | {r['estimate_mib_per_rank']:,.0f} | "
              f"{r['measured_over_estimate']:.2f} | {r['max_weight_difference_vs_one_process']:.1e} | "
              f"{r['max_loss_difference_vs_one_process']:.1e} |")
    print("\n| pre-pass (512 examples x 64 tokens) | teacher | seconds | speed-up over one process |")
    print("|---|---|---:|---:|")
    for label, v in res["prepass"].items():
        print(f"| {label} | {v['teacher_placement']} | {v['teacher_pass_seconds']:.1f} | "
              f"{v['speed_up_over_one_process']:.2f} |")


def gpu(out_json: Path | None, smoke: bool = False) -> dict:
    """Every GPU of this machine, both models sharded, real Qwen2.5 shapes; see the module's docstring.
    ``smoke``: the same path on the CPU with two processes and scaled-down shapes, so the script is known to run."""
    import torch

    n = 2 if smoke else torch.cuda.device_count()
    if n == 0:
        raise SystemExit("--gpu: no CUDA device here (--smoke runs the same path on the CPU)")
    name = "cpu" if smoke else torch.cuda.get_device_name(0).lower()
    acc = "cpu" if smoke else "h200" if "h200" in name else "h100-nvl" if "nvl" in name else \
        "h100-sxm" if "h100" in name else "a100-80gb-sxm" if "a100" in name else None
    if acc is None:
        raise SystemExit(f"--gpu: {name} is not in the accelerator catalog")
    vocab = 4_096 if smoke else 151_665
    shape = _llama_as_qwen25
    teacher = shape(2, 64, 128, 4_096, 2, 1, 512, True) if smoke else shape(28, 1536, 8960, 151_936, 12, 2, 32768, True)
    student = shape(1, 64, 128, 4_096, 2, 1, 512, True) if smoke else shape(24, 896, 4864, 151_936, 14, 2, 32768, True)
    seq, steps = (128, 2) if smoke else (2048, 12)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{n} x {name}"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pair(root, teacher, student, word_tokenizer(vocab), torch.float32 if smoke else torch.bfloat16)
        write_data(root / "train.jsonl", 64 * n, seq + 52, vocab)
        plan = write_plan(root, "gpu", gpus=n, sharding="all-gpus" if n > 1 else "none", mode="online",
                          placement="sharded" if n > 1 else "auto", accelerator=acc, seq=seq, global_seqs=4 * n,
                          micro=4, steps=steps)
        r = run(plan, root / "run", n)
        m, e = r["measured"], r["estimate"]
        results.update({"sharding": r["sharding"], "teacher_placement": r["teacher_placement"],
                        "tokens_per_second_per_gpu": m["tokens_per_second_per_device"],
                        "estimated_tokens_per_second_per_gpu": e["tokens_per_second_per_gpu"],
                        "peak_allocated_gib_per_gpu": [p / GIB for p in m["peak_memory_bytes_per_rank"]],
                        "estimated_gib_per_gpu_without_runtime_overhead":
                            e["memory_gib_per_gpu"] - e["memory_breakdown_gib"]["overhead"],
                        "estimate_breakdown_gib": e["memory_breakdown_gib"]})
    print(json.dumps(results, indent=1))
    if out_json:
        out_json.write_text(json.dumps(results, indent=1))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="every GPU of this machine, real Qwen2.5 shapes")
    ap.add_argument("--smoke", action="store_true", help="with --gpu: the same path on the CPU, scaled down")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    out = args.json or (Path(os.environ["OUT"]) / "bench_sharding.json" if os.environ.get("OUT") else None)
    if args.gpu:
        gpu(out, smoke=args.smoke)
    else:
        cpu(out)


if __name__ == "__main__":
    main()
