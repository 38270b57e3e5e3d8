"""RMSNorm in pure MLX (same contract as ``bmojo.ops.rmsnorm.reference``): half precision is
normalised in float32 and cast back."""

from __future__ import annotations

import mlx.core as mx
from bmojo.argcheck import check_gated_rmsnorm_args, check_rmsnorm_args

from bmojo_mlx.ops._checks import MLX
from bmojo_mlx.ops._math import silu


def rmsnorm(x: mx.array, weight: mx.array, eps: float = 1e-6) -> mx.array:
    """x / sqrt(mean(x², -1) + eps) · weight."""
    check_rmsnorm_args(MLX, x, weight, eps)
    cd = MLX.compute_dtype(x.dtype)
    xf = x.astype(cd)
    out = xf * mx.rsqrt(mx.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (out * weight.astype(cd)).astype(x.dtype)


def gated_rmsnorm(
    x: mx.array, z: mx.array, weight: mx.array, eps: float = 1e-6, group_size: int | None = None
) -> mx.array:
    """rmsnorm(x · silu(z)), the mean square per contiguous group of ``group_size`` channels."""
    group = check_gated_rmsnorm_args(MLX, x, z, weight, group_size, eps=eps)
    width = x.shape[-1]
    cd = MLX.compute_dtype(x.dtype)
    gated = x.astype(cd) * silu(z.astype(cd))
    lead = gated.shape[:-1]
    gated = gated.reshape(*lead, width // group, group)
    normed = gated * mx.rsqrt(mx.mean(gated * gated, axis=-1, keepdims=True) + eps)
    return (normed.reshape(*lead, width) * weight.astype(cd)).astype(x.dtype)
