"""The named peers, built from small in-code configs (no hub downloads).

* ``hf_mamba2_mixer``: ``transformers`` ``Mamba2Mixer``; without the CUDA kernels (``mamba_ssm``,
  ``causal_conv1d``) it runs its pure-torch path, ``mamba2_chunk_scan``;
* ``hf_mistral_attention``: ``MistralAttention`` with ``sliding_window``, SDPA backend; its mask is
  the dense (T×T) sliding-window mask a Mistral model would build once per forward and share
  across layers, so it is built outside the timed region;
* ``hf_llama_lm``: ``LlamaForCausalLM`` decoding with a ``DynamicCache`` (a full KV cache).
"""

from __future__ import annotations

import torch

from benchmarks.common import require_transformers


def hf_mamba2_config(d_model: int, *, head_dim: int, state_size: int, n_groups: int, expand: int, chunk_size: int):
    transformers = require_transformers()
    return transformers.Mamba2Config(
        hidden_size=d_model,
        num_heads=expand * d_model // head_dim,
        head_dim=head_dim,
        state_size=state_size,
        n_groups=n_groups,
        expand=expand,
        conv_kernel=4,
        chunk_size=chunk_size,
        num_hidden_layers=1,
        vocab_size=256,
        use_bias=False,
        use_conv_bias=True,
    )


def hf_mamba2_mixer(d_model: int, **kw):
    """A Mamba-2 mixer (pure-torch path on CPU) of the given width."""
    require_transformers()
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = hf_mamba2_config(d_model, **kw)
    mixer = Mamba2Mixer(cfg, layer_idx=0)
    # Mamba2Mixer's fused branch returns None without the CUDA kernels and falls through to torch.
    return mixer, cfg


def hf_mamba2_chunk_scan():
    """The pure-torch chunked scan that Mamba2Mixer runs on CPU."""
    require_transformers()
    from transformers.models.mamba2 import modeling_mamba2

    return modeling_mamba2.mamba2_chunk_scan


def hf_mistral_attention(d_model: int, *, n_heads: int, n_kv_heads: int, head_dim: int, window: int, T: int):
    """MistralAttention (sliding window, SDPA) plus a closure ``run(x)`` that feeds it like a
    Mistral decoder layer does: RoPE cos/sin and the shared dense window mask precomputed."""
    transformers = require_transformers()
    from transformers.models.mistral.modeling_mistral import MistralAttention, MistralRotaryEmbedding

    cfg = transformers.MistralConfig(
        hidden_size=d_model,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=head_dim,
        sliding_window=window,
        max_position_embeddings=max(T, 4096),
        num_hidden_layers=1,
        vocab_size=256,
        intermediate_size=4 * d_model,
    )
    cfg._attn_implementation = "sdpa"
    attn = MistralAttention(cfg, layer_idx=0)
    rope = MistralRotaryEmbedding(cfg)
    pos = torch.arange(T)[None]
    mask = sliding_window_mask(T, window)[None, None]

    def run(x):
        cos, sin = rope(x, pos)
        return attn(x, (cos, sin), mask)[0]

    return attn, run


def sliding_window_mask(T: int, window: int, device=None) -> torch.Tensor:
    """Dense boolean (T, T) mask: query i sees keys j with i - window < j <= i."""
    i = torch.arange(T, device=device)
    rel = i[None, :] - i[:, None]
    return (rel <= 0) & (rel > -window)


def hf_llama_lm(*, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, max_positions: int):
    """A Llama causal LM (full causal attention, SDPA) for the full-KV-cache decoding peer."""
    transformers = require_transformers()
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_ff,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
    return model.eval()
