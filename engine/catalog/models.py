"""The model catalog: the bundled models.toml, parameter counts, and Hugging Face config.json files.

Pure stdlib so that it imports fast (no torch, no transformers). Every failure a user can cause comes out as a
``CatalogError`` naming the model, file or field at fault.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import functools
import json
import re
import tomllib
from importlib import resources
from pathlib import Path

from ..errors import CatalogError, shown
from .types import ModelSpec, count_params  # noqa: F401 - count_params: part of this module's API

# model_type -> architecture family.
_FAMILY = {
    "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3",
    "gemma3_text": "gemma3", "llama": "llama", "phi3": "phi3", "mistral": "mistral",
}
# (family, logits width) -> tokenizer family, where the architecture alone does not decide the tokenizer.
_TOKENIZER_BY_VOCAB = {
    ("llama", 128256): "llama3", ("llama", 32000): "llama2",
    ("phi3", 100352): "phi4", ("phi3", 200064): "phi4-mini", ("phi3", 32064): "phi3",
}
# family -> tokenizer family whatever the (padded) logits width.
_TOKENIZER_BY_FAMILY = {"qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma3"}
# Values transformers' config classes supply when a config.json leaves them out (Gemma3TextConfig's defaults; the
# multimodal Gemma 3 checkpoints rely on them in their text_config).
_FAMILY_DEFAULTS = {
    "gemma3": {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
               "max_position_embeddings": 131072, "sliding_window": 4096, "sliding_window_pattern": 6},
}
_GLOBAL_EVERY = {"gemma2": 2, "gemma3": 6}  # sliding-window pattern when the config gives none
_BIAS_DEFAULT = {"qwen2": True}              # Qwen2 has q/k/v biases and no attention_bias key
_QK_NORM = {"gemma3", "qwen3"}
_TIED_DEFAULT = {"gemma", "gemma2", "gemma3"}


@functools.lru_cache(maxsize=1)
def load_models() -> dict[str, ModelSpec]:
    """The bundled catalog, keyed by id (read once)."""
    text = resources.files("distill_studio.engine.catalog.data").joinpath("models.toml").read_text("utf-8")
    try:
        tables = tomllib.loads(text).get("model", [])
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"models.toml (bundled catalog): {exc}") from exc
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    models: dict[str, ModelSpec] = {}
    for i, table in enumerate(tables):
        unknown = set(table) - names
        if unknown:
            raise CatalogError(f"models.toml: model #{i + 1} has unknown field(s) {sorted(unknown)}")
        try:
            spec = ModelSpec(**table)
        except TypeError as exc:
            raise CatalogError(f"models.toml: model #{i + 1} ({table.get('id', '?')}): {exc}") from exc
        if spec.id in models:
            raise CatalogError(f"models.toml: duplicate model id '{spec.id}'")
        models[spec.id] = spec
    return models


def resolve_model(name: str) -> ModelSpec:
    """A model by catalog id, hub id or display name (case-insensitive), or a local config.json / its folder."""
    models = load_models()
    key = name.strip().lower()
    if not key:
        raise CatalogError("no model given: name a catalog id, a Hugging Face id, or a folder with config.json")
    for spec in models.values():
        if key in (spec.id.lower(), spec.hub_id.lower(), spec.name.lower()):
            return spec
    path = Path(name).expanduser()
    if path.is_dir() or path.is_file():
        return model_from_hf_config(path)
    raise CatalogError(_unknown_message(name, models))


def _unknown_message(name: str, models: dict[str, ModelSpec]) -> str:
    choices: dict[str, str] = {}  # lowercased id or hub id -> catalog id
    for spec in models.values():
        choices[spec.id.lower()] = spec.id
        if spec.hub_id:
            choices[spec.hub_id.lower()] = spec.id
    suggestions: list[str] = []
    for match in difflib.get_close_matches(name.strip().lower(), list(choices), n=6, cutoff=0.6):
        if choices[match] not in suggestions:
            suggestions.append(choices[match])
    if suggestions:
        hint = "did you mean: " + ", ".join(suggestions[:3]) + "?"
    else:
        hint = "known models include: " + ", ".join(list(models)[:5]) + ", ..."
    return (f"unknown model '{shown(name)}'; {hint} "
            "(a path to a local folder containing config.json also works)")


def model_from_hf_config(path: str | Path) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json (the file, or the folder holding it).

    Multimodal configs are read from their ``text_config``. A ``tokenizer.json`` beside the config gives the real
    tokenizer size (highest id + 1); without one the logits width stands in. The id is ``local:<folder name>``.
    """
    path = Path(path).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        where = f"folder {path} has no config.json" if path.is_dir() else f"{file}: no such file"
        raise CatalogError(f"cannot read model config: {where}")
    raw = _read_json(file)
    if not isinstance(raw, dict):
        raise CatalogError(f"{file}: expected a JSON object at the top level, got {type(raw).__name__}")
    cfg, prefix = raw, ""
    if "text_config" in raw:
        cfg, prefix = raw["text_config"], "text_config."
        if not isinstance(cfg, dict):
            raise CatalogError(f"{file}: field 'text_config' must be an object, got {cfg!r}")
    model_type = cfg.get("model_type", raw.get("model_type", ""))
    if not isinstance(model_type, str):
        raise CatalogError(f"{file}: field '{prefix}model_type' must be a string, got {model_type!r}")
    family = _FAMILY.get(model_type, model_type or "unknown")
    cfg = {**_FAMILY_DEFAULTS.get(family, {}), **cfg}

    def get_int(key: str, default: int | None = None, minimum: int = 1) -> int:
        value = cfg.get(key)
        if value is None:
            if default is None:
                state = "is null" if key in cfg else "is missing"
                raise CatalogError(f"{file}: required field '{prefix}{key}' {state}")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "a positive integer" if minimum >= 1 else "a non-negative integer"
            raise CatalogError(f"{file}: field '{prefix}{key}' must be {kind}, got {value!r}")
        return value

    def get_bool(key: str, default: bool) -> bool:
        where, value = (prefix, cfg[key]) if key in cfg else ("", raw.get(key))
        if value is None:
            return default
        if not isinstance(value, bool):
            raise CatalogError(f"{file}: field '{where}{key}' must be true or false, got {value!r}")
        return value

    hidden = get_int("hidden_size")
    heads = get_int("num_attention_heads")
    if "head_dim" not in cfg and hidden % heads:
        raise CatalogError(f"{file}: field '{prefix}hidden_size' ({hidden}) is not a multiple of "
                           f"'{prefix}num_attention_heads' ({heads}) and there is no head_dim")
    kv_heads = get_int("num_key_value_heads", heads)
    if heads % kv_heads:
        raise CatalogError(f"{file}: field '{prefix}num_key_value_heads' ({kv_heads}) must divide "
                           f"'{prefix}num_attention_heads' ({heads})")
    vocab = get_int("vocab_size")
    max_ctx = get_int("max_position_embeddings")
    window, every = _sliding(cfg, family, max_ctx, get_int, get_bool, file, prefix)
    tok_vocab = _tokenizer_size(file.parent / "tokenizer.json") or vocab
    folder = file.parent.resolve().name or "model"
    slug = re.sub(r"[^a-z0-9._-]+", "-", folder.lower()).strip("-") or "model"
    hub_id = raw.get("_name_or_path", "")
    return ModelSpec(
        id=f"local:{slug}", name=folder, hub_id=hub_id if isinstance(hub_id, str) else "", family=family,
        num_layers=get_int("num_hidden_layers"), hidden_size=hidden,
        intermediate_size=get_int("intermediate_size"), num_attention_heads=heads,
        num_kv_heads=kv_heads, head_dim=get_int("head_dim", hidden // heads),
        vocab_size=vocab, tokenizer_vocab_size=tok_vocab,
        tie_word_embeddings=get_bool("tie_word_embeddings", family in _TIED_DEFAULT),
        max_context_tokens=max_ctx,
        tokenizer_family=_TOKENIZER_BY_VOCAB.get((family, vocab))
        or _TOKENIZER_BY_FAMILY.get(family) or f"local:{model_type or 'unknown'}",
        license="unknown", attention_bias=get_bool("attention_bias", _BIAS_DEFAULT.get(family, False)),
        qk_norm=family in _QK_NORM, sliding_window_tokens=window, global_attention_every=every,
        source=str(file.resolve()), source_date=_dt.date.fromtimestamp(file.stat().st_mtime).isoformat(),
    )


def _sliding(cfg, family, max_ctx, get_int, get_bool, file, prefix) -> tuple[int, int]:
    """(window, every n-th layer global). (0, 1): all layers global; every = 0: no global layer at all."""
    if not get_bool("use_sliding_window", True):
        return 0, 1
    window = get_int("sliding_window", 0, minimum=0)
    if not window or (max_ctx and window >= max_ctx):
        return 0, 1
    layer_types = cfg.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
            raise CatalogError(f"{file}: field '{prefix}layer_types' must be a list of strings")
        full = [i for i, t in enumerate(layer_types) if t == "full_attention"]
        return (window, full[0] + 1) if full else (window, 0)
    if "sliding_window_pattern" in cfg:
        return window, get_int("sliding_window_pattern")
    return window, _GLOBAL_EVERY.get(family, 0)


def _read_json(file: Path):
    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{file}: cannot read: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{file}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc


def _tokenizer_size(file: Path) -> int:
    """Highest token id + 1 in a tokenizer.json (model.vocab and added_tokens); 0 when there is no such file."""
    if not file.is_file():
        return 0
    data = _read_json(file)
    ids: list[int] = []
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):  # BPE / WordPiece: token -> id
        ids.extend(v for v in vocab.values() if isinstance(v, int))
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
        ids.append(len(vocab) - 1)
    added = data.get("added_tokens", []) if isinstance(data, dict) else []
    if isinstance(added, list):
        ids.extend(t["id"] for t in added if isinstance(t, dict) and isinstance(t.get("id"), int))
    if not ids:
        raise CatalogError(f"{file}: no token ids found in 'model.vocab' or 'added_tokens'")
    return max(ids) + 1
