"""Model sizes for ``bmojo train --preset``: ``tiny`` (tests, seconds) and ``small`` (CPU experiments).

A size fixes width, depth, heads, the training context and the window of the bounded models;
``--arch`` picks the layer kind (``LayerConfig.preset``). Architectures are matched in parameter
count: B'MOJO (attention + SSM) is the largest at a given width, so every other architecture gets
the SwiGLU width ``d_ff`` (a multiple of 8) that brings its total closest to B'MOJO's.

* ``transformer``: full causal attention; its window is the training context (the whole sequence,
  ``--seq-len`` when given)
  — ``bmojo eval-length`` widens it to the evaluated length (see docs/training.md);
* ``swa``: sliding-window attention, ``w`` = context/4;
* ``mamba2``: the SSM alone;
* ``bmojo_f``: window ``w`` = context/4 plus ``f = w`` fading tokens;
* ``bmojo``: the same plus ``M = w/4`` eidetic slots.
"""

from __future__ import annotations

from bmojo.config import LAYER_PRESETS, PRESET_FIXED, ModelConfig

SIZES: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, context=64, ssm_head_dim=16, ssm_state_size=16),
    "small": dict(d_model=128, n_layers=4, n_heads=4, context=256, ssm_head_dim=32, ssm_state_size=16),
}
ARCHS = LAYER_PRESETS
#: Layer-v2 fields ``bmojo train`` can set on every layer of a preset, with their flags.
LAYER_FLAGS = {
    "ssm_bypass": "--ssm-bypass",
    "fading_offset": "--fading-offset",
    "innovation_loss_weight": "--innovation-loss-weight",
}
LABELS = {
    "transformer": "Transformer",
    "swa": "SWA",
    "mamba2": "Mamba-2",
    "bmojo_f": "B'MOJO-F",
    "bmojo": "B'MOJO",
    "bmojo_f_gated": "B'MOJO-F gated",
    "bmojo_gated": "B'MOJO gated",
}


def context_of(size: str) -> int:
    return SIZES[size]["context"]


def parameter_count(cfg: ModelConfig) -> int:
    import torch

    from bmojo.model import BMojoLM

    with torch.device("meta"):
        model = BMojoLM(cfg)
    return sum(p.numel() for p in model.parameters())


def _config(
    size: str, arch: str, d_ff: int | None, vocab_size: int, overrides: dict, context: int | None = None
) -> ModelConfig:
    s = dict(SIZES[size])
    size_context = s.pop("context")
    window = (context or size_context) if arch == "transformer" else size_context // 4
    kw = dict(s, vocab_size=vocab_size, ssm_chunk_size=min(64, size_context), attn_block_size=min(64, size_context))
    if arch != "mamba2":
        kw["window"] = window
    if d_ff is not None:
        kw["d_ff"] = d_ff
    return ModelConfig.preset(arch, **kw, **overrides)


def preset_config(
    size: str, arch: str, *, vocab_size: int = 256, overrides: dict | None = None, context: int | None = None
) -> ModelConfig:
    """The ``size`` model of kind ``arch``, parameter-matched to B'MOJO at the same size.
    ``overrides`` (keys of ``LAYER_FLAGS``) are set on every layer; the match is to plain B'MOJO.
    ``context``: the training context (``--seq-len``; default the size's), the ``transformer``'s
    window; the bounded models keep the size's window."""
    if size not in SIZES:
        raise ValueError(f"--preset: expected one of {sorted(SIZES)}, got {size!r}")
    if arch not in ARCHS:
        raise ValueError(f"--arch: expected one of {list(ARCHS)}, got {arch!r}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for name, value in overrides.items():
        fixed = PRESET_FIXED[arch]
        if name in fixed and fixed[name] != value:
            raise ValueError(f"{LAYER_FLAGS[name]}: expected {fixed[name]!r} for --arch {arch}, got {value!r}")
    try:
        target = parameter_count(_config(size, "bmojo", None, vocab_size, {}))
        base = _config(size, arch, None, vocab_size, overrides, context)
        if arch == "bmojo":
            return base
        d_ff0 = base.layers[0].ffn_dim
        p0 = parameter_count(base)
        # parameters per unit of d_ff
        slope = (parameter_count(_config(size, arch, d_ff0 + 8, vocab_size, overrides, context)) - p0) / 8
        d_ff = max(8, d_ff0 + round((target - p0) / slope / 8) * 8)
        return _config(size, arch, d_ff, vocab_size, overrides, context)
    except ValueError as err:
        field = str(err).split(":", 1)[0]
        if field in LAYER_FLAGS:
            raise ValueError(f"{LAYER_FLAGS[field]}: {str(err).split(':', 1)[1].strip()}") from err
        raise
