"""``bmojo_mlx`` generation arguments: temperature (a finite real >= 0, as core's
``BMojoLM.generate``), sampling that stays greedy-like for tiny temperatures instead of overflowing,
prompt ids that are ints in the vocabulary (never truncated), and a seed that is a non-negative int."""

from __future__ import annotations

import bmojo_mlx
import mlx.core as mx
import numpy as np
import pytest
from bmojo import ModelConfig
from bmojo_mlx import BMojoMLX
from bmojo_mlx.generation import encode, generate_step
from mlx.utils import tree_map

CONFIG = ModelConfig.preset("swa", vocab_size=256, n_layers=1, d_model=32, window=8, n_heads=4)


@pytest.fixture(scope="module")
def model():
    mx.random.seed(0)
    m = BMojoMLX(CONFIG)
    m.update(tree_map(lambda v: v * 20, m.parameters()))  # logits far from uniform
    mx.eval(m.parameters())
    return m


def _tokens(model, ids, **kwargs):
    return [tok for tok, _ in generate_step(model, ids, max_tokens=6, **kwargs)]


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), -1.0, True, "0.5", None])
def test_temperature_must_be_a_finite_number_at_least_zero(model, temperature):
    msg = r"temperature: expected a finite number >= 0 \(0: greedy\), got"
    with pytest.raises(ValueError, match=msg):
        _tokens(model, [65, 66], temperature=temperature)
    with pytest.raises(ValueError, match=msg):
        bmojo_mlx.generate(model, "ab", max_tokens=2, temperature=temperature)


@pytest.mark.parametrize("temperature", [1e-40, 1e-300])
def test_tiny_temperature_is_greedy_like(model, temperature):
    greedy = _tokens(model, [65, 66], temperature=0)
    for seed in range(5):
        mx.random.seed(seed)
        assert _tokens(model, [65, 66], temperature=temperature) == greedy


def test_temperature_one_samples(model):
    """Not always the greedy tokens (the scaling must not make every temperature greedy)."""
    greedy = _tokens(model, [65, 66], temperature=0)
    runs = []
    for seed in range(5):
        mx.random.seed(seed)
        runs.append(_tokens(model, [65, 66], temperature=1e3))
    assert any(r != greedy for r in runs)


@pytest.mark.parametrize(
    ("prompt", "got"),
    [
        ([65.9, 66.2], r"65\.9 \(float\) at index 0"),
        ([65, True], r"True \(bool\) at index 1"),
        ([65, "b"], r"'b' \(str\) at index 1"),
        ([65, 256], r"256 at index 1"),
        ([-1], r"-1 at index 0"),
        (mx.array([65.0, 66.0]), r"an mx\.array of dtype mlx\.core\.float32"),
        (mx.array([[65, 66]]), r"an array of shape \(1, 2\)"),
        (np.array([65.0]), r"65\.0 \(float64\) at index 0"),
        (np.array(65), r"an array of shape \(\)"),
        ("AB", r"'AB' \(str\)"),
    ],
)
def test_prompt_ids_must_be_ints_in_the_vocabulary(model, prompt, got):
    if not isinstance(prompt, str):  # encode takes text too
        with pytest.raises(ValueError, match=r"prompt: expected token ids \(ints in \[0, 256\)\), got " + got):
            encode(model, prompt)
    with pytest.raises(ValueError, match=r"prompt_ids: expected token ids \(ints in \[0, 256\)\), got " + got):
        _tokens(model, prompt)


def test_prompt_ids_as_ints_numpy_or_mx(model):
    want = _tokens(model, [65, 66])
    assert encode(model, [65, 66]) == encode(model, np.array([65, 66])) == encode(model, mx.array([65, 66]))
    assert _tokens(model, np.array([65, 66])) == _tokens(model, mx.array([65, 66])) == want
    assert encode(model, "AB") == encode(model, b"AB") == [65, 66]


@pytest.mark.parametrize("seed", [1.5, -1, True, "1", 2**64])
def test_seed_must_be_a_non_negative_int(model, seed):
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*64\), got"):
        bmojo_mlx.generate(model, "ab", max_tokens=2, temperature=1.0, seed=seed)


def test_seed_repeats(model):
    a = bmojo_mlx.generate(model, "ab", max_tokens=6, temperature=1.0, seed=3)
    assert a == bmojo_mlx.generate(model, "ab", max_tokens=6, temperature=1.0, seed=3)
