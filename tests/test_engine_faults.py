"""Faults a run meets and how it answers: a GPU plan on a machine without its GPUs is refused at once, a huge record
costs no more memory than its line, a byte that is not UTF-8 is named by line and true offset, a rank killed is
named with its signal, and a force stop ends every rank of a run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from distill_studio.engine.errors import DataError  # noqa: E402
from distill_studio.engine.train.data import char_budget, cut_record, encode, read_records  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ---- data: a non-UTF-8 byte is named by its line and its offset in the file ------------------------------------

def _records(n: int) -> bytes:
    return b"".join(json.dumps({"prompt": f"{i}+1=", "response": f"#### {i + 1}"}).encode() + b"\n"
                    for i in range(n))


def test_a_byte_that_is_not_utf8_is_named_by_line_and_offset_in_the_file(tmp_path):
    good = _records(3000)               # far more than one 8 KiB read: the offset must be the file's, not a chunk's
    bad = b'{"prompt": "caf\xe9", "response": "x"}\n'
    path = tmp_path / "train.jsonl"
    path.write_bytes(good + bad + _records(5))
    with pytest.raises(DataError) as err:
        read_records(path)
    at = len(good) + bad.index(b"\xe9")
    text = str(err.value)
    assert "line 3,001" in text and f"byte {at:,} of the file" in text and "0xe9" in text
    assert "data.train" in text and str(path) in text

    # a byte-order mark is not counted as a line's text, but the offset stays the file's
    path.write_bytes(b"\xef\xbb\xbf" + good + bad)
    with pytest.raises(DataError, match=f"line 3,001: .*byte {at + 3:,} of the file"):
        read_records(path)
    path.write_bytes(b"\xef\xbb\xbf" + good)
    assert len(read_records(path)) == 3000

    # .txt documents too
    txt = tmp_path / "train.txt"
    txt.write_bytes(b"first doc\n\nsecond\nline three \xff here\n")
    with pytest.raises(DataError, match=r"train\.txt: line 4: not UTF-8 text \(byte 0xff at byte 29 of the file, "
                                        r"column 12"):
        read_records(txt)


# ---- data: a huge record is cut as it is read; memory stays bounded ---------------------------------------------

def test_records_are_cut_to_what_seq_len_tokens_can_hold_in_reading_order():
    budget = 10
    row, cut = cut_record({"prompt": "abcdef", "response": "ghijklmnop", "answer": "x"}, budget)
    assert cut and row == {"prompt": "abcdef", "response": "ghij", "answer": "x"}
    row, cut = cut_record({"text": "short"}, budget)
    assert not cut and row == {"text": "short"}
    conv = {"messages": [{"role": "user", "content": "12345678"}, {"role": "assistant", "content": "abcdef"},
                         {"role": "user", "content": "more"}]}
    row, cut = cut_record(conv, budget)
    assert cut and row["messages"] == [{"role": "user", "content": "12345678"}, {"role": "assistant", "content": "ab"}]
    assert conv["messages"][1]["content"] == "abcdef"   # the record read is left as it was
    assert char_budget(16) == 16 * 32


MEASURE = textwrap.dedent("""
    import json, sys, threading, time
    import psutil
    sys.path.insert(0, sys.argv[3])
    import tiny
    from distill_studio.engine.train.data import encode, read_records
    tok = tiny.char_tokenizer()
    encode([{"prompt": "1+1=", "response": "#### 2"}], tok, 16)    # warm the tokenizer's own allocations
    me, peak, done = psutil.Process(), [0], threading.Event()

    def sample():   # the resident set, every few milliseconds: the tokenizer's memory is not Python's to trace
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.002)

    before = me.memory_info().rss
    watcher = threading.Thread(target=sample)
    watcher.start()
    t0 = time.monotonic()
    rows = read_records(sys.argv[1], seq_len=int(sys.argv[2]))
    enc = encode(rows, tok, int(sys.argv[2]))
    seconds = time.monotonic() - t0
    done.set()
    watcher.join()
    grown = peak[0] - before
    print(json.dumps({"grown": grown, "seconds": seconds, "examples": len(enc.examples),
                      "truncated": enc.truncated, "longest": max(len(r.get("response", "")) for r in rows)}))
