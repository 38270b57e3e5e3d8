"""``ssm_scan`` (chunked SSD) and ``ssm_step`` (one decode step).

Same contract as ``bmojo.ops.ssm_scan.reference``; the checks are core's. Forward kernels only:
the backend registers both with ``differentiable=False``, so gradients recompute core's
reference (a Triton backward of the scan is not written yet; docs/backends/triton.md says so).
"""

from __future__ import annotations

import torch
import triton
from bmojo._checks import check_int, compute_dtype
from bmojo.ops.ssm_scan.reference import _check_scan_args

from bmojo_triton.ops._triton_utils import acc_dtype, dot_precision, gpu_path, on_device, pow2
from bmojo_triton.ops.ssm_scan.fwd import _ssd_fwd_kernel
from bmojo_triton.ops.ssm_scan.step import _ssm_step_kernel


def ssm_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.ssm_scan.reference.ssm_scan`` (``chunk_size`` is checked; the
    kernel uses its own chunk tile)."""
    b, H, P, G, N = _check_scan_args(x, dt, A, B, C, D, initial_state, step=False)
    check_int("chunk_size", chunk_size, minimum=1)
    x, dt, B, C = x.contiguous(), dt.contiguous(), B.contiguous(), C.contiguous()
    T = x.shape[1]
    y = torch.empty_like(x)
    final = torch.empty(b, H, P, N, dtype=x.dtype, device=x.device)
    gpu = gpu_path(x.device)
    bl = 64 if gpu else 16
    bp = min(pow2(P), 32 if gpu else 16)
    h0 = initial_state.contiguous() if initial_state is not None else None
    # float32 math for every input dtype (float64 for float64); the matmuls run in full float32
    # for float32 inputs and TF32 (10-bit mantissa, finer than the bf16/fp16 inputs) otherwise.
    cd = compute_dtype(x.dtype)
    with on_device(x):
        _ssd_fwd_kernel[(b * H, triton.cdiv(P, bp))](
            x,
            dt,
            A.contiguous(),
            B,
            C,
            D.contiguous() if D is not None else A,
            h0 if h0 is not None else final,
            y,
            final,
            x.stride(0),
            x.stride(1),
            x.stride(2),
            dt.stride(0),
            dt.stride(1),
            B.stride(0),
            B.stride(1),
            B.stride(2),
            T,
            H,
            P,
            N,
            H // G,
            HAS_D=D is not None,
            HAS_H0=h0 is not None,
            BLOCK_L=bl,
            BLOCK_P=bp,
            BLOCK_N=pow2(N),
            ACC=acc_dtype(cd),
            DOT_PREC=dot_precision(x.dtype) if gpu else "ieee",
        )
    return y, final


def ssm_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.ssm_scan.reference.ssm_step``; the new state is a new tensor."""
    _, H, P, G, N = _check_scan_args(x, dt, A, B, C, D, state, step=True)
    state, x, dt, B, C = (t.contiguous() for t in (state, x, dt, B, C))
    b = x.shape[0]
    y = torch.empty_like(x)
    new_state = torch.empty_like(state, dtype=x.dtype)
    bp = min(pow2(P, 1), 64)
    if x.numel():
        with on_device(x):
            _ssm_step_kernel[(b * H, triton.cdiv(P, bp))](
                state,
                x,
                dt,
                A.contiguous(),
                B,
                C,
                D.contiguous() if D is not None else A,
                y,
                new_state,
                H,
                P,
                N,
                H // G,
                G,
                HAS_D=D is not None,
                BLOCK_P=bp,
                BLOCK_N=pow2(N, 1),
                ACC=acc_dtype(compute_dtype(x.dtype)),
            )
    return y, new_state
