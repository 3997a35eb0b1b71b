"""Layering: the engine (planner, estimator, catalogs, CLI) never imports Qt, and the planner path imports none of
the heavy optional stacks (torch, transformers, peft, accelerate, Azure SDKs).

Imports are checked in fresh subprocesses, so nothing the test session itself imported can hide or fake a result.
Because the optional packages may not be installed here, the subprocesses also record every *attempt* to import
one (a meta-path finder that sees the name and declines), so ``try: import torch / except ImportError`` on the
planner path is caught too.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE_DIR = ROOT / "engine"
PLAN = ROOT / "resources" / "plans" / "qwq32b-to-qwen7b-3h.toml"
QT = ("PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "shiboken2", "pyqtgraph")
HEAVY = ("torch", "transformers", "peft", "accelerate", "azure", "PySide6")
# An import statement of Qt (or of the gui package, which is Qt), or a dynamic import of Qt by name.
QT_IMPORT = re.compile(
    r"^[ \t]*(?:import|from)[ \t]+(?:PySide\d*|PyQt\d*|shiboken\d*|pyqtgraph|qtpy|distill_studio\.gui)\b"
    r"|import_module\(\s*['\"](?:PySide|PyQt|shiboken|pyqtgraph)"
    r"|__import__\(\s*['\"](?:PySide|PyQt|shiboken|pyqtgraph)",
    re.M,
)

# Prepended to every subprocess script: records imports of the watched top-level names, found or not.
RECORDER = textwrap.dedent("""
    import sys
    WATCHED = set(sys.argv[1].split(","))
    ATTEMPTS = []

    class _Recorder:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in WATCHED:
                ATTEMPTS.append(name)
            return None

    sys.meta_path.insert(0, _Recorder())

    def watched_loaded():
        return sorted(m for m in sys.modules if m.split(".")[0] in WATCHED)
