"""causal_conv1d / causal_conv1d_step (spec §1, §7) against the explicit-sum oracle."""

from __future__ import annotations

import pytest
import torch
from bmojo.ops.causal_conv1d import causal_conv1d, causal_conv1d_step
from bmojo.ops.causal_conv1d.naive import causal_conv1d_naive
from conftest import TOL, assert_close, randn


@pytest.mark.parametrize("b, T, ch, K", [(1, 9, 5, 4), (3, 2, 4, 4), (2, 17, 3, 2), (2, 6, 6, 1), (1, 1, 3, 3)])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_forward_matches_naive(b, T, ch, K, with_state, with_bias, activation):
    x = randn(b, T, ch)
    w = randn(ch, K)
    bias = randn(ch) if with_bias else None
    h0 = randn(b, K - 1, ch) if with_state else None
    y, st = causal_conv1d(x, w, bias, h0, activation)
    y_ref, st_ref = causal_conv1d_naive(x, w, bias, h0, activation)
    assert_close(y, y_ref, 1e-13, "y")
    assert st.shape == (b, K - 1, ch)
    assert torch.equal(st, st_ref)


def test_float32_matches_float64_naive():
    x, w, bias, h0 = randn(2, 11, 7), randn(7, 4), randn(7), randn(2, 3, 7)
    y, _ = causal_conv1d(x.float(), w.float(), bias.float(), h0.float())
    y_ref, _ = causal_conv1d_naive(x, w, bias, h0)
    assert y.dtype == torch.float32
    assert_close(y, y_ref, TOL[torch.float32], "y")


def test_gradients_match_naive():
    x, w, bias, h0 = (randn(*s, requires_grad=True) for s in [(2, 7, 3), (3, 4), (3,), (2, 3, 3)])
    gy, gs = randn(2, 7, 3), randn(2, 3, 3)

    def grads(fn):
        y, st = fn(x, w, bias, h0)
        return torch.autograd.grad((y * gy).sum() + (st * gs).sum(), (x, w, bias, h0))

    for name, g, g_ref in zip(("x", "weight", "bias", "state"), grads(causal_conv1d), grads(causal_conv1d_naive)):
        assert_close(g, g_ref, 1e-12, f"grad {name}")


def test_gradcheck():
    args = tuple(randn(*s, requires_grad=True) for s in [(1, 5, 2), (2, 3), (2,), (1, 2, 2)])
    assert torch.autograd.gradcheck(lambda *a: causal_conv1d(*a), args)


def test_step_matches_sequence():
    x, w, bias, h0 = randn(2, 9, 5), randn(5, 4), randn(5), randn(2, 3, 5)
    y_ref, st_ref = causal_conv1d(x, w, bias, h0)
    st = h0
    ys = []
    for t in range(x.shape[1]):
        y, st = causal_conv1d_step(x[:, t], st, w, bias)
        ys.append(y)
    assert_close(torch.stack(ys, 1), y_ref, 1e-13, "y")
    assert torch.equal(st, st_ref)


def test_split_sequence_matches_one_call():
    x, w, bias = randn(2, 13, 4), randn(4, 4), randn(4)
    y_ref, st_ref = causal_conv1d(x, w, bias)
    y1, st1 = causal_conv1d(x[:, :2], w, bias)  # piece shorter than K-1
    y2, st2 = causal_conv1d(x[:, 2:7], w, bias, st1)
    y3, st3 = causal_conv1d(x[:, 7:], w, bias, st2)
    assert_close(torch.cat([y1, y2, y3], 1), y_ref, 1e-13, "y")
    assert torch.equal(st3, st_ref)


def test_no_channels_is_empty_and_differentiable():
    """channels = 0 (legal: F.conv1d alone refuses groups=0): empty outputs that stay functions of
    the inputs, so a backward through them runs, as it does at batch 0."""
    x, w, bias, h0 = (randn(*s, requires_grad=True) for s in ((2, 5, 0), (0, 4), (0,), (2, 3, 0)))
    y, st = causal_conv1d(x, w, bias, h0)
    assert y.shape == (2, 5, 0) and st.shape == (2, 3, 0)
    (gx,) = torch.autograd.grad(y.sum(), x)
    gx2, gh = torch.autograd.grad(st.sum(), (x, h0))
    assert gx.shape == gx2.shape == x.shape and gh.shape == h0.shape
