"""The Plan: demo plans, TOML round trips, strict validation and its messages, unreadable files, and a fuzz of
``loads_plan`` / ``plan_from_dict`` (a PlanError or a Plan, never anything else)."""
from __future__ import annotations

import copy
import datetime as dt
import math
import re
import typing
from collections import Counter
from pathlib import Path

import pytest
import tomli_w
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_studio.engine.errors import PlanError
from distill_studio.engine.plan import (
    PLAN_SCHEMA_VERSION, Adapter, Budget, Data, Hardware, Method, Plan, Student, Teacher, load_plan, loads_plan,
    plan_from_dict, save_plan,
)

PLANS_DIR = Path(__file__).resolve().parent.parent / "resources" / "plans"
DEMO_PLANS = sorted(PLANS_DIR.glob("*.toml"))
TABLES: dict[str, type] = {
    "teacher": Teacher, "student": Student, "method": Method, "adapter": Adapter, "data": Data,
    "hardware": Hardware, "budget": Budget,
}
MINIMAL = {
    "name": "t",
    "teacher": {"model": "qwq-32b"},
    "student": {"model": "qwen2.5-7b"},
    "data": {"tokens": 1_000_000},
}


def doc_with(**changes) -> dict:
    """MINIMAL with changes at dotted paths given as ``method__temperature=0``; the value ``...`` deletes."""
    doc = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *tables, key = dotted.split("__")
        cur = doc
        for t in tables:
            cur = cur.setdefault(t, {})
        if value is ...:
            cur.pop(key, None)
        else:
            cur[key] = value
    return doc


def problems(**changes) -> list[str]:
    """The problem lines of the PlanError that ``doc_with(**changes)`` must raise."""
    with pytest.raises(PlanError) as info:
        plan_from_dict(doc_with(**changes))
    head, *lines = str(info.value).split("\n")
    assert head == "plan: invalid plan"
    return [line.strip() for line in lines]


def line_for(lines: list[str], path: str) -> str:
    hits = [line for line in lines if line.startswith(f"{path}:")]
    assert len(hits) == 1, f"expected one problem for {path!r} in {lines}"
    return hits[0]


# ------------------------------------------------------------------------------------------------- demo plans

def test_demo_plans_are_there():
    assert len(DEMO_PLANS) == 6, DEMO_PLANS
    assert {p.stem for p in DEMO_PLANS} >= {"phi4-to-phi4mini-3h", "qwq32b-to-qwen7b-3h", "gemma3-27b-to-4b-3h"}


@pytest.mark.parametrize("path", DEMO_PLANS, ids=lambda p: p.stem)
def test_demo_plan_loads(path):
    plan = load_plan(path)
    assert isinstance(plan, Plan)
    assert plan.name == path.stem
    assert plan.schema_version == PLAN_SCHEMA_VERSION
    # what the file says is what the plan holds (spot checks on every table the file has)
    raw = tomllib.loads(path.read_text("utf-8"))
    for table, values in raw.items():
        if not isinstance(values, dict):
            assert getattr(plan, table) == values
            continue
        for key, value in values.items():
            assert getattr(getattr(plan, table), key) == value, (table, key)


def test_demo_plan_values():
    qwq = load_plan(PLANS_DIR / "qwq32b-to-qwen7b-3h.toml")
    assert (qwq.teacher.model, qwq.student.model) == ("Qwen/QwQ-32B", "Qwen/Qwen2.5-7B-Instruct")
    assert qwq.method.temperature == 2.0 and qwq.method.top_k == 64 and qwq.adapter.rank == 64
    assert qwq.data.tokens == 300_000_000 and qwq.budget.usd == 3000.0
    phi = load_plan(PLANS_DIR / "phi4-to-phi4mini-3h.toml")
    assert phi.method.kind == "seq-kd" and phi.method.teacher_modes() == ("generate",)
    gemma = load_plan(PLANS_DIR / "gemma3-27b-to-4b-27h.toml")
    assert gemma.adapter.kind == "full" and gemma.data.global_batch_tokens == 2_097_152
    assert gemma.method.teacher_modes() == ("online", "offline-topk")


