"""ssm_scan / ssm_step (spec §1, §7) against the per-token oracle ``ssm_scan_naive``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bmojo.ops.ssm_scan import ssm_scan, ssm_step
from bmojo.ops.ssm_scan.naive import ssm_scan_naive
from conftest import TOL, assert_close, randn
from hypothesis import given, settings
from hypothesis import strategies as st


def make_inputs(b, T, H, P, G, N, *, dtype=torch.float64, with_D=True, with_state=False, requires_grad=False):
    x = randn(b, T, H, P, dtype=dtype)
    dt = F.softplus(randn(b, T, H) - 1.0).to(dtype)  # positive, mostly < 1
    A = -torch.exp(randn(H) * 0.5).to(dtype)  # negative
    B = randn(b, T, G, N, dtype=dtype)
    C = randn(b, T, G, N, dtype=dtype)
    D = randn(H, dtype=dtype) if with_D else None
    h0 = randn(b, H, P, N, dtype=dtype) if with_state else None
    args = [x, dt, A, B, C, D, h0]
    if requires_grad:
        for t in args:
            if t is not None:
                t.requires_grad_(True)
    return args


# (batch, T, H, P, G, N, chunk): T multiple / not multiple of the chunk, T < chunk, T = 1, groups.
SHAPES = [
    (1, 16, 2, 3, 1, 4, 8),
    (2, 13, 4, 2, 2, 3, 4),
    (3, 5, 2, 2, 1, 2, 8),  # T < chunk
    (1, 1, 2, 2, 2, 2, 4),  # T = 1
    (2, 23, 4, 3, 4, 2, 5),  # G = H, chunk does not divide T
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("with_D", [False, True])
def test_forward_matches_naive(shape, with_state, with_D):
    *dims, chunk = shape
    args = make_inputs(*dims, with_D=with_D, with_state=with_state)
    y, h = ssm_scan(*args, chunk_size=chunk)
    y_ref, h_ref = ssm_scan_naive(*args)
    assert y.shape == y_ref.shape and h.shape == h_ref.shape
    assert_close(y, y_ref, 1e-12, "y")
    assert_close(h, h_ref, 1e-12, "final state")


def test_float32_matches_float64_naive():
    args = make_inputs(2, 19, 4, 4, 2, 8, dtype=torch.float32, with_state=True)
    y, h = ssm_scan(*args, chunk_size=8)
    y_ref, h_ref = ssm_scan_naive(*[None if a is None else a.double() for a in args])
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    assert_close(y, y_ref, TOL[torch.float32], "y")
    assert_close(h, h_ref, TOL[torch.float32], "state")


@pytest.mark.parametrize("shape", [(2, 11, 2, 3, 1, 4, 4), (1, 9, 4, 2, 2, 3, 8)])
def test_gradients_match_naive(shape):
    *dims, chunk = shape
    args = make_inputs(*dims, with_state=True, requires_grad=True)
    leaves = [a for a in args if a is not None]
    gy = randn(*args[0].shape)
    gh = randn(*args[6].shape)

    def grads(fn, **kw):
        y, h = fn(*args, **kw)
        return torch.autograd.grad((y * gy).sum() + (h * gh).sum(), leaves)

    for name, g, g_ref in zip(
        ("x", "dt", "A", "B", "C", "D", "initial_state"), grads(ssm_scan, chunk_size=chunk), grads(ssm_scan_naive)
    ):
        assert_close(g, g_ref, 1e-10, f"grad {name}")


def test_gradcheck():
    args = make_inputs(1, 6, 2, 2, 1, 2, with_state=True, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: ssm_scan(*a, chunk_size=4), tuple(args))


def test_step_matches_scan_token_by_token():
    x, dt, A, B, C, D, h0 = make_inputs(2, 10, 4, 3, 2, 5, with_state=True)
    y_ref, h_ref = ssm_scan(x, dt, A, B, C, D, h0, chunk_size=4)
    h = h0
    ys = []
    for t in range(x.shape[1]):
        y, h = ssm_step(h, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
        ys.append(y)
    assert_close(torch.stack(ys, 1), y_ref, 1e-12, "y")
    assert_close(h, h_ref, 1e-12, "state")


def test_dt_zero_padding_is_exact():
    """A token with dt = 0 leaves the state unchanged (the reference relies on it to pad)."""
    x, dt, A, B, C, D, h0 = make_inputs(1, 4, 2, 2, 1, 3, with_state=True)
    dt = torch.zeros_like(dt)
    _, h = ssm_scan(x, dt, A, B, C, D, h0, chunk_size=3)
    assert torch.equal(h, h0)


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 2),
    T=st.integers(1, 24),
    heads_groups=st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2)]),
    chunk=st.integers(1, 9),
    split_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_split_scan_equals_one_scan(b, T, heads_groups, chunk, split_frac, seed):
    """Random shapes, chunk sizes and a split point: scanning two pieces (carrying the state)
    equals one scan, and both equal the per-token oracle."""
    torch.manual_seed(seed)
    H, G = heads_groups
    x, dt, A, B, C, D, h0 = make_inputs(b, T, H, 2, G, 3, with_state=True)
    y, h = ssm_scan(x, dt, A, B, C, D, h0, chunk_size=chunk)
    y_ref, h_ref = ssm_scan_naive(x, dt, A, B, C, D, h0)
    assert_close(y, y_ref, 1e-12, "y vs naive")
    assert_close(h, h_ref, 1e-12, "state vs naive")
    cut = int(split_frac * T)
    if 0 < cut < T:
        y1, h1 = ssm_scan(x[:, :cut], dt[:, :cut], A, B[:, :cut], C[:, :cut], D, h0, chunk_size=chunk)
        y2, h2 = ssm_scan(x[:, cut:], dt[:, cut:], A, B[:, cut:], C[:, cut:], D, h1, chunk_size=chunk)
        assert_close(torch.cat([y1, y2], 1), y, 1e-12, "split y")
        assert_close(h2, h, 1e-12, "split state")
