"""Training and held-out data: reading records, tokenising with prompt masking, and a resumable batch order.

Records are dicts with ``messages`` (a conversation, rendered with the chat template; the loss sees only the
assistant turns), ``prompt`` + ``response`` (the loss sees only the response) or ``text`` (the loss sees all of it);
the shapes are in ``engine/records.py`` and ``engine/chat.py``. Files: ``.jsonl`` (one object per line), ``.txt``
(documents separated by blank lines), ``.parquet`` (with pyarrow), or a folder of those (a Hugging Face dataset
saved with ``to_json``/``to_parquet``, or ``save_to_disk``'s ``.arrow`` files). Every problem names the file and line.

The batch order is a pure function of (seed, step): a resumed run, or a run on another number of processes, sees
the same global batches without any data-loader state to save.
"""
from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..chat import ChatFormat, Reasoning, pair_batch
from ..errors import DataError
from ..records import check_record as _check_record
from ..records import data_files as _files

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100

# A token of the tokenizers a run meets covers a few characters of text (3-5 on prose, more on code's runs of
# spaces); 32 is far above any average. A record is cut to ``seq_len * MAX_CHARS_PER_TOKEN`` characters as it is
# read: training keeps at most ``seq_len`` tokens of it, and a record of 100 MB is then never tokenised whole (a fast
# tokenizer needs hundreds of bytes of memory per character it is given).
MAX_CHARS_PER_TOKEN = 32
# A line of a .jsonl file longer than this is refused (by its line number) without being read whole.
MAX_LINE_BYTES = 256 << 20


def char_budget(seq_len: int) -> int:
    """The characters of a record that can matter to a sequence of ``seq_len`` tokens."""
    return seq_len * MAX_CHARS_PER_TOKEN


def cut_record(row: dict, budget: int) -> tuple[dict, bool]:
    """``row`` with its text cut to ``budget`` characters in all, in reading order (a prompt before its response,
    the turns of a conversation in order; turns after the budget is spent are left out); True when it was cut."""
    if "messages" in row:
        left, out, cut = budget, [], False
        for m in row["messages"]:
            if left <= 0:
                cut = True
                break
            m2 = m
            for key in ("reasoning_content", "content"):
                text = m2.get(key)
                if isinstance(text, str):
                    if len(text) > left:
                        m2, cut = {**m2, key: text[:left]}, True
                    left -= len(m2[key])
            out.append(m2)
        return ({**row, "messages": out}, True) if cut else (row, False)
    left, new, cut = budget, {}, False
    for key in ("prompt", "response", "text"):
        text = row.get(key)
        if isinstance(text, str):
            if len(text) > max(left, 0):
                new[key], cut = text[:max(left, 0)], True
            left -= len(new.get(key, text))
    return ({**row, **new}, True) if cut else (row, False)


def _not_utf8(field: str, file: Path, data: bytes, exc: UnicodeDecodeError, line: int, line_start: int) -> DataError:
    at = line_start + exc.start
    bad = data[exc.start:exc.start + 1].hex()
    return DataError(f"{field}: {file}: line {line:,}: not UTF-8 text (byte 0x{bad} at byte {at:,} of the file, "
                     f"column {exc.start + 1:,} of the line: {exc.reason}); save the file as UTF-8")


def _lines(file: Path, field: str):
    """(line number, byte offset of the line in the file, the line's bytes) of every line; a line longer than
    MAX_LINE_BYTES is refused by its number without being read whole."""
    with open(file, "rb") as f:
        offset, n = 0, 0
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            n += 1
            if len(line) > MAX_LINE_BYTES:
                raise DataError(f"{field}: {file}: line {n:,} is longer than {MAX_LINE_BYTES >> 20} MiB; a record "
                                f"that long is refused (training uses at most data.seq_len tokens of a record, about "
                                f"{MAX_CHARS_PER_TOKEN} characters each at most): split or shorten it")
            start = offset
            offset += len(line)
            if n == 1 and line.startswith(codecs.BOM_UTF8):
                line, start = line[len(codecs.BOM_UTF8):], start + len(codecs.BOM_UTF8)
            yield n, start, line


