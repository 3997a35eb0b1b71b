"""The hardware catalog: accelerators and the Azure VM sizes (SKUs) that carry them.

Both tables are bundled TOML files in ``distill_studio.engine.catalog.data`` (``accelerators.toml``,
``skus.toml``). They are read once, validated, and cached:

- :func:`load_accelerators` -> ``{id: Accelerator}``
- :func:`load_skus` -> ``{ARM name: AzureSku}``
- :func:`resolve_accelerator` / :func:`resolve_sku` turn what a user typed into a record, or raise
  :class:`~distill_studio.engine.errors.CatalogError` naming the value and the closest known ids.

Validation on load: every SKU names an existing accelerator that is not comparison-only (TPUs are listed
for comparison and never sold as an Azure size), the SKU's per-GPU memory equals the accelerator's, the
counts and sizes are positive, and the link kinds are known. A bundled file that fails is a bug in the
package, reported as a CatalogError naming the file and the entry.
"""
from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import fields
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import CatalogError, shown
from .types import Accelerator, AzureSku

DATA_PACKAGE = "distill_studio.engine.catalog.data"
ACCELERATORS_FILE = "accelerators.toml"
SKUS_FILE = "skus.toml"

VENDORS = frozenset({"nvidia", "amd", "google", "cpu"})
CLOUDS = frozenset({"azure", "gcp", "local"})
INTRA_NODE_LINKS = frozenset({"nvlink", "infinity-fabric", "pcie", "none"})

# Short names people type, mapped to a catalog id. "H100"/"A100" mean the SXM 80GB parts that the ND
# sizes carry; the other variants have their own ids.
ACCELERATOR_ALIASES: dict[str, str] = {
    "h100": "h100-sxm",
    "h100-80gb": "h100-sxm",
    "a100": "a100-80gb-sxm",
    "a100-80gb": "a100-80gb-sxm",
    "a100-40gb": "a100-40gb-sxm",
    "a100-pcie": "a100-80gb-pcie",
    "h200-sxm": "h200",
    "v5e": "tpu-v5e",
    "v5p": "tpu-v5p",
    "v6e": "tpu-v6e",
    "trillium": "tpu-v6e",
}

# Names Azure documentation uses for a size whose ARM name differs.
SKU_ALIASES: dict[str, str] = {
    "standard_nd96asr_a100_v4": "Standard_ND96asr_v4",
}

# GPU memory in a SKU must equal the accelerator's, within this many GB.
_MEMORY_TOLERANCE_GB = 0.5


# --------------------------------------------------------------------------------------------------------
# Loading


def _read_table(filename: str, key: str) -> list[dict[str, Any]]:
    """Read ``[[key]]`` tables from a bundled TOML file."""
    try:
        raw = resources.files(DATA_PACKAGE).joinpath(filename).read_bytes()
    except OSError as exc:  # pragma: no cover - a broken install
        raise CatalogError(f"cannot read bundled catalog file {filename}: {exc}") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"bundled catalog file {filename} is not valid TOML: {exc}") from exc
    rows = doc.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CatalogError(f"{filename}: expected [[{key}]] tables")
    return rows


