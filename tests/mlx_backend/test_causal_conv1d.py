"""causal_conv1d / causal_conv1d_step on mx.array vs core's reference: forward and gradients,
kernel widths 1 and 4, T < K, a state carried across a split, and argument errors."""

from __future__ import annotations

import pytest
import torch
from bmojo.ops.causal_conv1d.reference import causal_conv1d as ref_conv
from bmojo.ops.causal_conv1d.reference import causal_conv1d_step as ref_step
from bmojo_mlx.ops.causal_conv1d.array import causal_conv1d, causal_conv1d_step

from .helpers import check_against_reference, mxa, rel, tt

CASES = [
    # (b, T, ch, K, bias, state, activation)
    (2, 9, 6, 4, True, True, "silu"),  # the Mamba-2 width
    (1, 2, 5, 4, False, True, None),  # T < K: the output reads the initial state
    (2, 7, 3, 1, True, False, "silu"),  # K = 1: an empty state
    (1, 1, 4, 3, True, False, None),  # T = 1, zero initial state
]


def conv_args(b, T, ch, K, bias, state, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return r(b, T, ch), r(ch, K), r(ch) if bias else None, r(b, K - 1, ch) if state else None


@pytest.mark.parametrize("case", CASES, ids=[f"T{c[1]}-K{c[3]}-{c[6]}" for c in CASES])
def test_conv_matches_reference(case):
    b, T, ch, K, bias, state, act = case
    args = (*conv_args(b, T, ch, K, bias, state), act)
    check_against_reference(causal_conv1d, ref_conv, args, {}, tol=1e-13, grad_tol=1e-12)
    args32 = (*conv_args(b, T, ch, K, bias, state, torch.float32), act)
    check_against_reference(causal_conv1d, ref_conv, args32, {}, tol=1e-6)


def test_steps_continue_the_sequence():
    x, w, bias, s0 = conv_args(2, 8, 5, 4, True, True)
    y_ref, s_ref = ref_conv(x, w, bias, s0)
    y, s = causal_conv1d(mxa(x[:, :3]), mxa(w), mxa(bias), mxa(s0))
    ys = [tt(y)]
    for t in range(3, 8):
        check_against_reference(causal_conv1d_step, ref_step, (x[:, t], tt(s), w, bias), {}, tol=1e-13, grad_tol=1e-12)
        y, s = causal_conv1d_step(mxa(x[:, t]), s, mxa(w), mxa(bias))
        ys.append(tt(y)[:, None])
    assert rel(torch.cat(ys, 1), y_ref) < 1e-13 and rel(tt(s), s_ref) < 1e-13


def test_conv_argument_errors():
    x, w, bias, s0 = (mxa(a) for a in conv_args(2, 5, 3, 4, True, True, torch.float32))
    with pytest.raises(ValueError, match=r"weight: expected shape \(3, '\*'\) \(axis 0 = 3\), got shape \(2, 4\)"):
        causal_conv1d(x, w[:2])
    with pytest.raises(ValueError, match=r"state: expected shape \(2, 3, 3\)"):
        causal_conv1d(x, w, bias, s0[:, :2])
    with pytest.raises(ValueError, match="activation: expected one of"):
        causal_conv1d(x, w, bias, s0, "relu")
    with pytest.raises(ValueError, match="x: expected a 2-d array"):
        causal_conv1d_step(x, s0, w)
