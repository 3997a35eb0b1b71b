"""Training and held-out data: reading records, tokenising with prompt masking, and a resumable batch order.

Records are dicts with ``prompt`` + ``response`` (the loss sees only the response) or ``text`` (the loss sees all
of it). Files: ``.jsonl`` (one object per line), ``.txt`` (documents separated by blank lines), ``.parquet`` (with
pyarrow), or a folder of those. Every problem names the file and line.

The batch order is a pure function of (seed, step): a resumed run, or a run on another number of processes, sees
the same global batches without any data-loader state to save.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from ..records import check_record as _check_record
from ..records import data_files as _files

IGNORE_INDEX = -100
def _read_jsonl(file: Path) -> list[dict[str, str]]:
    rows = []
    with open(file, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            rows.append(_check_record(row, f"{file}:{n}"))
    return rows


def _read_txt(file: Path) -> list[dict[str, str]]:
    text = file.read_text(encoding="utf-8-sig")
    return [{"text": doc.strip()} for doc in text.split("\n\n") if doc.strip()]


def _read_parquet(file: Path) -> list[dict[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{file}: reading .parquet needs pyarrow (pip install pyarrow), or convert it to .jsonl") from None
    rows = pq.read_table(file).to_pylist()
    return [_check_record(row, f"{file}: row {n}") for n, row in enumerate(rows, 1)]


def read_records(path: str | Path, field: str = "data.train", base: Path | None = None) -> list[dict[str, str]]:
    """Every record under ``path`` (relative paths resolve from ``base``, the plan's folder)."""
    path = Path(path)
    if base is not None and not path.is_absolute():
        path = base / path
    rows: list[dict[str, str]] = []
    for file in _files(path, field):
        try:
            if file.suffix == ".jsonl":
                rows += _read_jsonl(file)
            elif file.suffix == ".txt":
                rows += _read_txt(file)
            else:
                rows += _read_parquet(file)
        except UnicodeDecodeError as exc:
            raise DataError(f"{field}: {file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise DataError(f"{field}: {file}: cannot read ({exc.strerror or exc})") from None
    if not rows:
        raise DataError(f"{field}: {path}: no examples (the data is empty)")
    return rows


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens; aligned with input_ids (the loss shifts by one)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


@dataclass
class Encoded:
    examples: list[Example]
    truncated: int  # examples cut at seq_len
    dropped: int  # examples with nothing left to train on after the cut


def encode(records: list[dict[str, str]], tokenizer, seq_len: int, field: str = "data.train") -> Encoded:
    """Tokenise records: prompt tokens are masked, the response (or text) ends with the EOS token."""
    eos = tokenizer.eos_token_id
    examples, truncated, dropped = [], 0, 0
    for row in records:
        if "text" in row and "response" not in row:
            prompt_ids: list[int] = []
            answer_ids = tokenizer(row["text"], add_special_tokens=True)["input_ids"]
        elif "response" in row:
            prompt_ids = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
            answer_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        else:
            raise DataError(f"{field}: a record has a `prompt` but no `response`; training needs both (or `text`)")
        if eos is not None:
            answer_ids = answer_ids + [eos]
        ids = prompt_ids + answer_ids
        labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        if len(ids) > seq_len:
            truncated += 1
            ids, labels = ids[:seq_len], labels[:seq_len]
        example = Example(ids, labels)
        if example.trained_tokens == 0:
            dropped += 1
            continue
        examples.append(example)
    if not examples:
        raise DataError(
            f"{field}: no example has a token left to train on within data.seq_len = {seq_len} "
            f"({dropped} dropped); raise data.seq_len or shorten the prompts"
        )
    return Encoded(examples, truncated, dropped)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch. ``labels`` are already shifted: position i is the target of input position i."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, : n - 1] = torch.tensor(e.labels[1:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class BatchOrder:
    """Which examples make up each global batch: a seeded permutation per epoch, read as a stream.

    ``global_batch(step)`` gives the example indices of a step (0-based); process ``rank`` of ``world`` takes a
    contiguous share, cut into micro-batches. Nothing to save on a checkpoint but the step.
    """

    def __init__(self, n_examples: int, global_batch: int, seed: int) -> None:
        self.n = n_examples
        self.global_batch = global_batch
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def global_batch_indices(self, step: int) -> list[int]:
        start = step * self.global_batch
        out = []
        for pos in range(start, start + self.global_batch):
            epoch, i = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[i]))
        return out

    def micro_batches(self, step: int, rank: int, world: int, micro: int) -> list[list[int]]:
        indices = self.global_batch_indices(step)
        share = len(indices) // world
        mine = indices[rank * share : (rank + 1) * share]
        return [mine[i : i + micro] for i in range(0, len(mine), micro)]
