"""rmsnorm and gated_rmsnorm (spec §1, §7) against the per-row float64 oracles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bmojo.ops.rmsnorm import gated_rmsnorm, rmsnorm
from bmojo.ops.rmsnorm.naive import gated_rmsnorm_naive, rmsnorm_naive
from conftest import TOL, assert_close, randn


@pytest.mark.parametrize("shape", [(1, 8), (3, 5, 12), (2, 1, 3, 6)])
@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_rmsnorm_matches_naive(shape, eps):
    x, w = randn(*shape), randn(shape[-1])
    assert_close(rmsnorm(x, w, eps), rmsnorm_naive(x, w, eps), 1e-14, "rmsnorm")


def test_rmsnorm_formula():
    """Independent of both implementations: x / sqrt(mean(x²) + eps) · w."""
    x, w = randn(4, 10), randn(10)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-3) * w
    assert_close(rmsnorm(x, w, 1e-3), expected, 1e-14, "rmsnorm")


@pytest.mark.parametrize("group_size", [None, 4, 6, 12])
def test_gated_rmsnorm_matches_naive(group_size):
    x, z, w = randn(2, 5, 12), randn(2, 5, 12), randn(12)
    out = gated_rmsnorm(x, z, w, 1e-5, group_size)
    assert_close(out, gated_rmsnorm_naive(x, z, w, 1e-5, group_size), 1e-14, "gated")
    # Gate before the norm, and per-group statistics: rmsnorm(x · silu(z)) group by group.
    g = 12 if group_size is None else group_size
    gated = (x * F.silu(z)).unflatten(-1, (12 // g, g))
    expected = (gated / torch.sqrt((gated**2).mean(-1, keepdim=True) + 1e-5)).flatten(-2) * w
    assert_close(out, expected, 1e-14, "gated formula")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_matches_float64(dtype):
    x, z, w = randn(3, 16), randn(3, 16), randn(16)
    out = rmsnorm(x.to(dtype), w.to(dtype))
    assert out.dtype == dtype
    tol = TOL[torch.float32] if dtype == torch.float32 else 1e-2
    assert_close(out, rmsnorm_naive(x.to(dtype).double(), w.to(dtype).double()), tol, "rmsnorm")
    out = gated_rmsnorm(x.to(dtype), z.to(dtype), w.to(dtype), group_size=8)
    expected = gated_rmsnorm_naive(x.to(dtype).double(), z.to(dtype).double(), w.to(dtype).double(), group_size=8)
    assert_close(out, expected, tol, "gated")


def test_gradients_match_naive():
    x, z, w = randn(3, 8, requires_grad=True), randn(3, 8, requires_grad=True), randn(8, requires_grad=True)
    g = randn(3, 8)
    got = torch.autograd.grad((gated_rmsnorm(x, z, w, 1e-6, 4) * g).sum(), (x, z, w))
    want = torch.autograd.grad((gated_rmsnorm_naive(x, z, w, 1e-6, 4) * g).sum(), (x, z, w))
    for name, a, b in zip("xzw", got, want):
        assert_close(a, b, 1e-12, f"grad {name}")
    got = torch.autograd.grad((rmsnorm(x, w) * g).sum(), (x, w))
    want = torch.autograd.grad((rmsnorm_naive(x, w) * g).sum(), (x, w))
    for name, a, b in zip("xw", got, want):
        assert_close(a, b, 1e-12, f"grad {name}")


def test_gradcheck():
    x, z, w = randn(2, 6, requires_grad=True), randn(2, 6, requires_grad=True), randn(6, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rmsnorm(a, b, 1e-3), (x, w))
    assert torch.autograd.gradcheck(lambda a, b, c: gated_rmsnorm(a, b, c, 1e-3, 3), (x, z, w))