@pytest.mark.parametrize("path", DEMO_PLANS, ids=lambda p: p.stem)
def test_demo_plan_round_trips(path, tmp_path):
    plan = load_plan(path)
    out = tmp_path / "saved.toml"
    save_plan(plan, out)
    first = out.read_text("utf-8")
    again = load_plan(out)
    assert again.model_dump() == plan.model_dump()
    assert again == plan
    save_plan(again, out)
    assert out.read_text("utf-8") == first, "saving the same plan twice gives different TOML"
    assert again.to_toml() == first
    assert [p.name for p in tmp_path.iterdir()] == ["saved.toml"], "save_plan left a temporary file behind"


def test_saved_text_is_plain_toml_with_every_table(tmp_path):
    out = tmp_path / "p.toml"
    save_plan(plan_from_dict(MINIMAL), out)
    doc = tomllib.loads(out.read_text("utf-8"))
    assert doc["schema_version"] == PLAN_SCHEMA_VERSION
    assert set(TABLES) <= set(doc)
    assert "train" not in doc["data"]          # None values are left out, not written as ""
    assert doc["data"]["tokens"] == 1_000_000
    # overwriting an existing plan replaces it
    save_plan(plan_from_dict(doc_with(name="second")), out)
    assert load_plan(out).name == "second"


# ------------------------------------------------------------------------------------------------- strictness

def test_unknown_top_level_key():
    assert problems(foo=1) == ["foo: unknown key (remove it, or check its spelling)"]


@pytest.mark.parametrize("table", list(TABLES))
def test_unknown_key_in_each_table(table):
    assert problems(**{f"{table}__foo": 1}) == [f"{table}.foo: unknown key (remove it, or check its spelling)"]


@pytest.mark.parametrize("key, shown", [("", "''"), ("a.b", "'a.b'"), ("x\ny", "'x\\ny'"), ("my key", "'my key'")])
def test_odd_unknown_keys_are_quoted(key, shown):
    # a blank, dotted or multi-line key must not blur the path or break the one-problem-a-line layout
    assert problems(**{key: 1}) == [f"{shown}: unknown key (remove it, or check its spelling)"]
    assert problems(teacher={"model": "a", key: 1}) == [f"teacher.{shown}: unknown key (remove it, or check its "
                                                        "spelling)"]


def test_misspelled_key_is_not_silently_ignored():
    lines = problems(method__temprature=2.0)
    assert lines == ["method.temprature: unknown key (remove it, or check its spelling)"]


@pytest.mark.parametrize("path, value, allowed", [
    ("method.temperature", 0, "allowed: at least 0.1"),
    ("method.temperature", 20.5, "allowed: at most 20.0"),
    ("method.temperature", math.inf, "allowed: at most 20.0"),
    ("method.temperature", math.nan, "allowed: "),
    ("method.beta", 1.5, "allowed: at most 1.0"),
    ("method.top_k", 0, "allowed: at least 1"),
    ("data.epochs", -1, "allowed: greater than 0"),
    ("data.epochs", 0, "allowed: greater than 0"),
    ("data.seq_len", 10**9, "allowed: at most 1048576"),
    ("data.seq_len", 8, "allowed: at least 16"),
    ("data.tokens", 0, "allowed: at least 1000"),
    ("data.tokens", -5, "allowed: at least 1000"),
    ("budget.hours", 0, "allowed: greater than 0"),
    ("budget.hours", 1e9, "allowed: at most 8760"),
    ("budget.usd", -1, "allowed: greater than 0"),
    ("hardware.nodes", 17, "allowed: at most 16"),
    ("hardware.nodes", 0, "allowed: at least 1"),
    ("hardware.gpus", 65, "allowed: at most 64"),
    ("adapter.rank", 0, "allowed: at least 1"),
    ("adapter.dropout", 1.0, "allowed: less than 1"),
    ("schema_version", 2, "allowed: at most 1"),
])
def test_out_of_range_names_field_value_and_range(path, value, allowed):
    line = line_for(problems(**{path.replace(".", "__"): value}), path)
    assert f"{value!r} is out of range" in line
    assert allowed in line


