"""rmsnorm / gated_rmsnorm kernels (through the emulator) against core's reference: several row
tiles, widths over one PSUM bank (the weight broadcast runs in 512-column pieces), groups."""

from __future__ import annotations

import pytest
import torch
from bmojo.ops.rmsnorm.naive import rmsnorm_naive
from bmojo.ops.rmsnorm.reference import gated_rmsnorm as ref_gated
from bmojo.ops.rmsnorm.reference import rmsnorm as ref_rmsnorm
from bmojo_neuron.ops.rmsnorm import gated_rmsnorm, rmsnorm

from .helpers import assert_close

SHAPES = [(2, 7, 32), (1, 1, 16), (300, 64), (3, 50, 1000)]  # one tile; T=1; 3 row tiles; 2 weight pieces


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_rmsnorm(shape, dtype):
    x = torch.randn(*shape, dtype=torch.float64).to(dtype)
    w = (torch.randn(shape[-1], dtype=torch.float64) * 0.5 + 1).to(dtype)
    assert_close(rmsnorm(x, w, 1e-5), ref_rmsnorm(x, w, 1e-5), dtype, "rmsnorm")


def test_rmsnorm_naive_oracle():
    x, w = torch.randn(5, 130, dtype=torch.float64), torch.randn(130, dtype=torch.float64)
    assert_close(rmsnorm(x, w), rmsnorm_naive(x, w), torch.float64)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("group", [None, 8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gated_rmsnorm(shape, group, dtype):
    x, z = torch.randn(*shape, dtype=dtype), torch.randn(*shape, dtype=dtype)
    w = torch.randn(shape[-1], dtype=dtype) * 0.5 + 1
    assert_close(gated_rmsnorm(x, z, w, 1e-6, group), ref_gated(x, z, w, 1e-6, group), dtype, "gated")


def test_errors_name_the_argument():
    x = torch.randn(2, 3, 32)
    with pytest.raises(ValueError, match=r"^group_size: expected a divisor"):
        gated_rmsnorm(x, x, torch.ones(32), 1e-6, 5)
    with pytest.raises(ValueError, match=r"^x: expected a last axis of at most"):
        rmsnorm(torch.randn(1, 7000), torch.ones(7000))


# Widest rows per compute dtype and variant (docs/backends/neuron.md): half precision computes in float32.
LIMITS = {torch.float32: (6144, 6144), torch.bfloat16: (6144, 6144), torch.float64: (4608, 3840)}


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("dtype", list(LIMITS), ids=str)
def test_widest_accepted_row_fits_and_a_wider_one_is_refused_naming_x(dtype, gated):
    """Every width the host accepts fits the emulated SBUF (two row tiles, one group: the peak),
    one column more is refused on the host naming x, the limit and the width."""
    limit = LIMITS[dtype][gated]
    op = "gated_rmsnorm" if gated else "rmsnorm"

    def run(width, impl, ref=None):
        x, z = torch.randn(256, width, dtype=dtype), torch.randn(256, width, dtype=dtype)
        w = torch.randn(width, dtype=dtype)
        args = (x, z, w) if gated else (x, w)
        out = impl(*args)
        if ref is not None:
            assert_close(out, ref(*args), dtype, op)

    run(limit, gated_rmsnorm if gated else rmsnorm, ref_gated if gated else ref_rmsnorm)
    with pytest.raises(ValueError, match=rf"^x: expected a last axis of at most {limit} for {op} .*got {limit + 1}$"):
        run(limit + 1, gated_rmsnorm if gated else rmsnorm)
