"""Converters: transformers Mamba2 / Mistral / Llama weights in the B'MOJO special cases.

Each source model is built offline from a small random config, its weights are moved off their
init, and the converted B'MOJO model must give the same logits. Tolerance: float32 models, max
|difference| <= 1e-5 · max |logit| (measured ~3e-7 absolute for logits of size ~1-3; both sides
compute in float32, RoPE angles are float32 in transformers and float64-then-cast in core).
"""

from __future__ import annotations

import pytest
import torch
from bmojo_hf import (
    BMojoForCausalLM,
    ConversionError,
    convert_hf_model,
    from_hf_llama,
    from_hf_mamba2,
    from_hf_mistral,
)
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from .hf_helpers import perturb_, rel_err

TOL = 1e-5
T = 23  # > every window below, so sliding matters


def mamba2(**kw):
    cfg = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_heads=4,
        head_dim=16,
        expand=2,
        n_groups=2,
        state_size=8,
        conv_kernel=4,
        chunk_size=8,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg.update(kw)
    model = Mamba2ForCausalLM(Mamba2Config(**cfg)).eval()
    perturb_(model)
    return model


def attention(cls_cfg, cls_model, **kw):
    cfg = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    cfg.update(kw)
    model = cls_model(cls_cfg(**cfg)).eval()
    perturb_(model)
    return model


def mistral(**kw):
    return attention(MistralConfig, MistralForCausalLM, **({"sliding_window": 5} | kw))


def llama(**kw):
    return attention(LlamaConfig, LlamaForCausalLM, **kw)


def compare(source, converted, batch=2):
    ids = torch.randint(0, source.config.vocab_size, (batch, T))
    with torch.no_grad():
        expected = source(ids).logits
        actual = converted(ids).logits
    return rel_err(actual, expected), (actual - expected).abs().max().item()


@pytest.mark.parametrize(
    "kw",
    [{}, {"n_groups": 1}, {"tie_word_embeddings": True}, {"use_conv_bias": False}, {"layer_norm_epsilon": 1e-3}],
    ids=["groups2", "groups1", "tied", "no_conv_bias", "eps"],
)
def test_mamba2_weights_in_the_mamba2_special_case(kw):
    source = mamba2(**kw)
    converted = from_hf_mamba2(source)
    assert isinstance(converted, BMojoForCausalLM)
    assert all(layer.kind == "mamba2" and not layer.mlp for layer in converted.core.config.layers)
    err, diff = compare(source, converted)
    assert err < TOL, f"max |diff| {diff:.2e}"
    assert converted.config.eos_token_id == 2


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize(
    "kw", [{}, {"num_key_value_heads": 4}, {"tie_word_embeddings": True}], ids=["gqa", "mha", "tied"]
)
def test_mistral_weights_in_the_swa_special_case(kw, attn):
    source = mistral(attn_implementation=attn, **kw)
    converted = from_hf_mistral(source)
    layer = converted.core.config.layers[0]
    assert layer.kind == "attention" and layer.window == source.config.sliding_window
    err, diff = compare(source, converted)
    assert err < TOL, f"max |diff| {diff:.2e}"


def test_hidden_states_match_the_source_entry_by_entry():
    """Same hidden_states layout as transformers' Llama: embeddings, each layer, the last normed."""
    source = llama()
    converted = convert_hf_model(source)
    ids = torch.randint(0, 64, (2, T))
    with torch.no_grad():
        want = source.model(ids, output_hidden_states=True)
        got = converted.model(ids, output_hidden_states=True)
    assert torch.equal(want.hidden_states[-1], want.last_hidden_state)  # the convention itself
    assert len(got.hidden_states) == len(want.hidden_states) == source.config.num_hidden_layers + 1
    for a, e in zip(got.hidden_states, want.hidden_states, strict=True):
        assert rel_err(a, e) < TOL


def test_mistral_window_is_w_keys_including_self():
    """The mapping window = sliding_window is checked, not assumed: w + 1 or w - 1 is far off."""
    source = mistral()
    for wrong in (4, 6):
        source.config.sliding_window = wrong
        converted = from_hf_mistral(source)
        source.config.sliding_window = 5
        err, _ = compare(source, converted)
        assert err > 1e-3, f"window {wrong} should not match sliding_window 5"


@pytest.mark.parametrize("kw", [{}, {"tie_word_embeddings": True, "head_dim": 16}], ids=["plain", "tied_head_dim"])
def test_llama_weights_in_the_transformer_special_case(kw):
    source = llama(**kw)
    converted = from_hf_llama(source)
    layer = converted.core.config.layers[0]
    assert layer.kind == "attention" and layer.window == source.config.max_position_embeddings >= T
    err, diff = compare(source, converted)
    assert err < TOL, f"max |diff| {diff:.2e}"


