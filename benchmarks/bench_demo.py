"""The bundled demo's figures: does the student learn from the teacher?

Runs the demo plan (logit KD from the tiny arithmetic teacher) and the same plan with ``method.kind = "ce"``
(cross-entropy on the same data only, same student initialisation, steps, batch and learning rate), each through
``distill run`` as a separate process, and reports the held-out task score (exact match of the final answer) of
the teacher and of both students, plus KL to the teacher and top-1 agreement.

    python benchmarks/bench_demo.py [--plan resources/demo/plan.toml] [--steps N] [--out RESULTS.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]


def variant(plan_path: Path, folder: Path, kind: str, steps: int | None) -> Path:
    doc = tomllib.loads(plan_path.read_text())
    base = plan_path.parent.resolve()
    for section, key in (("teacher", "model"), ("student", "model"), ("data", "train"), ("data", "eval"),
                         ("data", "prompts")):
        if key in doc.get(section, {}):
            doc[section][key] = str(base / doc[section][key])
    doc["name"] = f"{doc['name']}-{kind}"
    doc["method"]["kind"] = kind
    if kind == "ce":
        doc["method"].pop("teacher_mode", None)
    if steps:
        doc.setdefault("training", {})["max_steps"] = steps
    out = folder / f"{kind}.toml"
    out.write_text(tomli_w.dumps(doc))
    return out


def run(plan: Path, run_dir: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", "run", str(plan), "--run-dir",
                           str(run_dir)], env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{plan.name} failed:\n{proc.stderr[-3000:]}")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["type"] == "eval"]
    metrics = [e for e in events if e["type"] == "metric"]
    return {"seconds": round(seconds, 1), "steps": metrics[-1]["step"], "first_eval": evals[0], "last_eval": evals[-1],
            "median_tokens_per_second": sorted(m["tokens_per_second"] for m in metrics)[len(metrics) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=Path, default=ROOT / "resources/demo/plan.toml")
    ap.add_argument("--steps", type=int, help="override training.max_steps (both runs)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {kind: run(variant(args.plan, tmp, kind, args.steps), tmp / f"run-{kind}")
                   for kind in ("logit-kd", "ce")}
    kd, ce = results["logit-kd"], results["ce"]
    teacher = kd["last_eval"].get("teacher_task_score")
    print(f"{'':22}{'task score':>11}{'KL to teacher':>15}{'top-1 agree':>13}{'wall s':>9}{'tok/s':>9}")
    print(f"{'teacher':22}{teacher:>11.3f}")
    for name, r in (("student, KD", kd), ("student, CE only", ce), ("student before", kd | {"last_eval": kd["first_eval"]})):
        e = r["last_eval"]
        print(f"{name:22}{e['task_score']:>11.3f}{e.get('kl', float('nan')):>15.4f}"
              f"{e.get('top1_agreement', float('nan')):>13.3f}{r['seconds']:>9.0f}{r['median_tokens_per_second']:>9.0f}")
    share = kd["last_eval"]["task_score"] / teacher if teacher else float("nan")
    print(f"KD student reaches {share:.1%} of the teacher's score; KD - CE = "
          f"{kd['last_eval']['task_score'] - ce['last_eval']['task_score']:+.3f} at {kd['steps']} steps each")
    if args.out:
        args.out.write_text(json.dumps({"teacher_task_score": teacher, **results}, indent=1))


if __name__ == "__main__":
    main()
