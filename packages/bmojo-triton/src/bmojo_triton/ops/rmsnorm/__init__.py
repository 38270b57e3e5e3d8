"""``rmsnorm`` and ``gated_rmsnorm`` (fused gate, per-group statistics), forward and backward.

Same contract as ``bmojo.ops.rmsnorm.reference``; the checks are core's. ``fwd.py``/``bwd.py``
hold the kernels; the ``autograd.Function`` here saves the inputs and runs the backward kernel
(eager autograd), and ``rmsnorm_backward``/``gated_rmsnorm_backward`` run the same kernel as the
explicit backward of core's custom op (torch.compile).
"""

from __future__ import annotations

import torch
from bmojo.argcheck import TORCH, check_gated_rmsnorm_args, check_rmsnorm_args

from bmojo_triton.ops._guards import check_block, first_order_only
from bmojo_triton.ops._triton_utils import acc_dtype, on_device, pow2
from bmojo_triton.ops.rmsnorm.bwd import _norm_bwd_kernel
from bmojo_triton.ops.rmsnorm.fwd import _norm_fwd_kernel


def _eps_tensor(eps: float, x: torch.Tensor) -> torch.Tensor:
    """eps as a one-element tensor in the accumulator's dtype: Triton types a Python float argument
    as float32 on a GPU, and the rounded eps missed the float64 tolerance there (H200 run, eps=1e-2)."""
    return torch.full((1,), float(eps), dtype=TORCH.compute_dtype(x.dtype), device=x.device)


def _launch(kernel, x, z, weight, tensors, eps, group):
    """One program per normalisation group: ``kernel(x, z, weight, *tensors, sizes, eps, flags)``,
    the argument order both kernels share."""
    rows = x.numel() // group
    if rows:
        with on_device(x):
            kernel[(rows,)](
                x,
                z if z is not None else x,
                weight,
                *tensors,
                group,
                x.shape[-1] // group,
                _eps_tensor(eps, x),
                HAS_Z=z is not None,
                BLOCK=pow2(group, 1),
                ACC=acc_dtype(x.dtype),
            )


def _launch_fwd(x, z, weight, eps, group):
    y = torch.empty_like(x)
    _launch(_norm_fwd_kernel, x, z, weight, (y,), eps, group)
    return y


def _norm_bwd(dy, x, z, weight, eps, group):
    dy = dy.contiguous()
    dx = torch.empty_like(x)
    dz = torch.empty_like(x) if z is not None else None
    dw_rows = torch.empty(x.shape, dtype=TORCH.compute_dtype(x.dtype), device=x.device)
    _launch(_norm_bwd_kernel, x, z, weight, (dy, dx, dz if dz is not None else dx, dw_rows), eps, group)
    width = x.shape[-1]
    dw = dw_rows.reshape(x.numel() // max(width, 1), width).sum(0).to(weight.dtype)  # width 0 too
    return dx, dz, dw


class _NormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, z, weight, eps, group):
        ctx.save_for_backward(x, z, weight)
        ctx.eps, ctx.group = eps, group
        return _launch_fwd(x, z, weight, eps, group)

    @staticmethod
    def backward(ctx, dy):
        x, z, weight = ctx.saved_tensors
        op = "rmsnorm" if z is None else "gated_rmsnorm"
        grads = first_order_only(op, lambda: _norm_bwd(dy, x, z, weight, ctx.eps, ctx.group), x, z, weight, dy)
        return (*grads, None, None)


def _check_rmsnorm(x, weight, eps) -> int:
    """Core's checks, then the kernels' block limit (one program holds a row whole); the group."""
    check_rmsnorm_args(TORCH, x, weight, eps)
    check_block("x", "last axis", x.shape[-1])
    return max(x.shape[-1], 1)


def _check_gated_rmsnorm(x, z, weight, eps, group_size) -> int:
    """Core's checks, then the kernels' block limit (one program holds a group whole); the group."""
    group = check_gated_rmsnorm_args(TORCH, x, z, weight, group_size, eps=eps)
    if group_size is None:
        check_block("x", "last axis (the normalisation group without group_size)", group)
    else:
        check_block("group_size", "a normalisation group", group)
    return group


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Same contract as ``bmojo.ops.rmsnorm.reference.rmsnorm``."""
    group = _check_rmsnorm(x, weight, eps)
    return _NormFn.apply(x.contiguous(), None, weight.contiguous(), eps, group)


def gated_rmsnorm(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, group_size: int | None = None
) -> torch.Tensor:
    """Same contract as ``bmojo.ops.rmsnorm.reference.gated_rmsnorm``."""
    group = _check_gated_rmsnorm(x, z, weight, eps, group_size)
    return _NormFn.apply(x.contiguous(), z.contiguous(), weight.contiguous(), eps, group)


# The explicit backwards core's custom op calls (``OpImpl.backward``; torch.compile): the kernel of
# ``_NormFn.backward``, without running the forward again. One gradient per tensor argument.
def rmsnorm_backward(grads, needs, x, weight, eps=1e-6) -> list:
    group = _check_rmsnorm(x, weight, eps)
    dx, _, dw = _norm_bwd(grads[0], x.contiguous(), None, weight.contiguous(), eps, group)
    return [dx, dw]


def gated_rmsnorm_backward(grads, needs, x, z, weight, eps=1e-6, group_size=None) -> list:
    group = _check_gated_rmsnorm(x, z, weight, eps, group_size)
    return list(_norm_bwd(grads[0], x.contiguous(), z.contiguous(), weight.contiguous(), eps, group))
