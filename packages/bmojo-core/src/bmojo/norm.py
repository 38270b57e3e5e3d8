"""RMSNorm as a module, backed by the ``rmsnorm`` op (dispatched to the selected backend)."""

from __future__ import annotations

import torch
from torch import nn

from bmojo.backends.dispatch import rmsnorm


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm(x, self.weight, self.eps)
