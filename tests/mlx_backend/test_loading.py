"""``bmojo_mlx.load`` refuses what core's ``BMojoLM.from_pretrained`` refuses: weights stored with
another config than ``config.json`` (the safetensors metadata carries it), tensor byte ranges that
overlap, leave gaps or leave bytes over (the safetensors format's rule), a non-floating ``dtype=``,
and a transformers ``save_pretrained`` directory (named as such). Files without the stored config
still load."""

from __future__ import annotations

import json
import struct

import bmojo_mlx
import mlx.core as mx
import numpy as np
import pytest
import torch
from bmojo import BMojoLM, ModelConfig
from bmojo_mlx.loading import CheckpointError

CONFIG = ModelConfig.preset("swa", vocab_size=256, n_layers=2, d_model=32, window=8, n_heads=4)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = BMojoLM(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.15)
    model.save_pretrained(tmp_path)
    return model, tmp_path


def _edit_header(path, edit, extra: bytes = b""):
    """Rewrite a safetensors file with ``edit(header)`` applied (the data bytes kept, ``extra`` appended)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :] + extra)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).numpy()


# ----- item 1: the config stored with the weights -----
def test_config_json_differing_from_the_stored_config_is_refused(saved):
    _, directory = saved
    data = json.loads((directory / "config.json").read_text())
    for layer in data["layers"]:  # shape-preserving edits: every tensor still matches
        layer["rope_theta"] = 500000.0
    (directory / "config.json").write_text(json.dumps(data))
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: .*saved for another config than config\.json "
        r"\(layers\[0\]\.rope_theta: 10000\.0 vs 500000\.0; "
        r"layers\[1\]\.rope_theta: 10000\.0 vs 500000\.0\)",
    ):
        bmojo_mlx.load(directory)


def test_stored_config_with_other_layer_count_names_it(saved):
    _, directory = saved
    other = CONFIG.replace(layers=CONFIG.layers[:1])
    weights = directory / "model.safetensors"
    _edit_header(weights, lambda h: h["__metadata__"].update(config=other.to_json()))
    with pytest.raises(CheckpointError, match=r"layers: 1 entries vs 2"):
        bmojo_mlx.load(directory)


def test_bad_metadata_is_refused(saved):
    _, directory = saved
    weights = directory / "model.safetensors"
    _edit_header(weights, lambda h: h["__metadata__"].update(config="{not json"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: metadata config: expected"):
        bmojo_mlx.load(directory)
    _edit_header(weights, lambda h: h.update(__metadata__={"config": 3}))
    with pytest.raises(CheckpointError, match=r"__metadata__: expected a map of strings to strings, got"):
        bmojo_mlx.load(directory)


def test_weights_without_a_stored_config_still_load(saved):
    model, directory = saved
    _edit_header(directory / "model.safetensors", lambda h: h.pop("__metadata__"))
    loaded = bmojo_mlx.load(directory)
    ids = [[1, 2, 3, 4, 5]]
    assert np.allclose(np.array(loaded(mx.array(ids))), _logits(model, ids), rtol=1e-4, atol=1e-5)


# ----- item 2: byte ranges -----
Q, K = "blocks.0.mixer.q_proj.weight", "blocks.0.mixer.k_proj.weight"


def test_overlapping_byte_ranges_are_refused(saved):
    _, directory = saved

    weights = directory / "model.safetensors"
    original = weights.read_bytes()

    def point_q_at_k(header):  # k_proj's bytes come first: q_proj then overlaps them
        assert header[K]["data_offsets"][0] < header[Q]["data_offsets"][0]
        header[Q]["data_offsets"] = list(header[K]["data_offsets"])

    _edit_header(weights, point_q_at_k)
    with pytest.raises(CheckpointError, match=rf"{Q}: expected data_offsets starting at the end of {K} .*overlap"):
        bmojo_mlx.load(directory)
    weights.write_bytes(original)

    def point_k_at_q(header):  # the review's case: k_proj's own bytes left unindexed (a gap)
        header[K]["data_offsets"] = list(header[Q]["data_offsets"])

    _edit_header(weights, point_k_at_q)
    with pytest.raises(CheckpointError, match=r"expected data_offsets starting at .*\(a gap of \d+ bytes\)"):
        bmojo_mlx.load(directory)


def test_gaps_and_bytes_left_over_are_refused(saved):
    _, directory = saved
    weights = directory / "model.safetensors"
    original = weights.read_bytes()

    def shift_last(header):  # the last tensor moved 8 bytes on: a gap before it, the file still ends with it
        last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        header[last]["data_offsets"] = [o + 8 for o in header[last]["data_offsets"]]

    _edit_header(weights, shift_last, extra=b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"data_offsets .*gap of 8 bytes"):
        bmojo_mlx.load(directory)
    weights.write_bytes(original + b"\0" * 8)  # bytes after the last tensor
    with pytest.raises(CheckpointError, match=r"expected the tensors to fill the \d+ data bytes, got 8 bytes after"):
        bmojo_mlx.load(directory)


# ----- item 3: dtype= -----
@pytest.mark.parametrize("dtype", [mx.int32, mx.bool_, "float16", torch.float16])
def test_load_dtype_must_be_a_floating_mx_dtype(saved, dtype):
    _, directory = saved
    with pytest.raises(ValueError, match=r"dtype: expected None or a floating mx dtype \(mx\.float16, .*\), got"):
        bmojo_mlx.load(directory, dtype=dtype)


def test_load_dtype_is_checked_before_the_files(tmp_path):
    with pytest.raises(ValueError, match="dtype: expected None or a floating mx dtype"):
        bmojo_mlx.load(tmp_path / "missing", dtype=mx.int32)


def test_load_dtype_converts(saved):
    _, directory = saved
    loaded = bmojo_mlx.load(directory, dtype=mx.float16)
    assert loaded.embed.weight.dtype == mx.float16


# ----- item 4: a transformers save_pretrained directory -----
def test_transformers_directory_is_named(saved):
    _, directory = saved
    hf = {
        "architectures": ["BMojoForCausalLM"],
        "bmojo_config": CONFIG.to_dict(),
        "model_type": "bmojo",
        "transformers_version": "4.0",
    }
    (directory / "config.json").write_text(json.dumps(hf))
    with pytest.raises(
        CheckpointError,
        match=r"config\.json: expected a BMojoLM\.save_pretrained config, got a transformers checkpoint "
        r"\('bmojo_config'.*model\.core\.save_pretrained",
    ):
        bmojo_mlx.load(directory)
