"""Checks of a plan against the catalogs: do the models exist, can this method run on this pair.

Refusals raise ``PlanError`` with the reason and the alternative; facts a user should know come back as notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .catalog.models import resolve_model
from .catalog.types import ModelSpec
from .errors import CatalogError, PlanError
from .plan import Plan


@dataclass
class Pair:
    teacher: ModelSpec
    student: ModelSpec
    notes: list[str] = field(default_factory=list)
    shared_vocab: int = 0         # logits are sliced to this many ids for logit KD (0: no logit KD)


def _resolve(field_path: str, name: str, base: Path | None = None) -> ModelSpec:
    # A relative local folder is read from the plan's folder, as data.train is, so a plan works from anywhere.
    try:
        if base is not None and not Path(name).is_absolute() and (base / name).exists():
            name = str(base / name)
        return resolve_model(name)
    except CatalogError as exc:
        raise PlanError(f"{field_path}: {exc}") from None
    except (OSError, RuntimeError, ValueError) as exc:
        # resolve_model tries an unknown name as a path: a name too long for the file system (OSError), or
        # "~user/..." for a user that does not exist (RuntimeError) would otherwise escape as a traceback
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise PlanError(f"{field_path}: unknown model '{shown}', and it cannot be read as a path ({reason})") from None


def vocabulary_check(teacher: ModelSpec, student: ModelSpec, method: str) -> tuple[int, list[str]]:
    """The vocabulary logit KD compares over, and notes; ``PlanError`` if logit KD cannot work on this pair."""
    notes: list[str] = []
    if method != "logit-kd":
        return 0, notes
    if teacher.tokenizer_family != student.tokenizer_family:
        raise PlanError(
            f"method.kind: logit KD needs teacher and student to share a vocabulary, and they do not: "
            f"{teacher.name} uses the '{teacher.tokenizer_family}' tokenizer ({teacher.tokenizer_vocab_size:,} ids), "
            f"{student.name} the '{student.tokenizer_family}' tokenizer ({student.tokenizer_vocab_size:,} ids), "
            f"so the same id means different text. Use kind = \"seq-kd\": the teacher writes answers and the "
            f"student learns from that text, which works across tokenizers."
        )
    shared = min(teacher.tokenizer_vocab_size, student.tokenizer_vocab_size)
    padded = [m for m in (teacher, student) if m.vocab_size > shared]
    if padded:
        widths = ", ".join(f"{m.name} {m.vocab_size:,}" for m in (teacher, student))
        notes.append(
            f"logits are padded past the tokenizer ({widths}); both are sliced to the {shared:,} real tokens "
            f"before the KD loss"
        )
    return shared, notes


def check_plan(plan: Plan, base: Path | None = None) -> Pair:
    """``base``: the plan file's folder, against which relative model folders are resolved first."""
    teacher = _resolve("teacher.model", plan.teacher.model, base)
    student = _resolve("student.model", plan.student.model, base)
    shared, notes = vocabulary_check(teacher, student, plan.method.kind)
    seq = plan.data.seq_len
    for role, m in (("student", student), ("teacher", teacher)):
        if seq > m.max_context_tokens:
            raise PlanError(
                f"data.seq_len: {seq:,} is longer than the {role} {m.name} can attend to; "
                f"allowed: at most {m.max_context_tokens:,}"
            )
    if student.params >= teacher.params:
        notes.append(
            f"the student ({student.params / 1e9:.1f}B) is not smaller than the teacher ({teacher.params / 1e9:.1f}B)"
        )
    if plan.student.init == "from-teacher":
        same = (teacher.family, teacher.hidden_size, teacher.intermediate_size, teacher.num_attention_heads,
                teacher.num_kv_heads) == (student.family, student.hidden_size, student.intermediate_size,
                                          student.num_attention_heads, student.num_kv_heads)
        if not same:
            raise PlanError(
                "student.init: \"from-teacher\" copies every k-th teacher layer, which needs the same architecture "
                f"and widths; {teacher.name} and {student.name} differ. Use init = \"pretrained\"."
            )
    return Pair(teacher=teacher, student=student, notes=notes, shared_vocab=shared)
