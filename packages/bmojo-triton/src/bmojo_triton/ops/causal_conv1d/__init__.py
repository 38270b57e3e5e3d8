"""``causal_conv1d`` and ``causal_conv1d_step`` (depthwise, optional bias and SiLU).

Same contract as ``bmojo.ops.causal_conv1d.reference``; checks are core's. Forward kernels only:
the backend registers these ops with ``differentiable=False``, so gradients recompute core's
reference (a Triton backward is not written yet; docs/backends/triton.md says so).
"""

from __future__ import annotations

import torch
import triton
from bmojo._checks import compute_dtype
from bmojo.ops.causal_conv1d.reference import _check

from bmojo_triton.ops._triton_utils import acc_dtype, gpu_path, on_device, pow2
from bmojo_triton.ops.causal_conv1d.fwd import _conv_fwd_kernel
from bmojo_triton.ops.causal_conv1d.step import _conv_step_kernel


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.causal_conv1d.reference.causal_conv1d``."""
    K = _check(x, weight, bias, initial_state, activation, step=False)
    x = x.contiguous()
    weight = weight.contiguous()
    b, T, ch = x.shape
    y = torch.empty_like(x)
    state = initial_state.contiguous() if initial_state is not None else None
    gpu = gpu_path(x.device)
    bt = 64 if gpu else 16
    bc = min(pow2(ch, 1), 128 if gpu else 16)
    if x.numel():
        with on_device(x):
            _conv_fwd_kernel[(triton.cdiv(T, bt), triton.cdiv(ch, bc), b)](
                x,
                state if state is not None else x,
                weight,
                bias if bias is not None else weight,
                y,
                T,
                ch,
                K,
                x.stride(0),
                x.stride(1),
                *(state.stride()[:2] if state is not None else (0, 0)),
                HAS_STATE=state is not None,
                HAS_BIAS=bias is not None,
                SILU=activation == "silu",
                BLOCK_T=bt,
                BLOCK_C=bc,
                ACC=acc_dtype(compute_dtype(x.dtype)),
            )
    # the last K-1 inputs (from the state when T < K-1): a small copy, done by torch
    if K == 1:
        final = x.new_empty(b, 0, ch)
    elif T >= K - 1:
        final = x[:, T - (K - 1) :].clone()
    else:
        prev = state if state is not None else x.new_zeros(b, K - 1, ch)
        final = torch.cat([prev[:, T:], x], dim=1)
    return y, final


def causal_conv1d_step(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.causal_conv1d.reference.causal_conv1d_step``."""
    K = _check(x, weight, bias, state, activation, step=True)
    x, state, weight = x.contiguous(), state.contiguous(), weight.contiguous()
    b, ch = x.shape
    y = torch.empty_like(x)
    new_state = torch.empty_like(state)
    bc = min(pow2(ch, 1), 1024)
    if x.numel():
        with on_device(x):
            _conv_step_kernel[(b, triton.cdiv(ch, bc))](
                x,
                state if K > 1 else x,
                weight,
                bias if bias is not None else weight,
                y,
                new_state,
                ch,
                K,
                HAS_BIAS=bias is not None,
                SILU=activation == "silu",
                BLOCK_C=bc,
                ACC=acc_dtype(compute_dtype(x.dtype)),
            )
    return y, new_state