@pytest.mark.parametrize("path, value, expected", [
    ("data.seq_len", "4096", "integer"),     # a quoted number is a string, not silently an int
    ("data.seq_len", 4096.0, "integer"),
    ("data.seq_len", True, "integer"),      # not "True is out of range" (bool taken as 1)
    ("data.epochs", True, "number"),        # not silently 1.0 epochs
    ("data.epochs", "2", "number"),
    ("method.temperature", "hot", "number"),
    ("budget.hours", "3h", "number"),
    ("hardware.nodes", 2.5, "integer"),
    ("name", 5, "string"),
    ("teacher.model", ["qwq-32b"], "string"),
    ("data.train", 3, "string"),
    ("teacher", "qwq-32b", "dictionary"),
    ("budget", [3.0], "dictionary"),
])
def test_wrong_type_names_field_and_expected_type(path, value, expected):
    line = line_for(problems(**{path.replace(".", "__"): value}), path)
    assert f"{value!r} is not valid" in line
    assert expected in line


def test_int_is_fine_for_a_float_field():
    plan = plan_from_dict(doc_with(data__epochs=2, budget__hours=3, method__temperature=2))
    assert plan.data.epochs == 2.0 and isinstance(plan.data.epochs, float)
    assert plan.budget.hours == 3.0 and plan.method.temperature == 2.0


@pytest.mark.parametrize("path, value", [
    ("method.temperature", 0.1), ("method.temperature", 20.0), ("hardware.nodes", 1), ("hardware.nodes", 16),
    ("data.tokens", 1000), ("budget.hours", 24 * 365), ("adapter.rank", 1), ("adapter.rank", 1024),
    ("method.beta", 0.0), ("method.beta", 1.0), ("adapter.dropout", 0.0),
])
def test_range_boundaries_are_allowed(path, value):
    *tables, key = path.split(".")
    plan = plan_from_dict(doc_with(**{path.replace(".", "__"): value}))
    assert getattr(getattr(plan, tables[0]), key) == value


def test_seq_len_boundaries():
    assert plan_from_dict(doc_with(data__seq_len=16)).data.seq_len == 16
    top = plan_from_dict(doc_with(data__seq_len=1_048_576))
    assert top.data.seq_len == 1_048_576 and top.data.global_batch_tokens == 1_048_576


def _literal_fields():
    for table, model in TABLES.items():
        for key, info in model.model_fields.items():
            if typing.get_origin(info.annotation) is typing.Literal:
                yield f"{table}.{key}", typing.get_args(info.annotation)


LITERALS = list(_literal_fields())


def test_literal_fields_found():
    assert {p for p, _ in LITERALS} >= {"method.kind", "method.loss", "method.teacher_mode", "hardware.target",
                                        "adapter.kind", "teacher.precision", "student.init", "hardware.priority"}


@pytest.mark.parametrize("path, allowed", LITERALS, ids=[p for p, _ in LITERALS])
def test_literal_out_of_set_lists_allowed_values(path, allowed):
    line = line_for(problems(**{path.replace(".", "__"): "nonsense"}), path)
    assert "'nonsense' is not allowed; allowed:" in line
    for value in allowed:
        assert repr(value) in line, f"{value!r} missing from {line!r}"


def test_literal_is_case_sensitive():
    line = line_for(problems(method__kind="Logit-KD"), "method.kind")
    assert "'Logit-KD' is not allowed" in line and "'logit-kd'" in line


def test_several_problems_in_one_error():
    lines = problems(method__temperature=0, data__epochs=-1, adapter__rank=0, hardware__nodes=17,
                     method__loss="kl", teacher__foo=1, bogus=True, name=...)
    assert len(lines) == 8, lines
    for path in ("method.temperature", "data.epochs", "adapter.rank", "hardware.nodes", "method.loss",
                 "teacher.foo", "bogus", "name"):
        line_for(lines, path)
    assert line_for(lines, "name") == "name: missing (required)"


def test_table_rule_and_field_error_in_other_tables_both_reported():
    lines = problems(data={"seq_len": 2048}, method__temperature=0)
    assert "give `train`" in line_for(lines, "data")
    assert "at least 0.1" in line_for(lines, "method.temperature")


