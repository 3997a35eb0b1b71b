"""What the teacher contributes, by mode.

* online: the teacher runs beside the student; :func:`teacher_hidden` gives its last hidden states per batch.
* offline-topk: one pre-pass stores the teacher's top-k log-probabilities per trained token in sharded
  safetensors (:class:`TopkCache`); training then runs without the teacher in memory.
* generate: the teacher writes responses to the prompts (:func:`generate_responses`); the student is trained on
  that text (sequence-level KD, the route when tokenizers differ).

The pre-pass and the generation are resumable: finished shards and written lines are kept, a restart goes on from
where the last one stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .data import IGNORE_INDEX, Example, collate

Progress = Callable[[int, int], None]  # (done, total)


@torch.no_grad()
def teacher_hidden(teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states [B, T, H] (after the final norm), without grad. ``teacher`` is a causal LM, or a
    ``parallel.TeacherHidden`` (whose forward is exactly this, under FSDP's hooks when it is sharded)."""
    if hasattr(teacher, "head_weight"):
        return teacher(input_ids, attention_mask)
    return teacher.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                 use_cache=False).last_hidden_state


def teacher_head(teacher) -> torch.Tensor:
    """The teacher's output head weight [V, H]; for a sharded teacher, whole only after a forward."""
    return teacher.head_weight() if hasattr(teacher, "head_weight") else teacher.get_output_embeddings().weight


def causal_lm(teacher):
    """The Hugging Face model inside a ``TeacherHidden`` (or the model itself)."""
    return getattr(teacher, "lm", teacher)


