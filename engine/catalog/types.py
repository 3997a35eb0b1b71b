"""The catalog's record types, and what follows from a record's own fields (a model's parameter count). Units are in
the field names; every record carries its source and date. Imports nothing of the catalog: the other modules import
this one."""
from __future__ import annotations

from dataclasses import dataclass

# RMSNorm weight vectors (hidden each) per decoder layer. Gemma 2/3 add a post-attention and a pre/post-feedforward
# norm to the usual two: input, post-attention, pre-feedforward, post-feedforward.
_NORMS_PER_LAYER = {"gemma2": 4, "gemma3": 4}


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only causal LM, described by the dimensions that decide its compute and memory."""

    id: str                       # the name other commands take, e.g. "qwq-32b"
    name: str                     # display name, e.g. "QwQ-32B"
    hub_id: str                   # Hugging Face id, e.g. "Qwen/QwQ-32B"; "" for a local config
    family: str                   # architecture family: "qwen2", "gemma3", "llama", "phi3", ...
    num_layers: int
    hidden_size: int
    intermediate_size: int        # gated (SwiGLU/GeGLU) MLP width
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int               # logits width (may be padded past the tokenizer)
    tokenizer_vocab_size: int     # real tokenizer size (ids that can occur)
    tie_word_embeddings: bool
    max_context_tokens: int
    tokenizer_family: str         # models with the same tokenizer_family share token ids
    license: str
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    qk_norm: bool = False         # per-head RMSNorm on q and k (Gemma 3)
    sliding_window_tokens: int = 0      # 0: every layer attends globally
    global_attention_every: int = 1     # with a sliding window: every n-th layer is global (Gemma 3: 6; 0: none)
    stated_params_b: float = 0.0  # the authors' stated parameter count of the language model, billions (0: none)
    source: str = ""              # where the dimensions and the stated count come from
    source_date: str = ""         # ISO date the source was read or published

    @property
    def params(self) -> int:
        """Parameters of the language model computed from its dimensions (embedding counted once if tied)."""
        return count_params(self)


def count_params(spec: ModelSpec) -> int:
    """Parameters of the language model from its dimensions; a tied lm_head shares the embedding (counted once).

    Per layer: q, k, v, o projections (plus q/k/v biases with ``attention_bias``), a gated MLP (3 matrices), the
    layer's RMSNorm weights (4 for Gemma 2/3, else 2) and per-head q/k norms with ``qk_norm``. Then the final norm,
    the embedding and, unless tied, the lm_head.
    """
    h, hd = spec.hidden_size, spec.head_dim
    q_width, kv_width = spec.num_attention_heads * hd, spec.num_kv_heads * hd
    attn = h * q_width + 2 * h * kv_width + q_width * h
    if spec.attention_bias:
        attn += q_width + 2 * kv_width
    if spec.qk_norm:
        attn += 2 * hd
    mlp = 3 * h * spec.intermediate_size
    norms = _NORMS_PER_LAYER.get(spec.family, 2) * h
    embed = spec.vocab_size * h
    lm_head = 0 if spec.tie_word_embeddings else embed
    return embed + spec.num_layers * (attn + mlp + norms) + h + lm_head


@dataclass(frozen=True)
class Accelerator:
    id: str                       # e.g. "h100-sxm"
    name: str                     # e.g. "NVIDIA H100 SXM 80GB"
    vendor: str                   # "nvidia" | "amd" | "google" | "cpu"
    bf16_dense_tflops: float      # peak dense bf16 (no sparsity)
    fp8_dense_tflops: float       # 0 when the card has no fp8
    hbm_gb: float                 # memory per device, GB (1e9 bytes)
    hbm_gb_per_s: float           # memory bandwidth, GB/s
    cloud: str = "azure"          # "azure" (sold on Azure), "gcp" (Google Cloud only), "local"
    comparison_only: bool = False # listed for comparison, never offered as an Azure choice
    source: str = ""
    source_date: str = ""


@dataclass(frozen=True)
class AzureSku:
    id: str                       # ARM name, e.g. "Standard_ND96isr_H100_v5"
    accelerator: str              # Accelerator.id
    gpus: int                     # GPUs per node (a fraction is not offered: partial-GPU sizes are left out)
    gpu_memory_gb: float          # per GPU
    intra_node_link: str          # "nvlink" | "infinity-fabric" | "pcie" | "none"
    intra_node_gb_per_s: float    # per-GPU unidirectional bandwidth to its peers inside the node
    infiniband: bool
    inter_node_gb_per_s: float    # per-node unidirectional network bandwidth for collectives (0: single node only)
    vcpus: int
    ram_gb: float
    source: str = ""
    source_date: str = ""


@dataclass(frozen=True)
class Price:
    sku: str                      # AzureSku.id
    region: str                   # ARM region name, e.g. "eastus"
    priority: str                 # "dedicated" (on-demand) | "low-priority" (spot / low priority)
    usd_per_hour: float           # per node (whole VM), Linux
    source: str = ""
    source_date: str = ""