def test_mistral_without_a_sliding_window_is_full_attention():
    source = mistral(sliding_window=None)
    converted = convert_hf_model(source)
    assert converted.core.config.layers[0].window == source.config.max_position_embeddings
    assert compare(source, converted)[0] < TOL


@pytest.mark.parametrize("make, convert", [(mamba2, from_hf_mamba2), (mistral, from_hf_mistral)])
def test_converted_models_generate_like_the_source(make, convert):
    source = make()
    converted = convert(source)
    ids = torch.randint(3, 64, (1, 6))
    kw = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(converted.generate(ids, **kw), source.generate(ids, **kw))


def test_converted_model_round_trips_through_save_pretrained(tmp_path):
    converted = from_hf_mamba2(mamba2())
    converted.save_pretrained(tmp_path)
    back = BMojoForCausalLM.from_pretrained(tmp_path, use_safetensors=True).eval()
    ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, converted(ids).logits)


@pytest.mark.parametrize(
    "make, option",
    [
        (lambda: mamba2(time_step_limit=(0.0, 0.1)), "time_step_limit"),
        (lambda: mamba2(use_bias=True), "use_bias"),
        (lambda: mamba2(hidden_act="gelu"), "hidden_act"),
        (lambda: llama(attention_bias=True), "attention_bias"),
        (lambda: llama(mlp_bias=True), "mlp_bias"),
        (lambda: llama(hidden_act="gelu"), "hidden_act"),
        (lambda: llama(rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}), "rope_type"),
    ],
    ids=["dt_limit", "mamba_bias", "mamba_act", "attn_bias", "mlp_bias", "act", "rope_scaling"],
)
def test_inexact_options_are_rejected_by_name(make, option):
    with pytest.raises(ConversionError, match=option):
        convert_hf_model(make())


def test_wrong_source_model_is_rejected():
    with pytest.raises(ConversionError, match="Mamba2ForCausalLM"):
        from_hf_mamba2(llama())
    with pytest.raises(ConversionError, match="model_type"):
        convert_hf_model(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "bmojo",
    [
        dict(window=4),
        dict(window=5, fading_offset=0, eidetic_capacity=2, eidetic_per_chunk=1, n_heads=2),
        dict(window=6, fading_offset=3, fading_window=2, n_kv_heads=2),
    ],
    ids=["delta_w", "delta0_eidetic", "delta3_gqa"],
)
def test_mamba2_into_gated_bmojo_layers_is_exact(tmp_path, bmojo):
    """Spec §4.5 as a converter: B'MOJO layers with the gated bypass at Wo = 0, g = 1 compute the
    source Mamba-2; the config carries fading_offset and ssm_bypass through save_pretrained."""
    source = mamba2()
    converted = from_hf_mamba2(source, bmojo=bmojo)
    layers = converted.core.config.layers
    assert all(c.ssm_bypass == "gated" and c.window == bmojo["window"] for c in layers)
    assert all(c.fading_offset == bmojo.get("fading_offset") for c in layers)
    err, diff = compare(source, converted)
    assert err < TOL, f"max |diff| {diff:.2e}"
    converted.save_pretrained(tmp_path)
    back = BMojoForCausalLM.from_pretrained(tmp_path)
    assert back.config.core_config == converted.config.core_config
    # Guard: the attention path is really there (with Wo back, the output changes).
    with torch.no_grad():
        for block in converted.core.blocks:
            block.mixer.o_proj.weight.normal_()
    assert compare(source, converted)[0] > 1e-3


def test_mamba2_into_bmojo_rejects_ssm_fields():
    with pytest.raises(ValueError, match=r"^bmojo: expected attention fields only.*'ssm_state_size'"):
        from_hf_mamba2(mamba2(), bmojo=dict(window=4, ssm_state_size=4))
    with pytest.raises(ValueError, match=r"^bmojo: expected a dict of LayerConfig fields with an int window"):
        from_hf_mamba2(mamba2(), bmojo=dict(fading_offset=0))


def test_mistral_with_a_sliding_window_refuses_context():
    source = mistral()
    with pytest.raises(ValueError, match=r"context: expected None for a Mistral with sliding_window=5 .*got 3"):
        from_hf_mistral(source, context=3)
    with pytest.raises(ValueError, match="context"):
        convert_hf_model(source, context=64)