def _fingerprint(examples: list[Example], extra: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for e in examples:
        h.update(len(e.input_ids).to_bytes(4, "little"))
        h.update(torch.tensor(e.input_ids, dtype=torch.int32).numpy().tobytes())
        h.update(torch.tensor(e.labels, dtype=torch.int32).numpy().tobytes())
    return h.hexdigest()[:16]


class TopkCache:
    """The teacher's top-k log-probs for every trained token of a list of examples, in safetensors shards.

    Layout of ``folder``: ``manifest.json`` (fingerprint of examples, teacher, k, vocab; shard list) and
    ``shard-00000.safetensors`` … each with ``logprobs`` [tokens, k] float16, ``ids`` [tokens, k] int32 and
    ``offsets`` [examples + 1] int64 (rows of each example in the shard). A token row belongs to each position
    whose (shifted) label is trained, in order.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._manifest: dict[str, Any] | None = None
        self._shards: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def build(self, teacher, examples: list[Example], *, top_k: int, vocab_size: int, teacher_id: str,
              device: torch.device, pad_id: int, batch_size: int = 8, shard_examples: int = 512,
              softcap: float | None = None, progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None, collective=None, lockstep: bool = False) -> bool:
        """Run the teacher over ``examples``; returns False if stopped early (finished shards are kept).

        With several processes (``collective``), shard ``s`` is written by rank ``s % world``: each rank runs the
        teacher over its own shards, and a killed pass goes on from the shards on disk, rank by rank. The manifest
        (written by rank 0 before the pass) lists every shard; it is marked complete once all exist. ``lockstep``
        (a sharded teacher): every rank runs the same number of forwards, those without work on a filler batch."""
        rank, world = (collective.rank, collective.world) if collective is not None else (0, 1)
        shard_examples = max(1, min(shard_examples, math.ceil(len(examples) / world)))
        n_shards = math.ceil(len(examples) / shard_examples)
        fp = _fingerprint(examples, {"teacher": teacher_id, "k": top_k, "vocab": vocab_size, "shard": shard_examples})
        names = [f"shard-{s:05d}.safetensors" for s in range(n_shards)]
        if rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            manifest = self._read_manifest()
            if manifest is None or manifest["fingerprint"] != fp:
                for old in self.folder.glob("shard-*.safetensors*"):
                    old.unlink()
                manifest = {"fingerprint": fp, "top_k": top_k, "vocab_size": vocab_size, "teacher": teacher_id,
                            "examples": len(examples), "shard_examples": shard_examples, "shards": names,
                            "writers": world, "complete": False}
                self._write_manifest(manifest)
        if collective is not None:
            collective.barrier()
        from safetensors.torch import save_file

        filler = collate(examples[:batch_size], pad_id)
        rounds = math.ceil(n_shards / world)
        done_examples = 0
        for r in range(rounds):
            s = r * world + rank
            todo = s < n_shards and not (self.folder / names[s]).exists()
            stop = should_stop is not None and should_stop()
            if collective is not None:  # every rank leaves at the same round, or none does
                stop = collective.any(stop)
            if stop:
                return False
            if lockstep and not collective.any(todo):
                continue
            chunk = examples[s * shard_examples : (s + 1) * shard_examples] if todo else []
            n_batches = math.ceil(shard_examples / batch_size) if lockstep else math.ceil(len(chunk) / batch_size)
            logprobs, ids, offsets = [], [], [0]
            for b in range(n_batches):
                part = chunk[b * batch_size : (b + 1) * batch_size]
                batch = collate(part, pad_id) if part else filler
                hidden = teacher_hidden(teacher, batch["input_ids"].to(device), batch["attention_mask"].to(device))
                if not part:
                    continue  # a filler forward: a sharded teacher needs every rank in each all-gather
                head = teacher_head(teacher)
                for row in range(hidden.shape[0]):
                    keep = batch["labels"][row] != IGNORE_INDEX
                    logits = (hidden[row][keep.to(device)] @ head[:vocab_size].T).float()
                    if softcap:
                        logits = softcap * torch.tanh(logits / softcap)
                    values, top = torch.log_softmax(logits, -1).topk(top_k, dim=-1)
                    logprobs.append(values.to(torch.float16).cpu())
                    ids.append(top.to(torch.int32).cpu())
                    offsets.append(offsets[-1] + int(keep.sum()))
                if progress is not None:
                    progress(min(len(examples), (done_examples + (b + 1) * batch_size) * world), len(examples))
            done_examples += len(chunk)
            if not chunk:
                continue
            tmp = self.folder / (names[s] + ".tmp")
            save_file({"logprobs": torch.cat(logprobs), "ids": torch.cat(ids),
                       "offsets": torch.tensor(offsets, dtype=torch.int64)}, str(tmp))
            tmp.replace(self.folder / names[s])  # a shard is there whole or not at all
        if collective is not None:
            collective.barrier()
        if rank == 0:
            manifest = self._read_manifest()
            missing = [n for n in manifest["shards"] if not (self.folder / n).exists()]
            if missing:
                raise RuntimeError(f"teacher pre-pass: {len(missing)} shards missing in {self.folder} after the pass")
            manifest["complete"] = True
            self._write_manifest(manifest)
        if collective is not None:
            collective.barrier()
        self._manifest = self._read_manifest()
        return True

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(self.manifest_path)

    def teacher(self) -> str | None:
        """The teacher the cache was made with, as the pass named it."""
        manifest = self._read_manifest()
        return manifest.get("teacher") if manifest else None

    def is_complete_for(self, examples: list[Example], *, top_k: int, vocab_size: int, teacher_id: str) -> bool:
        manifest = self._read_manifest()
        if not manifest or not manifest.get("complete"):
            return False
        fp = _fingerprint(examples, {"teacher": teacher_id, "k": top_k, "vocab": vocab_size,
                                     "shard": manifest.get("shard_examples")})
        return manifest["fingerprint"] == fp

    def _shard(self, s: int) -> dict[str, torch.Tensor]:
        if s not in self._shards:
            from safetensors.torch import load_file

            if self._manifest is None:
                self._manifest = self._read_manifest()
            self._shards[s] = load_file(str(self.folder / self._manifest["shards"][s]))
        return self._shards[s]

    def rows(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs [n, k], ids [n, k]) for the trained tokens of example ``index``."""
        if self._manifest is None:
            self._manifest = self._read_manifest()
        s, i = divmod(index, self._manifest["shard_examples"])
        shard = self._shard(s)
        a, b = int(shard["offsets"][i]), int(shard["offsets"][i + 1])
        return shard["logprobs"][a:b], shard["ids"][a:b]

    def batch(self, indices: list[int], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k tensors [B, T, k] aligned with a collated batch's ``labels`` (zeros where labels are masked)."""
        k = self._manifest["top_k"] if self._manifest else self._read_manifest()["top_k"]
        logprobs = torch.zeros((*labels.shape, k), dtype=torch.float16)
        ids = torch.zeros((*labels.shape, k), dtype=torch.int64)
        for row, index in enumerate(indices):
            lp, ix = self.rows(index)
            keep = labels[row] != IGNORE_INDEX
            if int(keep.sum()) != lp.shape[0]:
                raise RuntimeError(f"top-k cache row count mismatch for example {index}; delete {self.folder}")
            logprobs[row][keep] = lp
            ids[row][keep] = ix.long()
        return logprobs, ids


@torch.no_grad()
def generate_responses(teacher, tokenizer, prompts: list[dict], out_file: str | Path, *, device: torch.device,
                       max_new_tokens: int, batch_size: int = 16, progress: Progress | None = None,
                       should_stop: Callable[[], bool] | None = None, collective=None, lockstep: bool = False,
                       filler: dict | None = None, chat=None) -> bool:
    """Greedy responses of the teacher to prompt records, appended to ``out_file`` as they come: a ``prompt`` gets
    ``{"prompt", "response"}``, a conversation gets its messages up to the last user turn and the teacher's turn.
    Conversations are given to the teacher through ``chat`` (its template, with the generation prompt).

    Lines already in the file are kept and skipped, so an interrupted generation goes on where it stopped.
    Returns False if stopped early. ``lockstep`` (a sharded teacher, several processes): every rank calls
    ``generate`` the same number of times with FSDP-safe synchronisation, on ``filler`` where it has no prompt left.
    """
    from ..chat import prompt_messages
    from .data import prompt_ids

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    if out_file.exists():
        lines = out_file.read_bytes().split(b"\n")
        done = sum(1 for line in lines[:-1] if line.strip())  # a torn last line is written again
        out_file.write_bytes(b"\n".join(lines[:-1]) + (b"\n" if done else b""))
    n_batches = math.ceil(len(prompts) / batch_size)
    first = done // batch_size
    if lockstep:
        n_batches, first = collective.max(n_batches), collective.min(first)
    lm = causal_lm(teacher)
    with open(out_file, "a", encoding="utf-8") as f:
        for b in range(first, n_batches):
            stop = should_stop is not None and should_stop()
            if lockstep:
                stop = collective.any(stop)
            if stop:
                return False
            rows = prompts[b * batch_size : (b + 1) * batch_size]
            ids = [prompt_ids(r, tokenizer, chat) for r in rows or [filler or prompts[0]]]
            outs = generate_greedy(lm, tokenizer, ids, device, max_new_tokens, synced=lockstep, chat=chat)
            for k, (row, response) in enumerate(zip(rows, outs)):
                if b * batch_size + k < done:
                    continue
                if "messages" in row:
                    asked = prompt_messages(row["messages"])
                    turn = {"role": "assistant", "content": chat.generation_prefix(row["messages"]) + response}
                    line = {"messages": asked + [turn]}
                else:
                    line = {"prompt": row["prompt"], "response": response}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()
            if progress is not None:
                world = collective.world if collective is not None else 1
                progress(min(len(prompts), (b + 1) * batch_size) * world, len(prompts) * world)
    return True


def merge_generated(parts: list[Path], out_file: Path) -> int:
    """Interleave the ranks' files back into the prompts' order (prompt i was answered by rank i % world, as its
    (i // world)-th line) into ``out_file``, atomically. Returns the number of lines."""
    rows = [[line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()] for p in parts]
    merged = [rows[i % len(rows)][i // len(rows)] for i in range(sum(len(r) for r in rows))]
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in merged), encoding="utf-8")
    tmp.replace(out_file)
    return len(merged)


def stop_ids(model, tokenizer, chat=None) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS, the model's own (``generation_config``) and the special
    tokens that end an assistant turn in the chat template (Gemma's ``<end_of_turn>``, ChatML's ``<|im_end|>``)."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids += extra if isinstance(extra, list) else [extra]
    if chat is not None:
        ids += [tokenizer.convert_tokens_to_ids(t) for t in chat.stop_texts()]
    unk = tokenizer.unk_token_id
    return sorted({i for i in ids if isinstance(i, int) and i >= 0 and i != unk})


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[list[int]], device: torch.device, max_new_tokens: int,
                    synced: bool = False, chat=None) -> list[str]:
    """Greedy continuations of ``prompts`` (token ids; a left-padded batch), without the prompt, special tokens
    removed. ``synced``: a sharded model, every rank decoding until all are done (each step is a collective)."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
    was_training = model.training
    model.eval()
    stops = stop_ids(model, tokenizer, chat)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                         do_sample=False, use_cache=True, pad_token_id=pad, eos_token_id=stops or None,
                         **({"synced_gpus": True} if synced else {}))
    model.train(was_training)
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
