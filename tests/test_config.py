"""Config validation, presets and JSON round trips (spec §4, §6)."""

from __future__ import annotations

import json

import pytest
from bmojo import BMojoLM, ConfigError, LayerConfig, ModelConfig
from bmojo.config import LAYER_PRESETS


@pytest.mark.parametrize("name", LAYER_PRESETS)
def test_json_round_trip_every_preset(name):
    window = {} if name == "mamba2" else dict(window=16)  # mamba2 fixes window = 0 (and refuses another)
    cfg = ModelConfig.preset(name, vocab_size=100, d_model=64, n_layers=3, **window)
    text = cfg.to_json()
    back = ModelConfig.from_json(text)
    assert back == cfg
    assert back.to_json() == text
    assert all(isinstance(layer, LayerConfig) for layer in back.layers)
    layer = cfg.layers[0]
    assert LayerConfig.from_dict(json.loads(json.dumps(layer.to_dict()))) == layer


def test_json_round_trip_per_layer_list():
    cfg = ModelConfig.preset(["swa", "mamba2", "bmojo"], vocab_size=50, d_model=32, n_layers=5, window=8)
    assert [c.kind for c in cfg.layers] == ["attention", "mamba2", "bmojo", "attention", "mamba2"]
    # a hand-made per-layer list with different fields per layer
    custom = ModelConfig(
        vocab_size=50,
        d_model=32,
        layers=(
            LayerConfig(
                d_model=32, window=4, fading_window=2, eidetic_capacity=3, eidetic_per_chunk=1, eviction="fifo"
            ),
            LayerConfig(d_model=32, window=0, fading_window=0, eidetic_capacity=0, ssm_groups=2, mlp=False),
            LayerConfig(d_model=32, window=6, fading_window=0, eidetic_capacity=0, n_kv_heads=2, qk_norm=True),
        ),
        tie_embeddings=False,
    )
    for c in (cfg, custom):
        assert ModelConfig.from_json(c.to_json()) == c
        assert ModelConfig.from_dict(json.loads(c.to_json())) == c


def test_round_trip_through_save_pretrained(tmp_path):
    cfg = ModelConfig.preset(["bmojo", "mamba2"], vocab_size=40, d_model=32, window=8, ssm_head_dim=16)
    BMojoLM(cfg).save_pretrained(tmp_path)
    assert BMojoLM.from_pretrained(tmp_path).config == cfg


def test_unknown_field_rejected():
    with pytest.raises(ConfigError, match=r"^layer config: expected only known fields.*\['windw'\]"):
        LayerConfig.from_dict({"windw": 8})
    with pytest.raises(ConfigError, match=r"^model config: expected only known fields.*\['n_layer'\]"):
        ModelConfig.from_dict({"n_layer": 2})
    data = ModelConfig.preset("swa", d_model=32, window=8).to_dict()
    data["layers"][1]["fading"] = 3
    with pytest.raises(ConfigError, match=r"\['fading'\]"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    "name, w, f, M, kind",
    [
        ("transformer", 2048, 0, 0, "attention"),
        ("swa", 64, 0, 0, "attention"),
        ("mamba2", 0, 0, 0, "mamba2"),
        ("bmojo_f", 64, 64, 0, "bmojo_f"),
        ("bmojo", 64, 64, 16, "bmojo"),
    ],
)
def test_presets_are_the_special_cases(name, w, f, M, kind):
    cfg = LayerConfig.preset(name)
    assert (cfg.window, cfg.fading_window, cfg.eidetic_capacity, cfg.kind) == (w, f, M, kind)
    assert cfg.has_ssm == (kind != "attention")
    assert cfg.has_attention == (kind != "mamba2")


def test_preset_fixed_fields_cannot_be_overridden():
    with pytest.raises(ConfigError, match=r"^fading_window: expected 0 for the 'swa' preset"):
        LayerConfig.preset("swa", fading_window=8)
    with pytest.raises(ConfigError, match=r"^preset: expected one of"):
        LayerConfig.preset("mamba3")


def test_defaults_and_derived_sizes():
    cfg = LayerConfig(d_model=48, n_heads=4, window=12, eidetic_capacity=4, eidetic_per_chunk=2)
    assert cfg.chunk == 12 and cfg.dh == 12 and cfg.kv_heads == 4
    assert cfg.d_inner == 96 and cfg.ssm_heads == 3
    assert cfg.ffn_dim == 128  # 8/3 · 48 = 128, already a multiple of 8
    assert LayerConfig(d_model=50, n_heads=5, head_dim=10, ssm_head_dim=20).ffn_dim == 136  # ceil(133/8)·8


