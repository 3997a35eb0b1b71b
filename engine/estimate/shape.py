"""What the estimator needs to know of a model, reduced to a few numbers.

Conventions (the ones published MFU figures use, so our MFU compares with theirs):
- a matmul with ``p`` parameters costs ``2p`` FLOPs per token forward and ``4p`` backward;
- attention scores and the weighted sum cost ``4 * layers * heads * head_dim * context`` FLOPs per token forward
  (the non-causal count, as in PaLM's and nanoGPT's MFU), with ``context`` the sequence length, or the window for
  sliding-window layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..catalog.types import ModelSpec

BF16_BYTES = 2


@dataclass(frozen=True)
class ModelShape:
    params: int                   # all parameters (tied embedding counted once)
    matmul_params: int            # parameters that take part in a matmul per token (lm_head included, lookup not)
    layer_params: int             # one transformer block
    num_layers: int
    hidden_size: int
    vocab_size: int               # logits width
    attn_width: int               # heads * head_dim
    kv_bytes_per_token: int       # K and V cache of every layer for one token, bf16
    act_bytes_per_token_layer: int  # activations one block keeps for backward, per token, bf16
    sliding_window_tokens: int
    global_layers: float          # layers attending over the whole sequence
    gated_mlp: bool = True
    act_selective_bytes_per_token_layer: int = 0  # what a block keeps under selective recomputation (its matmul
                                                  # and attention outputs), per token, bf16; 0: not known

    def attention_flops_fwd(self, seq_len):
        """Forward attention FLOPs per token at this sequence length (numpy-friendly)."""
        seq = np.asarray(seq_len, dtype=float)
        local_layers = self.num_layers - self.global_layers
        ctx_local = np.minimum(seq, self.sliding_window_tokens) if self.sliding_window_tokens else seq
        return 4.0 * self.attn_width * (self.global_layers * seq + local_layers * ctx_local)


def layer_params(hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int, gated: bool = True) -> int:
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = (3 if gated else 2) * hidden * intermediate
    return attn + mlp + 2 * hidden


def activation_bytes_per_token_layer(hidden: int, intermediate: int, kv_heads: int, head_dim: int) -> int:
    """Activations a block saves for backward, per token, in bf16 (FlashAttention: no S x S scores).

    Norm inputs and outputs, q/k/v, attention output, the MLP's gate, up, activation and product: following the
    accounting of Korthikanti et al. 2022 (arXiv:2205.05198, sec. 4.1), adapted to GQA and a gated MLP.
    """
    return BF16_BYTES * (6 * hidden + 2 * kv_heads * head_dim + 4 * intermediate)


def selective_activation_bytes_per_token_layer(hidden: int, intermediate: int, kv_heads: int, head_dim: int) -> int:
    """Activations a block keeps under selective recomputation (engine/train/recompute.py), per token, in bf16: its
    input (the checkpoint's), the outputs of its matmuls (q, k, v, o; the MLP's gate, up and down) and of attention.
    The rest of ``activation_bytes_per_token_layer`` (norm outputs, the MLP's activation and product, the second
    norm's input) is recomputed in backward from these.
    """
    return BF16_BYTES * (5 * hidden + 2 * kv_heads * head_dim + 2 * intermediate)


def shape_of(spec: ModelSpec) -> ModelShape:
    embed = spec.vocab_size * spec.hidden_size
    params = spec.params
    # The input embedding is a lookup; the lm_head is a matmul whether or not it shares the embedding's weights.
    matmul = params if spec.tie_word_embeddings else params - embed
    if not spec.sliding_window_tokens:
        global_layers = float(spec.num_layers)
    elif spec.global_attention_every >= 1:
        global_layers = spec.num_layers / spec.global_attention_every
    else:
        global_layers = 0.0  # every layer attends within the window (Mistral-style configs)
    return ModelShape(
        params=params,
        matmul_params=matmul,
        layer_params=layer_params(
            spec.hidden_size, spec.intermediate_size, spec.num_attention_heads, spec.num_kv_heads, spec.head_dim
        ),
        num_layers=spec.num_layers,
        hidden_size=spec.hidden_size,
        vocab_size=spec.vocab_size,
        attn_width=spec.num_attention_heads * spec.head_dim,
        kv_bytes_per_token=2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * BF16_BYTES,
        act_bytes_per_token_layer=activation_bytes_per_token_layer(
            spec.hidden_size, spec.intermediate_size, spec.num_kv_heads, spec.head_dim
        ),
        sliding_window_tokens=spec.sliding_window_tokens,
        global_layers=global_layers,
        act_selective_bytes_per_token_layer=selective_activation_bytes_per_token_layer(
            spec.hidden_size, spec.intermediate_size, spec.num_kv_heads, spec.head_dim
        ),
    )


def lora_params(spec: ModelSpec, rank: int) -> int:
    """LoRA on every linear of every block (q, k, v, o, gate, up, down): rank * (d_in + d_out) each."""
    h, i = spec.hidden_size, spec.intermediate_size
    q_out = spec.num_attention_heads * spec.head_dim
    kv_out = spec.num_kv_heads * spec.head_dim
    per_layer = rank * ((h + q_out) + 2 * (h + kv_out) + (q_out + h) + 2 * (h + i) + (i + h))
    return per_layer * spec.num_layers
