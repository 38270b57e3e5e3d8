"""Helpers shared by the bmojo-hf tests (tiny models, padding, error measure)."""

from __future__ import annotations

import torch
from bmojo import ModelConfig
from bmojo.config import PRESET_FIXED
from bmojo_hf import BMojoConfig, BMojoForCausalLM

#: Tiny sizes so windows, eidetic chunks and SSM chunks are crossed many times in ~30 tokens.
TINY = dict(d_model=32, window=4, ssm_head_dim=16, ssm_chunk_size=4, attn_block_size=4, n_heads=4)
VOCAB = 61
PAD = 0


def tiny_core_config(preset, *, vocab=VOCAB, n_layers=2, **overrides) -> ModelConfig:
    """The tiny sizes and ``overrides`` for any preset (or list): sizes every named preset fixes
    (window for mamba2) are left out, as ModelConfig.preset refuses an override no layer takes;
    the caller's ``overrides`` are passed as given."""
    kinds = [preset] if isinstance(preset, str) else list(preset)
    kw = {k: v for k, v in TINY.items() if any(k not in PRESET_FIXED[kind] for kind in kinds)} | overrides
    d_model = kw.pop("d_model")
    cfg = ModelConfig.preset(preset, vocab_size=vocab, d_model=d_model, n_layers=n_layers, **kw)
    return cfg.replace(init_std=0.2)


def perturb_(module: torch.nn.Module, scale: float = 0.05) -> None:
    """Move every parameter off its trivial init (ones/zeros hide bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, dtype=torch.float64).to(p.dtype) * scale)


def tiny_model(preset="bmojo", *, dtype=torch.float32, tie=True, **overrides) -> BMojoForCausalLM:
    core = tiny_core_config(preset, **overrides).replace(tie_embeddings=tie)
    model = BMojoForCausalLM(BMojoConfig.from_core(core, pad_token_id=PAD)).to(dtype)
    perturb_(model)
    return model.eval()


def left_pad(rows: list[torch.Tensor], pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-d id tensors into (ids, attention_mask)."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = r
        mask[i, T - len(r) :] = 1
    return ids, mask


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.detach().double(), expected.detach().double()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != {tuple(e.shape)}"
    scale = e.abs().max().item()
    diff = (a - e).abs().max().item()
    return diff / scale if scale else diff
