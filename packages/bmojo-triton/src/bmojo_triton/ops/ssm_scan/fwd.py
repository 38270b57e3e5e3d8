"""Forward kernel of ``ssm_scan``: chunked SSD with the inter-chunk state kept in registers.

Grid: (batch × heads, head-dim tiles of BLOCK_P). A program owns the (BLOCK_P × N) state of its
head and walks the sequence chunk by chunk (L tokens): within a chunk the recurrence is three
matmuls (Mamba-2's SSD form), across chunks only the state is carried:

    cum_i   = Σ_{j<=i} dt_j·A                                (tl.cumsum, within the chunk)
    y       = ((C·Bᵀ) ∘ exp(cum_i − cum_j)[i>=j]) · (dt·x)    intra-chunk
            + exp(cum_i)·(C·hᵀ)                               the entering state
            + D·x
    h      ← exp(cum_L)·h + (dt·x·exp(cum_L − cum))ᵀ·B          the state leaving the chunk

Rows past T load dt = 0 (the state is unchanged by them, as in core's padding). B and C are read
from the head's group (GQA-style sharing, nothing repeated in memory). The chunk length is the
kernel's own tile (the ``chunk_size`` argument only changes float rounding in the reference).
With SAVE_STATES the state entering every chunk is stored (ACC precision) for the backward.

Two ways to get y (``ScanTiles.parallel_out``): in the same sequential pass (``OUTPUT``, the
default), or afterwards by ``_ssd_chunk_out_kernel``, one program per (chunk, batch × head, P tile)
reading the stored state entering its chunk — the sequential pass then only carries the state (one
matmul per chunk instead of four, no C loads), and the outputs run with the whole grid in parallel,
for one write and one read of the states (float32, ``b·H·⌈T/L⌉·P·N`` values). Without OUTPUT the
state's columns are independent too, so that pass may also split N over the grid's third axis
(``ScanTiles.block_n``; flash-linear-attention's ``chunk_fwd_h`` tiles both state dimensions the
same way): more, smaller programs for the one sequential part.
"""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index, mm


@triton.jit
def _chunk_walk_strides(sx_t, sdt_t, sb_t, IDX64: tl.constexpr):
    """The time strides a chunk walk's positions multiply, widened to int64 with ``IDX64``: the
    walk's counter may stay int32 on a GPU (a Python int under the interpreter), while what derives
    from a program id already is int64 (``index``). Unchanged without ``IDX64``."""
    return index(sx_t, IDX64), index(sdt_t, IDX64), index(sb_t, IDX64)


@triton.jit
def _chunk_total(cum, offs_l, BLOCK_L: tl.constexpr):
    """cum_L, the chunk's whole decay exponent, read from ``cum`` itself (rows past T add 0).
    ``tl.sum(dt·A)`` would round differently from the cumsum, so exp(total − cum) — the newest
    token's weight in the leaving state — would be exp(±ulp(|Σ dt·A|)) instead of exactly 1 (as
    core's ``cum[..., -1:] - cum``): with |Σ dt·A| ~ 1e3 that cost float32 final states 20× the
    tolerance."""
    return tl.sum(tl.where(offs_l == BLOCK_L - 1, cum, 0.0), axis=0)


@triton.jit
def _chunk_y(x, xdt, cm, bm, cum, state, d, causal, HAS_D: tl.constexpr, ACC: tl.constexpr, DOT_PREC: tl.constexpr):
    """y of one chunk: the intra-chunk term, the entering state's term and D·x."""
    cb = mm(cm, tl.trans(bm), DOT_PREC, False)
    decay = tl.where(causal, tl.exp(cum[:, None] - cum[None, :]), 0.0)
    y = mm((cb * decay).to(ACC), xdt, DOT_PREC, False)
    y += mm(cm, tl.trans(state), DOT_PREC, False) * tl.exp(cum)[:, None]
    if HAS_D:
        y += x * d
    return y


