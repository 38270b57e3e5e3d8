"""Issue 10, item 11: a bad state file gives a ``StateError`` naming the file and what is wrong —
never a raw ``KeyError``/``StopIteration``/``IndexError`` — and negative positions, aliased layer
indices (``layers.-1``, ``layers.01``) and unknown versions are refused, all before any tensor is
read."""

from __future__ import annotations

import pytest
import torch
from bmojo import BMojoLM, ModelConfig
from bmojo.state import FORMAT, StateError
from safetensors.torch import load_file, save_file

SIZES = dict(vocab_size=17, d_model=16, n_layers=2, n_heads=2, ssm_head_dim=8, ssm_chunk_size=4, window=4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = BMojoLM(ModelConfig.preset("bmojo", **SIZES)).eval()
    _, state = m.prefill(torch.randint(0, 17, (2, 5)))
    path = tmp_path_factory.mktemp("state") / "s.safetensors"
    m.save_state(state, path)
    return m, path


def _rewrite(src, dst, *, meta=None, drop_meta=(), rename=None, edit=None):
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        md = dict(f.metadata())
    md.update(meta or {})
    for k in drop_meta:
        md.pop(k)
    ts = load_file(str(src))
    if edit is not None:
        ts = edit(ts)
    if rename:
        ts = {rename.get(k, k): v for k, v in ts.items()}
    save_file(ts, str(dst), metadata=md)
    return dst


def test_round_trip_still_works(saved):
    m, path = saved
    state = m.load_state(path)
    assert state.positions.tolist() == [5, 5]


def _positions(values):
    return lambda ts: {**ts, "positions": torch.tensor(values)}


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(edit=lambda ts: {k: v for k, v in ts.items() if k != "positions"}), r"tensors: expected a 'positions'"),
        (dict(edit=_positions([-7, 0])), r"positions: expected positions >= 0, got \[-7, 0\]"),
        (dict(edit=_positions([1.5, 2.0])), r"positions: expected a 1-d integer tensor"),
        (dict(edit=_positions([[1, 2]])), r"positions: expected a 1-d integer tensor"),
        (dict(meta={"version": "99"}), r"expected state version '2', got '99'"),
        (dict(drop_meta=("version",)), r"expected state version '2', got None"),
        (dict(meta={"config": "{not json"}), r"metadata config: expected the model config as JSON"),
        (dict(edit=lambda ts: {"positions": ts["positions"]}), r"tensors: expected at least one state tensor"),
        (dict(rename={"layers.1.fading.ssm": "layers.-1.fading.ssm"}), r"tensor name: .*'layers\.-1\."),
        (dict(rename={"layers.1.fading.ssm": "layers.01.fading.ssm"}), r"tensor name: .*'layers\.01\."),
        (dict(rename={"layers.1.fading.ssm": "layers.7.fading.ssm"}), r"tensor name: .*with i in \[0, 2\)"),
        (dict(rename={"layers.1.fading.ssm": "junk"}), r"tensor name: .*'junk'"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(saved, tmp_path, change, match):
    m, path = saved
    if "rename" in change:
        names = set(load_file(str(path)))
        assert set(change["rename"]) <= names, f"fixture keys changed: {sorted(names)}"
    bad = _rewrite(path, tmp_path / "bad.safetensors", **change)
    with pytest.raises(StateError, match=match) as err:
        m.load_state(bad)
    assert str(bad) in str(err.value)


def test_corrupt_and_wrong_format_files(saved, tmp_path):
    m, _ = saved
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(StateError, match=r"junk\.safetensors: file: expected a safetensors file"):
        m.load_state(junk)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"format": "pt"})
    with pytest.raises(StateError, match=rf"other\.safetensors: metadata format: expected '{FORMAT}'"):
        m.load_state(other)


def test_bad_positions_in_memory_are_refused(saved):
    m, path = saved
    state = m.load_state(path)
    state.positions = torch.tensor([-7, 0])
    with pytest.raises(StateError, match=r"state\.positions: expected positions >= 0, got \[-7, 0\]"):
        m.step(torch.zeros(2, dtype=torch.long), state)
    state.positions = torch.tensor([3, 3], dtype=torch.int32)
    with pytest.raises(StateError, match=r"state\.positions: expected \(2,\) torch\.int64"):
        m.step(torch.zeros(2, dtype=torch.long), state)