def test_model_config_rejects_inconsistent_layers():
    with pytest.raises(ConfigError, match=r"^layers\[1\]\.d_model: expected the model's d_model=32"):
        ModelConfig(d_model=32, layers=(LayerConfig(d_model=32), LayerConfig(d_model=64)))
    with pytest.raises(ConfigError, match=r"^layers: expected at least one layer"):
        ModelConfig(layers=())
    with pytest.raises(ConfigError, match=r"^vocab_size: expected an int >= 1"):
        ModelConfig(vocab_size=0)


@pytest.mark.parametrize(
    "fields, named",
    [
        (dict(eviction="random"), "eviction"),
        (dict(ssm_head_dim=48), "ssm_head_dim"),  # does not divide d_inner = 256
        (dict(ssm_groups=3), "ssm_groups"),
        (dict(head_dim=7), "head_dim"),  # RoPE needs an even head size
        (dict(dt_min=0.5, dt_max=0.1), "dt_min"),
        (dict(rope_theta=0.0), "rope_theta"),
        (dict(qk_norm=1), "qk_norm"),
        (dict(eidetic_per_chunk=8, eidetic_chunk=4), "eidetic_per_chunk"),
    ],
)
def test_field_errors_name_the_field(fields, named):
    with pytest.raises(ConfigError, match=rf"^{named}: expected"):
        LayerConfig(**fields)


# ----- v2 fields (spec §2.1) and the defaults docs/layer.md promises -----


def test_documented_defaults():
    """Every default in docs/layer.md's tables, read off a default-constructed config."""
    cfg = LayerConfig()
    assert cfg.window == 64
    assert cfg.fading_window == cfg.window  # f defaults to w
    assert cfg.fading_offset is None and cfg.delta == cfg.window  # δ defaults to w (published)
    assert cfg.ssm_bypass == "none"
    assert cfg.innovation_loss_weight == 0.0
    assert cfg.eidetic_chunk is None and cfg.chunk == cfg.window  # c defaults to w
    assert cfg.eidetic_per_chunk == 4
    assert cfg.eviction == "lowest"
    assert cfg.tie_fading_projections is True
    assert cfg.qk_norm is False
    assert cfg.ssm_groups == 1
    assert cfg.attn_block_size == 64
    assert cfg.ssm_chunk_size == 64
    # the bmojo preset: M = w/4, k = min(4, M, c)
    bm = LayerConfig.preset("bmojo", window=32)
    assert (bm.fading_window, bm.eidetic_capacity, bm.eidetic_per_chunk) == (32, 8, 4)
    assert LayerConfig.preset("bmojo", window=8).eidetic_per_chunk == 2  # M = 2 caps k
    assert LayerConfig.preset("transformer").window == 2048  # the default context


@pytest.mark.parametrize("window", [0, 1, 8, 200])
def test_fading_window_follows_window(window):
    """f defaults to w, as the chunk does (was a fixed 64 whatever w was)."""
    cfg = LayerConfig(d_model=16, n_heads=4, window=window, eidetic_capacity=0)
    assert cfg.fading_window == window
    assert LayerConfig(d_model=16, n_heads=4, window=8, fading_window=3).fading_window == 3
    assert LayerConfig.from_dict(cfg.to_dict()) == cfg


def test_window_zero_alone_is_an_ssm_layer():
    """w = 0 no longer needs f = 0 spelled out: f follows w."""
    assert LayerConfig(window=0, eidetic_capacity=0).kind == "mamba2"


@pytest.mark.parametrize("d_model", [12, 10, 30])
def test_mamba2_preset_ignores_attention_head_size(d_model):
    """An attention-free layer builds no heads, so an odd head size d_model / n_heads is no error."""
    cfg = LayerConfig.preset("mamba2", d_model=d_model, ssm_head_dim=d_model)
    assert cfg.kind == "mamba2" and not cfg.has_attention
    BMojoLM(ModelConfig(vocab_size=11, d_model=d_model, layers=(cfg,)))
    # With the default P = 32 the only complaint is the SSM's own (P must divide d_inner = 24).
    with pytest.raises(ConfigError, match=r"^ssm_head_dim: expected a divisor of d_inner"):
        LayerConfig.preset("mamba2", d_model=12)
    # ... while a layer with attention still needs an even head size.
    with pytest.raises(ConfigError, match=r"^head_dim: expected an even number"):
        LayerConfig.preset("swa", d_model=12)


