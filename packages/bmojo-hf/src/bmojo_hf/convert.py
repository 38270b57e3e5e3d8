"""Converters from transformers models to B'MOJO special cases (spec §4). Public API.

* ``from_hf_mamba2(Mamba2ForCausalLM)`` → every layer the ``mamba2`` case (w = f = M = 0, no MLP);
  with ``bmojo={...}`` every layer is instead a B'MOJO layer with the gated SSM bypass
  (``ssm_bypass="gated"``, spec §2.1) set to Wo = 0, g = 1 — by special case 5 exactly the source
  Mamba-2 — ready to train its attention (window, fading offset δ, eidetic memory as given);
* ``from_hf_mistral(MistralForCausalLM)`` → the ``swa`` case (w = ``sliding_window``), or the
  ``transformer`` case when ``sliding_window`` is None;
* ``from_hf_llama(LlamaForCausalLM)`` → the ``transformer`` case (w = ``max_position_embeddings``
  unless ``context=`` says otherwise).

Weights are copied one to one (the layouts match: rotate-half RoPE, Mamba-2's ``in_proj`` split
z | xBC | dt and its (C, 1, K) depthwise conv, grouped gated RMSNorm with group d_inner / G). An
option of the source config that core cannot reproduce exactly is rejected with a
``ConversionError`` naming it, never approximated.

Window semantics: transformers' sliding-window mask keeps key j for query i when
``i - sliding_window < j <= i``, i.e. ``sliding_window`` keys including the query's own token,
which is exactly core's ``window``.
"""

from __future__ import annotations

import math

import torch
from bmojo import BMojoLM, LayerConfig, ModelConfig

from bmojo_hf.configuration import BMojoConfig
from bmojo_hf.modeling import BMojoForCausalLM


class ConversionError(ValueError):
    """A source model uses an option that has no exact B'MOJO equivalent."""


def _reject(option: str, expected: str, actual) -> ConversionError:
    return ConversionError(f"{option}: expected {expected} for an exact conversion, got {actual!r}")


def _check_source(model, model_type: str, cls_name: str):
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != model_type:
        raise ConversionError(
            f"model: expected a transformers {cls_name} (model_type {model_type!r}), got "
            f"{type(model).__name__} (model_type {getattr(config, 'model_type', None)!r})"
        )
    if not hasattr(model, "lm_head"):
        raise ConversionError(f"model: expected a {cls_name} with its lm_head, got {type(model).__name__}")
    return config


def _token_ids(config) -> dict:
    return {name: getattr(config, name, None) for name in ("pad_token_id", "bos_token_id", "eos_token_id")}


def _target_dtype(model, dtype):
    if dtype is None:
        return next(model.parameters()).dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
    return dtype


def _load(source, config: ModelConfig, mapping: dict[str, str], hf_kwargs: dict, dtype, fill=None):
    """Build the B'MOJO model and copy ``mapping`` (core name → source name); every core tensor
    must be assigned exactly once (``fill``: core name → tensor for tensors with no source)."""
    src = source.state_dict()
    target = BMojoForCausalLM(BMojoConfig.from_core(config, **hf_kwargs)).to(dtype)
    core = target.model.core
    want = core.state_dict()
    fill = fill or {}
    missing = sorted(set(want) - set(mapping) - set(fill))
    if missing:
        raise ConversionError(f"internal: no source for core tensors {missing}")
    tensors = {}
    for name, src_name in mapping.items():
        if src_name not in src:
            raise ConversionError(f"model: expected a tensor {src_name!r} in the source state dict, not found")
        t = src[src_name]
        if tuple(t.shape) != tuple(want[name].shape):
            raise ConversionError(
                f"{src_name}: expected shape {tuple(want[name].shape)} (for {name}), got {tuple(t.shape)}"
            )
        tensors[name] = t.detach().to(dtype=dtype).clone()
    tensors.update({k: v.to(dtype) for k, v in fill.items()})
    core.load_state_dict(tensors, strict=True)
    device = next(source.parameters()).device
    return target.to(device).eval()


