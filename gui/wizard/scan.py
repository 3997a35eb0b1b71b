"""A quick scan of training data: how many examples, and about how many tokens.

Runs on a worker thread (``gui.workers.start``): :func:`scan_data` is a generator that yields ``(done, total,
text)`` progress in bytes, so the data page can show a progress bar and cancel it by choosing another file. It reads
records the way training does (``prompt`` + ``response``, or ``text``; .txt documents separated by blank lines) but
without importing torch, so it stays fast to start.

Tokens are counted with the teacher's own ``tokenizer.json`` when there is one and the ``tokenizers`` package
imports; otherwise they are estimated at 4 bytes a token, the planner's rule for a file without a count.
Conversations (``messages``) are rendered with the teacher's chat template and cut into pieces exactly as training
cuts them (``engine/chat.py``), so the scan counts the tokens of the whole rendered conversation and, apart, the
assistant tokens the loss is taken on.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

from ...engine.chat import ChatFormat, pair_batch
from ...engine.errors import DataError
from ...engine.records import check_record, data_files

BYTES_PER_TOKEN = 4.0
BATCH = 512                    # texts tokenised at a time; also how often progress is reported
PROGRESS_BYTES = 4 << 20       # report at least every 4 MiB read


@dataclass(frozen=True)
class ScanResult:
    path: str
    files: int
    examples: int
    tokens: int
    text_bytes: int
    counted: bool              # True: real tokens from the teacher's tokenizer; False: estimated from bytes
    note: str                  # how the tokens were obtained, in words
    conversations: int = 0     # examples that are conversations (messages)
    assistant_tokens: int | None = None  # tokens of their assistant turns (the trained ones), when counted

    def summary(self) -> str:
        files = f" in {self.files} files" if self.files > 1 else ""
        approx = "" if self.counted else "about "
        what = "examples"
        if self.conversations == self.examples:
            what = "conversations"
        elif self.conversations:
            what = f"examples ({self.conversations:,} conversations)"
        trained = f", {self.assistant_tokens:,} in assistant turns" if self.assistant_tokens is not None else ""
        return f"{self.examples:,} {what}{files} · {approx}{self.tokens:,} tokens{trained} ({self.note})"


def record_text(row: Any, where: str) -> str | dict:
    """What training reads of one record: its text (prompt + response, or text), or the record itself when it is a
    conversation (``messages``), which the chat template renders."""
    row = check_record(row, where)
    if "messages" in row or "_answer_of" in row:
        return row
    if isinstance(row.get("text"), str):
        return row["text"]
    return row["prompt"] + row.get("response", "")


def _jsonl(file: Path, field: str) -> Iterator[tuple[str | dict, int]]:
    """(text, bytes read) per record."""
    with open(file, "rb") as f:
        for n, raw in enumerate(f, 1):
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            if not line.strip():
                yield "", len(raw)
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{field}: {file}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            yield record_text(row, f"{field}: {file}:{n}"), len(raw)


def _txt(file: Path, field: str) -> Iterator[tuple[str, int]]:
    doc: list[str] = []
    pending = 0
    with open(file, "rb") as f:
        for n, raw in enumerate(f, 1):
            pending += len(raw)
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            if line.strip():
                doc.append(line)
            elif doc:
                yield "".join(doc).strip(), pending
                doc, pending = [], 0
    if doc:
        yield "".join(doc).strip(), pending
    elif pending:
        yield "", pending


def _parquet(file: Path, field: str) -> Iterator[tuple[str, int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{field}: {file}: reading .parquet needs pyarrow (pip install pyarrow), "
                        "or convert it to .jsonl") from None
    pf = pq.ParquetFile(file)
    rows = max(pf.metadata.num_rows, 1)
    size = file.stat().st_size
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield record_text(row, f"{field}: {file}: row {n}"), size // rows


def _arrow(file: Path, field: str) -> Iterator[tuple[str | dict, int]]:
    try:
        from pyarrow import ipc
    except ImportError:
        raise DataError(f"{field}: {file}: reading .arrow needs pyarrow (pip install pyarrow)") from None
    size = file.stat().st_size
    with open(file, "rb") as f:
        rows = ipc.open_stream(f).read_all().to_pylist()
    for n, row in enumerate(rows, 1):
        yield record_text(row, f"{field}: {file}: row {n}"), size // max(len(rows), 1)


_READERS = {".jsonl": _jsonl, ".txt": _txt, ".parquet": _parquet, ".arrow": _arrow}


def load_chat(tokenizer_file: str | None, owner: str = "teacher.model") -> ChatFormat | None:
    """The chat template beside a tokenizer.json (``chat_template.jinja`` or ``tokenizer_config.json``), with the
    special tokens it refers to, as transformers would load them; None without one."""
    if not tokenizer_file:
        return None
    folder = Path(tokenizer_file).parent
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    template = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(config.get("chat_template"), str):
        template = config["chat_template"]
    if not template:
        return None
    try:  # the renderer training uses; a GUI-only install may not have it
        import transformers.utils.chat_template_utils  # noqa: F401
    except ImportError:
        return None

    def text(v):
        return v.get("content") if isinstance(v, dict) else v if isinstance(v, str) else None

    special = {k: text(config[k]) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
               if text(config.get(k))}
    texts = set(special.values())
    try:
        added = json.loads(Path(tokenizer_file).read_text(encoding="utf-8")).get("added_tokens", [])
        texts |= {t["content"] for t in added if t.get("special")}
    except (OSError, ValueError):
        pass
    return ChatFormat(template=template, special=special, special_texts=tuple(sorted(texts, key=len, reverse=True)),
                      eos_token=special.get("eos_token"), owner=owner)


def load_counter(tokenizer_file: str | None) -> tuple[Callable[[list[str]], int] | None, str]:
    """A function counting the tokens of a batch of texts, and how it counts; None when it must estimate."""
    if not tokenizer_file or not Path(tokenizer_file).is_file():
        return None, "estimated at 4 bytes a token: the teacher has no local tokenizer.json"
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None, "estimated at 4 bytes a token: the `tokenizers` package is not installed"
    try:
        tok = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises its own Exception type
        return None, f"estimated at 4 bytes a token: {tokenizer_file} could not be loaded ({exc})"

    def count(texts: list[str], add_special_tokens: bool = True) -> int | list[int]:
        encoded = tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        return sum(len(e.ids) for e in encoded) if add_special_tokens else [len(e.ids) for e in encoded]

    return count, "counted with the teacher's tokenizer.json"


def scan_data(path: str, tokenizer_file: str | None = None, field: str = "data.train", *, reasoning: str = "keep",
              student_tokenizer_file: str | None = None) -> Generator[tuple[int, int, str], None, ScanResult]:
    """Count examples and tokens under ``path``; yields progress in bytes; raises ``DataError`` naming the file
    and line of the first problem. Conversations are rendered as training renders them: with the student's chat
    template when its folder has one, else the teacher's, keeping or stripping reasoning as ``reasoning`` says."""
    root = Path(path).expanduser()
    files = data_files(root, field)
    total = sum(f.stat().st_size for f in files) or 1
    count, note = load_counter(tokenizer_file)
    chat = None
    if count is not None:
        chat = load_chat(student_tokenizer_file, "student.model") if student_tokenizer_file else None
        chat = chat or load_chat(tokenizer_file)
    done = examples = tokens = text_bytes = conversations = 0
    assistant = 0

    def add(row: dict, n: int) -> None:
        """Count one conversation: rendered and cut as training cuts it (engine/chat.py)."""
        nonlocal conversations, tokens, assistant, text_bytes
        conversations += 1
        if chat is None:
            text_bytes += sum(len(m["content"].encode("utf-8")) for m in row["messages"])
            return
        try:
            pieces = chat.segments(row["messages"], reasoning, row.get("tools"))
        except DataError as exc:
            if "nothing to train on" not in str(exc):
                raise DataError(f"{field}: record {n}: {exc}") from None
            pieces = [(chat.prompt(row["messages"], row.get("tools")), False)]  # a prompt alone
        lengths = count([t for t, _ in pieces], add_special_tokens=False)
        tokens += sum(lengths)
        assistant += sum(k for k, (_, trained) in zip(lengths, pieces) if trained)
        text_bytes += sum(len(t.encode("utf-8")) for t, _ in pieces)

    batch: list[str] = []
    pending: list[dict] = []  # conversations, and OpenAI batch answers until their requests are read
    since = 0
    yield 0, total, f"reading {files[0].name}"
    for file in files:
        reader = _READERS[file.suffix]
        try:
            for item, nbytes in reader(file, field):
                done += nbytes
                since += nbytes
                if isinstance(item, dict):
                    if "_custom_id" in item or "_answer_of" in item:
                        pending.append(item)  # an OpenAI batch line: counted once its pair is read
                    else:
                        add(item, examples + conversations + 1)
                        if (conversations % BATCH) == 0:
                            yield done, total, f"{conversations:,} conversations read"
                    continue
                if not item:
                    continue
                examples += 1
                text_bytes += len(item.encode("utf-8"))
                if count is not None:
                    batch.append(item)
                if len(batch) >= BATCH or since >= PROGRESS_BYTES or (count is None and examples % BATCH == 0):
                    if batch:
                        tokens += count(batch)
                        batch = []
                    since = 0
                    yield done, total, f"{examples:,} examples read"
        except UnicodeDecodeError as exc:
            raise DataError(f"{field}: {file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise DataError(f"{field}: {file}: cannot read ({exc.strerror or exc})") from None
    if batch:
        tokens += count(batch)
    for row in pair_batch(pending, field):
        add(row, examples + conversations + 1)
    examples += conversations
    if examples == 0:
        raise DataError(f"{field}: {root}: no examples (the data is empty)")
    counted = count is not None and (chat is not None or conversations == 0)
    if not counted:
        tokens = math.ceil(text_bytes / BYTES_PER_TOKEN)
        if conversations and count is not None:
            note = "estimated at 4 bytes a token: the teacher's tokenizer has no chat template for the conversations"
    elif conversations:
        note = f"rendered with the {chat.owner.split('.')[0]}'s chat template, " + note
    yield total, total, f"{examples:,} examples read"
    return ScanResult(path=str(root), files=len(files), examples=examples, tokens=tokens, text_bytes=text_bytes,
                      counted=counted, note=note, conversations=conversations,
                      assistant_tokens=assistant if counted and conversations else None)
