"""The smoke job's node side: a few minutes on the planned VM size that say whether a long run there would work,
and what its interconnect and storage really deliver.

Started by Azure ML like a training job (the same image, environment variables, inputs, output mount and PyTorch
launcher: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in every process)::

    python -m distill_studio.engine.azure.smoke_node --out OUTPUT --data TRAIN_INPUT --sku SIZE \\
        --nodes N --gpus-per-node G [--hf-model REPO ...]

Each check prints one ``PASS``/``FAIL`` line with its numbers:

- **cuda**: CUDA works and every node has the size's GPU count (``torch.cuda.device_count()``, their names);
- **all_reduce / all_gather**: bus bandwidth over ``torch.distributed`` (NCCL on GPUs, gloo where there are none),
  computed as nccl-tests does (``algbw = bytes / time``; all-reduce ``busbw = algbw × 2(n-1)/n``, all-gather
  ``busbw = algbw × (n-1)/n``, ``bytes`` the whole gathered buffer), for a few sizes up to 256 MB: within a node,
  and across nodes when there are two;
- **hf_token**: for a gated model, the token read from Key Vault as a training job reads it (``node.load_hf_token``)
  opens the model's repository (a HEAD of its ``config.json`` with huggingface_hub); the token is never printed;
- **data_read**: the training input read for a few seconds (up to ``--read-mb``);
- **output_write**: ``--write-mb`` written and fsynced into the output mount, then deleted.

Rank 0 writes every result as ``smoke.json`` into the output folder (read back by ``distill azure smoke``, kept as
a calibration record: ``estimate/smoke_records.py``) and logs them to the job's MLflow run as ``smoke/*`` metrics
and a ``distill.smoke`` tag. The exit status is 0 when every check passed, 1 otherwise; the results are written
either way.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = "smoke.json"
VERSION = 1
GB = 1e9                      # bandwidth in GB/s (10^9 bytes), as nccl-tests reports it
MB = 1 << 20


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _say(text: str) -> None:
    if _rank() == 0:
        print(text, flush=True)


class Results:
    def __init__(self, args) -> None:
        self.doc: dict[str, Any] = {
            "version": VERSION, "kind": "distill-smoke", "started": time.time(), "sku": args.sku,
            "nodes": args.nodes, "gpus_per_node": args.gpus_per_node,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "job": os.environ.get("AZUREML_RUN_ID", ""), "checks": [], "collectives": [], "storage": {}}

    def check(self, name: str, ok: bool | None, text: str, **numbers: Any) -> None:
        """``ok`` None: skipped (nothing to check), neither pass nor fail."""
        self.doc["checks"].append({"name": name, "ok": ok, "text": text, **numbers})
        _say(f"{'SKIP' if ok is None else 'PASS' if ok else 'FAIL'} {name}: {text}")


# ---- CUDA -----------------------------------------------------------------------------------------------------------

def check_cuda(res: Results, gpus_per_node: int) -> bool:
    import torch

    if not torch.cuda.is_available():
        why = "no GPU" + (f" (torch {torch.__version__} is a CPU build)" if torch.version.cuda is None else
                          f" (torch {torch.__version__}, CUDA {torch.version.cuda}: the driver or the device is not "
                          "reachable)")
        res.check("cuda", False, f"{why}; the size has {gpus_per_node} GPU(s) a node", gpus_found=0,
                  gpus_expected=gpus_per_node)
        return False
    count = torch.cuda.device_count()
    names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
    ok = count == gpus_per_node
    res.check("cuda", ok, f"{count} GPU(s) ({', '.join(names)}), {gpus_per_node} expected; CUDA "
                          f"{torch.version.cuda}, torch {torch.__version__}", gpus_found=count,
              gpus_expected=gpus_per_node, names=names)
    return ok


# ---- collectives ----------------------------------------------------------------------------------------------------

BUS_FACTOR = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_collective(op: str, size_bytes: int, group, n: int, device, iters: int, warmup: int) -> dict[str, float]:
    """One collective of ``size_bytes`` (the whole buffer: all-reduce's, or all-gather's gathered output) over the
    ``n`` ranks of ``group``: the slowest rank's mean time, and nccl-tests' algorithm and bus bandwidth."""
    import torch
    import torch.distributed as dist

    elems = max(n, size_bytes // 4 // n * n)          # float32, a whole number of chunks for all-gather
    if op == "all_reduce":
        buf = torch.ones(elems, dtype=torch.float32, device=device)

        def run():
            dist.all_reduce(buf, group=group)
    else:
        chunk = torch.ones(elems // n, dtype=torch.float32, device=device)
        out = torch.empty(elems, dtype=torch.float32, device=device)
        parts = list(out.chunk(n))

        def run():
            if device.type == "cuda":
                dist.all_gather_into_tensor(out, chunk, group=group)
            else:
                dist.all_gather(parts, chunk, group=group)
    for _ in range(warmup):
        run()
    _sync(device)
    dist.barrier(group=group)
    start = time.perf_counter()
    for _ in range(iters):
        run()
    _sync(device)
    took = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64, device=device)
    dist.all_reduce(took, op=dist.ReduceOp.MAX, group=group)
    seconds = float(took.item())
    nbytes = elems * 4
    algbw = nbytes / seconds / GB
    return {"size_bytes": nbytes, "seconds": seconds, "algbw_gb_per_s": algbw,
            "busbw_gb_per_s": algbw * BUS_FACTOR[op](n)}


def check_collectives(res: Results, args, device, deadline: float) -> None:
    import torch
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    g = args.gpus_per_node
    nodes = max(1, world // g) if world % g == 0 else 1
    # every rank creates every group, in the same order (torch.distributed's rule)
    node_groups = [dist.new_group(list(range(k * g, (k + 1) * g))) for k in range(nodes)] if g > 1 else []
    scopes = []
    if g > 1:
        scopes.append(("intra-node", node_groups[rank // g] if rank < nodes * g else None, g,
                       args.expect_intra_gb_per_s))
    if nodes > 1:
        scopes.append(("across nodes", dist.group.WORLD, world, args.expect_inter_gb_per_s))
    if not scopes:
        res.check("collectives", None, "one process: there is no collective to measure")
        return
    sizes = [int(float(s) * MB) for s in args.sizes_mb.split(",") if s.strip()]
    for scope, group, n, expected in scopes:
        for op in ("all_reduce", "all_gather"):
            rows = []
            for size in sizes:
                # every rank stops at the same size: ranks that started at other times would otherwise disagree,
                # and the ones still measuring would wait in a collective the others never join
                late = torch.tensor([1.0 if time.time() > deadline else 0.0], device=device)
                dist.all_reduce(late, op=dist.ReduceOp.MAX)
                if late.item() > 0:
                    break
                rows.append({"op": op, "scope": scope, "ranks": n, **time_collective(
                    op, size, group, n, device, args.iters, args.warmup)})
            res.doc["collectives"] += rows
            name = f"{op} {scope}"
            if not rows:
                res.check(name, False, "not measured: the smoke job's time ran out")
                continue
            best = max(rows, key=lambda r: r["busbw_gb_per_s"])
            table = ", ".join(f"{r['size_bytes'] / MB:g} MB {r['busbw_gb_per_s']:.2f}" for r in rows)
            ok = best["busbw_gb_per_s"] > 0 and (not expected or best["busbw_gb_per_s"] >= 0.5 * expected)
            want = f"; expected about {expected:.0f} GB/s" if expected else ""
            res.check(name, ok, f"bus bandwidth {best['busbw_gb_per_s']:.2f} GB/s at {best['size_bytes'] / MB:g} MB "
                                f"over {n} ranks ({dist.get_backend()}; GB/s by size: {table}){want}",
                      busbw_gb_per_s=best["busbw_gb_per_s"], ranks=n)


# ---- the Hugging Face token -----------------------------------------------------------------------------------------

def _scrub(text: str, token: str) -> str:
    return text.replace(token, "<token>") if token else text


def check_hf_token(res: Results, repos: list[str]) -> None:
    if not repos:
        res.check("hf_token", None, "the plan's models are not gated: no token needed")
        return
    from .node import SECRET_ENV, load_hf_token

    try:
        load_hf_token()
    except Exception as exc:  # noqa: BLE001 — RunError with what to grant, or the SDK's own
        res.check("hf_token", False, str(exc).splitlines()[0])
        return
    token = os.environ.get("HF_TOKEN", "")
    if not token:
        res.check("hf_token", False, f"no Hugging Face token: the job names no Key Vault secret ({SECRET_ENV}); set "
                                     "Settings › Azure › Hugging Face token secret, then run the smoke job again")
        return
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    for repo in repos:
        try:
            get_hf_file_metadata(hf_hub_url(repo, "config.json"), token=token, timeout=30)
        except Exception as exc:  # noqa: BLE001 — GatedRepoError, RepositoryNotFoundError, the network
            first = _scrub(str(exc), token).splitlines()[0] if str(exc) else ""
            res.check("hf_token", False, f"{repo}: {type(exc).__name__}: {first}; accept the model's licence on "
                                         "huggingface.co with the token's account, and check the token's scope")
            return
    res.check("hf_token", True, f"the token opens {', '.join(repos)}")


# ---- storage --------------------------------------------------------------------------------------------------------

def check_read(res: Results, data: str, max_mb: float, seconds: float) -> None:
    if not data:
        res.check("data_read", None, "no training input given")
        return
    root = Path(data)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        res.check("data_read", False, f"{data}: no file to read (the training input is missing or empty)")
        return
    limit, total = int(max_mb * MB), 0
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while total < limit and time.perf_counter() - start < seconds:
                chunk = f.read(8 * MB)
                if not chunk:
                    break
                total += len(chunk)
        if total >= limit or time.perf_counter() - start >= seconds:
            break
    took = max(time.perf_counter() - start, 1e-9)
    rate = total / took / GB
    res.doc["storage"].update(read_bytes=total, read_seconds=took, read_gb_per_s=rate)
    res.check("data_read", total > 0, f"{total / MB:,.1f} MB read in {took:.2f} s: {rate * 1000:,.1f} MB/s "
                                      f"({len(files)} file(s) in the input)", gb_per_s=rate)


def check_write(res: Results, out: Path, size_mb: float) -> None:
    path = out / f".smoke-write-{os.getpid()}.bin"
    block = os.urandom(8 * MB)
    target = int(size_mb * MB)
    written = 0
    start = time.perf_counter()
    try:
        with open(path, "wb") as f:
            while written < target:
                n = min(len(block), target - written)
                f.write(block[:n])
                written += n
            f.flush()
            os.fsync(f.fileno())
        took = max(time.perf_counter() - start, 1e-9)
    except OSError as exc:
        res.check("output_write", False, f"writing {path} failed: {exc.strerror or exc}")
        return
    finally:
        try:
            path.unlink()
        except OSError:
            pass
    rate = written / took / GB
    res.doc["storage"].update(write_bytes=written, write_seconds=took, write_gb_per_s=rate)
    res.check("output_write", True, f"{written / MB:,.0f} MB written and synced in {took:.2f} s: "
                                    f"{rate * 1000:,.1f} MB/s", gb_per_s=rate)


# ---- MLflow ---------------------------------------------------------------------------------------------------------

def log_mlflow(doc: dict[str, Any]) -> None:
    """The results as MLflow metrics and a tag of the job's run (Azure ML's tracking), where the job asks for it."""
    from ..runs.mlflow_bridge import MAX_TAG_CHARS, MIRROR_ENV

    if os.environ.get(MIRROR_ENV) != "1":
        return
    try:
        import mlflow

        if mlflow.active_run() is None:
            mlflow.start_run()
        metrics = {}
        for c in doc["checks"]:
            if c["ok"] is not None:
                metrics[f"smoke/{c['name'].replace(' ', '_')}/ok"] = 1.0 if c["ok"] else 0.0
            if isinstance(c.get("gb_per_s"), float):
                metrics[f"smoke/{c['name']}/gb_per_s"] = c["gb_per_s"]
        for r in doc["collectives"]:
            scope = r["scope"].replace(" ", "_")
            metrics[f"smoke/{r['op']}/{scope}/busbw_gb_per_s/{r['size_bytes'] // MB}MB"] = r["busbw_gb_per_s"]
        mlflow.log_metrics(metrics)
        summary = {k: doc[k] for k in ("ok", "sku", "nodes", "gpus_per_node", "world_size")}
        summary["checks"] = {c["name"]: c["ok"] for c in doc["checks"]}
        mlflow.set_tags({"distill.smoke": json.dumps(summary)[:MAX_TAG_CHARS], "distill.smoke.ok": str(doc["ok"])})
    except Exception as exc:  # noqa: BLE001 — the results are in smoke.json either way
        print(f"MLflow logging failed ({type(exc).__name__}: {exc}); the results are in {RESULTS}", file=sys.stderr)


# ---- main -----------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m distill_studio.engine.azure.smoke_node")
    p.add_argument("--out", type=Path, required=True, help="the output folder (the job's output mount)")
    p.add_argument("--data", default="", help="the training input (file or folder) to read")
    p.add_argument("--sku", default="")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=1)
    p.add_argument("--hf-model", action="append", default=[], help="a gated model repository the token must open")
    p.add_argument("--sizes-mb", default="1,16,64,256", help="collective sizes in MB, comma-separated")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--read-mb", type=float, default=1024.0)
    p.add_argument("--read-seconds", type=float, default=10.0)
    p.add_argument("--write-mb", type=float, default=512.0)
    p.add_argument("--expect-intra-gb-per-s", type=float, default=0.0)
    p.add_argument("--expect-inter-gb-per-s", type=float, default=0.0)
    p.add_argument("--max-seconds", type=float, default=420.0, help="the collectives stop starting new sizes after")
    args = p.parse_args(argv)
    for name in ("nodes", "gpus_per_node", "iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.time() + args.max_seconds
    res = Results(args)
    import torch

    rank, world = _rank(), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda_ok = check_cuda(res, args.gpus_per_node)
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() > local
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    res.doc["backend"] = "nccl" if use_cuda else "gloo"
    if world > 1:
        import datetime

        import torch.distributed as dist

        dist.init_process_group(res.doc["backend"], timeout=datetime.timedelta(minutes=5),
                                **({"device_id": device} if use_cuda else {}))
        try:
            check_collectives(res, args, device, deadline)
        finally:
            dist.barrier()
            dist.destroy_process_group()
    else:
        res.check("collectives", None, "one process: there is no collective to measure")
    if rank != 0:
        return 0 if cuda_ok else 1
    check_hf_token(res, args.hf_model)
    check_read(res, args.data, args.read_mb, args.read_seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    check_write(res, args.out, args.write_mb)
    res.doc["ok"] = all(c["ok"] is not False for c in res.doc["checks"])
    res.doc["finished"] = time.time()
    tmp = args.out / f".{RESULTS}.tmp"
    tmp.write_text(json.dumps(res.doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, args.out / RESULTS)      # a mount may copy; the name appears only once the file is whole
    log_mlflow(res.doc)
    failed = [c["name"] for c in res.doc["checks"] if c["ok"] is False]
    _say(f"smoke job: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}; results in "
         f"{args.out / RESULTS}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
