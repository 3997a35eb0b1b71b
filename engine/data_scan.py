"""The data's examples and tokens, counted without torch: the planner's count of the tokens a run trains, and the
app's quick scan of a data file.

**The plan's tokens** (:func:`count_plan_tokens`, used by ``distill plan`` and the planner view). When the plan's
student (or, without one, its teacher) is a local folder with a ``tokenizer.json``, the data is read, cut and
tokenised by training's own code (``engine/train/data.py``: ``read_records`` and ``encode``: conversations rendered
with the chat template, reasoning kept or stripped, the EOS token, the cut at ``data.seq_len``, examples with nothing
to train on left out), the tokenizer answered by the ``tokenizers`` library from that file as transformers' fast
tokenizer answers it. The tokens of the run's steps are then summed in training's own batch order (the seeded
permutation of ``train.data.BatchOrder``, reproduced here without torch), so the count is the ``total_tokens`` the
run reports. More than :data:`SAMPLE_BYTES` of data are counted on a deterministic sample (evenly spaced stretches of
every file) and extrapolated by bytes; the note says so. Counts are cached under the app's data folder
(``token-counts/``), keyed by the data files (path, size, modification time), the tokenizer's and chat template's
files (their hash) and the settings that change the count, so a plan re-solved often is counted once. Without a
tokenizer at hand the planner estimates 4 bytes a token, and says so.

Conversations need transformers' template renderer (``transformers.utils.chat_template_utils``, no torch); it is
imported only when the data holds conversations.

**The quick scan** (:func:`scan_data`, the wizard's data page, on a worker thread): a generator that yields
``(done, total, text)`` progress in bytes, so the data page can show a progress bar and cancel it by choosing another
file. It reads records the way training does (``prompt`` + ``response``, or ``text``; .txt documents separated by
blank lines). Tokens are counted with the teacher's own ``tokenizer.json`` when there is one and the ``tokenizers``
package imports; otherwise they are estimated at 4 bytes a token. Conversations (``messages``) are rendered with the
chat template and cut into pieces exactly as training cuts them (``engine/chat.py``), so the scan counts the tokens
of the whole rendered conversation and, apart, the assistant tokens the loss is taken on.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

from .chat import ChatFormat, pair_batch
from .errors import DataError
from .records import check_record, data_files

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


# ---- the plan's tokens, as training counts them ------------------------------------------------------------------
SAMPLE_BYTES = 64 << 20        # more data than this is counted on a sample and extrapolated
SAMPLE_WINDOWS = 64            # the sample: this many evenly spaced stretches of the data...
WINDOW_BYTES = 128 << 10       # ...of this many bytes each (8 MiB in all)
EXACT_ORDER_EXAMPLES = 4_000_000  # above: a part epoch counts the epoch's mean tokens per example, not its examples
COUNT_VERSION = 1              # of the counting rules and the cache's format; a change counts again
CACHE_FOLDER = "token-counts"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass(frozen=True)
class TokenCount:
    """A plan's tokens: one epoch's, the run's, and how they were obtained."""

    per_epoch: float           # one pass over the data, as training tokenises it
    trained: float | None      # every step of the run (training.max_steps, or data.epochs of whole batches); None:
                               # tokens_per_epoch × epochs, cut at the steps' padded size (an estimate from bytes)
    how: str                   # "counted" | "sampled" | "estimated" | "given"
    note: str                  # in words, for the plan's notes
    examples: int = 0          # examples training keeps (extrapolated on a sample)
    steps: int = 0             # the run's optimizer steps


def size_text(nbytes: float) -> str:
    """Bytes as a person reads them: 640 KiB, 12.5 MiB, 3.2 GiB."""
    for shift, unit in ((30, "GiB"), (20, "MiB")):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):,.1f} {unit}"
    return f"{nbytes / 1024:,.0f} KiB"


