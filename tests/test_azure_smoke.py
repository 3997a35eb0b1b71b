"""The smoke job (``distill azure smoke``): the job built from the plan's own job pieces, its cost as a range, the
CLI refusing without confirmation, the node module measuring with 2 gloo processes here, the whole round trip
through the fake Azure at the HTTP transport, and the calibration records the estimator reads."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")

import azure_fake as F  # noqa: E402
from test_azure import ROOT, azure_plan, fake  # noqa: E402,F401  (fake: the fixture)

from distill_studio.engine.azure import smoke as S  # noqa: E402
from distill_studio.engine.estimate import smoke_records as R  # noqa: E402

NODE_SIZE = "Standard_ND96asr_v4"      # 8 × A100 with InfiniBand: a multi-node size


def multi_node_plan(tmp_path: Path) -> Path:
    path = azure_plan(tmp_path, name="demo-multi-node")
    text = path.read_text().replace('sku = "Standard_NC24ads_A100_v4"\nnodes = 1', f'sku = "{NODE_SIZE}"\nnodes = 2')
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_node(tmp_path: Path, *extra: str, processes: int = 2, gpus_per_node: int = 2) -> tuple[list[int], str, Path]:
    """The node module as Azure ML's launcher starts it: one process per rank, torchrun's variables."""
    out = tmp_path / "out"
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"prompt": "1+1", "response": "2"}\n' * 40000)      # about 1.4 MB
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "DISTILL_HF_TOKEN_SECRET")}
    procs = []
    for rank in range(processes):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distill_studio.engine.azure.smoke_node", "--out", str(out), "--data", str(data),
             "--sku", "cpu-test", "--nodes", str(processes // gpus_per_node), "--gpus-per-node", str(gpus_per_node),
             "--sizes-mb", "0.25,1", "--iters", "2", "--warmup", "1", "--write-mb", "8", *extra],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank % gpus_per_node), "WORLD_SIZE": str(processes),
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    return [p.returncode for p in procs], outputs[0], out


# ---- the job ------------------------------------------------------------------------------------------------------

def test_smoke_job_is_the_plans_job_with_the_smoke_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    from distill_studio.engine.azure.job import build

    plan = multi_node_plan(tmp_path)
    real = build(plan, "real-job", tmp_path / "real-code", hf_token_secret="hf-token",
                 key_vault_uri="https://kv.vault.azure.net/")
    assert real.nodes >= 2 and real.sku == NODE_SIZE
    spec = S.build_smoke(plan, "smoke-job", tmp_path / "code", hf_token_secret="hf-token",
                         key_vault_uri="https://kv.vault.azure.net/")
    job = spec.job
    assert (spec.sku, spec.nodes, spec.gpus_per_node) == (NODE_SIZE, 2, 8)
    assert job.resources.instance_count == 2
    assert job.distribution.process_count_per_instance == 8 and type(job.distribution).__name__ == "PyTorchDistribution"
    assert job.compute == real.job.compute == spec.cluster.name and spec.cluster.size == NODE_SIZE
    # the same node: environment (image build context), variables (NCCL on InfiniBand, the token secret's name)
    assert job.environment.build.path == real.job.environment.build.path
    assert job.environment_variables == real.job.environment_variables
    assert job.environment_variables["DISTILL_HF_TOKEN_SECRET"] == "hf-token"
    assert "NCCL_TOPO_FILE" in job.environment_variables
    cmd = job.command
    assert cmd.startswith("python -m distill_studio.engine.azure.smoke_node --out ${{outputs.smoke}}")
    assert f"--sku {NODE_SIZE} --nodes 2 --gpus-per-node 8" in cmd and "--data ${{inputs.data_train}}" in cmd
    assert "--expect-inter-gb-per-s" in cmd and "--expect-intra-gb-per-s" in cmd
    assert job.inputs["data_train"].path == real.job.inputs["data_train"].path
    assert job.outputs["smoke"].path == f"{S.SMOKE_ROOT}/smoke-job/" and job.outputs["smoke"].mode == "rw_mount"
    assert job.limits.timeout == S.JOB_TIMEOUT_S
    # the staged code holds the node module
    assert (tmp_path / "code" / "distill_studio" / "engine" / "azure" / "smoke_node.py").is_file()
    # a one-node plan: one node
    one = S.build_smoke(azure_plan(tmp_path), "smoke-one", tmp_path / "code1")
    assert one.job.resources.instance_count == 1 and "--expect-inter-gb-per-s" not in one.job.command


def test_smoke_cost_is_a_range_from_price_nodes_and_provisioning(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    one = S.smoke_cost(NODE_SIZE, "dedicated", 1, "eastus")
    two = S.smoke_cost(NODE_SIZE, "dedicated", 2, "eastus")
    rate = one["usd_per_node_hour"]
    assert rate and rate > 10
    lo, hi = two["usd"]
    assert lo < hi
    # nodes × price × (5-10 min on the node + provisioning as the estimator counts it, P10-P90)
    assert lo <= 2 * rate * (5 + two["provision_minutes"][0]) / 60 <= lo + 1
    assert hi - 1 <= 2 * rate * (10 + two["provision_minutes"][1]) / 60 <= hi
    assert two["provision_minutes"][0] < 15 < two["provision_minutes"][1]     # 0.25 h dedicated, spread
    assert one["usd"][1] < hi
    text = S.cost_text(two)
    assert S.usd_range_text(two) in text and "–" in S.usd_range_text(two) and "2 nodes" in text
    assert "." not in S.usd_range_text(two) or hi < 10          # no figure to the cent
    unknown = S.smoke_cost("Standard_Unknown_v9", "dedicated", 1, "eastus")
    assert unknown["usd"] is None and "not known" in S.cost_text(unknown)


def test_cli_refuses_without_confirmation_and_creates_nothing(fake, tmp_path, monkeypatch, capsys):
    from test_azure_preflight import nothing_created

    from distill_studio.engine.cli import main

    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "settings.json").write_text(json.dumps(F.settings_doc()))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    monkeypatch.setattr("sys.stdin", open(os.devnull))        # no terminal to ask on
    rc = main(["azure", "smoke", str(azure_plan(tmp_path))])
    err = capsys.readouterr().err
    assert rc != 0
    assert "smoke job on 1 × Standard_NC24ads_A100_v4" in err and "≈ $" in err     # the cost was shown
    assert "not confirmed" in err and "--yes" in err
    nothing_created(fake)
    assert not fake.state()["jobs"]


# ---- the node ---------------------------------------------------------------------------------------------------------

def test_node_measures_with_two_gloo_processes(tmp_path):
    codes, log, out = run_node(tmp_path, "--hf-model", "google/gemma-2-2b-it")
    doc = json.loads((out / "smoke.json").read_text())
    checks = {c["name"]: c for c in doc["checks"]}
    # no GPU here: the CUDA check fails, says so, and the job's exit status says it failed
    assert checks["cuda"]["ok"] is False and "no GPU" in checks["cuda"]["text"]
    assert codes == [1, 1] and doc["ok"] is False
    assert "FAIL cuda: no GPU" in log
    # all-reduce and all-gather over both processes, with nccl-tests' bus bandwidth
    assert doc["backend"] == "gloo" and doc["world_size"] == 2
    rows = doc["collectives"]
    assert {(r["op"], r["scope"]) for r in rows} == {("all_reduce", "intra-node"), ("all_gather", "intra-node")}
    for r in rows:
        assert r["busbw_gb_per_s"] > 0 and r["ranks"] == 2
        factor = 1.0 if r["op"] == "all_reduce" else 0.5          # 2(n-1)/n and (n-1)/n for n = 2
        assert r["busbw_gb_per_s"] == pytest.approx(r["algbw_gb_per_s"] * factor)
        assert r["algbw_gb_per_s"] == pytest.approx(r["size_bytes"] / r["seconds"] / 1e9)
    assert max(r["size_bytes"] for r in rows) == 1 << 20
    assert checks["all_reduce intra-node"]["ok"] and "PASS all_reduce intra-node" in log
    # storage: the input read, the output written, synced and deleted
    st = doc["storage"]
    assert st["read_bytes"] > 1_000_000 and st["read_gb_per_s"] > 0
    assert st["write_bytes"] == 8 << 20 and st["write_gb_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["smoke.json"]
    # a gated model with no token secret named: a failure that says what to set, and no token anywhere
    assert checks["hf_token"]["ok"] is False and "Settings › Azure › Hugging Face token secret" in checks["hf_token"]["text"]


def test_node_reports_a_missing_input(tmp_path):
    from distill_studio.engine.azure.smoke_node import Results, check_read, parse_args

    res = Results(parse_args(["--out", str(tmp_path)]))
    check_read(res, str(tmp_path / "nothing-here"), 1, 1)
    (c,) = res.doc["checks"]
    assert c["ok"] is False and "nothing-here" in c["text"] and "missing" in c["text"]
    with pytest.raises(SystemExit):
        parse_args(["--out", str(tmp_path), "--gpus-per-node", "0"])


# ---- the round trip and the records -------------------------------------------------------------------------------

def gpu_results(sku: str, nodes: int = 2, intra: float = 150.0, inter: float = 40.0, write_ok: bool = True) -> dict:
    """A node's smoke.json as a GPU size writes it."""
    checks = [{"name": "cuda", "ok": True, "text": "8 GPU(s)"},
              {"name": "all_reduce intra-node", "ok": True, "text": ""},
              {"name": "all_gather intra-node", "ok": True, "text": ""},
              {"name": "data_read", "ok": True, "text": ""},
              {"name": "output_write", "ok": write_ok, "text": ""}]
    rows = [{"op": "all_reduce", "scope": "intra-node", "ranks": 8, "size_bytes": s << 20, "seconds": 0.01,
             "algbw_gb_per_s": bw / 1.75, "busbw_gb_per_s": bw} for s, bw in ((16, intra / 2), (256, intra))]
    if nodes > 1:
        checks.append({"name": "all_reduce across nodes", "ok": True, "text": ""})
        rows.append({"op": "all_reduce", "scope": "across nodes", "ranks": 16, "size_bytes": 256 << 20,
                     "seconds": 0.1, "algbw_gb_per_s": inter / 1.875, "busbw_gb_per_s": inter})
    return {"version": 1, "sku": sku, "nodes": nodes, "gpus_per_node": 8, "world_size": 8 * nodes,
            "backend": "nccl", "ok": write_ok, "checks": checks, "collectives": rows,
            "storage": {"read_gb_per_s": 1.2, "write_gb_per_s": 0.6}}


