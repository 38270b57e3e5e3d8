"""Rotary position embedding at absolute positions (the rotate-half layout of Llama/Mistral/NeoX,
so their weights load unchanged). Angles are computed in float64, then cast."""

from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float, dtype: torch.dtype):
    """cos, sin of shape (*positions.shape, dim) for integer absolute positions: (T,) shared by
    every row, or (batch, T) when rows sit at different positions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    angles = positions.to(torch.float64)[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, T, heads, dim); cos/sin: (T, dim) or per row (batch, T, dim)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos[..., None, :] + rotated * sin[..., None, :]
