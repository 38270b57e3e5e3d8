"""Backward kernel of ``ssm_scan``: the chunks in reverse, the state gradient carried in registers.

Grid: (batch × heads, head-dim tiles of BLOCK_P rows). Every gradient is linear in the head-dim
rows it sums over, so a program with a tile of P writes partial dB, dC (per head and tile), d(dt),
dA and dD (per tile), which the launcher sums over tiles and over the heads of a group; dx and the
state gradient are per row and exact. One tile of all P (the default) needs no dt sum across
programs; more tiles mean more programs (b·H alone is fewer than a large GPU's SMs at small
batches) and a smaller register footprint per program, for the partial sums' memory traffic.

Per chunk (L tokens, ``h`` = the state entering it, saved by the forward,
``dh`` = the gradient of the state leaving it), with W = (C·Bᵀ) ∘ decay and G = (dY·(dt·x)ᵀ) ∘ decay:

    d(dt·x) = Wᵀ·dY + exp(cum_L − cum)·(B·dhᵀ)       dx = dt·d(dt·x) + D·dY
    dC      = G·B + exp(cum)·(dY·h)                   dB = Gᵀ·C + exp(cum_L − cum)·(dt·x)·dh
    dcum_i  = Σ_j (CB∘G)_ij − Σ_j (CB∘G)_ji + exp(cum_i)·Σ_p dY_ip (C·hᵀ)_ip − u_i
    u_i     = exp(cum_L − cum_i)·Σ_p (dt·x)_ip (B·dhᵀ)_ip,   dcum_L += exp(cum_L)·⟨dh, h⟩ + Σ u
    d(dt·A)_j = Σ_{i>=j} dcum_i + dcum_L,   ddt = A·d(dt·A) + Σ_p x·d(dt·x),   dA = Σ dt·d(dt·A)
    dh     ← exp(cum_L)·dh + dYᵀ·(exp(cum)·C)         (the gradient of the state entering it)

Two ways to walk (``ScanTiles.parallel_grads``). Sequential (the default): one program per
(batch × head, P tile) walks the chunks in reverse with the state gradient in registers, computing
each chunk's gradients on the way (``_ssd_bwd_kernel``). Chunk-parallel: ``_ssd_bwd_state_kernel``
walks the chunks in reverse carrying only the state gradient (one matmul per chunk) and stores the
gradient of the state leaving every chunk; ``_ssd_bwd_chunk_kernel`` then computes every chunk's
gradients at once, one program per (chunk, batch × head, P tile) reading that chunk's saved
entering state and stored leaving-state gradient — the whole grid in parallel for one more write
and read of ``b·H·⌈T/L⌉·P·N`` float32 values (the same size as the forward's saved states). dA
and dD are then partial per chunk too. Both walks run the same per-chunk code (``_chunk_grads``,
``_dh_prev``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index, mm
from bmojo_triton.ops.ssm_scan.fwd import _chunk_total, _chunk_walk_strides


@triton.jit
def _dh_prev(dh, dy, cm, e_cum, total, DOT_PREC: tl.constexpr):
    """The gradient of the state entering a chunk from the gradient ``dh`` of the state leaving it."""
    return dh * tl.exp(total) + mm(tl.trans(dy), cm * e_cum[:, None], DOT_PREC, False)


@triton.jit
def _chunk_grads(
    X,
    DT,
    B,
    C,
    DY,
    DX,
    DDT_P,
    DB_H,
    DC_H,
    hin,
    dh,
    a,
    d,
    b,
    h,
    g,
    c,
    pid_p,
    n_p,
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
    HAS_D: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Chunk ``c``'s gradients for one (batch, head, P tile), given ``hin`` (the state entering the
    chunk) and ``dh`` (the gradient of the state leaving it): stores dx, the d(dt) partial and the
    dB, dC partials; returns the per-token dA and dD terms and the gradient of the entering state."""
    offs_l = tl.arange(0, BLOCK_L)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    p_ok = offs_p < P
    n_ok = offs_n < N
    causal = offs_l[:, None] >= offs_l[None, :]
    t = c * BLOCK_L + offs_l
    t_ok = t < T
    lp_mask = t_ok[:, None] & p_ok[None, :]
    ln_mask = t_ok[:, None] & n_ok[None, :]
    x_off = b * sx_b + t[:, None] * sx_t + h * sx_h + offs_p[None, :]
    bc_off = b * sb_b + t[:, None] * sb_t + g * sb_g + offs_n[None, :]
    dt = tl.load(DT + b * sdt_b + t * sdt_t + h, mask=t_ok, other=0.0).to(ACC)
    x = tl.load(X + x_off, mask=lp_mask, other=0.0).to(ACC)
    dy = tl.load(DY + x_off, mask=lp_mask, other=0.0).to(ACC)
    bm = tl.load(B + bc_off, mask=ln_mask, other=0.0).to(ACC)
    cm = tl.load(C + bc_off, mask=ln_mask, other=0.0).to(ACC)
    cum = tl.cumsum(dt * a, axis=0)
    total = _chunk_total(cum, offs_l, BLOCK_L)
    e_cum = tl.exp(cum)
    to_end = tl.exp(total - cum)
    xdt = x * dt[:, None]
    decay = tl.where(causal, tl.exp(cum[:, None] - cum[None, :]), 0.0)
    bc_h = ((b * T + t[:, None]) * H + h) * n_p * N + pid_p * N + offs_n[None, :]
    # each gradient is stored as soon as it is complete, so its (L, N) tile dies early
    cb = mm(cm, tl.trans(bm), DOT_PREC, False)
    gm = mm(dy, tl.trans(xdt), DOT_PREC, False) * decay
    mmat = cb * gm
    dcum = tl.sum(mmat, axis=1) - tl.sum(mmat, axis=0)
    # dC, and the entering state's share of dcum: Σ_p dY·(C·hᵀ) = Σ_n C·(dY·h)
    dy_h = mm(dy, hin, DOT_PREC, False)  # (L, N)
    dcum += e_cum * tl.sum(cm * dy_h, axis=1)
    dc = mm(gm, bm, DOT_PREC, False) + dy_h * e_cum[:, None]
    tl.store(DC_H + bc_h, dc.to(DC_H.dtype.element_ty), mask=ln_mask)
    db = mm(tl.trans(gm), cm, DOT_PREC, False) + mm(xdt * to_end[:, None], dh, DOT_PREC, False)
    tl.store(DB_H + bc_h, db.to(DB_H.dtype.element_ty), mask=ln_mask)
    b_dh = mm(bm, tl.trans(dh), DOT_PREC, False)  # (L, P)
    dxdt = mm(tl.trans(cb * decay), dy, DOT_PREC, False) + b_dh * to_end[:, None]
    u = to_end * tl.sum(xdt * b_dh, axis=1)
    dx = dxdt * dt[:, None]
    dd = tl.zeros([BLOCK_L], dtype=ACC)
    if HAS_D:
        dx += dy * d
        dd = tl.sum(x * dy, axis=1)
    tl.store(DX + x_off, dx.to(DX.dtype.element_ty), mask=lp_mask)
    dcum -= u
    dtot = tl.exp(total) * tl.sum(tl.sum(dh * hin, axis=1), axis=0) + tl.sum(u, axis=0)
    # d(dt·A)_j = Σ_{i>=j} dcum_i + dtot  (a reverse cumulative sum)
    dadt = tl.sum(dcum, axis=0) - tl.cumsum(dcum, axis=0) + dcum + dtot
    ddt = tl.sum(dxdt * x, axis=1) + a * dadt
    tl.store(DDT_P + ((b * T + t) * H + h) * n_p + pid_p, ddt, mask=t_ok)
    return dt * dadt, dd, _dh_prev(dh, dy, cm, e_cum, total, DOT_PREC)