@pytest.mark.parametrize("missing", ["name", "teacher", "student", "data"])
def test_required_parts(missing):
    assert line_for(problems(**{missing: ...}), missing) == f"{missing}: missing (required)"


def test_required_model_fields():
    assert line_for(problems(teacher={}), "teacher.model") == "teacher.model: missing (required)"
    assert "at least 1 character" in line_for(problems(student__model=""), "student.model")


def test_seq_kd_with_online_teacher_explains():
    line = line_for(problems(method__kind="seq-kd", method__teacher_mode="online"), "method")
    assert "teacher_mode 'online' does not fit kind 'seq-kd'" in line
    assert '"generate"' in line and "teacher generates" in line


@pytest.mark.parametrize("mode", ["offline-topk", "online"])
def test_seq_kd_rejects_every_logit_mode(mode):
    assert f"'{mode}'" in line_for(problems(method__kind="seq-kd", method__teacher_mode=mode), "method")


def test_logit_kd_with_generate_explains():
    line = line_for(problems(method__kind="logit-kd", method__teacher_mode="generate"), "method")
    assert "'generate' does not fit kind 'logit-kd'" in line and '"seq-kd"' in line


@pytest.mark.parametrize("kind, mode, modes", [
    ("seq-kd", "auto", ("generate",)), ("seq-kd", "generate", ("generate",)),
    ("logit-kd", "auto", ("online", "offline-topk")), ("logit-kd", "online", ("online",)),
    ("logit-kd", "offline-topk", ("offline-topk",)), ("ce", "auto", ("none",)),
])
def test_teacher_modes(kind, mode, modes):
    plan = plan_from_dict(doc_with(method__kind=kind, method__teacher_mode=mode))
    assert plan.method.teacher_modes() == modes


def test_local_target_needs_accelerator():
    line = line_for(problems(hardware__target="local"), "hardware")
    assert "target 'local' needs `accelerator`" in line
    assert "accelerator" in line_for(problems(hardware__target="local", hardware__accelerator=""), "hardware")
    plan = plan_from_dict(doc_with(hardware__target="local", hardware__accelerator="h100-sxm", hardware__gpus=8))
    assert plan.hardware.accelerator == "h100-sxm" and plan.hardware.gpus == 8


def test_data_needs_train_or_tokens():
    line = line_for(problems(data={"seq_len": 2048}), "data")
    assert "`train`" in line and "`tokens`" in line
    assert plan_from_dict(doc_with(data={"train": "d.jsonl"})).data.train == "d.jsonl"


def test_global_batch_smaller_than_one_sequence_explains():
    line = line_for(problems(data__seq_len=4096, data__global_batch_tokens=1024), "data")
    assert "global_batch_tokens (1024)" in line and "seq_len = 4096" in line and "at least seq_len" in line
    assert plan_from_dict(doc_with(data__seq_len=4096, data__global_batch_tokens=4096)).data.seq_len == 4096


def test_region_pattern():
    line = line_for(problems(hardware__region="East US"), "hardware.region")
    assert "'East US'" in line


def test_assignment_is_validated_too():
    plan = plan_from_dict(MINIMAL)
    with pytest.raises(ValueError):
        plan.method.temperature = 0
    with pytest.raises(ValueError):
        plan.data.seq_len = "4096"
    assert plan.method.temperature == 1.0


def test_defaults_are_not_shared_between_plans():
    a, b = plan_from_dict(MINIMAL), plan_from_dict(MINIMAL)
    a.method.temperature = 3.0
    a.hardware.region = "westus"
    assert b.method.temperature == 1.0 and b.hardware.region == "eastus"
    assert plan_from_dict(MINIMAL).method.temperature == 1.0


def test_non_table_document():
    with pytest.raises(PlanError) as info:
        plan_from_dict([1, 2])  # type: ignore[arg-type]
    assert "(top level):" in str(info.value) and "dictionary" in str(info.value)


def test_origin_prefixes_message():
    with pytest.raises(PlanError) as info:
        loads_plan("name = 1", origin="mine.toml")
    assert str(info.value).startswith("mine.toml: invalid plan")


