"""The Plan: one validated description of a distillation run, saved as TOML.

The plan is the contract between the wizard, the CLI, the estimator and the engine. It is strict: an unknown key,
a value of the wrong type or outside its range is a ``PlanError`` that names the field, the bad value and what is
allowed. Catalog look-ups (does the model exist, do the tokenizers match) live in :func:`check_plan`, so a plan can
name a local model folder that only the machine running it has.
"""
from __future__ import annotations

import re
import reprlib
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import PlanError

PLAN_SCHEMA_VERSION = 1


# The plan's paths a cluster job may find elsewhere (its mounted inputs; ``python -m distill_studio.engine.train
# --input FIELD=PATH``).
INPUT_FIELDS = ("data.train", "data.eval", "data.prompts", "teacher.model", "student.model")


class _Strict(BaseModel):
    # strict: no silent coercion. Without it pydantic's lax mode takes seq_len = "4096" or 4096.0, epochs = true
    # (as 1.0), and reports seq_len = true as "True is out of range". An int still fills a float field.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, strict=True)


class Teacher(_Strict):
    model: Annotated[str, Field(min_length=1, description="catalog id, Hugging Face id, or a local model folder")]
    precision: Literal["bf16", "int8", "int4"] = Field(
        "bf16", description="teacher weights in memory: bf16, or quantised to int8/int4 to save memory"
    )
    placement: Literal["auto", "sharded", "replicated"] = Field(
        "auto", description="sharded like the student, or whole on every GPU (auto: the planner's choice)"
    )


class Student(_Strict):
    model: Annotated[str, Field(min_length=1, description="catalog id, Hugging Face id, or a local model folder")]
    init: Literal["pretrained", "from-teacher"] = Field(
        "pretrained", description="pretrained weights, or every k-th layer of the teacher where architectures match"
    )


class Method(_Strict):
    kind: Literal["logit-kd", "seq-kd", "ce"] = Field(
        "logit-kd", description="logit-kd: match the teacher's token distributions; seq-kd: train on teacher text"
    )
    loss: Literal["forward-kl", "reverse-kl", "jsd"] = "forward-kl"
    beta: float = Field(0.5, ge=0.0, le=1.0, description="JSD mixing weight (0 = forward KL, 1 = reverse KL)")
    temperature: float = Field(1.0, ge=0.1, le=20.0)
    kd_weight: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KD loss; the rest goes to cross-entropy")
    teacher_mode: Literal["online", "offline-topk", "generate", "auto"] = Field(
        "auto", description="online: teacher beside the student; offline-topk: one cached pass; generate: seq-KD data"
    )
    top_k: int = Field(64, ge=1, le=4096, description="log-probs kept per token by the offline pass")
    generated_share: float = Field(
        0.8, gt=0.0, le=1.0, description="seq-KD: share of the trained tokens that the teacher writes"
    )

    @model_validator(mode="after")
    def _modes_fit_kind(self) -> "Method":
        if self.kind == "seq-kd" and self.teacher_mode not in ("generate", "auto"):
            raise ValueError(
                f"teacher_mode '{self.teacher_mode}' does not fit kind 'seq-kd': sequence-level KD trains on text "
                "the teacher generates; use teacher_mode = \"generate\" (or \"auto\")"
            )
        if self.kind == "logit-kd" and self.teacher_mode == "generate":
            raise ValueError(
                "teacher_mode 'generate' does not fit kind 'logit-kd': use \"online\" or \"offline-topk\", "
                "or kind = \"seq-kd\" to train on generated text"
            )
        return self

    def teacher_modes(self) -> tuple[str, ...]:
        """The teacher modes this method can use (what 'auto' expands to)."""
        if self.kind == "ce":
            return ("none",)
        if self.kind == "seq-kd":
            return ("generate",)
        if self.teacher_mode == "auto":
            return ("online", "offline-topk")
        return (self.teacher_mode,)


class Adapter(_Strict):
    kind: Literal["full", "lora", "qlora"] = "lora"
    rank: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0.0, le=4096.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    merge: bool = Field(False, description="lora/qlora: also save the student with the adapter merged into it")