def test_records_round_trip_and_what_the_estimator_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    assert R.measured_interconnect(NODE_SIZE) is None
    R.add_record(gpu_results(NODE_SIZE), job="smoke-a", plan="p")
    got = R.measured_interconnect("nd96asr_v4")                      # any spelling of the size
    assert got["intra_node_busbw_gb_per_s"] == 150.0 and got["inter_node_busbw_gb_per_s"] == 40.0
    assert got["data_read_gb_per_s"] == 1.2 and got["output_write_gb_per_s"] == 0.6
    assert got["jobs"]["intra_node_busbw_gb_per_s"] == "smoke-a"
    # a newer one-node record: its intra-node figure and storage, the older record's across-node figure
    R.add_record(gpu_results(NODE_SIZE, nodes=1, intra=120.0, write_ok=False), job="smoke-b")
    got = R.measured_interconnect(NODE_SIZE)
    assert got["intra_node_busbw_gb_per_s"] == 120.0 and got["jobs"]["intra_node_busbw_gb_per_s"] == "smoke-b"
    assert got["inter_node_busbw_gb_per_s"] == 40.0 and got["output_write_gb_per_s"] == 0.6    # b's write failed
    # CPU collectives (gloo, no CUDA) never stand for a GPU size's interconnect
    cpu = gpu_results("Standard_NC24ads_A100_v4", nodes=1)
    cpu.update(backend="gloo", checks=[{"name": "cuda", "ok": False, "text": "no GPU"}, *cpu["checks"][1:]])
    R.add_record(cpu, job="smoke-c")
    got = R.measured_interconnect("Standard_NC24ads_A100_v4")
    assert got["intra_node_busbw_gb_per_s"] is None and got["data_read_gb_per_s"] == 1.2
    assert [r["job"] for r in R.load_records()] == ["smoke-a", "smoke-b", "smoke-c"]
    with pytest.raises(ValueError, match="sku"):
        R.add_record({"checks": []})
    R.store_path().write_text("{not json")
    with pytest.raises(Exception, match="smoke.json could not be read"):
        R.load_records()


