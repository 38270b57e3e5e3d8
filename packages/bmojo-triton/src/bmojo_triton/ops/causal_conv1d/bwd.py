"""Backward kernels of ``causal_conv1d``.

With xx = [initial_state; x] (K-1 + T rows), pre[t] = bias + Σ_k w[:, k]·xx[t+k] and y = act(pre),
let g = dy·act'(pre) (silu' = σ(1 + pre·(1 − σ))). Then

    dxx[r] = Σ_k w[:, k]·g[r − k] (0 <= r − k < T)  + dfinal[r − T] (r >= T: the returned state)
    dw[:, k] = Σ_{b,t} g[t]·xx[t + k],   dbias = Σ_{b,t} g[t]

``_conv_bwd_g_kernel`` recomputes pre, writes g (float32/64) and each time tile's dw terms;
``_conv_bwd_dx_kernel`` gathers dxx row by row and splits it into dx and the initial state's
gradient. The launcher sums the per-tile dw terms and g (for dbias).
"""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index


@triton.jit
def _conv_bwd_g_kernel(
    X,
    S,
    W,
    BIAS,
    DY,
    G,
    DW_PART,
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
    """G and DY have X's strides; DW_PART is (b · time tiles, CH, K) contiguous."""
    pid_t = index(tl.program_id(0), IDX64)
    pid_c = index(tl.program_id(1), IDX64)
    b = index(tl.program_id(2), IDX64)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    t_ok = t < T
    c_ok = c < CH
    tc_mask = t_ok[:, None] & c_ok[None, :]
    pre = tl.zeros([BLOCK_T, BLOCK_C], dtype=ACC)
    if HAS_BIAS:
        pre += tl.load(BIAS + c, mask=c_ok, other=0.0).to(ACC)[None, :]
    for k in range(0, K):
        w = tl.load(W + c * K + k, mask=c_ok, other=0.0).to(ACC)
        pre += _xx_rows(X, S, b, t + k - (K - 1), t_ok, c, c_ok, K, sx_b, sx_t, ss_b, ss_t, HAS_STATE, ACC) * w[None, :]
    dy = tl.load(DY + b * sx_b + t[:, None] * sx_t + c[None, :], mask=tc_mask, other=0.0).to(ACC)
    if SILU:
        sig = tl.sigmoid(pre)
        g = dy * sig * (1.0 + pre * (1.0 - sig))
    else:
        g = dy
    g = tl.where(tc_mask, g, 0.0)
    tl.store(G + b * sx_b + t[:, None] * sx_t + c[None, :], g.to(G.dtype.element_ty), mask=tc_mask)
    part = (b * tl.num_programs(0) + pid_t) * CH * K
    for k in range(0, K):
        xv = _xx_rows(X, S, b, t + k - (K - 1), t_ok, c, c_ok, K, sx_b, sx_t, ss_b, ss_t, HAS_STATE, ACC)
        tl.store(DW_PART + part + c * K + k, tl.sum(g * xv, axis=0).to(DW_PART.dtype.element_ty), mask=c_ok)


@triton.jit
def _xx_rows(X, S, b, src, t_ok, c, c_ok, K, sx_b, sx_t, ss_b, ss_t, HAS_STATE: tl.constexpr, ACC: tl.constexpr):
    """Rows ``src`` of x (negative: row K-1+src of the initial state, zeros without one)."""
    v = tl.load(
        X + b * sx_b + src[:, None] * sx_t + c[None, :], mask=(t_ok & (src >= 0))[:, None] & c_ok[None, :], other=0.0
    ).to(ACC)
    if HAS_STATE:
        v += tl.load(
            S + b * ss_b + (K - 1 + src)[:, None] * ss_t + c[None, :],
            mask=(t_ok & (src < 0))[:, None] & c_ok[None, :],
            other=0.0,
        ).to(ACC)
    return v


@triton.jit
def _conv_bwd_dx_kernel(
    G,
    W,
    DFINAL,
    DX,
    DS,
    T,
    CH,
    K,
    sx_b,
    sx_t,
    HAS_DFINAL: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """Rows r of xx (T + K - 1 of them): r >= K-1 go to DX (X's strides), r < K-1 to DS
    ((b, K-1, CH) contiguous). DFINAL is (b, K-1, CH) contiguous."""
    pid_r = index(tl.program_id(0), IDX64)
    pid_c = index(tl.program_id(1), IDX64)
    b = index(tl.program_id(2), IDX64)
    r = pid_r * BLOCK_T + tl.arange(0, BLOCK_T)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    r_ok = r < T + K - 1
    c_ok = c < CH
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=ACC)
    for k in range(0, K):
        w = tl.load(W + c * K + k, mask=c_ok, other=0.0).to(ACC)
        src = r - k  # the output row t whose tap k reads xx row r
        gv = tl.load(
            G + b * sx_b + src[:, None] * sx_t + c[None, :],
            mask=(r_ok & (src >= 0) & (src < T))[:, None] & c_ok[None, :],
            other=0.0,
        ).to(ACC)
        acc += gv * w[None, :]
    if HAS_DFINAL:
        f = r - T
        acc += tl.load(
            DFINAL + (b * (K - 1) + f[:, None]) * CH + c[None, :],
            mask=(r_ok & (f >= 0))[:, None] & c_ok[None, :],
            other=0.0,
        ).to(ACC)
    xr = r - (K - 1)
    tl.store(
        DX + b * sx_b + xr[:, None] * sx_t + c[None, :],
        acc.to(DX.dtype.element_ty),
        mask=(r_ok & (xr >= 0))[:, None] & c_ok[None, :],
    )
    tl.store(
        DS + (b * (K - 1) + r[:, None]) * CH + c[None, :],
        acc.to(DS.dtype.element_ty),
        mask=(r < K - 1)[:, None] & c_ok[None, :],
    )
