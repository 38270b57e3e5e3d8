"""Causal depthwise conv1d over (batch, T, channels), carrying the last ``K-1`` inputs as state.

The state is the raw input tail (not outputs), so a sequence split anywhere gives the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bmojo.argcheck import TORCH, check_causal_conv1d_args


def _activate(y, activation):
    return F.silu(y) if activation == "silu" else y


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """y_t = act(bias + sum_k weight[:, k] * x_{t-K+1+k}); inputs before the sequence come from
    ``initial_state`` (batch, K-1, channels), zeros when absent.

    Returns y (batch, T, channels) and the final state (the last K-1 inputs).
    """
    K = check_causal_conv1d_args(TORCH, x, weight, bias, initial_state, activation, step=False)
    b, _, ch = x.shape
    if initial_state is None:
        initial_state = x.new_zeros(b, K - 1, ch)
    xx = torch.cat([initial_state, x], dim=1)  # (b, T+K-1, ch)
    if ch == 0:  # F.conv1d refuses groups=0; no channels, nothing to convolve
        y = x.clone()  # empty, and still a function of x for autograd
    else:
        y = F.conv1d(xx.transpose(1, 2), weight[:, None, :], bias, groups=ch).transpose(1, 2)
    # The state owns its K-1 rows: a slice would keep the whole (T+K-1)-row input alive.
    return _activate(y, activation), xx[:, xx.shape[1] - (K - 1) :].clone()


def causal_conv1d_step(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: x (batch, channels), state (batch, K-1, channels) → (y, new state)."""
    check_causal_conv1d_args(TORCH, x, weight, bias, state, activation, step=True)
    xx = torch.cat([state, x[:, None]], dim=1)  # (b, K, ch)
    y = torch.einsum("bkc,ck->bc", xx, weight)
    if bias is not None:
        y = y + bias
    return _activate(y, activation), xx[:, 1:]
