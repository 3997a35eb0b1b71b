"""The planner fed what a user's typos and odd paths produce: every plan the loader accepts is either planned or
refused with a message naming the field, never a traceback (a path thousands of characters long, a NUL byte, a
folder of the whole file system, a URL where a file is expected, ...)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_studio.engine.errors import DistillError, PlanError
from distill_studio.engine.plan import loads_plan
from distill_studio.engine.planner import analyse

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"
PLANS = [tomllib.loads(p.read_text()) for p in sorted((ROOT / "resources" / "plans").glob("*.toml"))]
PLANS.append(tomllib.loads((DEMO / "plan.toml").read_text()))
FIELDS = [("data", "train"), ("data", "eval"), ("data", "prompts"), ("teacher", "model"), ("student", "model"),
          ("hardware", "accelerator"), ("hardware", "sku")]
ODD = st.one_of(
    st.integers(256, 20_000).map(lambda n: "x" * n),                      # longer than a file name may be
    st.integers(1, 200).map(lambda n: "../" * n + "train.jsonl"),
    st.sampled_from(["/", "/proc", "/dev/null", "~nosuchuser/data", "~/no/such/file.jsonl", "https://example.com/a",
                     "azureml://datastores/x/paths/y/", "données/ü😀.jsonl", "   ", "C:\\\\data\\\\train.jsonl",
                     "train.jsonl\\nmore", "a" * 255 + "/" + "b" * 255]),
    st.text(min_size=1, max_size=300),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.sampled_from(PLANS), where=st.sampled_from(FIELDS), value=ODD)
def test_the_planner_refuses_odd_values_with_the_field_named(plan, where, value):
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in plan.items()}
    section, key = where
    doc.setdefault(section, {})[key] = value
    if where == ("data", "train"):
        doc["data"].pop("tokens", None)         # the planner reads the file to size the run
    try:
        parsed = loads_plan(tomli_w.dumps(doc))
    except (DistillError, ValueError):
        return                                   # the loader's refusal is tested in test_plan.py
    try:
        analyse(parsed, base=DEMO)
    except DistillError as exc:
        text = str(exc)
        assert "Traceback" not in text and len(text) < 2000
        if isinstance(exc, PlanError) and section in ("data", "teacher", "student"):
            assert f"{section}." in text, text


def test_a_file_name_too_long_is_a_plan_error(tmp_path):
    doc = dict(PLANS[-1])
    doc["data"] = {**doc["data"], "train": "x" * 5000}
    try:
        analyse(loads_plan(tomli_w.dumps(doc)), base=DEMO)
    except PlanError as exc:
        assert str(exc).startswith("data.train: ") and "File name too long" in str(exc) and len(str(exc)) < 400
    else:
        raise AssertionError("a 5,000-character path was accepted")
