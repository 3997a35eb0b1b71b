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
    """Last hidden states [B, T, H] (after the final norm), without grad."""
    return teacher.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


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
              should_stop: Callable[[], bool] | None = None) -> bool:
        """Run the teacher over ``examples``; returns False if stopped early (finished shards are kept)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fp = _fingerprint(examples, {"teacher": teacher_id, "k": top_k, "vocab": vocab_size})
        manifest = self._read_manifest()
        if manifest is None or manifest["fingerprint"] != fp:
            for old in self.folder.glob("shard-*.safetensors"):
                old.unlink()
            manifest = {"fingerprint": fp, "top_k": top_k, "vocab_size": vocab_size, "teacher": teacher_id,
                        "examples": len(examples), "shard_examples": shard_examples, "shards": [], "complete": False}
        n_shards = math.ceil(len(examples) / shard_examples)
        head = teacher.get_output_embeddings().weight
        from safetensors.torch import save_file

        for s in range(len(manifest["shards"]), n_shards):
            if should_stop is not None and should_stop():
                return False
            chunk = examples[s * shard_examples : (s + 1) * shard_examples]
            logprobs, ids, offsets = [], [], [0]
            for b in range(0, len(chunk), batch_size):
                batch = collate(chunk[b : b + batch_size], pad_id)
                hidden = teacher_hidden(teacher, batch["input_ids"].to(device), batch["attention_mask"].to(device))
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
                    progress(s * shard_examples + min(b + batch_size, len(chunk)), len(examples))
            name = f"shard-{s:05d}.safetensors"
            tmp = self.folder / (name + ".tmp")
            save_file({"logprobs": torch.cat(logprobs), "ids": torch.cat(ids),
                       "offsets": torch.tensor(offsets, dtype=torch.int64)}, str(tmp))
            tmp.replace(self.folder / name)  # a shard is there whole or not at all
            manifest["shards"].append(name)
            self._write_manifest(manifest)
        manifest["complete"] = True
        self._write_manifest(manifest)
        self._manifest = manifest
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

    def is_complete_for(self, examples: list[Example], *, top_k: int, vocab_size: int, teacher_id: str) -> bool:
        manifest = self._read_manifest()
        fp = _fingerprint(examples, {"teacher": teacher_id, "k": top_k, "vocab": vocab_size})
        return bool(manifest and manifest.get("complete") and manifest["fingerprint"] == fp)

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
def generate_responses(teacher, tokenizer, prompts: list[str], out_file: str | Path, *, device: torch.device,
                       max_new_tokens: int, batch_size: int = 16, progress: Progress | None = None,
                       should_stop: Callable[[], bool] | None = None) -> bool:
    """Greedy responses of the teacher, appended to ``out_file`` (jsonl: prompt, response) as they come.

    Lines already in the file are kept and skipped, so an interrupted generation goes on where it stopped.
    Returns False if stopped early.
    """
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    if out_file.exists():
        lines = out_file.read_bytes().split(b"\n")
        done = sum(1 for line in lines[:-1] if line.strip())  # a torn last line is written again
        out_file.write_bytes(b"\n".join(lines[:-1]) + (b"\n" if done else b""))
    with open(out_file, "a", encoding="utf-8") as f:
        for start in range(done, len(prompts), batch_size):
            if should_stop is not None and should_stop():
                return False
            texts = prompts[start : start + batch_size]
            for prompt, response in zip(texts, generate_greedy(teacher, tokenizer, texts, device, max_new_tokens)):
                f.write(json.dumps({"prompt": prompt, "response": response}, ensure_ascii=False) + "\n")
            f.flush()
            if progress is not None:
                progress(min(start + batch_size, len(prompts)), len(prompts))
    return True


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[str], device: torch.device, max_new_tokens: int) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batch), without the prompt, special tokens removed."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
    finally:
        tokenizer.padding_side = side
    was_training = model.training
    model.eval()
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.train(was_training)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