def test_huge_bad_values_keep_the_message_short():
    with pytest.raises(PlanError) as info:
        plan_from_dict(doc_with(method__loss="x" * 100_000, data__seq_len=10**400))
    assert len(str(info.value)) < 600
    nested: object = 1
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(PlanError) as info:
        plan_from_dict(doc_with(name=nested))
    assert "name:" in str(info.value)


# ------------------------------------------------------------------------------------ not TOML, unreadable files

@pytest.mark.parametrize("text, line, column", [
    ('name = "x"\n[teacher]\nmodel = "a"\nfoo = \n', 4, 7),
    ('name = "x"\ny = 2 3\n', 2, 7),
    ('name = "x"\n\n[teacher\nmodel = "a"\n', 3, 9),
    ('name = "x"\nname = "y"\n', 2, 11),                   # a key given twice
])
def test_broken_toml_names_line_and_column(text, line, column):
    with pytest.raises(PlanError) as info:
        loads_plan(text, origin="broken.toml")
    msg = str(info.value)
    assert msg.startswith("broken.toml: not valid TOML")
    m = re.search(r"line (\d+), column (\d+)", msg)
    assert m, msg
    assert (int(m[1]), int(m[2])) == (line, column)


def test_broken_file_names_path_and_position(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[teacher]\nmodel = "a"\nfoo = \n', encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value).startswith(f"{path}: not valid TOML") and "line 4, column 7" in str(info.value)


def test_invalid_values_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(tomli_w.dumps(doc_with(method__temperature=0)), encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value).startswith(f"{path}: invalid plan") and "method.temperature" in str(info.value)


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope" / "plan.toml"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(path) in str(info.value) and "no such plan file" in str(info.value)


def test_directory_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path)
    assert str(info.value).startswith(str(tmp_path))


@pytest.mark.parametrize("blob", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),   # not UTF-8
    b"\x00\x01\x02name = 1",                                   # UTF-8, but control characters
    bytes(range(256)) * 4,
])
def test_binary_file_is_a_plan_error(tmp_path, blob):
    path = tmp_path / "plan.toml"
    path.write_bytes(blob)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value).startswith(str(path))


def test_nul_in_path_is_a_plan_error():
    with pytest.raises(PlanError):
        load_plan("plan\0.toml")


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + tomli_w.dumps(MINIMAL).encode("utf-8"))
    assert load_plan(path).name == "t"


def test_deeply_nested_toml_is_a_plan_error():
    with pytest.raises(PlanError) as info:
        loads_plan("a = " + "[" * 5000 + "]" * 5000)
    assert "not valid TOML" in str(info.value)


def test_empty_text_lists_what_is_missing():
    with pytest.raises(PlanError) as info:
        loads_plan("")
    for key in ("name", "teacher", "student", "data"):
        assert f"{key}: missing (required)" in str(info.value)


# ---------------------------------------------------------------------------------------------- property tests

FIELD_NAMES = sorted({k for m in TABLES.values() for k in m.model_fields} | set(Plan.model_fields))
PLAUSIBLE = sorted({v for _, vals in LITERALS for v in vals}) + [
    "qwq-32b", "qwen2.5-7b", "eastus", "h100-sxm", "data.jsonl", "",
]

keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
scalars = st.one_of(
    st.integers(), st.integers(min_value=-2, max_value=5_000_000),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=0, max_value=30),
    st.booleans(), st.text(max_size=8), st.sampled_from(PLAUSIBLE),
    st.dates(), st.datetimes(), st.times(),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=6,
)


def _table(model: type) -> st.SearchStrategy[dict]:
    """A table of ``model``'s real field names with plausible or wrong values, sometimes random keys beside."""
    names = list(model.model_fields)
    real = st.dictionaries(st.sampled_from(names), scalars, max_size=len(names))
    extra = st.one_of(st.just({}), st.dictionaries(keys, values, max_size=2))
    return st.tuples(real, extra).map(lambda parts: {**parts[0], **parts[1]})