""")


def run_python(script: str, watched: tuple[str, ...], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL_STUDIO_DATA_DIR": str(tmp_path / "distill-data")}
    env.pop("PYTHONSTARTUP", None)
    return subprocess.run([sys.executable, "-c", RECORDER + textwrap.dedent(script), ",".join(watched)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def last_json_line(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------
# engine/ never imports Qt


def test_engine_sources_have_no_qt_imports():
    sources = sorted(ENGINE_DIR.rglob("*.py"))
    assert len(sources) >= 10, sources
    pattern = QT_IMPORT
    offenders = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0).strip()}")
    assert not offenders, "Qt (or the gui package) imported from engine/:\n" + "\n".join(offenders)


def test_the_static_check_would_see_a_qt_import():
    for line in ("import PySide6.QtCore\n", "    from PyQt5 import QtWidgets\n", "from shiboken6 import isValid\n",
                 "import pyqtgraph as pg\n", "from distill_studio.gui.app import run\n",
                 "mod = importlib.import_module('PySide6.QtWidgets')\n"):
        assert QT_IMPORT.search(line), line
    for line in ('"""No PySide6 here: the engine runs headless."""\n', "# PyQt is not needed\n",
                 "important = PySide6_version\n"):
        assert not QT_IMPORT.search(line), line


def test_importing_every_engine_module_loads_no_qt(tmp_path):
    r = run_python("""
        import importlib, json, pkgutil
        import distill_studio.engine as engine

        names, errors = [], {}
        for info in pkgutil.walk_packages(engine.__path__, prefix="distill_studio.engine."):
            try:
                importlib.import_module(info.name)
                names.append(info.name)
            except Exception as exc:  # reported below, never hidden
                errors[info.name] = f"{type(exc).__name__}: {exc}"
        gui = sorted(m for m in sys.modules if m.startswith("distill_studio.gui"))
        print(json.dumps({"imported": names, "errors": errors, "qt_loaded": watched_loaded(),
                          "qt_attempts": sorted(set(ATTEMPTS)), "gui": gui}))
    """, QT, tmp_path)
    assert r.returncode == 0, r.stderr
    doc = last_json_line(r.stdout)
    assert not doc["errors"], doc["errors"]
    imported = set(doc["imported"])
    # the walk really covered the engine
    for name in ("cli", "planner", "report", "plan", "checks", "errors", "catalog.models", "catalog.hardware",
                 "catalog.prices", "estimate.core", "estimate.sweep", "estimate.solve"):
        assert f"distill_studio.engine.{name}" in imported, name
    on_disk = {p.relative_to(ENGINE_DIR).with_suffix("").as_posix().replace("/", ".")
               for p in ENGINE_DIR.rglob("*.py") if p.name != "__init__.py"}
    assert {f"distill_studio.engine.{m}" for m in on_disk} <= imported
    assert doc["qt_loaded"] == []
    assert doc["qt_attempts"] == []
    assert doc["gui"] == []


# --------------------------------------------------------------------------------------------------------
# The planner path stays light


def test_planner_path_imports_no_torch_transformers_peft_or_azure(tmp_path):
    r = run_python(f"""
        import json
        from distill_studio.engine.cli import main
        rc = main(["plan", {str(PLAN)!r}, "--json"])
        print(sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "transformers", "peft", "accelerate",
                                                                     "azure", "PySide6"}}))
        print(json.dumps({{"rc": rc, "loaded": watched_loaded(), "attempts": sorted(set(ATTEMPTS))}}))
    """, HEAVY, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-2] == "[]", lines[-2]
    doc = json.loads(lines[-1])
    assert doc["rc"] == 0
    assert doc["loaded"] == [] and doc["attempts"] == [], doc
    # and it did answer: the plan's JSON came first
    answer = json.loads("\n".join(lines[:-2]))
    assert answer["recommendation"] is not None and answer["configurations_swept"] > 0


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "qwen2.5-7b", "--teacher", "qwq-32b", "--accelerator", "h100-sxm", "--gpus", "8",
     "--json"],
    ["catalog", "models", "--json"],
    ["prices", "show", "--region", "eastus"],
], ids=["estimate", "catalog", "prices"])
def test_other_headless_commands_stay_light(argv, tmp_path):
    r = run_python(f"""
        import json
        from distill_studio.engine.cli import main
        rc = main({argv!r})
        print(json.dumps({{"rc": rc, "loaded": watched_loaded(), "attempts": sorted(set(ATTEMPTS))}}))
    """, HEAVY + QT, tmp_path)
    assert r.returncode == 0, r.stderr
    doc = last_json_line(r.stdout)
    assert doc == {"rc": 0, "loaded": [], "attempts": []}


def test_the_recorder_notices_an_attempted_import(tmp_path):
    # guards the guard: a swallowed ImportError still shows up as an attempt
    r = run_python("""
        import json
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        print(json.dumps({"attempts": sorted(set(ATTEMPTS))}))
    """, HEAVY, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "torch" in last_json_line(r.stdout)["attempts"]


# --------------------------------------------------------------------------------------------------------
# The desktop app starts without the heavy libraries


def test_app_start_up_imports_no_torch_transformers_peft_or_azure(tmp_path):
    pytest.importorskip("PySide6")
    r = run_python("""
        import json, os, time
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        os.environ["DISTILL_STUDIO_CONFIG_DIR"] = os.path.join(os.getcwd(), "cfg")
        from distill_studio.gui.app import create_window
        app, win = create_window(["--demo"])
        deadline = time.time() + 60
        while win.planner.analysis is None and time.time() < deadline:
            app.processEvents()
            time.sleep(0.01)
        print(json.dumps({"drawn": win.planner.analysis is not None, "loaded": watched_loaded(),
                          "attempts": sorted(set(ATTEMPTS))}))
    """, ("torch", "transformers", "peft", "accelerate", "azure"), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = last_json_line(r.stdout)
    assert doc["drawn"], "the demo plan was not drawn"
    assert doc["loaded"] == [] and doc["attempts"] == [], doc


# --------------------------------------------------------------------------------------------------------
# The house: capacity and quota are planning data; the command modules do not import each other

def engine_import_graph() -> dict[str, set[str]]:
    """Each engine module ("engine.azure.cli") with the engine modules it imports anywhere in its source, lazy
    imports inside functions included (they close a circle as surely when they run)."""
    import ast

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(ENGINE_DIR).with_suffix("").parts)
        return ".".join(["engine", *(parts[:-1] if parts[-1] == "__init__" else parts)])

    modules = {name_of(p): p for p in ENGINE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = (node.module or "").removeprefix("distill_studio.")
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name.removeprefix("distill_studio.") for a in node.names]
            else:
                continue
            for n in names:   # importing a.b.c runs a and a.b too
                parts = n.split(".")
                found |= {m for k in range(1, len(parts) + 1) if (m := ".".join(parts[:k])) in modules}
        graph[name] = found - {name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_the_import_graph_sees_lazy_imports():
    # guards the guard: a function-level relative import is an edge
    graph = engine_import_graph()
    assert "engine.planner" in graph["engine.azure.job"]          # `from ..planner import resolve_run` in a function
    assert "engine.azure.cli" in graph["engine.cli"]               # the `azure` subcommand, added in add_parser
    assert "engine.catalog.capacity" in graph["engine.planner"]


def test_the_planner_and_the_capacity_table_never_import_the_azure_package():
    graph = engine_import_graph()
    starts = ["engine.planner", "engine.report"] + [m for m in graph if m.startswith(("engine.catalog",
                                                                                      "engine.estimate"))]
    assert "engine.catalog.capacity" in starts
    for start in starts:
        azure = sorted(m for m in reachable(graph, start) if m == "engine.azure" or m.startswith("engine.azure."))
        assert azure == [], f"{start} imports {azure}"


def test_no_import_circle_between_the_command_modules():
    graph = engine_import_graph()
    assert "engine.cli" not in reachable(graph, "engine.azure.cli")
    circles = sorted(m for m in reachable(graph, "engine.cli") if m.startswith("engine.azure")
                     and "engine.cli" in graph[m])
    assert circles == [], circles


def test_planning_an_azure_plan_with_a_capacity_check_loads_nothing_of_engine_azure(tmp_path):
    # in a fresh process: a cached capacity check is read and applied, and no module of the Azure package is loaded
    r = run_python(f"""
        import json
        from distill_studio.engine.catalog.capacity import CapacityTable, Quota, SkuOffer, save_capacity
        offer = SkuOffer(sku="Standard_NC24ads_A100_v4", offered=True, family="standardNCADSA100v4Family", vcpus=24)
        save_capacity(CapacityTable(region="eastus", subscription_id="sub", checked_on="2026-12-01",
                                    skus={{"standard_nc24ads_a100_v4": offer}},
                                    quotas=[Quota("standardNCADSA100v4Family", "NCADSA100v4 Family vCPUs", 0, 96),
                                            Quota("cores", "Total Regional vCPUs", 0, 400)]))
        from distill_studio.engine.plan import load_plan
        from distill_studio.engine.planner import analyse
        a = analyse(load_plan({str(PLAN)!r}))
        mine = sorted(m for m in sys.modules if m.startswith("distill_studio.engine.azure"))
        print(json.dumps({{"checked": a.capacity is not None, "engine_azure": mine, "loaded": watched_loaded(),
                          "attempts": sorted(set(ATTEMPTS))}}))
    """, ("azure",), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = last_json_line(r.stdout)
    assert doc == {"checked": True, "engine_azure": [], "loaded": [], "attempts": []}


def test_the_azure_commands_import_no_engine_cli(tmp_path):
    # `distill azure submit` names its run folder without going back through engine/cli.py
    r = run_python("""
        import json
        from distill_studio.engine.azure import cli
        folder = cli._run_dir("qwq plan")
        print(json.dumps({"folder": str(folder), "engine_cli": "distill_studio.engine.cli" in sys.modules}))
    """, (), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = last_json_line(r.stdout)
    assert doc["engine_cli"] is False
    folder = Path(doc["folder"])
    assert folder.parent == tmp_path / "distill-data" / "runs" and folder.name.startswith("qwq-plan-")
