"""Forward kernel of ``causal_conv1d``: a (time tile × channel tile × batch) grid.

y[t, c] = act(bias[c] + Σ_k w[c, k]·xx[t + k, c]) with xx = [initial_state; x]: the rows before the
sequence are read from the state, so nothing is concatenated in memory.
"""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index


@triton.jit
def _conv_fwd_kernel(
    X,
    S,
    W,
    BIAS,
    Y,
    T,
    CH,
    K,
    sx_b,
    sx_t,
    ss_b,
    ss_t,
    HAS_STATE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    pid_t = index(tl.program_id(0), IDX64)
    pid_c = index(tl.program_id(1), IDX64)
    b = index(tl.program_id(2), IDX64)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    t_ok = t < T
    c_ok = c < CH
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(BIAS + c, mask=c_ok, other=0.0).to(ACC)[None, :]
    for k in range(0, K):
        w = tl.load(W + c * K + k, mask=c_ok, other=0.0).to(ACC)
        src = t + k - (K - 1)  # row of x this tap reads (negative: the state's row K-1+src)
        xv = tl.load(
            X + b * sx_b + src[:, None] * sx_t + c[None, :],
            mask=(t_ok & (src >= 0))[:, None] & c_ok[None, :],
            other=0.0,
        ).to(ACC)
        if HAS_STATE:
            xv += tl.load(
                S + b * ss_b + (K - 1 + src)[:, None] * ss_t + c[None, :],
                mask=(t_ok & (src < 0))[:, None] & c_ok[None, :],
                other=0.0,
            ).to(ACC)
        acc += xv * w[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(
        Y + b * sx_b + t[:, None] * sx_t + c[None, :], acc.to(Y.dtype.element_ty), mask=t_ok[:, None] & c_ok[None, :]
    )
