"""What a data file may hold, without torch: the accepted files under a path and the shape of one record.

Training (``train/data.py``) and the app's quick data scan (``gui/wizard/scan.py``) both read data by these rules,
so a file the scan accepts is one training accepts, with the same messages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError

SUFFIXES = (".jsonl", ".txt", ".parquet")


def data_files(path: Path, field: str) -> list[Path]:
    """The data files at ``path``: the file itself, or every accepted file under the folder, sorted."""
    if not path.exists():
        raise DataError(f"{field}: {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise DataError(f"{field}: {path}: the folder holds no {', '.join(SUFFIXES)} files")
        return files
    if path.suffix not in SUFFIXES:
        raise DataError(f"{field}: {path}: unsupported file type {path.suffix!r}; allowed: {', '.join(SUFFIXES)}")
    return [path]


def check_record(row: Any, where: str) -> dict[str, str]:
    """``row`` if it is a record training can use: ``prompt`` + ``response``, ``text``, or a ``prompt`` alone (for
    generation); else a ``DataError`` naming ``where`` and the keys found."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with `prompt` and `response`, or `text`")
    if "text" in row and isinstance(row["text"], str):
        return row
    if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
        return row
    if isinstance(row.get("prompt"), str) and "response" not in row:
        return row  # a prompt alone: for generation (seq-KD prompts, task score)
    keys = ", ".join(sorted(map(str, row))) or "none"
    raise DataError(f"{where}: needs string fields `prompt` and `response`, or `text` (found keys: {keys})")