def _build(cls: type, row: dict[str, Any], filename: str) -> Any:
    """Make a dataclass from a TOML table, naming unknown or missing keys."""
    names = {f.name for f in fields(cls)}
    label = row.get("id", "?")
    unknown = sorted(set(row) - names)
    if unknown:
        raise CatalogError(
            f"{filename}: entry {label!r} has unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    try:
        return cls(**row)
    except TypeError as exc:
        raise CatalogError(f"{filename}: entry {label!r} is incomplete: {exc}") from exc


def _positive(value: Any, what: str, label: str, filename: str, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        need = ">= 0" if allow_zero else "> 0"
        raise CatalogError(f"{filename}: {label}: {what} must be a number {need}, got {value!r}")


def _validate_accelerator(acc: Accelerator) -> None:
    f, label = ACCELERATORS_FILE, acc.id
    if not acc.id or acc.id != acc.id.lower() or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", acc.id):
        raise CatalogError(f"{f}: accelerator id {acc.id!r} must be lower-case letters, digits and '-'")
    if acc.vendor not in VENDORS:
        raise CatalogError(f"{f}: {label}: vendor {acc.vendor!r} is not one of {sorted(VENDORS)}")
    if acc.cloud not in CLOUDS:
        raise CatalogError(f"{f}: {label}: cloud {acc.cloud!r} is not one of {sorted(CLOUDS)}")
    _positive(acc.bf16_dense_tflops, "bf16_dense_tflops", label, f)
    _positive(acc.fp8_dense_tflops, "fp8_dense_tflops", label, f, allow_zero=True)
    _positive(acc.hbm_gb, "hbm_gb", label, f)
    _positive(acc.hbm_gb_per_s, "hbm_gb_per_s", label, f)
    if not acc.source or not acc.source_date:
        raise CatalogError(f"{f}: {label}: source and source_date are required")


def _validate_sku(sku: AzureSku, accelerators: dict[str, Accelerator]) -> None:
    f, label = SKUS_FILE, sku.id
    if not sku.id.startswith("Standard_"):
        raise CatalogError(f"{f}: SKU id {sku.id!r} must be the ARM name, starting with 'Standard_'")
    acc = accelerators.get(sku.accelerator)
    if acc is None:
        raise CatalogError(
            f"{f}: {label}: accelerator {sku.accelerator!r} is not in {ACCELERATORS_FILE}"
            f"{_suggest(sku.accelerator, accelerators)}"
        )
    if acc.comparison_only or acc.cloud != "azure":
        raise CatalogError(
            f"{f}: {label}: accelerator {acc.id!r} is comparison-only ({acc.cloud}) and cannot back an Azure SKU"
        )
    if isinstance(sku.gpus, bool) or not isinstance(sku.gpus, int) or sku.gpus < 1:
        raise CatalogError(f"{f}: {label}: gpus must be a whole number >= 1, got {sku.gpus!r}")
    if isinstance(sku.vcpus, bool) or not isinstance(sku.vcpus, int) or sku.vcpus < 1:
        raise CatalogError(f"{f}: {label}: vcpus must be a whole number >= 1, got {sku.vcpus!r}")
    _positive(sku.gpu_memory_gb, "gpu_memory_gb", label, f)
    _positive(sku.ram_gb, "ram_gb", label, f)
    _positive(sku.intra_node_gb_per_s, "intra_node_gb_per_s", label, f, allow_zero=True)
    _positive(sku.inter_node_gb_per_s, "inter_node_gb_per_s", label, f, allow_zero=True)
    if abs(sku.gpu_memory_gb - acc.hbm_gb) > _MEMORY_TOLERANCE_GB:
        raise CatalogError(
            f"{f}: {label}: gpu_memory_gb {sku.gpu_memory_gb:g} does not match {acc.id} ({acc.hbm_gb:g} GB)"
        )
    if sku.intra_node_link not in INTRA_NODE_LINKS:
        raise CatalogError(
            f"{f}: {label}: intra_node_link {sku.intra_node_link!r} is not one of {sorted(INTRA_NODE_LINKS)}"
        )
    if sku.gpus > 1 and (sku.intra_node_link == "none" or sku.intra_node_gb_per_s <= 0):
        raise CatalogError(f"{f}: {label}: {sku.gpus} GPUs need an intra-node link with a bandwidth > 0")
    if sku.gpus == 1 and sku.intra_node_link != "none":
        raise CatalogError(f"{f}: {label}: a single-GPU size has no intra-node link; use \"none\"")
    if not isinstance(sku.infiniband, bool):
        raise CatalogError(f"{f}: {label}: infiniband must be true or false")
    if sku.infiniband and sku.inter_node_gb_per_s <= 0:
        raise CatalogError(f"{f}: {label}: an InfiniBand size needs inter_node_gb_per_s > 0")
    if not sku.source or not sku.source_date:
        raise CatalogError(f"{f}: {label}: source and source_date are required")


@lru_cache(maxsize=1)
def load_accelerators() -> dict[str, Accelerator]:
    """All accelerators in the bundled catalog, by id (validated; cached)."""
    out: dict[str, Accelerator] = {}
    for row in _read_table(ACCELERATORS_FILE, "accelerator"):
        acc = _build(Accelerator, row, ACCELERATORS_FILE)
        _validate_accelerator(acc)
        if acc.id in out:
            raise CatalogError(f"{ACCELERATORS_FILE}: accelerator id {acc.id!r} appears twice")
        out[acc.id] = acc
    return out


@lru_cache(maxsize=1)
def load_skus() -> dict[str, AzureSku]:
    """All Azure VM sizes in the bundled catalog, by ARM name (validated against the accelerators; cached)."""
    accelerators = load_accelerators()
    out: dict[str, AzureSku] = {}
    seen_lower: set[str] = set()
    for row in _read_table(SKUS_FILE, "sku"):
        sku = _build(AzureSku, row, SKUS_FILE)
        _validate_sku(sku, accelerators)
        if sku.id.lower() in seen_lower:
            raise CatalogError(f"{SKUS_FILE}: SKU {sku.id!r} appears twice")
        seen_lower.add(sku.id.lower())
        out[sku.id] = sku
    return out


# --------------------------------------------------------------------------------------------------------
# Resolving names


def _squash(text: str) -> str:
    """Lower-case with spaces, '-', '_' and '.' removed: 'H100 SXM' and 'h100-sxm' compare equal."""
    return re.sub(r"[\s_\-.]+", "", text.strip().lower())


def _suggest(value: str, known: dict[str, Any] | list[str], *, prefix: str = "") -> str:
    """' (closest: a, b, c)' for up to three ids near ``value``; the whole list when none is near."""
    ids = list(known)
    needle = value.strip().lower()
    by_lower = {i.lower(): i for i in ids}
    close = difflib.get_close_matches(needle, list(by_lower), n=3, cutoff=0.5)
    if not close and prefix:
        close = difflib.get_close_matches(prefix + needle, list(by_lower), n=3, cutoff=0.5)
    if close:
        return "; closest: " + ", ".join(by_lower[c] for c in close)
    return "; known: " + ", ".join(sorted(ids))


def resolve_accelerator(name: str) -> Accelerator:
    """Find an accelerator by id or display name, case-insensitively.

    Also accepts short names: "H100" and "A100" mean the SXM 80GB parts ("h100-sxm", "a100-80gb-sxm"),
    "v5e"/"v5p"/"v6e" the TPUs. Spaces, '-' and '_' are ignored ("H100 NVL" finds "h100-nvl").
    """
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(f"accelerator name must be a non-empty string, got {name!r}")
    accelerators = load_accelerators()
    key = name.strip().lower()
    if key in accelerators:
        return accelerators[key]
    squashed = _squash(name)
    for alias, target in ACCELERATOR_ALIASES.items():
        if _squash(alias) == squashed:
            return accelerators[target]
    for acc in accelerators.values():
        if squashed in (_squash(acc.id), _squash(acc.name)):
            return acc
    raise CatalogError(f"unknown accelerator {shown(name)!r}{_suggest(name, accelerators)}")


def resolve_sku(name: str) -> AzureSku:
    """Find an Azure VM size by ARM name, case-insensitively, with or without the ``Standard_`` prefix.

    "Standard_ND96isr_H100_v5", "ND96isr_H100_v5" and "nd96isr_h100_v5" all find the same size.
    """
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(f"SKU name must be a non-empty string, got {name!r}")
    skus = load_skus()
    key = name.strip().replace(" ", "_").lower()
    if not key.startswith("standard_"):
        key = "standard_" + key
    key = SKU_ALIASES.get(key, key).lower()
    for sku in skus.values():
        if sku.id.lower() == key:
            return sku
    raise CatalogError(f"unknown Azure VM size {shown(name)!r}{_suggest(name, skus, prefix='standard_')}")


def azure_skus() -> list[AzureSku]:
    """The SKUs in catalog order (a convenience for listings)."""
    return list(load_skus().values())
