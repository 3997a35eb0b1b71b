"""The model catalog: bundled entries, parameter counts, name resolution and config.json parsing."""
from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill_studio.engine.catalog.models import count_params, load_models, model_from_hf_config, resolve_model
from distill_studio.engine.catalog.types import ModelSpec
from distill_studio.engine.errors import CatalogError

HF_CONFIGS = Path(__file__).parent / "data" / "hf_configs"

REQUIRED_IDS = [
    "gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b",
    "phi-4", "phi-4-mini", "qwq-32b",
    "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b",
    "llama-3.1-8b", "llama-3.2-1b", "llama-3.2-3b",
]
MODELS = load_models()
STATED = [m.id for m in MODELS.values() if m.stated_params_b > 0]


# ---------------------------------------------------------------------------------------------- catalog contents

def test_every_required_model_is_present():
    missing = [i for i in REQUIRED_IDS if i not in MODELS]
    assert not missing, f"missing from models.toml: {missing}"


def test_every_required_model_has_a_stated_count():
    assert set(REQUIRED_IDS) <= set(STATED)


@pytest.mark.parametrize("model_id", STATED)
def test_count_params_within_2_percent_of_stated(model_id):
    spec = MODELS[model_id]
    computed = count_params(spec)
    stated = spec.stated_params_b * 1e9
    assert abs(computed - stated) / stated < 0.02, f"{model_id}: computed {computed:,} vs stated {stated:,.0f}"


def test_exact_counts_of_well_known_checkpoints():
    # Published exact totals (safetensors metadata / keras-hub presets) pin the formula down beyond the 2% band.
    assert count_params(MODELS["qwen2.5-7b"]) == 7_615_616_512
    assert count_params(MODELS["llama-3.1-8b"]) == 8_030_261_248
    assert count_params(MODELS["phi-4"]) == 14_659_507_200
    assert count_params(MODELS["gemma-3-1b"]) == 999_885_952  # keras-hub gemma3_1b preset


def test_params_property_matches_count_params():
    spec = MODELS["qwen2.5-0.5b"]
    assert spec.params == count_params(spec)


@pytest.mark.parametrize("model_id", list(MODELS))
def test_entry_is_well_formed(model_id):
    spec = MODELS[model_id]
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", spec.id)
    assert spec.source.startswith("https://"), "every model cites its source"
    datetime.date.fromisoformat(spec.source_date)
    assert spec.name and spec.hub_id and spec.license and spec.tokenizer_family
    assert spec.num_attention_heads % spec.num_kv_heads == 0
    assert 0 < spec.tokenizer_vocab_size <= spec.vocab_size
    assert spec.max_context_tokens >= 8192
    for field in dataclasses.fields(ModelSpec):
        value = getattr(spec, field.name)
        if isinstance(value, int) and not isinstance(value, bool) and field.name not in (
            "sliding_window_tokens", "global_attention_every"
        ):
            assert value > 0, field.name


def test_ids_and_hub_ids_are_unique():
    hub_ids = [m.hub_id.lower() for m in MODELS.values()]
    assert len(hub_ids) == len(set(hub_ids))


def test_toml_keys_are_exactly_the_dataclass_fields():
    import tomllib
    from importlib import resources

    text = resources.files("distill_studio.engine.catalog.data").joinpath("models.toml").read_text("utf-8")
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    for table in tomllib.loads(text)["model"]:
        assert set(table) == names, table.get("id")


def test_load_models_is_cached():
    assert load_models() is load_models()


# ---------------------------------------------------------------------------------------------- tokenizer facts

def test_qwen_logits_width_differs_from_tokenizer_size():
    assert MODELS["qwen2.5-7b"].vocab_size == 152_064
    assert MODELS["qwen2.5-0.5b"].vocab_size == 151_936
    for model_id in ("qwen2.5-0.5b", "qwen2.5-7b", "qwq-32b"):
        assert MODELS[model_id].tokenizer_vocab_size == 151_665


def test_qwen_and_qwq_share_a_tokenizer_family():
    families = {MODELS[i].tokenizer_family for i in MODELS if i.startswith("qwen2.5-") or i == "qwq-32b"}
    assert families == {"qwen2"}


def test_phi4_and_phi4_mini_tokenizers_differ():
    phi4, mini = MODELS["phi-4"], MODELS["phi-4-mini"]
    assert phi4.tokenizer_family != mini.tokenizer_family
    assert phi4.vocab_size == 100_352 and mini.vocab_size == 200_064


def test_gemma_sizes_share_one_tokenizer():
    gemmas = [m for i, m in MODELS.items() if i.startswith("gemma-3-")]
    assert len(gemmas) == 4
    assert {m.tokenizer_family for m in gemmas} == {"gemma3"}
    assert {m.tokenizer_vocab_size for m in gemmas} == {262_144}
    assert MODELS["gemma-3-27b"].vocab_size == 262_208