@pytest.mark.parametrize(
    "fields, named",
    [
        (dict(window=8, fading_offset=9), "fading_offset"),
        (dict(window=8, fading_offset=-1), "fading_offset"),
        (dict(window=8, fading_offset=2.0), "fading_offset"),
        (dict(ssm_bypass="sum"), "ssm_bypass"),
        (dict(window=0, fading_window=0, eidetic_capacity=0, ssm_bypass="gated"), "ssm_bypass"),
        (dict(innovation_loss_weight=-0.1), "innovation_loss_weight"),
        (dict(innovation_loss_weight=float("nan")), "innovation_loss_weight"),
        (dict(innovation_loss_weight=float("inf")), "innovation_loss_weight"),
        (dict(innovation_loss_weight=True), "innovation_loss_weight"),
        (dict(fading_window=0, eidetic_capacity=0, innovation_loss_weight=0.5), "innovation_loss_weight"),
    ],
)
def test_v2_field_errors_name_the_field(fields, named):
    with pytest.raises(ConfigError, match=rf"^{named}: expected"):
        LayerConfig(**fields)


@pytest.mark.parametrize("delta", [None, 0, 1, 7, 8])
def test_fading_offset_range_and_round_trip(delta):
    cfg = LayerConfig(d_model=32, window=8, fading_offset=delta, ssm_bypass="gated", innovation_loss_weight=0.25)
    assert cfg.delta == (8 if delta is None else delta)
    model_cfg = ModelConfig(d_model=32, layers=(cfg,))
    assert ModelConfig.from_json(model_cfg.to_json()) == model_cfg


def test_gated_bypass_builds_an_ssm_even_without_fading_keys():
    """SWA + gated bypass: attention and a parallel Mamba-2 branch (spec §2.1)."""
    cfg = LayerConfig(d_model=32, window=8, fading_window=0, eidetic_capacity=0, ssm_bypass="gated")
    assert cfg.has_ssm and not cfg.uses_fading_keys


def test_presets_fix_the_v2_fields_they_never_read():
    with pytest.raises(ConfigError, match=r"^ssm_bypass: expected 'none' for the 'swa' preset"):
        LayerConfig.preset("swa", ssm_bypass="gated")
    with pytest.raises(ConfigError, match=r"^fading_offset: expected None for the 'mamba2' preset"):
        LayerConfig.preset("mamba2", fading_offset=0)
    # shared overrides skip the layers that do not read them
    cfg = ModelConfig.preset(["bmojo", "mamba2"], d_model=32, window=8, fading_offset=0, ssm_bypass="gated")
    assert [(c.fading_offset, c.ssm_bypass) for c in cfg.layers] == [(0, "gated"), (None, "none")]