def test_smoke_round_trip_through_the_fake(fake, tmp_path, monkeypatch):
    """Confirmed: cluster and job created, followed until it completed, its smoke.json downloaded and recorded."""
    from test_azure import connect

    codes, _, out = run_node(tmp_path)
    results = json.loads((out / "smoke.json").read_text())
    results["sku"] = "Standard_NC24ads_A100_v4"
    az = connect(fake)
    done = threading.Event()

    def node():         # Azure ML's part: the job runs, writes its results to the output folder, completes
        name = F.wait_for(lambda: next(iter(fake.state()["jobs"]), None), timeout=60)
        fake.set_job(name, "Running")
        output = fake.job(name)["properties"]["outputs"]["smoke"]["uri"]
        fake.put_blob(f"azureml-blobstore/{output.split('/paths/', 1)[1].rstrip('/')}/smoke.json",
                      json.dumps(results).encode())
        fake.set_job(name, "Completed")
        done.set()

    t = threading.Thread(target=node, daemon=True)
    t.start()
    said: list[str] = []
    got = S.run_smoke(azure_plan(tmp_path), az, confirm=lambda text: True, say=said.append, interval=0.05)
    t.join(10)
    assert done.is_set() and got["status"] == "Completed"
    assert got["results"]["checks"] == results["checks"]
    assert any("smoke job on 1 × Standard_NC24ads_A100_v4" in s for s in said)
    assert [r["method"] for r in fake.requests() if r["method"] == "PUT" and "/jobs/" in r["url"]] == ["PUT"]
    job = fake.job(got["job"])["properties"]
    assert "smoke_node" in job["command"] and job["resources"]["instanceCount"] == 1
    (rec,) = R.load_records()
    assert rec["job"] == got["job"] and rec["sku"] == "Standard_NC24ads_A100_v4" and rec["cost_usd"]
    assert json.loads((Path(got["folder"]) / "azure.json").read_text())["kind"] == "smoke"
    # measured on CPUs: storage figures kept, no interconnect figure for the GPU size
    m = R.measured_interconnect("Standard_NC24ads_A100_v4")
    assert m["intra_node_busbw_gb_per_s"] is None and m["data_read_gb_per_s"] > 0


