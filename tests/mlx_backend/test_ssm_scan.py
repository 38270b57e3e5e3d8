"""ssm_scan / ssm_step on mx.array vs core's reference: forward and gradients (mx.vjp vs torch
autograd) at chunk boundaries and odd sizes, the step's Metal kernel where Metal exists, and the
argument errors."""

from __future__ import annotations

import mlx.core as mx
import pytest
import torch
from bmojo.ops.ssm_scan.reference import ssm_scan as ref_scan
from bmojo.ops.ssm_scan.reference import ssm_step as ref_step
from bmojo_mlx.ops._kernels import metal_available
from bmojo_mlx.ops.ssm_scan import ssm_step
from bmojo_mlx.ops.ssm_scan.array import ssm_scan
from bmojo_mlx.ops.ssm_scan.array import ssm_step as step_array

from .helpers import check_against_reference, mxa, needs_metal, rel, tt

SHAPES = [
    # (b, T, H, P, G, N, chunk)
    (2, 16, 4, 8, 2, 4, 8),  # T a multiple of the chunk
    (1, 17, 4, 3, 1, 5, 8),  # ragged tail, one group for all heads, odd P/N
    (2, 1, 2, 4, 2, 4, 8),  # T = 1
    (1, 7, 3, 2, 3, 2, 1),  # chunk 1 (pure recurrence), G = H
    (2, 5, 2, 4, 1, 4, 64),  # chunk > T
]


def scan_args(b, T, H, P, G, N, dtype, D=True, state=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)

    dt = (torch.rand(b, T, H, generator=g, dtype=torch.float64) * 0.3 + 0.01).to(dtype)
    A = -(torch.rand(H, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype)
    return (r(b, T, H, P), dt, A, r(b, T, G, N, scale=0.5), r(b, T, G, N, scale=0.5)), (
        r(H) if D else None,
        r(b, H, P, N, scale=0.5) if state else None,
    )


@pytest.mark.parametrize("shape", SHAPES, ids=[f"b{s[0]}-T{s[1]}-H{s[2]}-G{s[4]}-L{s[6]}" for s in SHAPES])
@pytest.mark.parametrize("optional", [(True, True), (False, False)], ids=["D+h0", "plain"])
def test_scan_matches_reference_float64(shape, optional):
    b, T, H, P, G, N, chunk = shape
    main, (D, h0) = scan_args(b, T, H, P, G, N, torch.float64, *optional)
    check_against_reference(
        ssm_scan, ref_scan, (*main, D, h0), {"chunk_size": chunk}, tol=1e-12, grad_tol=1e-10, seed=b * T
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-2)])
def test_scan_low_precision(dtype, tol):
    main, (D, h0) = scan_args(2, 19, 4, 8, 2, 4, dtype)
    check_against_reference(ssm_scan, ref_scan, (*main, D, h0), {"chunk_size": 8}, tol=tol)


@pytest.mark.parametrize("D", [True, False], ids=["D", "noD"])
def test_step_matches_reference_and_continues_the_scan(D):
    main, (Dv, h0) = scan_args(2, 6, 4, 3, 2, 5, torch.float64, D=D)
    x, dt, A, B, C = main
    check_against_reference(
        step_array, ref_step, (h0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], Dv), {}, tol=1e-13, grad_tol=1e-12
    )
    y_ref, h_ref = ref_scan(x, dt, A, B, C, Dv, h0, chunk_size=4)
    h = mxa(h0)
    ys = []
    for t in range(6):
        y, h = ssm_step(
            h, *(mxa(a[:, t]) for a in (x, dt)), mxa(A), mxa(B[:, t]), mxa(C[:, t]), mxa(Dv), kernel="array"
        )
        ys.append(tt(y))
    assert rel(torch.stack(ys, 1), y_ref) < 1e-12 and rel(tt(h), h_ref) < 1e-12


@needs_metal
@pytest.mark.parametrize("dtype,tol", [(mx.float32, 1e-5), (mx.float16, 5e-3)])
def test_metal_step_matches_array_path(dtype, tol):
    main, (D, h0) = scan_args(3, 1, 8, 5, 2, 7, torch.float32)
    x, dt, A, B, C = (mxa(a[:, 0] if a.ndim > 1 else a).astype(dtype) for a in main)
    args = (mxa(h0).astype(dtype), x, dt, A, B, C, mxa(D).astype(dtype))
    want = step_array(*args)
    got = ssm_step(*args, kernel="metal")
    for g, w in zip(got, want):
        assert rel(tt(g.astype(mx.float32)), tt(w.astype(mx.float32))) < tol
    # gradients go through the pure path's VJP
    cot = [mx.ones_like(want[0]), mx.ones_like(want[1])]
    _, g_metal = mx.vjp(lambda *a: list(ssm_step(*a, kernel="metal")), list(args), cot)
    _, g_array = mx.vjp(lambda *a: list(step_array(*a)), list(args), cot)
    for g, w in zip(g_metal, g_array):
        assert rel(tt(g.astype(mx.float32)), tt(w.astype(mx.float32))) < tol


def test_kernel_choice_is_explicit():
    main, (D, h0) = scan_args(1, 1, 2, 2, 1, 2, torch.float32)
    args = (mxa(h0), *(mxa(a[:, 0] if a.ndim > 1 else a) for a in main), mxa(D))
    with pytest.raises(ValueError, match=r"kernel: expected one of \('array', 'metal'\)"):
        ssm_step(*args, kernel="cuda")
    if not metal_available():
        with pytest.raises(RuntimeError, match="kernel='metal' was requested but Metal is not available"):
            ssm_step(*args, kernel="metal")
        # automatic choice off Metal: the pure path, bit for bit
        for a, b in zip(ssm_step(*args), step_array(*args)):
            assert mx.array_equal(a, b)


def test_scan_argument_errors():
    main, (_, h0) = scan_args(2, 4, 4, 2, 2, 2, torch.float32)
    x, dt, A, B, C = (mxa(a) for a in main)
    with pytest.raises(ValueError, match=r"A: expected shape \(4,\)"):
        ssm_scan(x, dt, A[:3], B, C)
    with pytest.raises(ValueError, match=r"dt: expected dtype mlx\.core\.float32 \(same as x\)"):
        ssm_scan(x, dt.astype(mx.float16), A, B, C)
    with pytest.raises(ValueError, match=r"x: expected an mx\.array, got Tensor"):
        ssm_scan(main[0], dt, A, B, C)
    with pytest.raises(ValueError, match="B: expected a group count dividing the head count 4"):
        ssm_scan(x, dt, A, mx.concatenate([B, B[:, :, :1]], 2), mx.concatenate([C, C[:, :, :1]], 2))
    with pytest.raises(ValueError, match="chunk_size: expected an int >= 1"):
        ssm_scan(x, dt, A, B, C, chunk_size=0)
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(2, 4, 2, 2\)"):
        ssm_scan(x, dt, A, B, C, None, mxa(h0)[:1])