""")


def test_a_record_of_tens_of_megabytes_costs_memory_for_its_line_only(tmp_path):
    path = tmp_path / "train.jsonl"
    size = 32 << 20
    with open(path, "w") as f:
        for i in range(20):
            f.write(json.dumps({"prompt": f"{i}+1=", "response": f"#### {i + 1}"}) + "\n")
        f.write(json.dumps({"prompt": "9+9=", "response": "1" * size}) + "\n")   # one valid 32 MiB record
    r = subprocess.run([sys.executable, "-c", MEASURE, str(path), "16", str(Path(__file__).parent)], env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    # tokenised whole, the record would take about 400 bytes a character here (over 10 GB); read and cut, a few
    # copies of its line at most (about 3: the bytes, the text, the parsed string)
    assert got["grown"] < 5 * size, got
    assert got["longest"] <= char_budget(16) and got["examples"] == 21 and got["truncated"] == 1
    assert got["seconds"] < 15, got


def test_a_line_beyond_the_limit_is_refused_by_its_number(tmp_path, monkeypatch):
    from distill_studio.engine.train import data

    monkeypatch.setattr(data, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "train.jsonl"
    path.write_bytes(_records(4) + json.dumps({"text": "x" * 5000}).encode() + b"\n")
    with pytest.raises(DataError, match=r"data\.train: .*train\.jsonl: line 5 is longer than"):
        read_records(path)


def test_encode_cuts_a_record_given_whole_before_tokenising_it():
    tok = tiny.char_tokenizer()
    enc = encode([{"prompt": "1+1=", "response": "2" * 100_000}], tok, 16)
    assert enc.truncated == 1 and len(enc.examples[0].input_ids) == 16


# ---- devices: a GPU plan is refused, naming what was found, on a process without its GPUs ------------------------

from distill_studio.engine.train.parallel import Devices, check_devices  # noqa: E402


def _gpu_plan(tmp_path: Path, accelerator: str = "h100-sxm", gpus: int = 2) -> Path:
    if not (tmp_path / "teacher").is_dir():
        tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, hardware=f'gpus = {gpus}', name=f"{accelerator}.toml")
    plan.write_text(plan.read_text().replace('accelerator = "cpu"', f'accelerator = "{accelerator}"'))
    return plan


def _resolved(plan: Path):
    from distill_studio.engine.plan import load_plan
    from distill_studio.engine.planner import resolve_run

    return resolve_run(load_plan(plan), plan.parent)


H100 = ("NVIDIA H100 80GB HBM3", 85_520_809_984)


def test_the_device_check_names_what_it_found(tmp_path):
    resolved = _resolved(_gpu_plan(tmp_path))
    assert resolved.gpus_per_node == 2

    def refused(found: Devices) -> str:
        with pytest.raises(Exception) as err:
            check_devices(resolved, found)
        assert type(err.value).__name__ == "RunError"
        text = str(err.value)
        assert "needs 2 GPU(s) per node" in text and "NVIDIA H100 SXM 80GB" in text
        return text

    check_devices(resolved, Devices("cuda", (H100[0],) * 2, (H100[1],) * 2))        # as planned
    check_devices(resolved, Devices("cuda", (H100[0],) * 8, (H100[1],) * 8))        # more than needed is fine
    check_devices(resolved, Devices("cuda", ("NVIDIA H100 PCIe",) * 2, (85e9,) * 2))  # the same part, another form
    text = refused(Devices("none", note="torch 2.13.0+cpu is a build without CUDA"))
    assert "finds no GPU (torch 2.13.0+cpu is a build without CUDA)" in text and "never trains on the CPU" in text
    text = refused(Devices("cuda", (H100[0],), (H100[1],)))
    assert "finds 1 device(s): 1 × NVIDIA H100 80GB HBM3: fewer than the plan's 2 per node" in text
    text = refused(Devices("cuda", ("NVIDIA A100-SXM4-80GB",) * 2, (85e9,) * 2))
    assert "finds 2 device(s): 2 × NVIDIA A100-SXM4-80GB: another accelerator than the plan's" in text
    text = refused(Devices("rocm", ("AMD Instinct MI300X",) * 8, (205e9,) * 8))
    assert "8 × AMD Instinct MI300X: another accelerator" in text
    text = refused(Devices("mps", ("Apple GPU (MPS)",)))
    assert "1 × Apple GPU (MPS): another accelerator" in text

    # the catalog's part by its model as a word: an A10 plan is not run on A100s, an 80 GB plan not on 40 GB parts
    a10 = _resolved(_gpu_plan(tmp_path, "a10", 1))
    check_devices(a10, Devices("cuda", ("NVIDIA A10",), (23_836_033_024,)))
    with pytest.raises(Exception, match="1 × NVIDIA A100-SXM4-80GB: another accelerator"):
        check_devices(a10, Devices("cuda", ("NVIDIA A100-SXM4-80GB",), (85e9,)))
    a100 = _resolved(_gpu_plan(tmp_path, "a100-80gb-sxm", 1))
    with pytest.raises(Exception, match="with 42 GB each, less memory than the plan's 80 GB"):
        check_devices(a100, Devices("cuda", ("NVIDIA A100-SXM4-40GB",), (42_298_834_944,)))


def test_a_cpu_plan_needs_no_device(tmp_path):
    tiny.make_models(tmp_path)
    resolved = _resolved(tiny.write_plan(tmp_path))
    check_devices(resolved, Devices("none"))
    check_devices(resolved, Devices("cuda", ("NVIDIA A10",), (24e9,)))


@pytest.mark.parametrize("processes", [1, 2])
def test_a_gpu_plan_on_a_machine_without_gpus_stops_at_once_and_never_trains(tmp_path, processes):
    plan = _gpu_plan(tmp_path)
    run = tmp_path / "run"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", "run", str(plan), "--run-dir", str(run),
                        "--processes", str(processes)], env=ENV, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-3000:]
    import torch

    assert not torch.cuda.is_available()   # this test's machine: a CPU build, or no device visible
    assert "needs 2 GPU(s) per node" in r.stderr and "finds no GPU (torch " in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and not (run / "events.jsonl").exists() and not (run / "checkpoints").exists()
    # start-up (python, torch, the planner) and the refusal; the CPU of a busy test machine, not a training step
    assert took < 60, took


# ---- ranks: one killed is named with its signal; a force stop ends every rank at once ---------------------------

from distill_studio.engine.runs.events import read_events  # noqa: E402
from distill_studio.engine.runs.process import detached_popen_kwargs, is_alive, send_stop  # noqa: E402

SHARDED = 'gpus = 2\nsharding = "all-gpus"'


def _start_two_ranks(tmp_path: Path, **popen) -> tuple[subprocess.Popen, Path, dict[int, int]]:
    """A 2-rank run of a plan that would train for hours, once both ranks are training: (process, run folder,
    {rank: pid})."""
    import psutil

    tiny.make_models(tmp_path)
    plan = tiny.write_plan(tmp_path, steps=100_000, data_n=64, extra="eval_samples = 0\neval_at_start = false",
                           hardware=SHARDED)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "distill_studio.engine.cli", "run", str(plan), "--run-dir",
                             str(run), "--processes", "2"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **popen)
    deadline = time.monotonic() + 240
    while not ((run / "events.jsonl").exists()
               and any(e["type"] == "metric" for e in read_events(run / "events.jsonl"))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    ranks = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        env = child.environ()
        if "RANK" in env and "distill_studio.engine.train" in " ".join(child.cmdline()):
            ranks[int(env["RANK"])] = child.pid
    assert sorted(ranks) == [0, 1], ranks
    return proc, run, ranks


def test_a_rank_killed_is_named_with_its_signal_and_the_others_stop_because_of_it(tmp_path):
    proc, run, ranks = _start_two_ranks(tmp_path)
    os.kill(ranks[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode not in (0, 130), err[-3000:]
    said = (f"error: rank 0 (pid {ranks[0]}) was killed by SIGKILL (signal 9, exit -9); nothing in the run sends "
            "that")
    assert said in err and "The other rank (1) stopped because of it." in err, err[-3000:]
    # the survivor says why it stopped, not the collective library's text; no launcher report, no traceback
    assert "error (rank 1): stopped: another process of the run ended" in err, err[-3000:]
    for raw in ("Connection reset", "GLHF", "Traceback", "ChildFailedError", "elastic"):
        assert raw not in err, (raw, err[-3000:])
    assert f"distill run --resume {run} --processes 2" in err
    end = read_events(run / "events.jsonl")[-1]   # rank 0 wrote no end of its own: the launcher's caller did
    assert end["type"] == "run_finished" and end["status"] == "failed"
    assert "rank 0" in end["message"] and "SIGKILL" in end["message"]


@pytest.mark.parametrize("how", ["force stop", "SIGKILL to the run's group"])
def test_a_force_stop_ends_every_rank_of_the_run_at_once(tmp_path, how):
    proc, run, ranks = _start_two_ranks(tmp_path, **detached_popen_kwargs())   # started as the app starts a run
    t0 = time.monotonic()
    if how == "force stop":
        assert send_stop(proc.pid, run, force=True)     # the app's Force stop
    else:
        os.killpg(proc.pid, signal.SIGKILL)             # the run's process group only: the ranks die with it
    while any(is_alive(pid) for pid in ranks.values()) and time.monotonic() - t0 < 2.0:
        time.sleep(0.02)
    left = {r: pid for r, pid in ranks.items() if is_alive(pid)}
    took = time.monotonic() - t0
    for pid in left.values():   # never leave a process behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"ranks {sorted(left)} still alive {took:.1f} s after the stop"
    proc.wait(timeout=10)
    steps = [e["step"] for e in read_events(run / "events.jsonl") if e["type"] == "metric"]
    time.sleep(1.0)
    assert [e["step"] for e in read_events(run / "events.jsonl") if e["type"] == "metric"] == steps
