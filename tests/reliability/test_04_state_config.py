"""Issue 10, item 4: a ``DecodeState`` from another config (or batch size, or dtype) is refused
by ``step``, ``prefill`` and ``save_state``: every key, shape and dtype is compared with what
``init_state`` gives for this model."""

from __future__ import annotations

import pytest
import torch
from bmojo import BMojoLM, ModelConfig
from bmojo.state import StateError

SIZES = dict(vocab_size=17, d_model=16, n_layers=2, n_heads=2, ssm_head_dim=8, ssm_chunk_size=4)


def model(window=8, **kw):
    return BMojoLM(ModelConfig.preset("bmojo", window=window, **SIZES, **kw)).eval()


def test_state_of_another_window_is_refused(tmp_path):
    w8, w4 = model(8), model(4)
    ids = torch.randint(0, 17, (2, 5))
    _, state = w8.prefill(ids)
    with pytest.raises(StateError, match=r"state\.layers\[0\]\..*expected .* got"):
        w4.step(ids[:, 0], state)
    with pytest.raises(StateError, match=r"state\.layers\[0\]"):
        w4.prefill(ids, state)
    with pytest.raises(StateError, match=r"state\.layers\[0\]"):
        w4.save_state(state, tmp_path / "s.safetensors")


def test_state_with_a_missing_or_extra_key_is_refused():
    m = model()
    ids = torch.randint(0, 17, (1, 3))
    _, state = m.prefill(ids)
    key = next(iter(state.layers[1]))
    state.layers[1].pop(key)
    with pytest.raises(StateError, match=rf"state\.layers\[1\]: expected tensors .*'{key}'"):
        m.step(ids[:, 0], state)
    _, state = m.prefill(ids)
    state.layers[0]["extra"] = torch.zeros(1)
    with pytest.raises(StateError, match=r"state\.layers\[0\]: expected tensors"):
        m.step(ids[:, 0], state)


def test_state_of_another_dtype_is_refused():
    m = model()
    ids = torch.randint(0, 17, (1, 3))
    state = m.init_state(1, dtype=torch.float64)
    with pytest.raises(StateError, match=r"torch\.float32 .*got .*torch\.float64"):
        m.prefill(ids, state)


def test_a_state_of_the_same_config_still_works():
    m = model()
    ids = torch.randint(0, 17, (2, 6))
    _, state = m.prefill(ids[:, :5])
    step_logits, state = m.step(ids[:, 5], state)
    full = m(ids)
    torch.testing.assert_close(step_logits, full[:, 5], rtol=1e-4, atol=1e-4)
    assert state.position == 6