def _read_jsonl(file: Path, fmt: str, field: str = "data", budget: int | None = None) -> list[dict]:
    rows = []
    for n, start, raw in _lines(file, field):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(field, file, raw, exc, n, start) from None
        del raw
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        del line
        row = _check_record(row, f"{file}:{n}", fmt)
        rows.append(cut_record(row, budget)[0] if budget is not None else row)
    return rows


def _read_txt(file: Path, field: str = "data", budget: int | None = None) -> list[dict]:
    data = file.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        line_start = data.rfind(b"\n", 0, at) + 1
        exc.start = at - line_start   # the column within its line
        raise _not_utf8(field, file, data[line_start:], exc, data.count(b"\n", 0, at) + 1, line_start) from None
    del data
    docs = (doc.strip() for doc in text.split("\n\n"))
    return [{"text": doc[:budget] if budget is not None else doc} for doc in docs if doc]


def _read_table(file: Path, fmt: str, budget: int | None = None) -> list[dict]:
    try:
        import pyarrow.parquet as pq
        from pyarrow import ipc
    except ImportError:
        raise DataError(f"{file}: reading {file.suffix} needs pyarrow (pip install pyarrow), or convert it to "
                        ".jsonl") from None
    if file.suffix == ".parquet":
        rows = pq.read_table(file).to_pylist()
    else:  # datasets' save_to_disk writes Arrow IPC streams
        with open(file, "rb") as f:
            rows = ipc.open_stream(f).read_all().to_pylist()
    rows = [_check_record(row, f"{file}: row {n}", fmt) for n, row in enumerate(rows, 1)]
    return [cut_record(r, budget)[0] for r in rows] if budget is not None else rows


