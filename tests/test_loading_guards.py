"""Loaders check what they are given before reading or building anything: the device of
``from_pretrained``, integer sizes torch could not hold, JSON nested too deep for the parser,
and a blank ``--checkpoint`` (review of the core package, items 1, 2, 3 and 9)."""

from __future__ import annotations

import json

import pytest
import torch
from bmojo import BMojoLM, ConfigError, ModelConfig, StateError
from bmojo.cli import main
from bmojo.config import INT_MAX
from bmojo.jobs import checkpoint as ckpt
from safetensors.torch import load_file, save_file

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def saved(tmp_path):
    cfg = ModelConfig.preset("swa", vocab_size=17, d_model=16, n_layers=1, n_heads=2, window=4)
    BMojoLM(cfg).save_pretrained(tmp_path)
    return tmp_path


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _drop_stored_config(path):
    """Weights without the config in their metadata (files written before it was stored)."""
    tensors = load_file(str(path / "model.safetensors"))
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


# ----- item 1: from_pretrained(device=...) is a device that exists here -----


@pytest.mark.parametrize("device", ["meta", *([] if torch.cuda.is_available() else ["cuda", "cuda:3"])])
def test_from_pretrained_refuses_an_unusable_device_before_reading(tmp_path, device):
    with pytest.raises(ValueError, match=rf"^device: expected an available torch device, got '{device}'"):
        BMojoLM.from_pretrained(tmp_path / "not-even-there", device=device)  # before any file is opened


def test_from_pretrained_device_cpu_still_loads(saved):
    assert next(BMojoLM.from_pretrained(saved, device="cpu").parameters()).device.type == "cpu"


# ----- item 2: integer fields are capped; loaders never let torch size a huge config -----


@pytest.mark.parametrize("value", [10**30, 2**62, INT_MAX + 1])
def test_integer_fields_are_capped(value):
    with pytest.raises(ConfigError, match=rf"^vocab_size: expected an int <= 2\*\*53 = {INT_MAX}, got {value}$"):
        ModelConfig(vocab_size=value)
    with pytest.raises(ConfigError, match=r"^layers\[0\]\.d_ff: expected an int <= 2\*\*53"):
        ModelConfig.from_dict({"layers": [{"d_ff": value}]})
    assert ModelConfig(vocab_size=INT_MAX).vocab_size == INT_MAX  # the cap itself is a valid size


@pytest.mark.parametrize("value", [10**30, 2**62])
def test_load_model_names_a_huge_vocab_field(saved, value):
    _edit_config(saved, vocab_size=value)
    with pytest.raises(
        ckpt.CheckpointError, match=r"config\.json: not a valid model config: vocab_size: expected an int <="
    ):
        ckpt.load_model(saved)
    with pytest.raises(StateError, match=r"config\.json: vocab_size: expected an int <="):
        BMojoLM.from_pretrained(saved)


def test_config_whose_tensors_torch_cannot_size_is_refused_by_both_loaders(saved, capsys):
    """Each size is valid, their product is not (2**53 · 1024 · 4 bytes >= 2**63): without a stored
    config to compare with, the loaders refuse it instead of torch's RuntimeError."""
    _drop_stored_config(saved)
    cfg = json.loads((saved / "config.json").read_text())
    cfg["vocab_size"], cfg["d_model"] = INT_MAX, 1024
    for layer in cfg["layers"]:
        layer["d_model"] = 1024
    (saved / "config.json").write_text(json.dumps(cfg))
    message = (
        r"config\.json: (not a valid model config: )?model config: expected sizes whose tensors stay under 2\*\*63"
    )
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load_model(saved)
    with pytest.raises(StateError, match=message):
        BMojoLM.from_pretrained(saved)
    assert main(["generate", "--checkpoint", str(saved), "--prompt", "ab", "--max-new-tokens", "1"]) == 2
    assert "bmojo generate: error: " in capsys.readouterr().err


def test_load_model_compares_the_stored_config_before_building_the_template(saved, monkeypatch):
    _edit_config(saved, vocab_size=2**40)  # the weights' stored config says 17
    built = []
    real_init = BMojoLM.__init__
    monkeypatch.setattr(BMojoLM, "__init__", lambda self, config: built.append(config) or real_init(self, config))
    with pytest.raises(ckpt.CheckpointError, match=r"saved for another config than config\.json \(vocab_size: 17 vs"):
        ckpt.load_model(saved)
    assert built == []


# ----- item 3: JSON nested too deep is the loader's error, naming the file -----


def test_deep_json_config_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^model config: expected JSON, got nesting too deep to read"):
        ModelConfig.from_json(DEEP)


def test_deep_json_in_checkpoint_files_names_the_file(saved, tmp_path_factory):
    (saved / "config.json").write_text(DEEP)
    with pytest.raises(StateError, match=r"config\.json: model config: expected JSON, got nesting too deep"):
        BMojoLM.from_pretrained(saved)
    with pytest.raises(ckpt.CheckpointError, match=r"config\.json: expected JSON \(model config\), got unreadable"):
        ckpt.load_model(saved)
    run = tmp_path_factory.mktemp("run")
    (run / ckpt.LATEST).write_text(DEEP)
    with pytest.raises(ckpt.CheckpointError, match=rf"{ckpt.LATEST}: expected JSON .*nesting too deep"):
        ckpt.latest(run)


def test_deep_json_in_weights_metadata_is_a_state_error(saved):
    tensors = load_file(str(saved / "model.safetensors"))
    save_file(tensors, str(saved / "model.safetensors"), metadata={"format": "pt", "config": DEEP})
    with pytest.raises(StateError, match=r"model\.safetensors: metadata config: expected a valid model config"):
        BMojoLM.from_pretrained(saved)


# ----- item 9: a blank --checkpoint is not the current directory -----


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_checkpoint_is_refused(saved, monkeypatch, capsys, blank):
    monkeypatch.chdir(saved)  # a loadable model right here: "" must not load it
    with pytest.raises(
        ckpt.CheckpointError, match=rf"^--checkpoint: expected a run or checkpoint directory, got '{blank}'"
    ):
        ckpt.resolve(blank)
    assert main(["generate", "--checkpoint", blank, "--prompt", "ab", "--max-new-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("bmojo generate: error: --checkpoint: expected a run or checkpoint directory") and "blank" in err
    )
    assert main(["eval-length", "--checkpoint", str(saved), blank]) == 2
    assert "bmojo eval-length: error: --checkpoint: expected" in capsys.readouterr().err
