"""RMSNorm written per row in float64. Test oracle only."""

from __future__ import annotations

import torch


def rmsnorm_naive(x, weight, eps=1e-6):
    x64 = x.double()
    rms = torch.sqrt((x64 * x64).sum(-1, keepdim=True) / x.shape[-1] + eps)
    return (x64 / rms * weight.double()).to(x.dtype)


def gated_rmsnorm_naive(x, z, weight, eps=1e-6, group_size=None):
    z64 = z.double()
    gated = x.double() * z64 * torch.sigmoid(z64)
    group = x.shape[-1] if group_size is None else group_size
    parts = [rmsnorm_naive(gated[..., i : i + group], weight[i : i + group], eps) for i in range(0, x.shape[-1], group)]
    return torch.cat(parts, dim=-1).to(x.dtype)