# ----------------------------------------------------------------------------- Mamba-2
def from_hf_mamba2(model, *, dtype: torch.dtype | None = None, bmojo: dict | None = None) -> BMojoForCausalLM:
    """A transformers ``Mamba2ForCausalLM`` as a B'MOJO model whose layers are all the ``mamba2``
    special case (pure Mamba-2 mixer, no MLP). ``dtype`` defaults to the source's.

    ``bmojo``: ``LayerConfig`` fields (``window`` required, e.g. ``fading_offset``,
    ``eidetic_capacity``, ``n_heads``) for B'MOJO layers with ``ssm_bypass="gated"`` instead. The
    SSM weights are the source's, ``o_proj`` is zero and the gate ``g`` is one, so the converted
    model computes exactly what the source does (spec §4.5); the attention projections keep core's
    random initialisation until trained."""
    cfg = _check_source(model, "mamba2", "Mamba2ForCausalLM")
    dtype = _target_dtype(model, dtype)
    if cfg.hidden_act != "silu":
        raise _reject("hidden_act", "'silu' (core's conv activation)", cfg.hidden_act)
    if cfg.use_bias:
        raise _reject("use_bias", "False (core's in_proj/out_proj have no bias)", cfg.use_bias)
    lo, hi = (float(x) for x in cfg.time_step_limit)
    if lo > 0.0 or not math.isinf(hi):
        # softplus(dt) >= 0, so only (<= 0, inf) is a no-op; core does not clamp dt.
        raise _reject("time_step_limit", "(0.0, inf) (core does not clamp dt)", tuple(cfg.time_step_limit))
    if cfg.residual_in_fp32 and dtype not in (torch.float32, torch.float64):
        raise _reject("residual_in_fp32", f"False, or a float32/float64 dtype (got dtype {dtype})", True)
    if int(cfg.expand) != cfg.expand or cfg.expand * cfg.hidden_size != cfg.num_heads * cfg.head_dim:
        raise _reject(
            "expand",
            f"an int with expand·hidden_size = num_heads·head_dim ({cfg.num_heads * cfg.head_dim})",
            cfg.expand,
        )
    d = cfg.hidden_size
    layer_kw = dict(
        ssm_expand=int(cfg.expand),
        ssm_head_dim=cfg.head_dim,
        ssm_state_size=cfg.state_size,
        ssm_groups=cfg.n_groups,
        d_conv=cfg.conv_kernel,
        ssm_chunk_size=cfg.chunk_size,
        norm_eps=cfg.layer_norm_epsilon,
        mlp=False,
        # attention fields are unused by a pure SSM layer; pick values every d_model validates with
        n_heads=1,
        head_dim=2,
    )
    if bmojo is None:
        layer = LayerConfig.preset("mamba2", d_model=d, **layer_kw)
    else:
        if not isinstance(bmojo, dict) or not isinstance(bmojo.get("window"), int) or bmojo["window"] < 1:
            raise ValueError(f"bmojo: expected a dict of LayerConfig fields with an int window >= 1, got {bmojo!r}")
        del layer_kw["n_heads"], layer_kw["head_dim"]  # the attention's own, from ``bmojo`` or defaults
        taken = sorted(set(bmojo) & (set(layer_kw) | {"ssm_bypass", "d_model"}))
        if taken:
            raise ValueError(f"bmojo: expected attention fields only (the SSM's come from the source), got {taken}")
        fields = {"fading_window": bmojo["window"], "eidetic_capacity": 0, **bmojo}
        layer = LayerConfig(d_model=d, ssm_bypass="gated", **layer_kw, **fields)
    config = ModelConfig(
        vocab_size=cfg.vocab_size,
        d_model=d,
        layers=(layer,) * cfg.num_hidden_layers,
        tie_embeddings=bool(cfg.tie_word_embeddings),
        norm_eps=cfg.layer_norm_epsilon,
    )
    mapping = {"embed.weight": "backbone.embeddings.weight", "norm_f.weight": "backbone.norm_f.weight"}
    fill = {}
    for i in range(cfg.num_hidden_layers):
        s, t = f"backbone.layers.{i}.", f"blocks.{i}."
        mapping[t + "norm.weight"] = s + "norm.weight"
        for name in ("in_proj.weight", "conv1d.weight", "dt_bias", "A_log", "D", "out_proj.weight"):
            mapping[t + "mixer.fading." + name] = s + "mixer." + name
        mapping[t + "mixer.fading.norm_weight"] = s + "mixer.norm.weight"
        if cfg.use_conv_bias:
            mapping[t + "mixer.fading.conv1d.bias"] = s + "mixer.conv1d.bias"
        else:  # core's conv always has a bias: zero is exact
            width = model.state_dict()[s + "mixer.conv1d.weight"].shape[0]
            fill[t + "mixer.fading.conv1d.bias"] = torch.zeros(width)
    if not cfg.tie_word_embeddings:
        mapping["lm_head.weight"] = "lm_head.weight"
    if bmojo is not None:
        # Every attention tensor keeps core's init, except Wo = 0 and g = 1 (spec §4.5).
        fresh = BMojoLM(config).state_dict()
        for name, t in fresh.items():
            if name not in mapping and name not in fill:
                if name.endswith("mixer.o_proj.weight"):
                    t = torch.zeros_like(t)
                elif name.endswith("mixer.bypass_gate"):
                    t = torch.ones_like(t)
                fill[name] = t
    return _load(model, config, mapping, _token_ids(cfg), dtype, fill)


