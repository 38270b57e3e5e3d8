"""Issue 10, item 9: loading is strict and cheap to refuse. Configs reject non-finite numbers;
core ``from_pretrained`` checks the weights file's header before allocating the model and refuses
weights saved under another config; the HF path refuses a checkpoint missing weights instead of
initialising them randomly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from bmojo import BMojoLM, LayerConfig, ModelConfig
from bmojo.state import StateError

SIZES = dict(vocab_size=17, d_model=16, n_layers=2, n_heads=2, ssm_head_dim=8, ssm_chunk_size=4, window=4)


@pytest.mark.parametrize("field", ["norm_eps", "dt_max", "rope_theta", "A_init_max"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_layer_numbers_must_be_finite(field, value):
    with pytest.raises(ValueError, match=rf"{field}: expected a finite number"):
        LayerConfig(**{field: value})


def test_model_numbers_must_be_finite():
    with pytest.raises(ValueError, match=r"norm_eps: expected a finite number"):
        ModelConfig(norm_eps=math.inf)


def _forbid_real_allocation(monkeypatch):
    """Building the huge model for real would try to allocate ~128 GiB: fail instead."""
    real_init = BMojoLM.__init__

    def guarded(self, config):
        if config.vocab_size > 10**6 and torch.get_default_device().type != "meta":
            raise AssertionError("from_pretrained allocated the model before checking its size")
        real_init(self, config)

    monkeypatch.setattr(BMojoLM, "__init__", guarded)


@pytest.fixture
def saved(tmp_path):
    model = BMojoLM(ModelConfig.preset("bmojo", **SIZES))
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_round_trip(saved):
    model, path = saved
    loaded = BMojoLM.from_pretrained(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_huge_vocab_is_refused_before_allocation(saved, monkeypatch):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["vocab_size"] = 2**31
    (path / "config.json").write_text(json.dumps(cfg))
    _forbid_real_allocation(monkeypatch)
    with pytest.raises(StateError, match=r"another config than config\.json \(vocab_size: 17 vs 2147483648\)"):
        BMojoLM.from_pretrained(path)


def test_weights_under_a_config_with_other_heads_are_refused(saved):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    for layer in cfg["layers"]:
        layer["n_heads"] = 4  # same weight shapes (d_model 16 = 4 x 4), different model
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StateError, match=r"saved for another config .*n_heads"):
        BMojoLM.from_pretrained(path)


def test_shape_mismatch_is_found_in_the_header_before_allocation(saved, monkeypatch):
    """Weights without the config metadata (older files): the header check still runs first."""
    from safetensors.torch import load_file, save_file

    _, path = saved
    tensors = load_file(str(path / "model.safetensors"))
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((path / "config.json").read_text())
    cfg["vocab_size"] = 2**31
    (path / "config.json").write_text(json.dumps(cfg))
    _forbid_real_allocation(monkeypatch)
    with pytest.raises(StateError, match=r"embed\.weight: expected shape \(2147483648, 16\), got \(17, 16\)"):
        BMojoLM.from_pretrained(path)


def test_hf_refuses_a_config_with_an_extra_layer(tmp_path):
    pytest.importorskip("transformers")
    bmojo_hf = pytest.importorskip("bmojo_hf")
    core = ModelConfig.preset("bmojo", **SIZES)
    model = bmojo_hf.BMojoForCausalLM(bmojo_hf.BMojoConfig.from_core(core))
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["bmojo_config"]["layers"].append(cfg["bmojo_config"]["layers"][-1])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"every weight of its config; missing \[.*blocks\.2\."):
        bmojo_hf.BMojoForCausalLM.from_pretrained(tmp_path)
    # The unmodified checkpoint still loads (and output_loading_info still works).
    cfg["bmojo_config"]["layers"].pop()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    _, info = bmojo_hf.BMojoForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