def test_llama_31_and_32_share_a_tokenizer():
    assert MODELS["llama-3.1-8b"].tokenizer_family == MODELS["llama-3.2-1b"].tokenizer_family == "llama3"


def test_architecture_flags():
    assert MODELS["qwen2.5-7b"].attention_bias and not MODELS["llama-3.1-8b"].attention_bias
    assert MODELS["gemma-3-12b"].qk_norm and not MODELS["phi-4"].qk_norm
    g = MODELS["gemma-3-27b"]
    assert (g.sliding_window_tokens, g.global_attention_every) == (1024, 6)
    assert MODELS["qwen2.5-7b"].sliding_window_tokens == 0
    assert MODELS["qwen2.5-3b"].license == "qwen-research"
    assert MODELS["qwen2.5-7b"].license == "apache-2.0"


# ---------------------------------------------------------------------------------------------- count_params formula

def _tiny(**overrides) -> ModelSpec:
    base = dict(
        id="tiny", name="Tiny", hub_id="", family="llama", num_layers=2, hidden_size=8, intermediate_size=16,
        num_attention_heads=2, num_kv_heads=1, head_dim=4, vocab_size=10, tokenizer_vocab_size=10,
        tie_word_embeddings=False, max_context_tokens=128, tokenizer_family="t", license="x",
    )
    return ModelSpec(**{**base, **overrides})


def test_count_params_by_hand():
    # embed 80; per layer: q 8*8 + k,v 2*8*4 + o 8*8 = 192, mlp 3*8*16 = 384, norms 2*8 = 16 -> 592; final norm 8
    assert count_params(_tiny()) == 80 + 2 * 592 + 8 + 80
    assert count_params(_tiny(tie_word_embeddings=True)) == 80 + 2 * 592 + 8
    # q/k/v biases: 8 + 4 + 4 per layer
    assert count_params(_tiny(attention_bias=True)) == count_params(_tiny()) + 2 * 16
    # Gemma 3: two more norms per layer and q/k norms of head_dim each
    assert count_params(_tiny(family="gemma3", qk_norm=True)) == count_params(_tiny()) + 2 * (16 + 8)


# ---------------------------------------------------------------------------------------------- resolve_model

@pytest.mark.parametrize("name", ["qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "QWEN2.5-7B", "qwen/qwen2.5-7b-instruct",
                                  "Qwen2.5 7B", "  qwen2.5-7b "])
def test_resolve_by_id_hub_id_or_name(name):
    assert resolve_model(name) is MODELS["qwen2.5-7b"]


def test_resolve_each_catalog_model_by_its_hub_id():
    for spec in MODELS.values():
        assert resolve_model(spec.hub_id) is spec
        assert resolve_model(spec.name.upper()) is spec


def test_unknown_model_suggests_close_ids():
    with pytest.raises(CatalogError) as err:
        resolve_model("qwen2.5-7")
    msg = str(err.value)
    assert "unknown model 'qwen2.5-7'" in msg
    assert "qwen2.5-7b" in msg
    assert "config.json" in msg


def test_unknown_hub_like_name_suggests_the_catalog_id():
    with pytest.raises(CatalogError, match="gemma-3-27b"):
        resolve_model("google/gemma-3-27b")


def test_unknown_model_without_close_match_lists_some_ids():
    with pytest.raises(CatalogError) as err:
        resolve_model("zzzzzzzzzz")
    msg = str(err.value)
    assert "unknown model 'zzzzzzzzzz'" in msg
    assert any(i in msg for i in MODELS)
    assert "config.json" in msg


def test_suggestions_are_at_most_three():
    with pytest.raises(CatalogError) as err:
        resolve_model("qwen2.5")
    listed = [i for i in MODELS if re.search(rf"(?<![\w.-]){re.escape(i)}(?![\w.-])", str(err.value))]
    assert 1 <= len(listed) <= 3


def test_resolve_local_folder_and_file(tmp_path):
    folder = tmp_path / "My-Student"
    shutil.copytree(HF_CONFIGS / "Llama-3.1-8B-Instruct", folder)
    by_folder = resolve_model(str(folder))
    by_file = resolve_model(str(folder / "config.json"))
    assert by_folder.id == by_file.id == "local:my-student"
    assert by_folder.hidden_size == 4096


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name_is_an_error_not_the_current_folder(name):
    with pytest.raises(CatalogError, match="no model given"):
        resolve_model(name)


def test_resolve_folder_without_config(tmp_path):
    with pytest.raises(CatalogError, match="config.json"):
        resolve_model(str(tmp_path))


# ---------------------------------------------------------------------------------------------- config.json parsing