# Real table and field names with plausible or wrong values, sometimes a whole table of the wrong type, and random
# keys and values beside them.
schema_shaped = st.tuples(
    st.fixed_dictionaries(
        {t: st.one_of(_table(m), values) for t, m in TABLES.items() if t in ("teacher", "student", "data")},
        optional={
            "schema_version": st.one_of(st.just(1), scalars), "name": st.one_of(st.just("plan"), scalars),
            "description": scalars,
            **{t: st.one_of(_table(m), values) for t, m in TABLES.items() if t not in ("teacher", "student", "data")},
        },
    ),
    st.dictionaries(keys, values, max_size=2),
).map(lambda parts: {**parts[0], **parts[1]})


@st.composite
def mutated_demo(draw) -> dict:
    """A demo plan (valid) with a few values replaced, added or removed, so that both outcomes occur."""
    doc = tomllib.loads(draw(st.sampled_from(DEMO_PLANS)).read_text("utf-8"))
    for _ in range(draw(st.integers(0, 3))):
        table = draw(st.sampled_from(sorted(doc)))
        if isinstance(doc[table], dict) and doc[table] and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(doc[table])))
            action = draw(st.integers(0, 2))
            if action == 0:
                del doc[table][key]
            else:
                doc[table][key] = draw(scalars if action == 1 else st.sampled_from(PLAUSIBLE))
        elif isinstance(doc[table], dict):
            doc[table][draw(keys)] = draw(values)
        else:
            doc[table] = draw(values)
    return doc


OUTCOMES: Counter = Counter()


def check_document(doc: dict) -> None:
    """plan_from_dict and loads_plan(TOML of doc): a Plan or a PlanError, the same outcome for both."""
    try:
        plan = plan_from_dict(doc)
    except PlanError as exc:
        plan, msg = None, str(exc)
        assert msg.startswith("plan: invalid plan\n  ") and all(line.strip() for line in msg.split("\n"))
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        text = None  # something TOML cannot hold (e.g. a naive/aware mix tomli_w refuses): dict path only
    if text is not None:
        try:
            from_text = loads_plan(text)
        except PlanError:
            from_text = None
        assert (from_text is None) == (plan is None), text
        if plan is not None:
            assert from_text.model_dump() == plan.model_dump()
    if plan is not None:
        OUTCOMES["plan"] += 1
        saved = plan.to_toml()
        again = loads_plan(saved)
        assert again.model_dump() == plan.model_dump()
        assert again.to_toml() == saved
    else:
        OUTCOMES["error"] += 1


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


@FUZZ
@given(schema_shaped)
def test_fuzz_schema_shaped_documents(doc):
    check_document(doc)


@FUZZ
@given(mutated_demo())
def test_fuzz_mutated_demo_plans(doc):
    check_document(doc)


def test_fuzz_reaches_both_outcomes():
    OUTCOMES.clear()
    settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))(
        given(mutated_demo())(check_document))()
    assert OUTCOMES["plan"] > 0 and OUTCOMES["error"] > 0, OUTCOMES


@FUZZ
@given(st.dictionaries(keys, values, max_size=5))
def test_fuzz_random_documents(doc):
    check_document(doc)


TOML_BITS = ["\n", " ", "=", "[", "]", "[[", "]]", "{", "}", ",", ".", '"', "'", '"""', "'''", "#", "\\",
             "name", "teacher", "model", "data", "tokens", "seq_len", "1_000", "1e9", "nan", "inf", "true",
             "1979-05-27", "T07:32:00Z", '"qwq-32b"', "\t", "\r\n", "\x00", "é", "\ufeff"]


@FUZZ
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(TOML_BITS), max_size=40).map("".join)))
def test_fuzz_raw_text(text):
    try:
        plan = loads_plan(text)
    except PlanError as exc:
        assert str(exc).startswith("plan: ")
    else:
        assert isinstance(plan, Plan)


def test_fuzz_helpers_accept_every_demo_plan():
    # the property's comparison is only meaningful if valid documents do come back as plans
    for path in DEMO_PLANS:
        OUTCOMES.clear()
        check_document(tomllib.loads(path.read_text("utf-8")))
        assert OUTCOMES == Counter(plan=1)


def test_datetime_value_is_a_plan_error():
    line = line_for(problems(name=dt.datetime(2020, 1, 1)), "name")
    assert "is not valid" in line
