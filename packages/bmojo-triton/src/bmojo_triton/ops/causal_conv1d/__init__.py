"""``causal_conv1d`` and ``causal_conv1d_step`` (depthwise, optional bias and SiLU).

Same contract as ``bmojo.ops.causal_conv1d.reference``; checks are core's. ``causal_conv1d`` has a
Triton backward (``bwd.py``, through ``CausalConvFn``); the step is forward only and registered
with ``differentiable=False`` (its gradients recompute core's reference).
"""

from __future__ import annotations

import torch
import triton
from bmojo.argcheck import TORCH, check_causal_conv1d_args, fail

from bmojo_triton.ops._guards import first_order_only
from bmojo_triton.ops._triton_utils import (
    acc_dtype,
    check_grid_axis,
    gpu_path,
    in_layout,
    like,
    needs_idx64,
    on_device,
    pow2,
    updated_in_place,
)
from bmojo_triton.ops.causal_conv1d.bwd import _conv_bwd_dx_kernel, _conv_bwd_g_kernel
from bmojo_triton.ops.causal_conv1d.fwd import _conv_fwd_kernel
from bmojo_triton.ops.causal_conv1d.step import _conv_step_kernel


def _tiles(x):
    gpu = gpu_path(x.device)
    return (64 if gpu else 16), min(pow2(x.shape[-1], 1), 128 if gpu else 16)


def _final_state(x, state, K):
    """The last K-1 inputs (from the state when T < K-1): a small copy, done by torch."""
    b, T, ch = x.shape
    if K == 1:
        return x.new_empty(b, 0, ch)
    if T >= K - 1:
        return x[:, T - (K - 1) :].clone()
    prev = state if state is not None else x.new_zeros(b, K - 1, ch)
    return torch.cat([prev[:, T:], x], dim=1)


def _fwd(x, weight, bias, state, activation):
    b, T, ch = x.shape
    K = weight.shape[1]
    y = like(x)  # y has x's strides
    bt, bc = _tiles(x)
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
                ACC=acc_dtype(x.dtype),
                IDX64=needs_idx64(x, state, y),
            )
    return y, _final_state(x, state, K)


def _bwd(dy, dfinal, x, weight, bias, state, activation):
    b, T, ch = x.shape
    K = weight.shape[1]
    cd = TORCH.compute_dtype(x.dtype)
    bt, bc = _tiles(x)
    # dy, g and dx are read and written with x's strides
    dy = in_layout(dy, x)
    g = like(x, cd)
    n_t = triton.cdiv(T, bt)
    dw_part = torch.empty(b * n_t, ch, K, dtype=cd, device=x.device)
    dx = like(x)
    ds = torch.empty(b, K - 1, ch, dtype=x.dtype, device=x.device)
    has_df = dfinal is not None and K > 1
    idx64 = needs_idx64(x, state, dy, g, dw_part, dx, ds, dfinal)
    with on_device(x):
        _conv_bwd_g_kernel[(n_t, triton.cdiv(ch, bc), b)](
            x,
            state if state is not None else x,
            weight,
            bias if bias is not None else weight,
            dy,
            g,
            dw_part,
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
            ACC=acc_dtype(cd),
            IDX64=idx64,
        )
        _conv_bwd_dx_kernel[(triton.cdiv(T + K - 1, bt), triton.cdiv(ch, bc), b)](
            g,
            weight,
            dfinal.contiguous() if has_df else g,
            dx,
            ds,
            T,
            ch,
            K,
            x.stride(0),
            x.stride(1),
            HAS_DFINAL=has_df,
            BLOCK_T=bt,
            BLOCK_C=bc,
            ACC=acc_dtype(cd),
            IDX64=idx64,
        )
    dw = dw_part.sum(0).to(weight.dtype)
    dbias = g.sum((0, 1)).to(bias.dtype) if bias is not None else None
    return dx, dw, dbias, (ds if state is not None else None)


class CausalConvFn(torch.autograd.Function):
    """Saves the inputs; the backward runs ``bwd.py``'s two kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, state, activation):
        y, final = _fwd(x, weight, bias, state, activation)
        ctx.save_for_backward(x, weight, bias, state)
        ctx.activation = activation
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, weight, bias, state = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(x)
        grads = first_order_only(
            "causal_conv1d",
            lambda: _bwd(dy, dfinal, x, weight, bias, state, ctx.activation),
            x, weight, bias, state, dy, dfinal,
        )  # fmt: skip
        return (*(g if n else None for g, n in zip(grads, ctx.needs_input_grad[:4])), None)


def _prepare(x, weight, bias, initial_state, activation) -> list:
    check_causal_conv1d_args(TORCH, x, weight, bias, initial_state, activation, step=False)
    check_grid_axis("x", "batch", x.shape[0])  # grids (time tiles, channel tiles, batch)
    return [t.contiguous() if t is not None else None for t in (x, weight, bias, initial_state)]


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.causal_conv1d.reference.causal_conv1d``; differentiable (the
    backward is Triton)."""
    args = _prepare(x, weight, bias, initial_state, activation)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return CausalConvFn.apply(*args, activation)
    return _fwd(*args, activation)


def causal_conv1d_backward(grads, needs, x, weight, bias=None, initial_state=None, activation="silu") -> list:
    """The explicit backward core's custom op calls (``OpImpl.backward``; torch.compile): the same
    kernels as ``CausalConvFn.backward``, without running the forward again."""
    return list(_bwd(*grads, *_prepare(x, weight, bias, initial_state, activation), activation))


def _step(x, state, weight, bias, activation, out_state):
    # The kernel reads bias with unit stride: a strided bias (a view) must be made contiguous
    # (the conformance suite's strided cases caught this).
    bias = bias.contiguous() if bias is not None else None
    K = weight.shape[1]
    b, ch = x.shape
    y = torch.empty_like(x)
    bc = min(pow2(ch, 1), 1024)
    if x.numel():
        with on_device(x):
            _conv_step_kernel[(b, triton.cdiv(ch, bc))](
                x,
                state if K > 1 else x,
                weight,
                bias if bias is not None else weight,
                y,
                out_state,
                ch,
                K,
                HAS_BIAS=bias is not None,
                SILU=activation == "silu",
                BLOCK_C=bc,
                ACC=acc_dtype(TORCH.compute_dtype(x.dtype)),
                IDX64=needs_idx64(x, state, y, out_state),
            )
    return y


def causal_conv1d_step(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.causal_conv1d.reference.causal_conv1d_step``."""
    check_causal_conv1d_args(TORCH, x, weight, bias, state, activation, step=True)
    x, state, weight = x.contiguous(), state.contiguous(), weight.contiguous()
    new_state = torch.empty_like(state)
    return _step(x, state, weight, bias, activation, new_state), new_state


def causal_conv1d_step_(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> torch.Tensor:
    """``causal_conv1d_step`` shifting ``state`` in place (each program reads a row before it
    overwrites it); returns y. Not registered with the backend; ``state`` must be contiguous, no
    argument may require grad, and ``state``'s version counter is bumped."""
    check_causal_conv1d_args(TORCH, x, weight, bias, state, activation, step=True)
    if not state.is_contiguous():
        fail("state", "a contiguous tensor (updated in place)", f"strides {tuple(state.stride())}")
    with updated_in_place(state, x=x, weight=weight, bias=bias):
        return _step(x.contiguous(), state, weight.contiguous(), bias, activation, state)