def model_folder(name: str, base: Path | None) -> Path | None:
    """The local folder a plan's model names (relative to the plan's folder first), as training finds it; None for a
    hub id or catalog name."""
    path = Path(name).expanduser()
    for candidate in ([base / path] if base is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_dir():
            return candidate
    return None


def plan_tokenizer(plan, base: Path | None) -> tuple[Path | None, str]:
    """The folder whose tokenizer.json training tokenises with (the student's; the teacher's when the student's is
    not at hand), and whose it is ("student" / "teacher"); (None, "") without one."""
    for whose, name in (("student", plan.student.model), ("teacher", plan.teacher.model)):
        folder = model_folder(name, base)
        if folder is not None and (folder / "tokenizer.json").is_file():
            return folder, whose
    return None, ""


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _json_file(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class FileTokenizer:
    """The calls training makes of a transformers tokenizer (``engine/train/data.py``'s ``encode``), answered from
    a model folder's tokenizer.json by the ``tokenizers`` library, as transformers' fast tokenizer answers them: no
    truncation or padding unless asked, the post-processor's special tokens with ``add_special_tokens``, the EOS token
    of tokenizer_config.json (or special_tokens_map.json)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()
        eos = (_token_text(_json_file(folder / "tokenizer_config.json").get("eos_token"))
               or _token_text(_json_file(folder / "special_tokens_map.json").get("eos_token")))
        self.eos_token = eos
        self.eos_token_id = self.tok.token_to_id(eos) if eos else None

    def __call__(self, text: str | list[str], add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False) -> dict[str, list]:
        if isinstance(text, str):
            e = self.tok.encode(text, add_special_tokens=add_special_tokens)
            out: dict[str, list] = {"input_ids": e.ids}
            if return_offsets_mapping:
                out["offset_mapping"] = e.offsets
            return out
        encoded = self.tok.encode_batch(list(text), add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encoded]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encoded]
        return out


def permutation(n: int, seed: int) -> list[int]:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` on the CPU, without torch: its
    Fisher-Yates shuffle, drawing each swap from the generator's MT19937 (seeded with the seed's low 32 bits, as
    torch seeds it), ``z = draw % (n - i)``."""
    import numpy as np

    legacy = np.random.RandomState(seed & 0xFFFFFFFF).get_state()
    mt = np.random.MT19937()
    mt.state = {"bit_generator": "MT19937", "state": {"key": legacy[1], "pos": legacy[2]}}
    draws = mt.random_raw(max(n - 1, 0)).tolist()
    r = list(range(n))
    for i in range(n - 1):
        z = draws[i] % (n - i) + i
        r[i], r[z] = r[z], r[i]
    return r


def run_steps(plan, examples: int) -> tuple[int, int]:
    """(the run's steps, sequences a step), as training sets them (``train/session.py``)."""
    seqs = max(1, plan.data.global_batch_tokens // plan.data.seq_len)
    per_epoch = math.ceil(examples / seqs)
    return plan.training.max_steps or max(1, math.ceil(plan.data.epochs * per_epoch)), seqs


def trained_tokens(lengths: list[int], global_batch: int, steps: int, seed: int) -> int:
    """The tokens steps ``0 .. steps`` read, as ``train.data.BatchOrder(len(lengths), global_batch, seed)
    .tokens(lengths, steps)`` counts them: whole epochs read every example once, a part epoch the start of its
    seeded permutation."""
    n = len(lengths)
    epochs, rem = divmod(steps * global_batch, n)
    total = epochs * sum(lengths)
    if rem:
        order = permutation(n, seed * 1_000_003 + epochs)
        total += sum(lengths[i] for i in order[:rem])
    return total


def _sha256(path: Path, _memo: dict = {}) -> str:  # noqa: B006 - a memo for this process, keyed by size and time
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _memo[key] = h.hexdigest()
    return _memo[key]


def _cache_key(plan, files: list[Path], folders: dict[str, Path]) -> str:
    """What decides the count: the data files (where, size, time), the models' tokenizer files (their content, not
    where they are), and the plan's settings that change what training reads."""
    tokenizer = {f"{whose}/{name}": _sha256(f / name) for whose, f in folders.items() for name in TOKENIZER_FILES
                 if (f / name).is_file()}
    data = [(str(f.resolve()), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]]
    what = {"v": COUNT_VERSION, "data": data, "tokenizer": tokenizer, "seq_len": plan.data.seq_len,
            "reasoning": plan.data.reasoning, "format": plan.data.format, "sample_bytes": SAMPLE_BYTES}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def cache_folder() -> Path:
    from .catalog.prices import data_dir

    return data_dir() / CACHE_FOLDER


def _read_cache(key: str) -> dict | None:
    try:
        doc = json.loads((cache_folder() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("v") == COUNT_VERSION and isinstance(doc.get("lengths"), list) \
        else None


def _write_cache(key: str, doc: dict) -> None:
    """Best effort: a folder that cannot be written only means counting again next time."""
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass


def _sample_jsonl(file: Path, windows: int, fmt: str, budget: int, field: str) -> tuple[list[dict], int]:
    from .train.data import cut_record

    size, rows, read = file.stat().st_size, [], 0
    with open(file, "rb") as f:
        for j in range(windows):
            start = j * size // windows
            f.seek(start)
            if start:
                f.readline()                      # the line the window starts inside belongs to the one before
            taken = 0
            while taken < WINDOW_BYTES:
                raw = f.readline()
                if not raw:
                    break
                taken += len(raw)
                line = raw.decode("utf-8-sig" if f.tell() == len(raw) else "utf-8")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{field}: {file}: not valid JSON near byte {f.tell() - len(raw):,} "
                                    f"({exc.msg})") from None
                rows.append(cut_record(check_record(row, f"{field}: {file}", fmt), budget)[0])
            read += taken
    return rows, read


def _sample_txt(file: Path, windows: int, budget: int) -> tuple[list[dict], int]:
    size, rows, read = file.stat().st_size, [], 0
    with open(file, "rb") as f:
        for j in range(windows):
            start = j * size // windows
            f.seek(start)
            data = f.read(WINDOW_BYTES)
            text = data.decode("utf-8", errors="ignore")
            docs = text.split("\n\n")
            if start and len(docs) > 1:
                docs = docs[1:]                   # the document the window starts inside
            if start + len(data) < size and len(docs) > 1:
                docs = docs[:-1]                  # and the one it ends inside
            kept = [d.strip() for d in docs if d.strip()]
            rows += [{"text": d[:budget]} for d in kept]
            read += sum(len(d.encode("utf-8")) + 2 for d in docs)
    return rows, read


def _sample_table(file: Path, windows: int, share: float, fmt: str, budget: int,
                  field: str) -> tuple[list[dict], int]:
    """``windows`` evenly spaced runs of rows of a .parquet or .arrow file, about ``share`` of its rows in all, read
    without turning the rest into Python objects (a Parquet file's row groups are read only where a run falls)."""
    from .train.data import cut_record

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyarrow import ipc
    except ImportError:
        raise DataError(f"{field}: {file}: reading {file.suffix} needs pyarrow (pip install pyarrow), or convert it "
                        "to .jsonl") from None
    if file.suffix == ".parquet":
        pf = pq.ParquetFile(file)
        meta = pf.metadata
        total = meta.num_rows
        starts = [0]
        for g in range(meta.num_row_groups):
            starts.append(starts[-1] + meta.row_group(g).num_rows)
    else:   # datasets' save_to_disk writes Arrow IPC streams: mapped, so untouched batches are never read
        table = ipc.open_stream(pa.memory_map(str(file))).read_all()
        total = table.num_rows
    if total == 0:
        return [], 0
    length = max(1, round(total * min(share, 1.0) / windows))
    rows: list[dict] = []
    taken = 0
    for j in range(windows):
        first = j * total // windows
        count = min(length, total - first)
        if count <= 0:
            continue
        if file.suffix == ".parquet":
            groups = [g for g in range(meta.num_row_groups) if starts[g] < first + count and starts[g + 1] > first]
            part = pf.read_row_groups(groups)
            part = part.slice(first - starts[groups[0]], count)
        else:
            part = table.slice(first, count)
        for n, row in enumerate(part.to_pylist(), first + 1):
            rows.append(cut_record(check_record(row, f"{field}: {file}: row {n}", fmt), budget)[0])
        taken += count
    return rows, round(file.stat().st_size * taken / total)


def _sample(files: list[Path], total: int, fmt: str, seq_len: int, field: str) -> tuple[list[dict], int]:
    """Evenly spaced stretches of every file, about SAMPLE_WINDOWS × WINDOW_BYTES in all, cut as training cuts
    them: (records, the bytes they came from)."""
    from .train.data import char_budget

    budget = char_budget(seq_len)
    rows: list[dict] = []
    read = 0
    for file in files:
        size = file.stat().st_size
        windows = max(1, round(SAMPLE_WINDOWS * size / total))
        if file.suffix == ".jsonl":
            got, nbytes = _sample_jsonl(file, windows, fmt, budget, field)
        elif file.suffix == ".txt":
            got, nbytes = _sample_txt(file, windows, budget)
        else:
            got, nbytes = _sample_table(file, windows, windows * WINDOW_BYTES / max(size, 1), fmt, budget, field)
        rows += got
        read += nbytes
    return pair_batch(rows, field), read


def _chat_of(plan, base: Path | None) -> ChatFormat | None:
    """The template training renders conversations with: the student's, else the teacher's."""
    for whose, name in (("student", plan.student.model), ("teacher", plan.teacher.model)):
        folder = model_folder(name, base)
        if folder is not None and (folder / "tokenizer.json").is_file():
            chat = load_chat(str(folder / "tokenizer.json"), f"{whose}.model")
            if chat is not None:
                return chat
    return None


def count_plan_tokens(plan, base: Path | None = None, *, cache: bool = True) -> TokenCount | None:
    """The tokens a run of ``plan`` trains, counted from its data with the tokenizer at hand (see the module's
    docstring); None when no local tokenizer.json is at hand or the plan has no data file. Data that cannot be read
    raises ``DataError`` (naming the file and line), a missing ``tokenizers`` package ``ImportError``: the planner
    then estimates from bytes and gives the reason in its note (``planner.token_count``). ``cache``: read and write
    the count under the data folder."""
    folder, whose = plan_tokenizer(plan, base)
    if folder is None or not plan.data.train:
        return None
    field = "data.train"
    path = Path(plan.data.train).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    files = data_files(path, field)
    total = sum(f.stat().st_size for f in files)
    folders = {whose: f for whose, name in (("student", plan.student.model), ("teacher", plan.teacher.model))
               if (f := model_folder(name, base)) is not None}
    key = _cache_key(plan, files, folders)
    doc = _read_cache(key) if cache else None
    if doc is None:
        from .train.data import encode, read_records

        sampled = total > SAMPLE_BYTES
        if sampled:
            records, read = _sample(files, total, plan.data.format, plan.data.seq_len, field)
        else:
            records, read = read_records(path, field, None, plan.data.format, seq_len=plan.data.seq_len), total
        chat = _chat_of(plan, base) if any("messages" in r for r in records) else None
        enc = encode(records, FileTokenizer(folder), plan.data.seq_len, field, chat=chat,
                     reasoning=plan.data.reasoning)
        doc = {"v": COUNT_VERSION, "lengths": [len(e.input_ids) for e in enc.examples], "truncated": enc.truncated,
               "dropped": enc.dropped, "sampled": sampled, "sample_bytes": read, "data_bytes": total,
               "records": len(records)}
        if cache:
            _write_cache(key, doc)
    lengths = doc["lengths"]
    if doc["sampled"]:
        scale = doc["data_bytes"] / max(doc["sample_bytes"], 1)
        examples = max(1, round(len(lengths) * scale))
        per_epoch = sum(lengths) * scale
        steps, seqs = run_steps(plan, examples)
        epochs, rem = divmod(steps * seqs, examples)
        trained = epochs * per_epoch + rem * per_epoch / examples
        note = (f"token count counted with the {whose}'s tokenizer on a sample of {size_text(doc['sample_bytes'])} "
                f"of the {size_text(doc['data_bytes'])} of data ({len(lengths):,} examples, evenly spaced stretches "
                f"of each file) and extrapolated: about {per_epoch:,.0f} tokens an epoch, {trained:,.0f} in the "
                f"run's {steps:,} steps")
        return TokenCount(per_epoch, None if plan.method.kind == "seq-kd" else trained, "sampled", note, examples,
                          steps)
    examples = len(lengths)
    steps, seqs = run_steps(plan, examples)
    if examples <= EXACT_ORDER_EXAMPLES:
        trained = float(trained_tokens(lengths, seqs, steps, plan.training.seed))
    else:
        epochs, rem = divmod(steps * seqs, examples)
        trained = epochs * sum(lengths) + rem * sum(lengths) / examples
    cut = f", {doc['truncated']:,} cut at data.seq_len" if doc["truncated"] else ""
    left = f", {doc['dropped']:,} with nothing to train on left out" if doc["dropped"] else ""
    if plan.method.kind == "seq-kd":   # the teacher writes the answers the run trains on: their length is its own
        return TokenCount(float(sum(lengths)), None, "counted",
                          f"token count counted with the {whose}'s tokenizer as training reads the data: "
                          f"{sum(lengths):,} tokens in {examples:,} examples{cut}{left} (the teacher's answers "
                          "replace the responses: the run's own count follows their length)", examples, steps)
    note = (f"token count counted with the {whose}'s tokenizer as training reads the data: {sum(lengths):,} tokens "
            f"in {examples:,} examples{cut}{left}; the run's {steps:,} steps train {trained:,.0f}")
    return TokenCount(float(sum(lengths)), trained, "counted", note, examples, steps)
