"""rmsnorm / gated_rmsnorm on mx.array vs core's reference: forward and gradients, groups,
half precision (normalised in float32 as the reference does), argument errors."""

from __future__ import annotations

import pytest
import torch
from bmojo.ops.rmsnorm.reference import gated_rmsnorm as ref_gated
from bmojo.ops.rmsnorm.reference import rmsnorm as ref_rms
from bmojo_mlx.ops.rmsnorm.array import gated_rmsnorm, rmsnorm

from .helpers import check_against_reference, mxa


def r(*s, dtype=torch.float64, seed=0):
    return torch.randn(*s, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("shape", [(2, 5, 16), (1, 1, 7), (3, 32)], ids=["3d", "T1-odd", "2d"])
def test_rmsnorm_matches_reference(shape):
    check_against_reference(rmsnorm, ref_rms, (r(*shape), r(shape[-1], seed=1), 1e-5), {}, tol=1e-13, grad_tol=1e-12)


@pytest.mark.parametrize("group", [None, 4, 1], ids=["one-group", "groups-of-4", "groups-of-1"])
def test_gated_matches_reference(group):
    args = (r(2, 3, 12), r(2, 3, 12, seed=1), r(12, seed=2), 1e-6, group)
    check_against_reference(gated_rmsnorm, ref_gated, args, {}, tol=1e-13, grad_tol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_low_precision(dtype, tol):
    x, z, w = r(2, 4, 16, dtype=dtype), r(2, 4, 16, dtype=dtype, seed=1), r(16, dtype=dtype, seed=2)
    check_against_reference(rmsnorm, ref_rms, (x, w), {}, tol=tol)
    check_against_reference(gated_rmsnorm, ref_gated, (x, z, w, 1e-6, 8), {}, tol=tol)


def test_norm_argument_errors():
    x, w = mxa(r(2, 8, dtype=torch.float32)), mxa(r(8, dtype=torch.float32))
    with pytest.raises(ValueError, match="eps: expected a positive float"):
        rmsnorm(x, w, 0.0)
    with pytest.raises(ValueError, match=r"weight: expected shape \(8,\)"):
        rmsnorm(x, w[:4])
    with pytest.raises(ValueError, match=r"group_size: expected a divisor of the last axis \(8\), got 3"):
        gated_rmsnorm(x, x, w, 1e-6, 3)