class Data(_Strict):
    train: str | None = Field(None, description="training data: .jsonl, .txt, .parquet file or folder")
    eval: str | None = Field(None, description="held-out data for evaluation, same formats as `train`")
    prompts: str | None = Field(
        None, description="seq-KD: prompts the teacher answers (.jsonl with a `prompt` field); default: train's"
    )
    tokens: int | None = Field(
        None, ge=1_000, le=100_000_000_000_000, description="tokens per epoch, for planning without a data file"
    )
    seq_len: int = Field(2048, ge=16, le=1_048_576)
    epochs: float = Field(1.0, gt=0.0, le=1000.0)
    global_batch_tokens: int = Field(1_048_576, ge=16, le=1_000_000_000)
    format: Literal["auto", "messages", "prompt-response", "text"] = Field(
        "auto", description="record shape: messages (conversations, rendered with the chat template), prompt + "
        "response, text, or auto (each record by its fields; the run says what it found)")
    reasoning: Literal["keep", "strip"] = Field(
        "keep", description="reasoning traces (<think> ... </think>) in assistant turns: trained (keep) or removed")

    @model_validator(mode="after")
    def _has_size(self) -> "Data":
        if self.train is None and self.tokens is None:
            raise ValueError("give `train` (a data file or folder) or `tokens` (a token count for planning)")
        if self.global_batch_tokens < self.seq_len:
            raise ValueError(
                f"global_batch_tokens ({self.global_batch_tokens}) is smaller than one sequence "
                f"(seq_len = {self.seq_len}); allowed: at least seq_len"
            )
        return self


class TeacherPass(_Strict):
    """Where the teacher's own pass runs when it runs apart from training (a split-hardware plan)."""

    sku: str | None = Field(None, description="Azure VM size for the teacher's pass; leave out to compare every size")
    nodes: int | None = Field(None, ge=1, le=16, description="nodes for the teacher's pass; leave out to compare 1-16")


class Hardware(_Strict):
    target: Literal["local", "azure"] = "azure"
    sku: str | None = Field(None, description="Azure VM size; leave out to compare every size")
    nodes: int | None = Field(None, ge=1, le=16, description="number of nodes; leave out to compare 1-16 "
                              "(local: machines alike, 1 by default)")
    region: str = Field("eastus", min_length=2, max_length=40, pattern=r"^[a-z0-9]+$")
    priority: Literal["dedicated", "low-priority"] = "dedicated"
    sharding: Literal["auto", "all-gpus", "within-node", "none"] = Field(
        "auto", description="FSDP over every GPU, within each node (replicated across nodes), none (DDP), or auto"
    )
    accelerator: str | None = Field(None, description="local: the accelerator in this machine")
    gpus: int = Field(1, ge=1, le=64, description="local: number of GPUs (on a CPU: processes) in each machine")
    usd_per_hour: float | None = Field(
        None, ge=0.0, le=10_000.0, description="local: cost of this machine per hour; azure: the price per node-hour "
        "confirmed for hardware.sku where the region's price table has none (the app asks for it at launch)")
    split: Literal["auto", "yes", "no"] = Field(
        "auto", description="run the teacher's pass (offline top-k, generation) on other hardware than training: "
        "auto (where it pays), yes (always), no (never)")
    teacher_pass: TeacherPass | None = Field(None, description="azure: the hardware of the teacher's pass, when split")

    @model_validator(mode="after")
    def _local_needs_accelerator(self) -> "Hardware":
        if self.target == "local" and not self.accelerator:
            raise ValueError("target 'local' needs `accelerator` (e.g. \"h100-sxm\", or \"cpu\")")
        if self.target == "local" and (self.split == "yes" or self.teacher_pass is not None):
            raise ValueError("split hardware (split = \"yes\", [hardware.teacher_pass]) needs target \"azure\": a "
                             "local plan has one machine; run its stages with `distill run --stage teacher|student`")
        if self.split == "no" and self.teacher_pass is not None:
            raise ValueError('split "no" does not fit [hardware.teacher_pass]: remove one of them')
        if self.target == "azure" and self.usd_per_hour is not None and not self.sku:
            raise ValueError("usd_per_hour on Azure is the price of hardware.sku (per node-hour): set sku too, or "
                             "leave usd_per_hour out to use the region's price table")
        return self

    @property
    def split_only(self) -> bool:
        """Only split-hardware options are as planned."""
        return self.split == "yes" or self.teacher_pass is not None


