"""RMSNorm over the last axis. Half-precision inputs are normalised in float32 (as Llama and
Mamba-2 do) and cast back, so the reference is the accuracy bar for low-precision kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bmojo._checks import compute_dtype
from bmojo.argcheck import TORCH, check_gated_rmsnorm_args, check_rmsnorm_args


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x², -1) + eps) · weight."""
    check_rmsnorm_args(TORCH, x, weight, eps)
    cd = compute_dtype(x.dtype)
    xf = x.to(cd)
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.to(cd)).to(x.dtype)


def gated_rmsnorm(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, group_size: int | None = None
) -> torch.Tensor:
    """rmsnorm(x · silu(z)): the gate is applied before normalising (Mamba-2's default).

    With ``group_size`` the mean square is taken per contiguous group of that many channels
    (Mamba-2 normalises each of its B/C groups separately); None means one group.
    """
    group = check_gated_rmsnorm_args(TORCH, x, z, weight, group_size, eps=eps)
    width = x.shape[-1]
    cd = compute_dtype(x.dtype)
    gated = (x.to(cd) * F.silu(z.to(cd))).unflatten(-1, (width // group, group))
    normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + eps)
    return (normed.flatten(-2) * weight.to(cd)).to(x.dtype)