def test_model_preset_refuses_an_override_no_layer_takes():
    """Shared overrides skip the layers that fix them, but one that no layer takes is an error,
    not silently dropped (a B'MOJO-F asked for eidetic slots gets none)."""
    for names, kw, message in [
        ("bmojo_f", dict(eidetic_capacity=16), r"^eidetic_capacity: expected 0 for 'bmojo_f' \(the preset fixes it"),
        ("swa", dict(fading_window=8), r"^fading_window: expected 0 for 'swa'"),
        ("swa", dict(innovation_loss_weight=1.0), r"^innovation_loss_weight: expected 0 for 'swa'"),
        ("mamba2", dict(window=64), r"^window: expected 0 for 'mamba2'"),
        (["swa", "mamba2"], dict(fading_window=8), r"^fading_window: expected 0 for 'swa' / 0 for 'mamba2'"),
        ("swa", dict(context=512), r"^context: expected no context without a 'transformer' layer"),
        ("swa", dict(fading_offset=3), r"^fading_offset: expected None for 'swa'"),
        ("transformer", dict(fading_offset=3), r"^fading_offset: expected None for 'transformer'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ModelConfig.preset(names, d_model=32, **kw)
    # a fixed field given its fixed value changes nothing and is fine; a list takes what any layer takes
    assert ModelConfig.preset("swa", d_model=32, eidetic_capacity=0).layers[0].eidetic_capacity == 0
    for names in ("transformer", "swa", "mamba2", ["swa", "mamba2"]):  # None is fading_offset's fixed value
        assert ModelConfig.preset(names, d_model=32, fading_offset=None).layers[0].fading_offset is None
    cfg = ModelConfig.preset(["transformer", "mamba2"], d_model=32, context=96)
    assert [c.window for c in cfg.layers] == [96, 0]


def test_layer_presets_with_attention_need_a_window():
    for name, kw, message in [
        ("swa", dict(window=0), r"^window: expected an int >= 1 for the 'swa' preset"),
        ("bmojo_f", dict(window=0), r"^window: expected an int >= 1 for the 'bmojo_f' preset"),
        ("transformer", dict(context=0), r"^context: expected an int >= 1 for the 'transformer' preset"),
        ("bmojo", dict(context=64), r"^context: expected no context for the 'bmojo' preset"),
    ]:
        with pytest.raises(ConfigError, match=message):
            LayerConfig.preset(name, d_model=32, **kw)


@pytest.mark.parametrize("base", ["bmojo_f", "bmojo"])
def test_gated_presets_are_the_published_layer_plus_the_bypass(base):
    """Layer-v2 presets (docs/experiments.md, `bmojo mqar --full`): the base preset with
    ssm_bypass="gated", nothing else; a fresh model computes what the published one does (g = 0)."""
    import torch

    gated = ModelConfig.preset(f"{base}_gated", vocab_size=50, d_model=32, n_layers=2, window=8)
    plain = ModelConfig.preset(base, vocab_size=50, d_model=32, n_layers=2, window=8)
    assert [layer.ssm_bypass for layer in gated.layers] == ["gated", "gated"]
    assert [layer.replace(ssm_bypass="none") for layer in gated.layers] == list(plain.layers)
    with pytest.raises(ConfigError, match="ssm_bypass: expected 'gated'"):
        LayerConfig.preset(f"{base}_gated", ssm_bypass="none")
    torch.manual_seed(0)
    a = BMojoLM(gated)
    b = BMojoLM(plain)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k in b.state_dict()})
    x = torch.randint(0, 50, (2, 24))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


# ----- float fields become float32 parameters; errors in a model's layers name the layer -----


@pytest.mark.parametrize(
    "field, value",
    [("dt_max", 1e39), ("A_init_max", 1e39), ("rope_theta", 1e300), ("dt_min", 1e-50), ("A_init_min", 1e-50)],
)
def test_layer_float_fields_stay_in_float32_range(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: expected a number in \[1e-37, 1e\+37\]"):
        LayerConfig(**{field: value})


@pytest.mark.parametrize("field, value", [("init_std", 1e300), ("init_std", 1e38), ("norm_eps", 1e300)])
def test_model_float_fields_stay_in_float32_range(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: expected a number in \[1e-37, 1e\+37\]"):
        ModelConfig(**{field: value})


def test_layer_built_at_the_float_bounds_has_finite_parameters():
    """The extremes accepted still give finite float32 parameters (log-uniform dt, log A, normal init)."""
    import torch

    small = dict(d_model=16, window=4, n_heads=2, ssm_head_dim=8, eidetic_capacity=2, eidetic_per_chunk=1)
    for kw, model_kw in [
        (dict(dt_min=1e37, dt_max=1e37, A_init_min=1e37, A_init_max=1e37), dict(init_std=1e37)),
        (dict(dt_min=1e-37, dt_max=1e-37, A_init_min=1e-37, A_init_max=1e-37), dict(init_std=1e-37)),
    ]:
        cfg = ModelConfig(vocab_size=8, d_model=16, layers=(LayerConfig(**small, **kw),), **model_kw)
        torch.manual_seed(0)
        model = BMojoLM(cfg)
        bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
        assert bad == [], (kw, bad)


def test_layer_errors_of_a_model_config_name_the_layer():
    data = ModelConfig.preset("swa", d_model=32, window=8).to_dict()
    data["layers"][1]["window"] = -1
    with pytest.raises(ConfigError, match=r"^layers\[1\]\.window: expected an int >= 0, got -1$"):
        ModelConfig.from_dict(data)
    data["layers"][1] = 3
    with pytest.raises(ConfigError, match=r"^layers\[1\]: expected a dict, got 'int'$"):
        ModelConfig.from_dict(data)
    data["layers"][1] = {"windw": 8}
    with pytest.raises(ConfigError, match=r"^layers\[1\]: expected only known fields .*\['windw'\]$"):
        ModelConfig.from_json(json.dumps(data))
    with pytest.raises(ConfigError, match=r"^window: expected an int >= 0"):  # a lone layer names no index
        LayerConfig.from_dict({"window": -1})
