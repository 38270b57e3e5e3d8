"""Explicit per-output sum for the causal depthwise convolution. Test oracle only."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_naive(x, weight, bias=None, initial_state=None, activation="silu"):
    b, T, ch = x.shape
    K = weight.shape[1]
    past = x.new_zeros(b, K - 1, ch) if initial_state is None else initial_state
    full = torch.cat([past, x], dim=1)
    ys = []
    for t in range(T):
        acc = bias.expand(b, ch).clone() if bias is not None else x.new_zeros(b, ch)
        for k in range(K):
            acc = acc + weight[:, k] * full[:, t + k]
        ys.append(acc)
    y = torch.stack(ys, dim=1)
    if activation == "silu":
        y = F.silu(y)
    return y, full[:, full.shape[1] - (K - 1) :]