# ----------------------------------------------------------------------------- attention models
def _attention_layer(cfg, window: int, preset: str) -> LayerConfig:
    if cfg.hidden_act != "silu":
        raise _reject("hidden_act", "'silu' (core's SwiGLU)", cfg.hidden_act)
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(cfg, flag, False):
            raise _reject(flag, "False (core's projections have no bias)", getattr(cfg, flag))
    rope = dict(getattr(cfg, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise _reject("rope_parameters.rope_type", "'default' (core's plain rotate-half RoPE)", rope_type)
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        raise _reject("rope_parameters.partial_rotary_factor", "1.0", rope["partial_rotary_factor"])
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    if theta is None:
        raise _reject("rope_parameters.rope_theta", "a number", None)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LayerConfig.preset(
        preset,
        d_model=cfg.hidden_size,
        window=window,
        n_heads=cfg.num_attention_heads,
        n_kv_heads=cfg.num_key_value_heads or cfg.num_attention_heads,
        head_dim=head_dim,
        rope_theta=float(theta),
        mlp=True,
        d_ff=cfg.intermediate_size,
        norm_eps=cfg.rms_norm_eps,
    )


def _attention_model(model, cfg, layer: LayerConfig, dtype) -> BMojoForCausalLM:
    config = ModelConfig(
        vocab_size=cfg.vocab_size,
        d_model=cfg.hidden_size,
        layers=(layer,) * cfg.num_hidden_layers,
        tie_embeddings=bool(cfg.tie_word_embeddings),
        norm_eps=cfg.rms_norm_eps,
    )
    mapping = {"embed.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight"}
    for i in range(cfg.num_hidden_layers):
        s, t = f"model.layers.{i}.", f"blocks.{i}."
        mapping[t + "norm.weight"] = s + "input_layernorm.weight"
        mapping[t + "mlp_norm.weight"] = s + "post_attention_layernorm.weight"
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            mapping[f"{t}mixer.{p}.weight"] = f"{s}self_attn.{p}.weight"
        for p in ("gate_proj", "up_proj", "down_proj"):
            mapping[f"{t}mlp.{p}.weight"] = f"{s}mlp.{p}.weight"
    if not cfg.tie_word_embeddings:
        mapping["lm_head.weight"] = "lm_head.weight"
    return _load(model, config, mapping, _token_ids(cfg), _target_dtype(model, dtype))


def _check_layer_types(cfg, expected: str) -> None:
    types = getattr(cfg, "layer_types", None)
    if types is not None and any(t != expected for t in types):
        raise _reject("layer_types", f"all {expected!r}", list(types))


def from_hf_mistral(model, *, context: int | None = None, dtype: torch.dtype | None = None) -> BMojoForCausalLM:
    """A transformers ``MistralForCausalLM`` as a B'MOJO model of ``swa`` layers with
    ``window = sliding_window``. With ``sliding_window=None`` (full attention) the layers are the
    ``transformer`` case with ``window = context`` (default ``max_position_embeddings``);
    ``context`` is refused when ``sliding_window`` is set (the window is then the source's)."""
    cfg = _check_source(model, "mistral", "MistralForCausalLM")
    if cfg.sliding_window is None:
        return from_hf_llama(model, context=context, dtype=dtype, _model_type="mistral")
    if context is not None:
        raise ValueError(
            f"context: expected None for a Mistral with sliding_window={cfg.sliding_window} (its layers keep "
            f"that window; context only sets the window of full attention), got {context!r}"
        )
    _check_layer_types(cfg, "sliding_attention")
    layer = _attention_layer(cfg, int(cfg.sliding_window), "swa")
    return _attention_model(model, cfg, layer, dtype)


def from_hf_llama(
    model, *, context: int | None = None, dtype: torch.dtype | None = None, _model_type: str = "llama"
) -> BMojoForCausalLM:
    """A transformers ``LlamaForCausalLM`` as a B'MOJO model of ``transformer`` layers (full
    causal attention). Core attention always has a window, so full attention means
    ``window = context``, default ``max_position_embeddings``: exact for sequences up to that
    length (beyond it Llama keeps attending to everything while the B'MOJO model slides)."""
    cfg = _check_source(model, _model_type, "LlamaForCausalLM" if _model_type == "llama" else "MistralForCausalLM")
    _check_layer_types(cfg, "full_attention")
    window = cfg.max_position_embeddings if context is None else context
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"context: expected an int >= 1 or None, got {context!r}")
    layer = _attention_layer(cfg, window, "transformer")
    return _attention_model(model, cfg, layer, dtype)


CONVERTERS = {"mamba2": from_hf_mamba2, "mistral": from_hf_mistral, "llama": from_hf_llama}


def convert_hf_model(model, **kwargs) -> BMojoForCausalLM:
    """Dispatch on ``model.config.model_type`` to the converters above."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in CONVERTERS:
        raise ConversionError(f"model: expected a model_type in {sorted(CONVERTERS)}, got {model_type!r}")
    return CONVERTERS[model_type](model, **kwargs)
