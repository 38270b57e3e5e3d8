"""Config validation, presets and JSON round trips (spec §4, §6)."""

from __future__ import annotations

import json

import pytest
from bmojo import BMojoLM, ConfigError, LayerConfig, ModelConfig
from bmojo.config import LAYER_PRESETS


@pytest.mark.parametrize("name", LAYER_PRESETS)
def test_json_round_trip_every_preset(name):
    cfg = ModelConfig.preset(name, vocab_size=100, d_model=64, n_layers=3, window=16)
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