def read_records(path: str | Path, field: str = "data.train", base: Path | None = None,
                 fmt: str = "auto", *, seq_len: int | None = None) -> list[dict]:
    """Every record under ``path`` (relative paths resolve from ``base``, the plan's folder), each in the shape
    ``fmt`` names ("auto": any); OpenAI batch answers are joined to their requests. With ``seq_len``, each record's
    text is cut to what a sequence of that many tokens can hold (:func:`char_budget`) as it is read, so a huge record
    costs memory for its line only, never for tokenising it whole."""
    path = Path(path)
    if base is not None and not path.is_absolute():
        path = base / path
    budget = char_budget(seq_len) if seq_len else None
    rows: list[dict[str, str]] = []
    for file in _files(path, field):
        try:
            if file.suffix == ".jsonl":
                rows += _read_jsonl(file, fmt, field, budget)
            elif file.suffix == ".txt":
                rows += _read_txt(file, field, budget)
            else:
                rows += _read_table(file, fmt, budget)
        except UnicodeDecodeError as exc:   # inside a table's strings
            raise DataError(f"{field}: {file}: not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise DataError(f"{field}: {file}: cannot read ({exc.strerror or exc})") from None
    rows = pair_batch(rows, field)
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


def chat_format(tokenizer, owner: str) -> ChatFormat | None:
    """The tokenizer's chat template with the tokens it names, or None when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    if not template:
        return None
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    texts = set(tokenizer.all_special_tokens)
    texts |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    return ChatFormat(template=template, special=special, special_texts=tuple(sorted(texts, key=len, reverse=True)),
                      eos_token=tokenizer.eos_token, owner=owner)


def _plain_pieces(row: dict, tokenizer, field: str) -> tuple[list[int], list[int]]:
    if "text" in row and "response" not in row:
        return [], tokenizer(row["text"], add_special_tokens=True)["input_ids"]
    if "response" in row:
        return (tokenizer(row["prompt"], add_special_tokens=True)["input_ids"],
                tokenizer(row["response"], add_special_tokens=False)["input_ids"])
    raise DataError(f"{field}: a record has a `prompt` but no `response`; training needs both, `text`, or "
                    "`messages`")


def conversation_ids(chat: ChatFormat, messages: list[dict], tokenizer, reasoning: Reasoning = "keep",
                     tools: list | None = None) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a conversation: each rendered piece tokenised on its own, so an answer starts on a
    token boundary as it does after the generation prompt at inference; labels only on the assistant turns."""
    pieces = chat.segments(messages, reasoning, tools)
    encoded = tokenizer([t for t, _ in pieces], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    labels: list[int] = []
    for (_, trained), piece in zip(pieces, encoded):
        ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    text = "".join(t for t, _ in pieces)
    try:
        whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError):  # a slow tokenizer has no offsets: the pieces' ids stand
        return ids, labels
    if whole["input_ids"] == ids:
        return ids, labels
    # The pieces tokenise differently on their own (SentencePiece tokenizers prepend a word marker to each piece):
    # the model is trained on the ids of the whole text, as it reads it, labelled by the characters each id covers.
    spans, at = [], 0
    for t, trained in pieces:
        if trained:
            spans.append((at, at + len(t)))
        at += len(t)
    labels = [i if any(a < e and b > s for s, e in spans) else IGNORE_INDEX
              for i, (a, b) in zip(whole["input_ids"], whole["offset_mapping"])]
    return list(whole["input_ids"]), labels


def encode(records: list[dict], tokenizer, seq_len: int, field: str = "data.train", *,
           chat: ChatFormat | None = None, reasoning: Reasoning = "keep") -> Encoded:
    """Tokenise records. Conversations go through ``chat`` (the chat template): labels on assistant turns only.
    Prompt + response: prompt tokens are masked, the response (or text) ends with the EOS token."""
    eos = tokenizer.eos_token_id
    examples, truncated, dropped = [], 0, 0
    budget = char_budget(seq_len)
    for n, row in enumerate(records, 1):
        row, cut = cut_record(row, budget)  # never tokenise more text than seq_len tokens can hold
        if "messages" in row:
            if not any(m["role"] == "assistant" for m in row["messages"]):
                dropped += 1  # a prompt without an answer (a failed batch request): nothing to train on
                continue
            if chat is None:
                raise DataError(f"{field}: record {n} is a conversation (`messages`) but neither model's tokenizer "
                                "has a chat template; add `chat_template` to tokenizer_config.json, or give "
                                "`prompt` + `response` records")
            try:
                ids, labels = conversation_ids(chat, row["messages"], tokenizer, reasoning, row.get("tools"))
            except DataError as exc:
                raise DataError(f"{field}: record {n}: {exc}") from None
        else:
            prompt_ids, answer_ids = _plain_pieces(row, tokenizer, field)
            if eos is not None:
                answer_ids = answer_ids + [eos]
            ids = prompt_ids + answer_ids
            labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        if len(ids) > seq_len or cut:
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


def prompt_ids(row: dict, tokenizer, chat: ChatFormat | None) -> list[int]:
    """The token ids a model is given to answer ``row``: a conversation up to its last assistant turn with the
    generation prompt, or a ``prompt`` string."""
    if "messages" in row:
        if chat is None:
            raise DataError("a conversation (`messages`) needs a chat template in the model's tokenizer")
        return tokenizer(chat.prompt(row["messages"], row.get("tools")), add_special_tokens=False)["input_ids"]
    return tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]


def has_prompt(row: dict) -> bool:
    return "prompt" in row or any(m["role"] == "user" for m in row.get("messages", ()))


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch. ``labels`` are already shifted: position i is the target of input position i."""
    import torch  # here, not above: the planner reads and counts data with this module, without torch

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
        import torch

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

    def tokens(self, lengths: list[int], steps: int, first: int = 0) -> int:
        """Exactly how many tokens steps ``first .. steps`` read, given every example's length: whole epochs
        read every example once, a part epoch the start of its permutation."""
        start, end = first * self.global_batch, steps * self.global_batch
        if end <= start:
            return 0
        import torch

        total_len = sum(lengths)
        lens = torch.tensor(lengths, dtype=torch.long)

        def upto(pos: int) -> int:  # tokens of positions [0, pos)
            epochs, rem = divmod(pos, self.n)
            return epochs * total_len + (int(lens[self._perm(epochs)[:rem]].sum()) if rem else 0)

        return upto(end) - upto(start)

    def micro_batches(self, step: int, rank: int, world: int, micro: int) -> list[list[int]]:
        indices = self.global_batch_indices(step)
        share = len(indices) // world
        mine = indices[rank * share : (rank + 1) * share]
        return [mine[i : i + micro] for i in range(0, len(mine), micro)]