# ---- the smoke job's own pre-flight --------------------------------------------------------------------------------

def test_smoke_preflight_stops_before_anything_is_created(fake, tmp_path, monkeypatch, capsys):
    """Quota for the smoke job's 2 nodes (not the plan's), permission, the input it reads: checked before any PUT;
    the data's size against the plan's tokens is not (the smoke job reads a sample)."""
    from test_azure_preflight import nothing_created, serve_exhausted_quota

    from distill_studio.engine.cli import main

    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "settings.json").write_text(json.dumps(F.settings_doc()))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    fake.set_permissions(["*/read"])
    serve_exhausted_quota(fake)                 # ND A100 v4: no quota
    plan = multi_node_plan(tmp_path)
    plan.write_text(plan.read_text().replace("[data]", "[data]\ntokens = 100_000_000", 1))   # far more than held
    rc = main(["azure", "smoke", str(plan), "--yes"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "smoke job on 2 × Standard_ND96asr_v4" in err                        # the cost, shown first
    assert "not submitted: the smoke job's pre-flight found" in err and "--force" in err
    assert f"may not create jobs in workspace {F.WS}" in err
    assert "FAIL quota: smoke job: 2 × Standard_ND96asr_v4 (dedicated)" in err   # its 2 nodes, not the plan's
    assert "bytes per token" not in err                                          # no size check for a sample
    nothing_created(fake)
    assert not fake.state()["jobs"]
    assert not (tmp_path / "data" / "smoke").exists() or not any((tmp_path / "data" / "smoke").iterdir())


def test_smoke_preflight_names_a_missing_input_and_force_submits_despite_it(fake, tmp_path, monkeypatch):
    from test_azure import connect

    az = connect(fake)
    plan = azure_plan(tmp_path)
    missing = "azureml://datastores/workspaceblobstore/paths/nope/"
    said: list[str] = []
    with pytest.raises(S.AzureError, match="pre-flight found 1 problem"):
        S.run_smoke(plan, az, confirm=lambda text: True, data_uri=missing, say=said.append, interval=0.05)
    assert any("FAIL data: data.train: nothing at " + missing in s for s in said), said
    assert not fake.state()["jobs"]
    # --force: the risk is said and kept; the job is sent once
    codes, _, out = run_node(tmp_path)
    results = json.loads((out / "smoke.json").read_text())
    results["sku"] = "Standard_NC24ads_A100_v4"

    def node():
        name = F.wait_for(lambda: next(iter(fake.state()["jobs"]), None), timeout=60)
        output = fake.job(name)["properties"]["outputs"]["smoke"]["uri"]
        fake.put_blob(f"azureml-blobstore/{output.split('/paths/', 1)[1].rstrip('/')}/smoke.json",
                      json.dumps(results).encode())
        fake.set_job(name, "Completed")

    t = threading.Thread(target=node, daemon=True)
    t.start()
    said.clear()
    got = S.run_smoke(plan, az, confirm=lambda text: True, data_uri=missing, say=said.append, interval=0.05,
                      force=True)
    t.join(10)
    assert any(s.startswith("--force: submitting the smoke job despite data: data.train: nothing at") for s in said)
    assert got["preflight"]["forced"] and got["preflight"]["risks_taken"][0].startswith("data: ")
    meta = json.loads((Path(got["folder"]) / "azure.json").read_text())
    assert meta["preflight"]["risks_taken"] == got["preflight"]["risks_taken"]
    assert len([r for r in fake.requests() if r["method"] == "PUT" and "/jobs/" in r["url"]]) == 1