class Training(_Strict):
    """How the engine trains. Planning ignores this section; every field has a default."""

    learning_rate: float = Field(2e-4, gt=0.0, le=1.0)
    warmup_steps: int = Field(0, ge=0, le=1_000_000, description="steps of linear warm-up from 0, then lr_schedule")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="after warm-up: cosine or linear decay to 0 at the last step, or constant")
    optimizer: Literal["adamw", "adamw-8bit"] = Field(
        "adamw", description="adamw (torch; fused or foreach where the device supports it) or adamw-8bit "
        "(bitsandbytes, CUDA only: optimiser state in 8 bits)")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0, le=1e6, description="gradient clipping by global norm")
    max_steps: int | None = Field(None, ge=1, le=100_000_000, description="stop after this many steps (default: epochs)")
    micro_batch_size: int | None = Field(
        None, ge=1, le=4096,
        description="sequences per process per forward pass (leave out: the planner's choice, which the run uses)")
    recompute: Literal["off", "full", "selective"] = Field(
        "off", description="activation recomputation of the student's layers, to save memory: off; full (backward "
        "re-runs each layer's forward); selective (the layers keep their matmul outputs and re-run only the cheap "
        "elementwise work). gradient_checkpointing = true / false, of older plans, reads as full / off")
    eval_every: int = Field(0, ge=0, le=100_000_000,
                            description="steps between evaluations; 0: only at the end (a new run also evaluates "
                            "at step 0 unless eval_at_start = false)")
    eval_at_start: bool = Field(True, description="evaluate before the first step (the curves' starting point)")
    log_every: int = Field(1, ge=1, le=100_000_000, description="steps between logged metrics; metrics the loss does "
                           "not need (the CE term at kd_weight = 1) are computed on these steps only")
    eval_samples: int = Field(200, ge=0, le=1_000_000, description="held-out prompts to generate for the task score")
    checkpoint_every: Annotated[int, Field(ge=0, le=100_000_000)] | Literal["auto"] = Field(
        "auto", description="steps between checkpoints (0: only at the end); \"auto\": on Azure the planner's "
        "interval from the checkpoint's write time and the nodes' failure rate, locally only at the end")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="newest checkpoints kept on disk")
    max_new_tokens: int = Field(256, ge=1, le=65_536, description="generation length for seq-KD and the task score")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    loss_chunk_tokens: int = Field(1024, ge=1, le=1_048_576, description="tokens per chunk of the KD loss")

    @model_validator(mode="before")
    @classmethod
    def _gradient_checkpointing(cls, data):
        """Older plans' ``gradient_checkpointing = true / false`` is ``recompute = "full" / "off"``."""
        if not isinstance(data, dict) or "gradient_checkpointing" not in data:
            return data
        data = dict(data)
        old = data.pop("gradient_checkpointing")
        if not isinstance(old, bool):
            raise ValueError(f"training.gradient_checkpointing must be true or false (or use training.recompute = "
                             f'"off" | "full" | "selective"), not {old!r}')
        mode = "full" if old else "off"
        if "recompute" in data and data["recompute"] != mode:
            raise ValueError(f"training.gradient_checkpointing = {str(old).lower()} and training.recompute = "
                             f'{data["recompute"]!r} disagree: keep only recompute ("off" | "full" | "selective")')
        data["recompute"] = mode
        return data

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the student's activations are recomputed at all (full or selective)."""
        return self.recompute != "off"


class Budget(_Strict):
    hours: float | None = Field(None, gt=0.0, le=24 * 365, description="deadline for the whole run, in hours")
    usd: float | None = Field(None, gt=0.0, le=100_000_000.0, description="cost cap in US dollars")
    confidence: float = Field(0.8, ge=0.5, le=0.99, description="how sure the recommendation must be to meet the "
                                                                "deadline and the cost cap (0.8: P80)")
    stop_at: Literal["none", "deadline", "cap", "either"] = Field(
        "none", description="stop the run by itself (a checkpoint is saved; an Azure job ends) when its time reaches "
        "the deadline, its cost the cap, or either; none: the budget only guides the planner")

    @model_validator(mode="after")
    def _stop_needs_its_limit(self) -> "Budget":
        if self.stop_at == "deadline" and self.hours is None:
            raise ValueError('stop_at "deadline" needs budget.hours')
        if self.stop_at == "cap" and self.usd is None:
            raise ValueError('stop_at "cap" needs budget.usd')
        if self.stop_at == "either" and self.hours is None and self.usd is None:
            raise ValueError('stop_at "either" needs budget.hours or budget.usd')
        return self


