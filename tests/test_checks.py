"""check_plan: catalog resolution, tokenizer compatibility, context length, from-teacher init, local model folders."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomli_w

from distill_studio.engine.catalog.models import load_models
from distill_studio.engine.checks import check_plan, vocabulary_check
from distill_studio.engine.errors import PlanError
from distill_studio.engine.plan import load_plan, plan_from_dict

HF_CONFIGS = Path(__file__).parent / "data" / "hf_configs"
PLANS_DIR = Path(__file__).resolve().parent.parent / "resources" / "plans"
MODELS = load_models()


def plan(teacher: str, student: str, kind: str = "logit-kd", mode: str = "auto", seq_len: int = 2048,
         init: str = "pretrained"):
    return plan_from_dict({
        "name": "t",
        "teacher": {"model": teacher},
        "student": {"model": student, "init": init},
        "method": {"kind": kind, "teacher_mode": mode},
        "data": {"tokens": 1_000_000, "seq_len": seq_len},
    })


def refusal(*args, **kwargs) -> str:
    with pytest.raises(PlanError) as info:
        check_plan(plan(*args, **kwargs))
    return str(info.value)


def local_model(tmp_path: Path, source: str, folder: str) -> Path:
    dest = tmp_path / folder
    dest.mkdir()
    shutil.copy(HF_CONFIGS / source / "config.json", dest / "config.json")
    return dest


# ------------------------------------------------------------------------------------------------ demo plans

@pytest.mark.parametrize("path", sorted(PLANS_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_demo_plan_passes_the_checks(path):
    p = load_plan(path)
    pair = check_plan(p)
    assert pair.teacher.params > pair.student.params
    assert pair.shared_vocab == (0 if p.method.kind == "seq-kd" else min(pair.teacher.tokenizer_vocab_size,
                                                                         pair.student.tokenizer_vocab_size))


# ------------------------------------------------------------------------------------------------- tokenizers

def test_phi4_to_phi4_mini_logit_kd_is_refused_with_seq_kd_suggested():
    msg = refusal("phi-4", "phi-4-mini")
    assert msg.startswith("method.kind:")
    assert "Phi-4 uses the 'phi4' tokenizer (100,352 ids)" in msg
    assert "Phi-4-mini the 'phi4-mini' tokenizer (200,029 ids)" in msg
    assert 'kind = "seq-kd"' in msg


def test_phi4_pair_is_refused_by_hub_id_too():
    assert "seq-kd" in refusal("microsoft/phi-4", "microsoft/Phi-4-mini-instruct", mode="online")


def test_phi4_to_phi4_mini_seq_kd_passes():
    pair = check_plan(plan("phi-4", "phi-4-mini", kind="seq-kd", mode="generate"))
    assert (pair.teacher.id, pair.student.id) == ("phi-4", "phi-4-mini")
    assert pair.shared_vocab == 0
    assert not any("sliced" in n for n in pair.notes)


def test_qwq_to_qwen7b_slices_to_the_real_vocabulary():
    pair = check_plan(plan("qwq-32b", "qwen2.5-7b"))
    assert pair.shared_vocab == 151_665
    [note] = [n for n in pair.notes if "sliced" in n]
    assert "151,665" in note and "152,064" in note


def test_qwen7b_to_half_b_note_names_both_widths():
    pair = check_plan(plan("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"))
    assert pair.shared_vocab == 151_665
    [note] = [n for n in pair.notes if "sliced" in n]
    assert "Qwen2.5 7B 152,064" in note and "Qwen2.5 0.5B 151,936" in note and "151,665" in note


def test_gemma_27b_to_4b_passes():
    pair = check_plan(plan("gemma-3-27b", "gemma-3-4b"))
    assert (pair.teacher.id, pair.student.id) == ("gemma-3-27b", "gemma-3-4b")
    assert pair.shared_vocab == 262_144
    assert not any("not smaller" in n for n in pair.notes)


def test_same_tokenizer_without_padding_has_no_note():
    shared, notes = vocabulary_check(MODELS["llama-3.1-8b"], MODELS["llama-3.2-1b"], "logit-kd")
    assert shared == 128_256 and notes == []


def test_vocabulary_is_ignored_outside_logit_kd():
    for kind in ("seq-kd", "ce"):
        assert vocabulary_check(MODELS["phi-4"], MODELS["gemma-3-1b"], kind) == (0, [])


def test_cross_family_logit_kd_is_refused():
    msg = refusal("qwen2.5-7b", "llama-3.2-1b")
    assert "'qwen2'" in msg and "'llama3'" in msg and "seq-kd" in msg


def test_student_not_smaller_is_a_note():
    pair = check_plan(plan("qwen2.5-0.5b", "qwen2.5-7b"))
    assert any("not smaller" in n and "7.6B" in n for n in pair.notes)


# ----------------------------------------------------------------------------------------------- model names

def test_unknown_teacher_lists_close_ids():
    msg = refusal("qwen-7b", "qwen2.5-0.5b")
    assert msg.startswith("teacher.model:")
    assert "unknown model 'qwen-7b'" in msg and "qwen2.5-7b" in msg


def test_misspelled_teacher_suggests_the_right_id():
    msg = refusal("qwq32b", "qwen2.5-7b")
    assert msg.startswith("teacher.model:") and "qwq-32b" in msg


def test_unknown_student_is_named_as_student():
    msg = refusal("qwq-32b", "gemma-3-5b")
    assert msg.startswith("student.model:") and "gemma-3-4b" in msg


def test_unknown_without_close_match_lists_some_models():
    msg = refusal("zzzzzzzz", "qwen2.5-7b")
    assert msg.startswith("teacher.model:") and "known models include" in msg


def test_blank_model_name():
    assert refusal("   ", "qwen2.5-7b").startswith("teacher.model: no model given")


@pytest.mark.parametrize("name", ["m" * 5000, "~no-such-user-xyz/model", "a/" * 3000])
def test_unusable_model_path_is_a_plan_error(name):
    # resolve_model tries unknown names as paths; a name too long for the file system or a '~user' that does not
    # exist must come out as a PlanError, not an OSError / RuntimeError
    msg = refusal("qwq-32b", name)
    assert msg.startswith("student.model:") and len(msg) < 500


# ------------------------------------------------------------------------------------------------ context length

def test_seq_len_above_student_context():
    msg = refusal("qwen2.5-7b", "qwen2.5-0.5b", seq_len=65_536)
    assert msg.startswith("data.seq_len:")
    assert "65,536" in msg and "student Qwen2.5 0.5B" in msg and "at most 32,768" in msg


def test_seq_len_at_student_context_passes():
    assert check_plan(plan("qwen2.5-7b", "qwen2.5-0.5b", seq_len=32_768)).student.max_context_tokens == 32_768


def test_seq_len_above_teacher_context():
    msg = refusal("phi-4", "phi-4-mini", kind="seq-kd", seq_len=32_768)
    assert msg.startswith("data.seq_len:") and "teacher Phi-4" in msg and "at most 16,384" in msg


# ------------------------------------------------------------------------------------------- from-teacher init

def test_from_teacher_with_different_architecture_is_refused():
    msg = refusal("qwen2.5-7b", "qwen2.5-0.5b", init="from-teacher")
    assert msg.startswith("student.init:")
    assert "Qwen2.5 7B" in msg and "Qwen2.5 0.5B" in msg and 'init = "pretrained"' in msg


def test_from_teacher_across_families_is_refused():
    assert refusal("gemma-3-27b", "gemma-3-4b", init="from-teacher").startswith("student.init:")


def test_from_teacher_with_matching_widths_passes():
    # QwQ-32B and Qwen2.5-32B share family and every width
    pair = check_plan(plan("qwq-32b", "qwen2.5-32b", init="from-teacher"))
    assert pair.student.id == "qwen2.5-32b"


# -------------------------------------------------------------------------------------------- local model folders

def test_local_folder_as_student(tmp_path):
    folder = local_model(tmp_path, "Qwen2.5-0.5B-Instruct", "my-qwen")
    pair = check_plan(plan("qwen2.5-7b", str(folder)))
    assert pair.student.id == "local:my-qwen"
    assert pair.student.hidden_size == MODELS["qwen2.5-0.5b"].hidden_size
    assert pair.student.tokenizer_family == "qwen2"
    assert pair.shared_vocab == 151_665
    assert any("151,936" in n for n in pair.notes)


def test_local_folder_in_a_saved_plan(tmp_path):
    folder = local_model(tmp_path, "gemma-3-4b-it", "gemma4b")
    path = tmp_path / "plan.toml"
    path.write_text(tomli_w.dumps({
        "name": "local", "teacher": {"model": "gemma-3-27b"}, "student": {"model": str(folder)},
        "data": {"tokens": 1_000_000, "seq_len": 8192},
    }), encoding="utf-8")
    pair = check_plan(load_plan(path))
    assert pair.student.id == "local:gemma4b" and pair.student.family == "gemma3"
    assert pair.shared_vocab == 262_144


def test_local_config_file_as_teacher(tmp_path):
    folder = local_model(tmp_path, "Llama-3.1-8B-Instruct", "llama8b")
    pair = check_plan(plan(str(folder / "config.json"), "llama-3.2-1b"))
    assert pair.teacher.id == "local:llama8b" and pair.shared_vocab == 128_256


def test_local_folder_context_limit_comes_from_its_config(tmp_path):
    folder = local_model(tmp_path, "gemma-3-1b-it", "g1b")
    limit = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    msg = refusal("gemma-3-27b", str(folder), seq_len=limit * 2)
    assert msg.startswith("data.seq_len:") and f"at most {limit:,}" in msg


def test_local_folder_without_config(tmp_path):
    msg = refusal("qwq-32b", str(tmp_path))
    assert msg.startswith("student.model:") and "config.json" in msg


def test_local_folder_with_broken_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    msg = refusal("qwq-32b", str(tmp_path))
    assert msg.startswith("student.model:") and "not valid JSON" in msg


def test_a_relative_model_folder_is_read_from_the_plans_folder(tmp_path, monkeypatch):
    import shutil

    from distill_studio.engine.plan import load_plan
    from distill_studio.engine.planner import analyse

    plans = tmp_path / "plans"
    shutil.copytree(Path(__file__).parent / "data" / "hf_configs" / "Qwen2.5-0.5B-Instruct", plans / "student")
    (plans / "p.toml").write_text(
        'name = "rel"\n[teacher]\nmodel = "qwen2.5-7b"\n[student]\nmodel = "student"\n'
        '[data]\ntokens = 1000000\nseq_len = 1024\n[hardware]\ntarget = "local"\naccelerator = "h100-sxm"\n'
    )
    monkeypatch.chdir(tmp_path)  # not the plan's folder
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "data"))
    a = analyse(load_plan(plans / "p.toml"), base=plans)
    assert a.pair.student.hidden_size == 896


def test_saving_into_a_missing_folder_is_a_plan_error(tmp_path):
    from distill_studio.engine.plan import load_plan, save_plan

    plan = load_plan(Path(__file__).parents[1] / "resources" / "plans" / "phi4-to-phi4mini-3h.toml")
    with pytest.raises(PlanError, match="cannot save the plan"):
        save_plan(plan, tmp_path / "missing" / "p.toml")
