"""Causal depthwise conv1d in pure MLX (same contract as ``bmojo.ops.causal_conv1d.reference``).

Written as a sum of K shifted slices (K is the short conv width, 4 in Mamba-2): exact in every
dtype, differentiable by ``mx.grad``, and no layout change for ``mx.conv1d``.
"""

from __future__ import annotations

import mlx.core as mx
from bmojo.argcheck import check_causal_conv1d_args

from bmojo_mlx.ops._checks import MLX
from bmojo_mlx.ops._math import silu


def _activate(y, activation):
    return silu(y) if activation == "silu" else y


def causal_conv1d(
    x: mx.array,
    weight: mx.array,
    bias: mx.array | None = None,
    initial_state: mx.array | None = None,
    activation: str | None = "silu",
) -> tuple[mx.array, mx.array]:
    """x (batch, T, channels), weight (channels, K) → y (batch, T, channels) and the last K-1
    inputs (batch, K-1, channels); inputs before the sequence come from ``initial_state``."""
    K = check_causal_conv1d_args(MLX, x, weight, bias, initial_state, activation, step=False)
    b, T, ch = x.shape
    if initial_state is None:
        initial_state = mx.zeros((b, K - 1, ch), dtype=x.dtype)
    xx = mx.concatenate([initial_state, x], axis=1)  # (b, T+K-1, ch)
    y = xx[:, 0:T] * weight[:, 0]
    for k in range(1, K):
        y = y + xx[:, k : k + T] * weight[:, k]
    if bias is not None:
        y = y + bias
    # the state owns its K-1 rows (mx.contiguous copies): a slice would keep the whole input alive
    return _activate(y, activation), mx.contiguous(xx[:, T:])


def causal_conv1d_step(
    x: mx.array,
    state: mx.array,
    weight: mx.array,
    bias: mx.array | None = None,
    activation: str | None = "silu",
) -> tuple[mx.array, mx.array]:
    """One token: x (batch, channels), state (batch, K-1, channels) → (y, new state)."""
    check_causal_conv1d_args(MLX, x, weight, bias, state, activation, step=True)
    xx = mx.concatenate([state, x[:, None]], axis=1)  # (b, K, ch)
    y = mx.sum(xx * weight.T[None], axis=1)
    if bias is not None:
        y = y + bias
    return _activate(y, activation), xx[:, 1:]