@triton.jit
def _ssd_fwd_kernel(
    X,
    DT,
    A,
    B,
    C,
    D,
    H0,
    Y,
    HT,
    STATES,
    sx_b,
    sx_t,
    sx_h,
    sdt_b,
    sdt_t,
    sb_b,
    sb_t,
    sb_g,
    T,
    H,
    P,
    N,
    HEADS_PER_GROUP,
    HAS_D: tl.constexpr,
    HAS_H0: tl.constexpr,
    SAVE_STATES: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
    OUTPUT: tl.constexpr = True,
    IDX64: tl.constexpr = False,
):
    pid_bh = index(tl.program_id(0), IDX64)
    pid_p = index(tl.program_id(1), IDX64)
    sx_t, sdt_t, sb_t = _chunk_walk_strides(sx_t, sdt_t, sb_t, IDX64)
    b = pid_bh // H
    h = pid_bh % H
    g = h // HEADS_PER_GROUP
    offs_l = tl.arange(0, BLOCK_L)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    if OUTPUT:  # y sums over N: all of it
        offs_n = tl.arange(0, BLOCK_N)
    else:  # the state's columns are independent: the grid's third axis may split them
        offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    p_ok = offs_p < P
    n_ok = offs_n < N
    a = tl.load(A + h).to(ACC)
    state_ptrs = (b * H + h) * P * N + offs_p[:, None] * N + offs_n[None, :]
    if HAS_H0:
        state = tl.load(H0 + state_ptrs, mask=p_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
    else:
        state = tl.zeros([BLOCK_P, BLOCK_N], dtype=ACC)
    d = 0.0
    if HAS_D:
        d = tl.load(D + h).to(ACC)
    causal = offs_l[:, None] >= offs_l[None, :]
    n_chunks = tl.cdiv(T, BLOCK_L)
    for t0 in range(0, T, BLOCK_L):
        if SAVE_STATES:  # the state entering this chunk, for the backward
            c_ptrs = ((b * H + h) * n_chunks + t0 // BLOCK_L) * P * N + offs_p[:, None] * N + offs_n[None, :]
            tl.store(STATES + c_ptrs, state, mask=p_ok[:, None] & n_ok[None, :])
        t = t0 + offs_l
        t_ok = t < T
        dt = tl.load(DT + b * sdt_b + t * sdt_t + h, mask=t_ok, other=0.0).to(ACC)
        x = tl.load(
            X + b * sx_b + t[:, None] * sx_t + h * sx_h + offs_p[None, :], mask=t_ok[:, None] & p_ok[None, :], other=0.0
        ).to(ACC)
        bm = tl.load(
            B + b * sb_b + t[:, None] * sb_t + g * sb_g + offs_n[None, :], mask=t_ok[:, None] & n_ok[None, :], other=0.0
        ).to(ACC)
        cum = tl.cumsum(dt * a, axis=0)
        total = _chunk_total(cum, offs_l, BLOCK_L)
        xdt = x * dt[:, None]
        if OUTPUT:
            cm = tl.load(
                C + b * sb_b + t[:, None] * sb_t + g * sb_g + offs_n[None, :],
                mask=t_ok[:, None] & n_ok[None, :],
                other=0.0,
            ).to(ACC)
            y = _chunk_y(x, xdt, cm, bm, cum, state, d, causal, HAS_D, ACC, DOT_PREC)
            tl.store(
                Y + b * sx_b + t[:, None] * sx_t + h * sx_h + offs_p[None, :],
                y.to(Y.dtype.element_ty),
                mask=t_ok[:, None] & p_ok[None, :],
            )
        to_end = tl.exp(total - cum)
        state = state * tl.exp(total) + mm(tl.trans(xdt * to_end[:, None]), bm, DOT_PREC, False)
    tl.store(HT + state_ptrs, state.to(HT.dtype.element_ty), mask=p_ok[:, None] & n_ok[None, :])


@triton.jit
def _ssd_chunk_out_kernel(
    X,
    DT,
    A,
    B,
    C,
    D,
    STATES,
    Y,
    sx_b,
    sx_t,
    sx_h,
    sdt_b,
    sdt_t,
    sb_b,
    sb_t,
    sb_g,
    T,
    H,
    P,
    N,
    HEADS_PER_GROUP,
    HAS_D: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """y of one chunk (grid: chunks, batch × heads, P tiles) from the state entering it, which
    ``_ssd_fwd_kernel`` stored with SAVE_STATES (same chunk length BLOCK_L)."""
    c = index(tl.program_id(0), IDX64)
    pid_bh = index(tl.program_id(1), IDX64)
    pid_p = index(tl.program_id(2), IDX64)
    b = pid_bh // H
    h = pid_bh % H
    g = h // HEADS_PER_GROUP
    offs_l = tl.arange(0, BLOCK_L)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    p_ok = offs_p < P
    n_ok = offs_n < N
    a = tl.load(A + h).to(ACC)
    d = 0.0
    if HAS_D:
        d = tl.load(D + h).to(ACC)
    n_chunks = tl.cdiv(T, BLOCK_L)
    state = tl.load(
        STATES + (pid_bh * n_chunks + c) * P * N + offs_p[:, None] * N + offs_n[None, :],
        mask=p_ok[:, None] & n_ok[None, :],
        other=0.0,
    )
    t = c * BLOCK_L + offs_l
    t_ok = t < T
    ln_mask = t_ok[:, None] & n_ok[None, :]
    dt = tl.load(DT + b * sdt_b + t * sdt_t + h, mask=t_ok, other=0.0).to(ACC)
    x = tl.load(
        X + b * sx_b + t[:, None] * sx_t + h * sx_h + offs_p[None, :], mask=t_ok[:, None] & p_ok[None, :], other=0.0
    ).to(ACC)
    bm = tl.load(B + b * sb_b + t[:, None] * sb_t + g * sb_g + offs_n[None, :], mask=ln_mask, other=0.0).to(ACC)
    cm = tl.load(C + b * sb_b + t[:, None] * sb_t + g * sb_g + offs_n[None, :], mask=ln_mask, other=0.0).to(ACC)
    cum = tl.cumsum(dt * a, axis=0)
    causal = offs_l[:, None] >= offs_l[None, :]
    y = _chunk_y(x, x * dt[:, None], cm, bm, cum, state, d, causal, HAS_D, ACC, DOT_PREC)
    tl.store(
        Y + b * sx_b + t[:, None] * sx_t + h * sx_h + offs_p[None, :],
        y.to(Y.dtype.element_ty),
        mask=t_ok[:, None] & p_ok[None, :],
    )
