"""What a data file may hold, without torch: the accepted files under a path and the shape of one record.

Training (``train/data.py``), the planner's token count and the app's quick data scan (both ``data_scan.py``) read
data by these rules, so a file the scan accepts is one training accepts, with the same messages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .chat import chat_record, shape_of
from .errors import DataError

SUFFIXES = (".jsonl", ".txt", ".parquet", ".arrow")


def data_files(path: Path, field: str) -> list[Path]:
    """The data files at ``path``: the file itself, or every accepted file under the folder, sorted."""
    if not path.exists():
        raise DataError(f"{field}: {path}: no such file or folder")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():  # datasets' save_to_disk of several splits: the train split
            split = path / "train"
            if not split.is_dir():
                import json

                names = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
                raise DataError(f"{field}: {path}: a dataset with the splits {', '.join(names)}; give the folder of "
                                "the split to read (no `train` split here)")
            path = split
        if (path / "state.json").is_file():  # one split saved with save_to_disk: the files it lists, in order
            import json

            try:
                listed = [path / f["filename"] for f in json.loads((path / "state.json").read_text())["_data_files"]]
            except (ValueError, KeyError, TypeError):
                listed = []
            if listed and all(f.is_file() for f in listed):
                return listed
        # everything accepted under the folder, but not the caches datasets' map() leaves beside its data
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                       and not p.name.startswith("cache-"))
        if not files:
            raise DataError(f"{field}: {path}: the folder holds no {', '.join(SUFFIXES)} files")
        return files
    if path.suffix not in SUFFIXES:
        raise DataError(f"{field}: {path}: unsupported file type {path.suffix!r}; allowed: {', '.join(SUFFIXES)}")
    return [path]


FORMATS = ("auto", "messages", "prompt-response", "text")


def check_record(row: Any, where: str, fmt: str = "auto") -> dict:
    """``row`` as a record training can use: ``messages`` (a conversation, from any chat shape ``chat.chat_record``
    knows), ``prompt`` + ``response``, ``text``, or a ``prompt`` alone (for generation); else a ``DataError`` naming
    ``where``, the field at fault and the keys found. ``fmt`` other than "auto" accepts that shape only."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with `messages`, `prompt` and `response`, or `text`")
    record = chat_record(row, where)
    if record is None:
        if "text" in row and isinstance(row["text"], str):
            record = row
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            record = row
        elif isinstance(row.get("prompt"), str) and "response" not in row:
            record = row  # a prompt alone: for generation (seq-KD prompts, task score)
        else:
            keys = ", ".join(sorted(map(str, row))) or "none"
            bad = next((k for k in ("prompt", "response", "text") if k in row), None)
            what = f"`{bad}` is {type(row[bad]).__name__}, not a string; " if bad else ""
            raise DataError(f"{where}: {what}needs `messages` (a conversation), string fields `prompt` and "
                            f"`response`, or `text` (found keys: {keys})")
    if fmt != "auto" and "_answer_of" not in record:
        shape = shape_of(record)
        if shape != fmt and not (shape == "prompt" and fmt == "prompt-response"):
            raise DataError(f"{where}: data.format is \"{fmt}\" but this record is {shape} "
                            f"(keys: {', '.join(sorted(map(str, row)))}); allowed: {', '.join(FORMATS)}")
    return record


def describe(records: list[dict]) -> str:
    """What was found, in words: "6,000 conversations (messages)", "200 prompt + response records", ..."""
    counts: dict[str, int] = {}
    for r in records:
        counts[shape_of(r)] = counts.get(shape_of(r), 0) + 1
    words = {"messages": "conversations (messages)", "prompt-response": "prompt + response records",
             "text": "text records", "prompt": "prompts"}
    return ", ".join(f"{n:,} {words[k]}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
