"""What the packaged app and Windows need, tested where it can run here: the bundle's entry switch, the
cross-platform run lock, the stop file every platform honours, process liveness through psutil, and the flags a
Windows launch uses. (The Windows branches that call Windows APIs cannot run on this Linux machine: the launch with
CREATE_NEW_PROCESS_GROUP and the forced stop of a process tree are exercised only by their Unix counterparts.)"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill_studio.engine.runs import process as P
from distill_studio.engine.runs.lock import hold

ROOT = Path(__file__).resolve().parents[1]


def _entry():
    spec = importlib.util.spec_from_file_location("bundle_entry", ROOT / "packaging" / "entry.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_bundle_entry_runs_the_app_or_an_allowed_module():
    e = _entry()
    assert e.dispatch([]) == ("gui", [])
    assert e.dispatch(["--demo"]) == ("gui", ["--demo"])
    assert e.dispatch(["-m", "distill_studio.engine.cli", "run", "p.toml"]) == (
        "module", ["distill_studio.engine.cli", "run", "p.toml"])
    # how torch's elastic agent starts a rank: unbuffered, then -m
    assert e.dispatch(["-u", "-m", "distill_studio.engine.train", "--run-dir", "r"]) == (
        "module", ["distill_studio.engine.train", "--run-dir", "r"])
    with pytest.raises(SystemExit, match="runs only"):
        e.dispatch(["-m", "os"])
    with pytest.raises(SystemExit, match="not a Python interpreter"):
        e.dispatch(["-c", "print(1)"])
    # the second executable, `distill`: the command line by default, and -m still works (accelerate's launcher)
    assert e.dispatch(["plan", "p.toml"], "/opt/x/distill") == ("module", ["distill_studio.engine.cli", "plan", "p.toml"])
    assert e.dispatch(["--version"], r"C:\x\distill.exe") == ("module", ["distill_studio.engine.cli", "--version"])
    assert e.dispatch(["-m", "accelerate.commands.launch", "a"], "distill")[1][0] == "accelerate.commands.launch"


def test_the_entry_runs_the_distill_command_as_python_m_does():
    out = subprocess.run([sys.executable, str(ROOT / "packaging" / "entry.py"), "-m", "distill_studio.engine.cli",
                          "--version"], capture_output=True, text=True, timeout=120)
    from distill_studio.engine.version import VERSION

    assert out.returncode == 0 and out.stdout.splitlines()[0] == f"distill {VERSION}"


def test_one_version_everywhere():
    import tomllib

    from distill_studio.engine.version import VERSION
    from distill_studio.gui.about import about_rows

    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert VERSION == want
    assert dict(about_rows())["Distill Studio"].startswith(want)
    out = subprocess.run([sys.executable, "-m", "distill_studio.engine.cli", "--version"], capture_output=True,
                         text=True, timeout=60)
    first, libs = out.stdout.strip().splitlines()
    assert first == f"distill {want}"
    # and the versions of the libraries it runs with, as installed (the bundle carries their metadata)
    from importlib import metadata

    assert libs == ", ".join(f"{n} {metadata.version(n)}" for n in ("torch", "transformers", "peft", "accelerate"))
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        import build

        assert build.version() == want and want in f"DistillStudio-{build.version()}-{build.platform_tag()}"
    finally:
        sys.path.remove(str(ROOT / "packaging"))


def test_the_run_lock_is_held_across_processes_and_freed_when_its_holder_dies(tmp_path):
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from distill_studio.engine.runs.lock import hold\n"
                               "h, _ = hold(Path(sys.argv[1]))\nprint('held', flush=True)\ntime.sleep(60)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        held, who = hold(lock)
        assert held is None and who == str(holder.pid)
    finally:
        holder.kill()                  # killed, not released: the OS frees the lock
        holder.wait()
    held, who = hold(lock)
    assert held is not None and who is None
    again, who2 = hold(lock)           # one holder at a time, in this process too
    assert again is None and who2 == str(__import__("os").getpid())
    held.close()
    third, _ = hold(lock)
    assert third is not None
    third.close()


def test_liveness_knows_a_finished_process_and_a_reused_id(tmp_path):
    run = tmp_path / "run-20261202-1"
    run.mkdir()
    p = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(30)", str(run)])
    try:
        assert P.is_alive(p.pid, run) and P.is_alive(p.pid)
        assert not P.is_alive(p.pid, tmp_path / "another-run")     # the id is not that run's process
    finally:
        p.kill()
    deadline = time.monotonic() + 10
    while P.is_alive(p.pid, run) and time.monotonic() < deadline:   # a zombie until reaped: not alive
        time.sleep(0.05)
    assert not P.is_alive(p.pid, run)
    p.wait()
    assert not P.is_alive(0)


def test_stop_writes_the_stop_file_and_signals_the_group(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    code = ("import signal, sys, time\nfrom pathlib import Path\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('sigterm', flush=True), sys.exit(130)))\n"
            "print('ready', flush=True)\ntime.sleep(30)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True,
                         **P.detached_popen_kwargs())
    assert p.stdout.readline().strip() == "ready"
    assert P.send_stop(p.pid, run)
    assert P.stop_file(run).exists()                                   # the portable request
    assert p.wait(10) == 130 and "sigterm" in p.stdout.read()          # and on Unix the signal
    P.clear_stop_file(run)
    assert not P.stop_file(run).exists()
    assert not P.send_stop(p.pid, run, force=True)                     # gone


def test_windows_launch_flags():
    kw = P.detached_popen_kwargs("win32")
    assert kw["creationflags"] & 0x200 and kw["creationflags"] & 0x08000000    # new group, no console window
    assert P.detached_popen_kwargs("linux") == {"start_new_session": True, "close_fds": True}


def test_the_packaged_app_starts_runs_with_its_own_distill_executable(monkeypatch, tmp_path):
    from distill_studio.gui.monitor import runs

    assert runs.engine_command()[1:] == ["-m", "distill_studio.engine.cli"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "DistillStudio"))
    cmd = runs.run_command("p.toml", str(tmp_path / "run"))
    assert cmd[0] == str(tmp_path / "distill") and cmd[1:3] == ["run", "p.toml"]
    monkeypatch.setattr(sys, "platform", "win32")
    assert runs.engine_command() == [str(tmp_path / "distill.exe")]