@triton.jit
def _ssd_bwd_kernel(
    X,
    DT,
    A,
    B,
    C,
    D,
    DY,
    DHT,
    STATES,
    DX,
    DDT_P,
    DB_H,
    DC_H,
    DA_B,
    DD_B,
    DH0,
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
    HAS_DHT: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """The sequential walk. DX has X's strides; with nP = the grid's second extent: DDT_P is
    (b, T, H, nP), DB_H and DC_H are (b, T, H·nP, N), DA_B and DD_B (b, H, nP), all contiguous
    partials in ACC; DH0 is (b, H, P, N)."""
    pid_bh = index(tl.program_id(0), IDX64)
    pid_p = index(tl.program_id(1), IDX64)
    sx_t, sdt_t, sb_t = _chunk_walk_strides(sx_t, sdt_t, sb_t, IDX64)
    n_p = tl.num_programs(1)
    b = pid_bh // H
    h = pid_bh % H
    g = h // HEADS_PER_GROUP
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    pn_mask = (offs_p < P)[:, None] & (offs_n < N)[None, :]
    a = tl.load(A + h).to(ACC)
    d = 0.0
    if HAS_D:
        d = tl.load(D + h).to(ACC)
    state_ptrs = pid_bh * P * N + offs_p[:, None] * N + offs_n[None, :]
    if HAS_DHT:
        dh = tl.load(DHT + state_ptrs, mask=pn_mask, other=0.0).to(ACC)
    else:
        dh = tl.zeros([BLOCK_P, BLOCK_N], dtype=ACC)
    n_chunks = tl.cdiv(T, BLOCK_L)
    da_acc = tl.zeros([BLOCK_L], dtype=ACC)
    dd_acc = tl.zeros([BLOCK_L], dtype=ACC)
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        hin = tl.load(
            STATES + (pid_bh * n_chunks + c) * P * N + offs_p[:, None] * N + offs_n[None, :], mask=pn_mask, other=0.0
        )
        da, dd, dh = _chunk_grads(
            X, DT, B, C, DY, DX, DDT_P, DB_H, DC_H, hin, dh, a, d, b, h, g, c, pid_p, n_p,
            sx_b, sx_t, sx_h, sdt_b, sdt_t, sb_b, sb_t, sb_g, T, H, P, N,
            HAS_D, BLOCK_L, BLOCK_P, BLOCK_N, ACC, DOT_PREC,
        )  # fmt: skip
        da_acc += da
        dd_acc += dd
    tl.store(DA_B + pid_bh * n_p + pid_p, tl.sum(da_acc, axis=0))
    tl.store(DD_B + pid_bh * n_p + pid_p, tl.sum(dd_acc, axis=0))
    tl.store(DH0 + state_ptrs, dh.to(DH0.dtype.element_ty), mask=pn_mask)


@triton.jit
def _ssd_bwd_state_kernel(
    DT,
    A,
    C,
    DY,
    DHT,
    DSTATES,
    DH0,
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
    HAS_DHT: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """The chunk-parallel backward's sequential part (grid: batch × heads, P tiles, N tiles): the
    state gradient walked in reverse; DSTATES (b, H, ⌈T/L⌉, P, N), in ACC, gets the gradient of the
    state leaving every chunk, DH0 the gradient of the initial state. Rows of P and columns of N
    are independent here."""
    pid_bh = index(tl.program_id(0), IDX64)
    pid_p = index(tl.program_id(1), IDX64)
    sx_t, sdt_t, sb_t = _chunk_walk_strides(sx_t, sdt_t, sb_t, IDX64)
    b = pid_bh // H
    h = pid_bh % H
    g = h // HEADS_PER_GROUP
    offs_l = tl.arange(0, BLOCK_L)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)  # N tiles: columns are independent
    p_ok = offs_p < P
    n_ok = offs_n < N
    pn_mask = p_ok[:, None] & n_ok[None, :]
    a = tl.load(A + h).to(ACC)
    state_ptrs = pid_bh * P * N + offs_p[:, None] * N + offs_n[None, :]
    if HAS_DHT:
        dh = tl.load(DHT + state_ptrs, mask=pn_mask, other=0.0).to(ACC)
    else:
        dh = tl.zeros([BLOCK_P, BLOCK_N], dtype=ACC)
    n_chunks = tl.cdiv(T, BLOCK_L)
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        tl.store(DSTATES + (pid_bh * n_chunks + c) * P * N + offs_p[:, None] * N + offs_n[None, :], dh, mask=pn_mask)
        t = c * BLOCK_L + offs_l
        t_ok = t < T
        dt = tl.load(DT + b * sdt_b + t * sdt_t + h, mask=t_ok, other=0.0).to(ACC)
        dy = tl.load(
            DY + b * sx_b + t[:, None] * sx_t + h * sx_h + offs_p[None, :],
            mask=t_ok[:, None] & p_ok[None, :],
            other=0.0,
        ).to(ACC)
        cm = tl.load(
            C + b * sb_b + t[:, None] * sb_t + g * sb_g + offs_n[None, :], mask=t_ok[:, None] & n_ok[None, :], other=0.0
        ).to(ACC)
        cum = tl.cumsum(dt * a, axis=0)
        dh = _dh_prev(dh, dy, cm, tl.exp(cum), _chunk_total(cum, offs_l, BLOCK_L), DOT_PREC)
    tl.store(DH0 + state_ptrs, dh.to(DH0.dtype.element_ty), mask=pn_mask)


@triton.jit
def _ssd_bwd_chunk_kernel(
    X,
    DT,
    A,
    B,
    C,
    D,
    DY,
    STATES,
    DSTATES,
    DX,
    DDT_P,
    DB_H,
    DC_H,
    DA_B,
    DD_B,
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
    """The chunk-parallel backward's parallel part (grid: chunks, batch × heads, P tiles): one
    chunk's gradients from the forward's saved entering state and ``_ssd_bwd_state_kernel``'s
    leaving-state gradient. Partials as ``_ssd_bwd_kernel``'s, except DA_B and DD_B, which are
    (b, H, ⌈T/L⌉·nP): one slot per (chunk, P tile)."""
    c = index(tl.program_id(0), IDX64)
    pid_bh = index(tl.program_id(1), IDX64)
    pid_p = index(tl.program_id(2), IDX64)
    n_p = tl.num_programs(2)
    b = pid_bh // H
    h = pid_bh % H
    g = h // HEADS_PER_GROUP
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    pn_mask = (offs_p < P)[:, None] & (offs_n < N)[None, :]
    a = tl.load(A + h).to(ACC)
    d = 0.0
    if HAS_D:
        d = tl.load(D + h).to(ACC)
    n_chunks = tl.cdiv(T, BLOCK_L)
    c_ptrs = (pid_bh * n_chunks + c) * P * N + offs_p[:, None] * N + offs_n[None, :]
    hin = tl.load(STATES + c_ptrs, mask=pn_mask, other=0.0)
    dh = tl.load(DSTATES + c_ptrs, mask=pn_mask, other=0.0)
    da, dd, _ = _chunk_grads(
        X, DT, B, C, DY, DX, DDT_P, DB_H, DC_H, hin, dh, a, d, b, h, g, c, pid_p, n_p,
        sx_b, sx_t, sx_h, sdt_b, sdt_t, sb_b, sb_t, sb_g, T, H, P, N,
        HAS_D, BLOCK_L, BLOCK_P, BLOCK_N, ACC, DOT_PREC,
    )  # fmt: skip
    slot = (pid_bh * n_chunks + c) * n_p + pid_p
    tl.store(DA_B + slot, tl.sum(da, axis=0))
    tl.store(DD_B + slot, tl.sum(dd, axis=0))
