"""A quick scan of training data: how many examples, and about how many tokens.

Runs on a worker thread (``gui.workers.start``): :func:`scan_data` is a generator that yields ``(done, total,
text)`` progress in bytes, so the data page can show a progress bar and cancel it by choosing another file. It reads
records the way training does (``prompt`` + ``response``, or ``text``; .txt documents separated by blank lines) but
without importing torch, so it stays fast to start.

Tokens are counted with the teacher's own ``tokenizer.json`` when there is one and the ``tokenizers`` package
imports; otherwise they are estimated at 4 bytes a token, the planner's rule for a file without a count.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

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

    def summary(self) -> str:
        files = f" in {self.files} files" if self.files > 1 else ""
        approx = "" if self.counted else "about "
        return f"{self.examples:,} examples{files} · {approx}{self.tokens:,} tokens ({self.note})"


def record_text(row: Any, where: str) -> str:
    """The text of one record that training reads (prompt + response, or text)."""
    row = check_record(row, where)
    if isinstance(row.get("text"), str):
        return row["text"]
    return row["prompt"] + row.get("response", "")


def _jsonl(file: Path, field: str) -> Iterator[tuple[str, int]]:
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


_READERS = {".jsonl": _jsonl, ".txt": _txt, ".parquet": _parquet}


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

    def count(texts: list[str]) -> int:
        return sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=True))

    return count, "counted with the teacher's tokenizer.json"


def scan_data(path: str, tokenizer_file: str | None = None, field: str = "data.train"
              ) -> Generator[tuple[int, int, str], None, ScanResult]:
    """Count examples and tokens under ``path``; yields progress in bytes; raises ``DataError`` naming the file
    and line of the first problem."""
    root = Path(path).expanduser()
    files = data_files(root, field)
    total = sum(f.stat().st_size for f in files) or 1
    count, note = load_counter(tokenizer_file)
    done = examples = tokens = text_bytes = 0
    batch: list[str] = []
    since = 0
    yield 0, total, f"reading {files[0].name}"
    for file in files:
        reader = _READERS[file.suffix]
        try:
            for text, nbytes in reader(file, field):
                done += nbytes
                since += nbytes
                if not text:
                    continue
                examples += 1
                text_bytes += len(text.encode("utf-8"))
                if count is not None:
                    batch.append(text)
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
    if examples == 0:
        raise DataError(f"{field}: {root}: no examples (the data is empty)")
    if count is None:
        tokens = math.ceil(text_bytes / BYTES_PER_TOKEN)
    yield total, total, f"{examples:,} examples read"
    return ScanResult(path=str(root), files=len(files), examples=examples, tokens=tokens, text_bytes=text_bytes,
                      counted=count is not None, note=note)
