"""Loading the teacher and the student: tokenizers, weights, initialisation from the teacher, LoRA/QLoRA.

A model is named by a local folder (config.json + safetensors + tokenizer) or a Hugging Face id, which
transformers resolves through its own cache (and downloads only when the machine allows it). Every refusal says
which field of the plan to change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import RunError
from ..plan import Plan
from . import recompute

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Fields that must agree for the student's layers to be copied from the teacher's.
_SAME_FOR_INIT = ("model_type", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                  "head_dim", "vocab_size", "hidden_act")


def model_source(name: str, base: Path | None) -> str:
    """A local folder (relative to the plan's folder) if there is one, else the name as a hub id."""
    path = Path(name).expanduser()
    if base is not None and not path.is_absolute():
        candidate = base / path
        if candidate.exists():
            return str(candidate)
    if path.exists():
        return str(path)
    return name


def has_weights(source: str) -> bool:
    path = Path(source)
    return not path.is_dir() or any((path / f).exists() for f in WEIGHT_FILES)


def load_tokenizer(source: str, field: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise RunError(f"{field}: cannot load a tokenizer from {source!r} ({_first_line(exc)})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_config(source: str, field: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise RunError(f"{field}: cannot read the model config of {source!r} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def train_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that has it, fp32 on the CPU (bf16 matmuls there are slow and lose precision)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_teacher(plan: Plan, source: str, device: torch.device, place: bool = True):
    """The teacher, frozen, in eval mode; on ``device`` (``place``), or left on the CPU for FSDP to shard."""
    from transformers import AutoModelForCausalLM

    if not has_weights(source):
        raise RunError(f"teacher.model: {source} has no weights ({' / '.join(WEIGHT_FILES[::2])}); a teacher must be trained")
    kwargs: dict[str, Any] = {"dtype": train_dtype(device)}
    if plan.teacher.precision in ("int8", "int4"):
        kwargs["quantization_config"] = _bnb_config(plan.teacher.precision == "int4", "teacher.precision", device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise RunError(f"teacher.model: cannot load {source!r} ({_first_line(exc)})") from None
    if "quantization_config" not in kwargs and place:
        model.to(device)
    model.eval().requires_grad_(False)
    return model


def _bnb_config(four_bit: bool, field: str, device: torch.device):
    if device.type != "cuda":
        raise RunError(f"{field}: quantised weights need an NVIDIA GPU with bitsandbytes; this run has none "
                       "(use bf16 here, or run on a GPU machine)")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise RunError(f"{field}: quantised weights need bitsandbytes (pip install bitsandbytes)") from None
    if four_bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def check_runnable(plan: Plan, device: torch.device) -> None:
    """Refuse, before loading anything, what this machine cannot run."""
    if plan.adapter.kind == "qlora":
        if device.type != "cuda":
            raise RunError('adapter.kind: "qlora" needs an NVIDIA GPU with bitsandbytes; this machine has none. '
                           'Use adapter.kind = "lora" (or "full") here, or run the plan on a GPU machine')
        _bnb_config(True, "adapter.kind", device)
    if plan.teacher.precision != "bf16" and device.type != "cuda":
        raise RunError(f'teacher.precision: "{plan.teacher.precision}" needs an NVIDIA GPU with bitsandbytes; '
                       'use "bf16" on this machine')


@dataclass
class Student:
    model: torch.nn.Module  # the module trained (a PeftModel for LoRA)
    base: torch.nn.Module  # the causal LM inside it
    layer_map: list[int] | None  # teacher layer copied into each student layer (init = from-teacher)


def layer_indices(teacher_layers: int, student_layers: int) -> list[int]:
    """Every k-th teacher layer, k = teacher_layers // student_layers, starting at the first."""
    k = teacher_layers // student_layers
    return [i * k for i in range(student_layers)]


def init_from_teacher(student, teacher) -> list[int]:
    """Copy embeddings, final norm, head and every k-th decoder layer of the teacher into the student."""
    s_cfg, t_cfg = student.config, teacher.config
    diffs = [f"{k}: teacher {getattr(t_cfg, k, None)!r}, student {getattr(s_cfg, k, None)!r}"
             for k in _SAME_FOR_INIT if getattr(t_cfg, k, None) != getattr(s_cfg, k, None)]
    if diffs:
        raise RunError('student.init: "from-teacher" needs the same architecture apart from the layer count; '
                       'these differ: ' + "; ".join(diffs) + '. Use student.init = "pretrained"')
    if s_cfg.num_hidden_layers > t_cfg.num_hidden_layers:
        raise RunError(f"student.init: the student has more layers ({s_cfg.num_hidden_layers}) than the teacher "
                       f"({t_cfg.num_hidden_layers}); from-teacher takes a subset of the teacher's layers")
    layers = layer_indices(t_cfg.num_hidden_layers, s_cfg.num_hidden_layers)
    t_state = teacher.state_dict()
    new_state = {}
    for key in student.state_dict():
        src = key
        parts = key.split(".")
        if "layers" in parts:
            i = parts.index("layers") + 1
            parts[i] = str(layers[int(parts[i])])
            src = ".".join(parts)
        new_state[key] = t_state[src].detach().clone()
    student.load_state_dict(new_state)
    return layers


def load_student(plan: Plan, source: str, device: torch.device, teacher=None) -> Student:
    """The student to train, on the CPU: accelerate (DDP) or FSDP moves it to the device."""
    from transformers import AutoModelForCausalLM

    # Full training keeps fp32 weights (and so fp32 AdamW moments) under bf16 autocast on a GPU: bf16 weights
    # would lose updates smaller than their 8-bit mantissa. LoRA trains only the adapters (peft keeps them fp32),
    # so the frozen base can sit in bf16.
    dtype = torch.float32 if plan.adapter.kind == "full" else train_dtype(device)
    layer_map = None
    if plan.student.init == "from-teacher":
        if teacher is None:
            raise RunError('student.init: "from-teacher" needs the teacher loaded; use method.teacher_mode = '
                           '"online", or student.init = "pretrained"')
        config = load_config(source, "student.model")
        torch.manual_seed(plan.training.seed)
        base = AutoModelForCausalLM.from_config(config, dtype=dtype)
        layer_map = init_from_teacher(base, teacher)
    else:
        if not has_weights(source):
            raise RunError(f'student.model: {source} has no weights ({" / ".join(WEIGHT_FILES[::2])}); give a '
                           'pretrained model, or set student.init = "from-teacher" to start from the teacher\'s layers')
        kwargs: dict[str, Any] = {"dtype": dtype}
        if plan.adapter.kind == "qlora":
            kwargs["quantization_config"] = _bnb_config(True, "adapter.kind", device)
        try:
            base = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            raise RunError(f"student.model: cannot load {source!r} ({_first_line(exc)})") from None
    # training.recompute: off, full or selective (recompute.py); FSDP2 later shards the checkpointed layers as they are
    recompute.enable(base, plan.training.recompute)
    base.config.use_cache = False
    if plan.adapter.kind == "qlora":
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=plan.training.recompute != "off",
            gradient_checkpointing_kwargs=recompute.checkpoint_kwargs(plan.training.recompute))
    return Student(model=_with_adapter(plan, base), base=base, layer_map=layer_map)


def _with_adapter(plan: Plan, base):
    """The model trained: ``base`` itself, or ``base`` with the plan's LoRA adapter (peft)."""
    if plan.adapter.kind not in ("lora", "qlora"):
        return base
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=plan.adapter.rank, lora_alpha=plan.adapter.alpha, lora_dropout=plan.adapter.dropout,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def empty_student(plan: Plan, config):
    """The student's modules (with its adapter) without storage, on the meta device: what a sharded run's gathered
    weights are loaded into (``load_state_dict(assign=True)``) to save the student, so rank 0 keeps no second copy
    of it through the run."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(config)
        base.config.use_cache = False
        return _with_adapter(plan, base)


def shared_vocab_size(teacher_tok, student_tok, teacher_cfg, student_cfg, method: str) -> int:
    """The real vocabulary both heads share; logit KD across different tokenizers is refused with the reason."""
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    real = max(len(s_vocab), len(t_vocab))
    heads = min(student_cfg.get_text_config().vocab_size, teacher_cfg.get_text_config().vocab_size)
    if method == "logit-kd" and s_vocab != t_vocab:
        only_t = len(set(t_vocab.items()) - set(s_vocab.items()))
        raise RunError(
            f"method.kind: logit KD needs one tokenizer for both models, but the teacher's ({len(t_vocab):,} tokens) "
            f"and the student's ({len(s_vocab):,}) differ in {only_t:,} token ids, so their distributions cannot be "
            'compared token by token. Use method.kind = "seq-kd" (train on text the teacher generates)'
        )
    if real > heads:
        raise RunError(f"the tokenizer has {real:,} tokens but a model head only {heads:,} rows; "
                       "the tokenizer does not belong to the model")
    return real


def logit_softcap(model) -> float | None:
    return getattr(model.config.get_text_config(), "final_logit_softcapping", None)


def context_length(config) -> int | None:
    return getattr(config.get_text_config(), "max_position_embeddings", None)


def offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