DIMS = ["family", "num_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_kv_heads", "head_dim",
        "vocab_size", "tie_word_embeddings", "max_context_tokens", "tokenizer_family", "attention_bias", "qk_norm",
        "sliding_window_tokens", "global_attention_every"]


@pytest.mark.parametrize("folder, model_id", [
    ("Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b"),
    ("gemma-3-1b-it", "gemma-3-1b"),
    ("gemma-3-4b-it", "gemma-3-4b"),
    ("gemma-3-27b-it", "gemma-3-27b"),
    ("Llama-3.1-8B-Instruct", "llama-3.1-8b"),
])
def test_hf_config_matches_catalog_entry(tmp_path, folder, model_id):
    local = tmp_path / folder
    shutil.copytree(HF_CONFIGS / folder, local)
    spec = model_from_hf_config(local)
    entry = MODELS[model_id]
    mismatched = {d: (getattr(spec, d), getattr(entry, d)) for d in DIMS if getattr(spec, d) != getattr(entry, d)}
    assert not mismatched, mismatched
    assert count_params(spec) == count_params(entry)
    assert spec.id == f"local:{folder.lower()}"
    assert spec.hub_id == entry.hub_id  # from _name_or_path
    assert spec.stated_params_b == 0
    assert spec.source.endswith("config.json")


def test_llama_without_head_dim_derives_it():
    raw = json.loads((HF_CONFIGS / "Llama-3.1-8B-Instruct" / "config.json").read_text())
    assert "head_dim" not in raw
    assert model_from_hf_config(HF_CONFIGS / "Llama-3.1-8B-Instruct").head_dim == 4096 // 32


def _write(tmp_path: Path, cfg, name: str = "m", text: str | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(text if text is not None else json.dumps(cfg))
    return folder


def _qwen_cfg() -> dict:
    return json.loads((HF_CONFIGS / "Qwen2.5-0.5B-Instruct" / "config.json").read_text())


def test_tokenizer_json_beside_config_gives_real_size(tmp_path):
    folder = _write(tmp_path, _qwen_cfg())
    tok = {
        "model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(151_643)}},
        "added_tokens": [{"id": 151_643 + i, "content": f"<|s{i}|>"} for i in range(22)],
    }
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    spec = model_from_hf_config(folder)
    assert spec.tokenizer_vocab_size == 151_665
    assert spec.vocab_size == 151_936


def test_unigram_tokenizer_json(tmp_path):
    folder = _write(tmp_path, _qwen_cfg())
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]] * 300}}))
    assert model_from_hf_config(folder).tokenizer_vocab_size == 300


def test_without_tokenizer_json_logits_width_stands_in(tmp_path):
    assert model_from_hf_config(_write(tmp_path, _qwen_cfg())).tokenizer_vocab_size == 151_936


def test_defaults_kv_heads_and_tie(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 4096}
    spec = model_from_hf_config(_write(tmp_path, cfg))
    assert spec.num_kv_heads == 4 and spec.head_dim == 16
    assert spec.tie_word_embeddings is False and spec.attention_bias is False
    assert spec.tokenizer_family == "local:llama"  # a Llama shape without Llama 3's 128,256 vocabulary
    gemma = model_from_hf_config(_write(tmp_path, {**cfg, "model_type": "gemma3_text"}, name="g"))
    assert gemma.tie_word_embeddings is True and gemma.qk_norm


def test_qwen2_has_bias_by_default_and_qwen3_qk_norm(tmp_path):
    cfg = _qwen_cfg()
    assert model_from_hf_config(_write(tmp_path, cfg)).attention_bias is True
    q3 = {**cfg, "model_type": "qwen3", "attention_bias": False, "head_dim": 128}
    spec = model_from_hf_config(_write(tmp_path, q3, name="q3"))
    assert spec.family == "qwen3" and spec.qk_norm and not spec.attention_bias and spec.head_dim == 128


def test_unknown_model_type_gets_a_local_tokenizer_family(tmp_path):
    cfg = {**_qwen_cfg(), "model_type": "olmo2"}
    spec = model_from_hf_config(_write(tmp_path, cfg))
    assert spec.tokenizer_family == "local:olmo2"
    assert spec.family == "olmo2"


def test_phi_configs_map_to_their_tokenizers(tmp_path):
    base = {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
            "num_attention_heads": 24, "num_key_value_heads": 8, "max_position_embeddings": 131072,
            "sliding_window": 262144, "tie_word_embeddings": True}
    mini = model_from_hf_config(_write(tmp_path, {**base, "vocab_size": 200064}, name="mini"))
    phi4 = model_from_hf_config(_write(tmp_path, {**base, "vocab_size": 100352}, name="phi4"))
    assert (mini.tokenizer_family, phi4.tokenizer_family) == ("phi4-mini", "phi4")
    assert mini.sliding_window_tokens == 0  # window wider than the context: every layer global