class Plan(_Strict):
    schema_version: int = Field(PLAN_SCHEMA_VERSION, ge=1, le=PLAN_SCHEMA_VERSION)
    name: str = Field(min_length=1, max_length=120)
    description: str = ""
    teacher: Teacher
    student: Student
    method: Method = Method()
    adapter: Adapter = Adapter()
    data: Data
    hardware: Hardware = Hardware()
    budget: Budget = Budget()
    training: Training = Training()

    @model_validator(mode="after")
    def _placement_fits_precision(self) -> "Plan":
        if self.adapter.kind == "qlora" and self.hardware.sharding in ("all-gpus", "within-node"):
            raise ValueError(f'hardware.sharding "{self.hardware.sharding}" does not fit adapter.kind "qlora": '
                             'a 4-bit (bitsandbytes) student is not sharded; use sharding = "none" (each GPU holds '
                             'the 4-bit student) or adapter.kind = "lora"')
        if self.teacher.precision != "bf16" and self.teacher.placement == "sharded":
            raise ValueError(f'teacher.placement "sharded" does not fit teacher.precision "{self.teacher.precision}": '
                             'a quantised (bitsandbytes) teacher is not sharded; use placement = "replicated" or '
                             '"auto", or precision = "bf16"')
        if self.hardware.split_only and (self.method.kind == "ce" or self.method.teacher_mode == "online"):
            raise ValueError('hardware.split: a split plan runs the teacher\'s own pass apart from training, which '
                             f'method.kind "{self.method.kind}"' + (f' with teacher_mode "{self.method.teacher_mode}"'
                                                                  if self.method.kind != "ce" else "") +
                             ' does not have; use method.teacher_mode = "offline-topk" (or "auto"), method.kind = '
                             '"seq-kd", or split = "auto"')
        return self

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


# Bad values are quoted through reprlib: a huge string or a deeply nested list neither floods the message nor
# overflows the stack (plain repr raises RecursionError on a few thousand nesting levels).
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40
_REPR.maxlevel = 3


class _Shown:
    """A bad value quoted for a message: ``f"{_Shown(x)!r}"`` gives reprlib's bounded repr."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return _REPR.repr(self.value)


def _key(part: Any) -> str:
    """One step of a field path: a plain key as it is, anything else (blank, newline, dot, ...) quoted."""
    return part if isinstance(part, str) and re.fullmatch(r"[A-Za-z0-9_-]+", part) else _REPR.repr(part)


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(_key(p) for p in err["loc"] if not str(p).startswith("function-after")) or "(top level)"
    kind = err["type"]
    bad = _Shown(err.get("input"))
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{loc}: unknown key (remove it, or check its spelling)"
    if kind == "missing":
        return f"{loc}: missing (required)"
    if kind == "literal_error":
        return f"{loc}: {bad!r} is not allowed; allowed: {ctx.get('expected', '')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{loc}: {bad!r} is out of range; {_range_text(kind, ctx)}"
    if kind == "value_error":
        return f"{loc}: {ctx.get('error', err['msg'])}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{loc}: {bad!r} is not valid ({err['msg'].lower()})"
    return f"{loc}: {err['msg']} (got {bad!r})"


def _range_text(kind: str, ctx: dict[str, Any]) -> str:
    for key, word in (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most")):
        if key in ctx:
            return f"allowed: {word} {ctx[key]}"
    return "out of range"


def with_stop_at(plan: Plan, stop_at: str | None, origin: str = "--stop-at") -> Plan:
    """``plan`` with ``budget.stop_at`` set (a launch's choice), checked as the plan file's own would be."""
    if not stop_at:
        return plan
    doc = plan.model_dump(mode="json", exclude_none=True)
    doc.setdefault("budget", {})["stop_at"] = stop_at
    return plan_from_dict(doc, origin)


def plan_from_dict(doc: dict[str, Any], origin: str = "plan") -> Plan:
    """Validate a parsed document; every problem in one ``PlanError``."""
    try:
        return Plan.model_validate(doc)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        raise PlanError(f"{origin}: invalid plan\n  " + "\n  ".join(problems)) from None


def loads_plan(text: str, origin: str = "plan") -> Plan:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends in "(at line L, column C)" or "(at end of document)"
        raise PlanError(f"{origin}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nesting level of arrays / inline tables
        raise PlanError(f"{origin}: not valid TOML: arrays or inline tables nested too deeply") from None
    return plan_from_dict(doc, origin)


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        # utf-8-sig: editors on Windows (Notepad) may start the file with a BOM, which tomllib rejects
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PlanError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise PlanError(f"{path}: cannot read the plan file ({exc})") from None
    return loads_plan(text, origin=str(path))


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write atomically: a crash never leaves half a plan behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(plan.to_toml(), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PlanError(f"{path}: cannot save the plan ({exc.strerror or exc})") from None