def test_layer_types_give_the_global_pattern(tmp_path):
    cfg = json.loads((HF_CONFIGS / "gemma-3-1b-it" / "config.json").read_text())
    del cfg["sliding_window_pattern"]
    cfg["layer_types"] = (["sliding_attention"] * 3 + ["full_attention"]) * 6 + ["sliding_attention"] * 2
    spec = model_from_hf_config(_write(tmp_path, cfg))
    assert (spec.sliding_window_tokens, spec.global_attention_every) == (512, 4)


def test_model_from_config_file_uses_parent_folder_name(tmp_path):
    folder = _write(tmp_path, _qwen_cfg(), name="Student_v2 (draft)")
    spec = model_from_hf_config(folder / "config.json")
    assert spec.id == "local:student_v2-draft"
    assert spec.name == "Student_v2 (draft)"


def test_missing_name_or_path_gives_empty_hub_id(tmp_path):
    cfg = _qwen_cfg()
    del cfg["_name_or_path"]
    assert model_from_hf_config(_write(tmp_path, cfg)).hub_id == ""


# ---------------------------------------------------------------------------------------------- malformed configs

def _without(key):
    cfg = _qwen_cfg()
    del cfg[key]
    return cfg


@pytest.mark.parametrize("cfg, field, words", [
    (_without("hidden_size"), "hidden_size", "missing"),
    (_without("num_hidden_layers"), "num_hidden_layers", "missing"),
    (_without("vocab_size"), "vocab_size", "missing"),
    (_without("max_position_embeddings"), "max_position_embeddings", "missing"),
    ({**_qwen_cfg(), "num_key_value_heads": 3}, "num_key_value_heads", "divide"),
    ({**_qwen_cfg(), "num_hidden_layers": "many"}, "num_hidden_layers", "'many'"),
    ({**_qwen_cfg(), "hidden_size": 0}, "hidden_size", "positive"),
    ({**_qwen_cfg(), "intermediate_size": -4864}, "intermediate_size", "positive"),
    ({**_qwen_cfg(), "num_key_value_heads": 2.5}, "num_key_value_heads", "2.5"),
    ({**_qwen_cfg(), "num_attention_heads": True}, "num_attention_heads", "True"),
    ({**_qwen_cfg(), "hidden_size": None}, "hidden_size", "null"),
    ({**_qwen_cfg(), "tie_word_embeddings": "yes"}, "tie_word_embeddings", "true or false"),
    ({**_qwen_cfg(), "sliding_window": "wide", "use_sliding_window": True}, "sliding_window", "'wide'"),
    ({**_qwen_cfg(), "hidden_size": 900}, "hidden_size", "multiple"),
    ({"model_type": "gemma3", "text_config": "none"}, "text_config", "object"),
    ({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "intermediate_size": 10240,
                                              "num_hidden_layers": 34}}, "text_config.hidden_size", "missing"),
])
def test_malformed_config_names_file_and_field(tmp_path, cfg, field, words):
    folder = _write(tmp_path, cfg)
    with pytest.raises(CatalogError) as err:
        model_from_hf_config(folder)
    msg = str(err.value)
    assert str(folder / "config.json") in msg
    assert f"'{field}'" in msg
    assert words in msg


def test_config_that_is_not_json_reports_line_and_column(tmp_path):
    folder = _write(tmp_path, None, text='{\n  "hidden_size": 896,\n  "vocab_size": oops\n}')
    with pytest.raises(CatalogError) as err:
        model_from_hf_config(folder)
    msg = str(err.value)
    assert str(folder / "config.json") in msg
    assert "line 3" in msg and "column 17" in msg


def test_config_that_is_a_list(tmp_path):
    with pytest.raises(CatalogError, match="JSON object"):
        model_from_hf_config(_write(tmp_path, [1, 2]))


def test_missing_config_file(tmp_path):
    with pytest.raises(CatalogError) as err:
        model_from_hf_config(tmp_path / "nope" / "config.json")
    assert "nope" in str(err.value) and "config.json" in str(err.value)
    with pytest.raises(CatalogError, match="has no config.json"):
        model_from_hf_config(tmp_path)


def test_broken_tokenizer_json_names_that_file(tmp_path):
    folder = _write(tmp_path, _qwen_cfg())
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(CatalogError, match="tokenizer.json"):
        model_from_hf_config(folder)


# ---------------------------------------------------------------------------------------------- import cost

def test_import_pulls_in_no_heavy_packages():
    code = ("import sys, distill_studio.engine.catalog.models as m; m.load_models(); "
            "print(sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'transformers', 'numpy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
