"""Backward kernels, fused the same way as the forward: no score matrix is stored.

With ``P = exp(S - lse)`` recomputed per tile from the saved log-sum-exp, and
``Δ_i = Σ_d dO_id·O_id − dlse_i`` (the lse's own upstream gradient enters here, since
∂lse_i/∂S_ij = P_ij):

    dS = P ∘ (dO·Vᵀ − Δ),   dQ = scale·dS·K,   dK = scale·dSᵀ·Q,   dV = Pᵀ·dO.

* ``_attn_bwd_dq_kernel`` — grid as the forward (query tiles × batch·heads), walks the same
  three sources and accumulates dQ in registers.
* ``_attn_bwd_dkdv_band_kernel`` — grid (key-row tiles × batch·kv heads) for a banded source
  (raw keys, or fading keys shifted by δ): a key row at position j is seen by the queries
  i ∈ [j+offset, j+offset+width−1], so each program visits only those query tiles, for each of
  the G query heads sharing the kv head (GQA is summed in registers, no atomics).
* ``_attn_bwd_dkdv_eidetic_kernel`` — grid (slot tiles × snapshots × batch·kv heads): slot tile
  of snapshot s is seen by the queries of chunk s at positions >= epos + w.

Two variants of the backward (chosen by the launcher from ``TILES``' ``bwd_dkdv`` config's ``dq``):

* "split" (the default): the dQ kernel (3 matmuls per visible tile pair: S, dP, dS·K) plus the
  dK/dV kernels (4: S, Pᵀ·dO, dP, dSᵀ·Q) — 7 matmuls, no atomics, deterministic;
* "atomic" (FlashAttention-2's original backward): no dQ kernel; both dK/dV kernels, with
  ``ATOMIC_DQ``, also add each tile's scale·dS·K into a zeroed float32 (float64 for float64 inputs)
  dQ buffer with ``tl.atomic_add`` — 5 matmuls per tile pair, one atomic add per (query row, head
  dim) per visited tile pair; the float add order varies between runs on a GPU.

Every row of every gradient is written (rows no query sees get zeros). Probabilities are
recomputed in base 2 as in the forward: ``P = exp2(q·kᵀ·scale·log₂e − lse·log₂e)``.
``_attn_bwd_delta_kernel`` computes Δ first (one read of O and dO; the torch expression it
replaces made float32 copies of both). ``SPLIT_INTERIOR``: as in the forward, interior tiles are
walked without the mask, or every tile masked in one loop.
"""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index, mm
from bmojo_triton.ops.bmojo_attention.fwd import _band_interior, _band_tile_scores, _softmax_consts, _walk_strides


@triton.jit
def _band_dq_tile(
    dq,
    q,
    do,
    lse,
    dlt,
    i_pos,
    q_ok,
    n0,
    hi,
    K,
    V,
    stride_kt,
    stride_kd,
    stride_vt,
    stride_vd,
    src_start,
    offset,
    width,
    scale2,
    offs_d,
    d_ok,
    BLOCK_N: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    MASKED: tl.constexpr,
):
    """dQ (unscaled: the kernel multiplies by scale once at the end) from source rows
    [n0, n0 + BLOCK_N); ``lse`` in base 2, ``scale2`` = scale·log₂e (``MASKED``: see
    ``fwd._band_tile_scores``; its -inf scores give p = 0, lse being finite)."""
    k, v, s = _band_tile_scores(
        q, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
        src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, MASKED,
    )  # fmt: skip
    p = tl.exp2(s - lse[:, None])
    dp = mm(do, tl.trans(v), DOT_PREC, UPCAST).to(dq.dtype)
    ds = p * (dp - dlt[:, None])
    dq += mm(ds.to(k.dtype), k, DOT_PREC, UPCAST).to(dq.dtype)
    return dq


@triton.jit
def _band_dq(
    dq,
    q,
    do,
    lse,
    dlt,
    i_pos,
    q_ok,
    i_lo,
    i_hi,
    K,
    V,
    stride_kt,
    stride_kd,
    stride_vt,
    stride_vd,
    src_start,
    Tsrc,
    offset,
    width,
    scale2,
    offs_d,
    d_ok,
    BLOCK_N: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    SPLIT_INTERIOR: tl.constexpr,
):
    """dQ of one banded source, over the key tiles the forward visits (SPLIT_INTERIOR: interior
    tiles unmasked)."""
    lo = tl.maximum(i_lo - offset - width + 1, tl.maximum(src_start, 0)) - src_start
    hi = tl.minimum(i_hi - offset + 1 - src_start, Tsrc)
    if SPLIT_INTERIOR:
        in_lo, in_hi = _band_interior(lo, hi, i_lo, i_hi, src_start, offset, width, BLOCK_N)
    else:
        in_lo, in_hi = hi, hi
    for n0 in range(lo, in_lo, BLOCK_N):
        dq = _band_dq_tile(
            dq, q, do, lse, dlt, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
            src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, True,
        )  # fmt: skip
    for n0 in range(in_lo, in_hi, BLOCK_N):
        dq = _band_dq_tile(
            dq, q, do, lse, dlt, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
            src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, False,
        )  # fmt: skip
    for n0 in range(in_hi, hi, BLOCK_N):
        dq = _band_dq_tile(
            dq, q, do, lse, dlt, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
            src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, True,
        )  # fmt: skip
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    Q,
    K,
    V,
    KF,
    VF,
    EK,
    EV,
    EPOS,
    DO,
    LSE,
    DLT,
    DQ,
    sq_b,
    sq_t,
    sq_h,
    sq_d,
    sk_b,
    sk_t,
    sk_h,
    sk_d,
    sv_b,
    sv_t,
    sv_h,
    sv_d,
    skf_b,
    skf_t,
    skf_h,
    skf_d,
    svf_b,
    svf_t,
    svf_h,
    svf_d,
    sek_b,
    sek_s,
    sek_m,
    sek_h,
    sek_d,
    sev_b,
    sev_s,
    sev_m,
    sev_h,
    sev_d,
    sep_b,
    sep_s,
    sep_m,
    sdo_b,
    sdo_t,
    sdo_h,
    sdo_d,
    sl_b,
    sl_h,
    sl_t,
    T,
    Tk,
    Tf,
    M,
    H,
    G,
    Dh,
    q_start,
    window,
    fading_window,
    delta,
    chunk,
    Scale,
    HAS_FADING: tl.constexpr,
    HAS_EIDETIC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    SPLIT_INTERIOR: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """dQ; DQ has q's strides, DO has its own; LSE and DLT (float32/64) share strides sl_*."""
    scale, scale2, _ln2, log2e = _softmax_consts(Scale)
    pid_m = index(tl.program_id(0), IDX64)
    pid_bh = index(tl.program_id(1), IDX64)
    # the strides a loop's positions multiply, int64 with IDX64 (offsets past 2**31 - 1 elements)
    sk_t, sv_t, skf_t, svf_t, sek_s, sek_m, sev_s, sev_m, sep_s, sep_m = _walk_strides(
        sk_t, sv_t, skf_t, svf_t, sek_s, sek_m, sev_s, sev_m, sep_s, sep_m, IDX64
    )
    b = pid_bh // H
    h = pid_bh % H
    hk = h // G
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ok = offs_m < T
    d_ok = offs_d < Dh
    qd_mask = q_ok[:, None] & d_ok[None, :]
    i_pos = q_start + offs_m
    q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_t + offs_d[None, :] * sq_d, mask=qd_mask, other=0.0)
    do = tl.load(
        DO + b * sdo_b + h * sdo_h + offs_m[:, None] * sdo_t + offs_d[None, :] * sdo_d, mask=qd_mask, other=0.0
    )
    lse = tl.load(LSE + b * sl_b + h * sl_h + offs_m * sl_t, mask=q_ok, other=0.0).to(ACC) * log2e  # base 2
    dlt = tl.load(DLT + b * sl_b + h * sl_h + offs_m * sl_t, mask=q_ok, other=0.0).to(ACC)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)
    q_end = q_start + T - 1
    i_first = q_start + pid_m * BLOCK_M
    i_last = tl.minimum(i_first + BLOCK_M - 1, q_end)
    dq = _band_dq(
        dq,
        q,
        do,
        lse,
        dlt,
        i_pos,
        q_ok,
        i_first,
        i_last,
        K + b * sk_b + hk * sk_h,
        V + b * sv_b + hk * sv_h,
        sk_t,
        sk_d,
        sv_t,
        sv_d,
        q_end + 1 - Tk,
        Tk,
        0,
        window,
        scale2,
        offs_d,
        d_ok,
        BLOCK_N,
        DOT_PREC,
        UPCAST,
        SPLIT_INTERIOR,
    )
    if HAS_FADING:
        dq = _band_dq(
            dq,
            q,
            do,
            lse,
            dlt,
            i_pos,
            q_ok,
            i_first,
            i_last,
            KF + b * skf_b + hk * skf_h,
            VF + b * svf_b + hk * svf_h,
            skf_t,
            skf_d,
            svf_t,
            svf_d,
            q_end + 1 - Tf,
            Tf,
            delta,
            fading_window,
            scale2,
            offs_d,
            d_ok,
            BLOCK_N,
            DOT_PREC,
            UPCAST,
            SPLIT_INTERIOR,
        )
    if HAS_EIDETIC:
        base = q_start // chunk
        s_lo = i_first // chunk - base
        s_hi = i_last // chunk - base
        snap = i_pos // chunk - base
        for s_idx in range(s_lo, s_hi + 1):
            # not software-pipelined: a snapshot is usually one or two slot tiles, and pipelining
            # this loop held ~60-90 more registers over the whole kernel on sm_90 (the w+f+M
            # forward 253 -> 196, the dQ kernel spilled 240 B/thread -> none)
            for n0 in tl.range(0, M, BLOCK_N, num_stages=1):
                slots = n0 + tl.arange(0, BLOCK_N)
                e_ok = slots < M
                ep = tl.load(EPOS + b * sep_b + s_idx * sep_s + slots * sep_m, mask=e_ok, other=-1)
                kd_mask = e_ok[:, None] & d_ok[None, :]
                k = tl.load(
                    EK + b * sek_b + s_idx * sek_s + hk * sek_h + slots[:, None] * sek_m + offs_d[None, :] * sek_d,
                    mask=kd_mask,
                    other=0.0,
                )
                v = tl.load(
                    EV + b * sev_b + s_idx * sev_s + hk * sev_h + slots[:, None] * sev_m + offs_d[None, :] * sev_d,
                    mask=kd_mask,
                    other=0.0,
                )
                s = mm(q, tl.trans(k), DOT_PREC, UPCAST) * scale2
                vis = (
                    (snap == s_idx)[:, None]
                    & q_ok[:, None]
                    & (ep >= 0)[None, :]
                    & (ep[None, :] <= (i_pos - window)[:, None])
                )
                p = tl.where(vis, tl.exp2(s - lse[:, None]), 0.0)
                dp = mm(do, tl.trans(v), DOT_PREC, UPCAST).to(ACC)
                ds = p * (dp - dlt[:, None])
                dq += mm(ds.to(k.dtype), k, DOT_PREC, UPCAST).to(ACC)
    dq = dq * scale
    tl.store(
        DQ + b * sq_b + h * sq_h + offs_m[:, None] * sq_t + offs_d[None, :] * sq_d,
        dq.to(DQ.dtype.element_ty),
        mask=qd_mask,
    )


@triton.jit
def _query_walk_strides(sq_t, sdo_t, sl_t, sdq_t, IDX64: tl.constexpr):
    """The strides the dK/dV kernels' query walk (``_dkdv_tile``) multiplies by a loop's query
    row, widened to int64 with ``IDX64`` (see ``fwd._walk_strides``)."""
    return index(sq_t, IDX64), index(sdo_t, IDX64), index(sl_t, IDX64), index(sdq_t, IDX64)


@triton.jit
def _dkdv_qtile(
    dk,
    dv,
    k,
    v,
    j_pos,
    j_ok,
    m0,
    q_hi,
    Q,
    DO,
    LSE,
    DLT,
    sq_t,
    sq_d,
    sdo_t,
    sdo_d,
    sl_t,
    q_start,
    offset,
    width,
    scale,
    scale2,
    log2e,
    offs_d,
    d_ok,
    DQ,
    sdq_t,
    sdq_d,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    EIDETIC: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    MASKED: tl.constexpr,
    TRANSPOSED: tl.constexpr,
):
    """One query tile [m0, m0 + BLOCK_M) (rows >= q_hi invalid) of ``_dkdv_tile``. MASKED False:
    the caller guarantees every query row and key row is valid and every query sees every key
    row (a band tile's interior), so the visibility mask is skipped (same result).

    TRANSPOSED: computed key rows × query rows, as the Triton tutorial's and FlexAttention's
    backward do: Sᵀ = K·Qᵀ with Q loaded transposed, so Pᵀ and dSᵀ come out of their matmuls in
    the layout dV += Pᵀ·dO and dK += dSᵀ·Q take as the left operand and no register tile is
    transposed (only the atomic dQ, dS·K, transposes dSᵀ). Otherwise query rows × key rows, with
    P and dS transposed in registers for dV and dK. Same products, same float32 accumulation."""
    offs_m = m0 + tl.arange(0, BLOCK_M)
    q_ok = offs_m < q_hi
    qd_mask = q_ok[:, None] & d_ok[None, :]
    do = tl.load(DO + offs_m[:, None] * sdo_t + offs_d[None, :] * sdo_d, mask=qd_mask, other=0.0)
    lse = tl.load(LSE + offs_m * sl_t, mask=q_ok, other=0.0).to(dk.dtype) * log2e  # base 2
    dlt = tl.load(DLT + offs_m * sl_t, mask=q_ok, other=0.0).to(dk.dtype)
    i_pos = q_start + offs_m
    if TRANSPOSED:
        qt = tl.load(Q + offs_m[None, :] * sq_t + offs_d[:, None] * sq_d, mask=d_ok[:, None] & q_ok[None, :], other=0.0)
        st = mm(k, qt, DOT_PREC, UPCAST) * scale2  # (BLOCK_N, BLOCK_M), base 2
        if MASKED:
            if EIDETIC:
                vis = (j_pos >= 0)[:, None] & (j_pos[:, None] <= (i_pos - width)[None, :])
            else:
                rel = i_pos[None, :] - j_pos[:, None] - offset
                vis = (rel >= 0) & (rel < width) & (j_pos >= 0)[:, None]
            vis = vis & j_ok[:, None] & q_ok[None, :]
            pt = tl.where(vis, tl.exp2(st - lse[None, :]), 0.0)
        else:
            pt = tl.exp2(st - lse[None, :])
        dv += mm(pt.to(do.dtype), do, DOT_PREC, UPCAST).to(dv.dtype)
        dpt = mm(v, tl.trans(do), DOT_PREC, UPCAST).to(dk.dtype)
        dst = (pt * (dpt - dlt[None, :])).to(qt.dtype)
        dk += mm(dst, tl.trans(qt), DOT_PREC, UPCAST).to(dk.dtype)
        if ATOMIC_DQ:
            dq = mm(tl.trans(dst), k, DOT_PREC, UPCAST).to(dk.dtype) * scale
    else:
        q = tl.load(Q + offs_m[:, None] * sq_t + offs_d[None, :] * sq_d, mask=qd_mask, other=0.0)
        s = mm(q, tl.trans(k), DOT_PREC, UPCAST) * scale2  # (BLOCK_M, BLOCK_N), base 2
        if MASKED:
            if EIDETIC:
                vis = (j_pos >= 0)[None, :] & (j_pos[None, :] <= (i_pos - width)[:, None])
            else:
                rel = i_pos[:, None] - j_pos[None, :] - offset
                vis = (rel >= 0) & (rel < width) & (j_pos >= 0)[None, :]
            vis = vis & q_ok[:, None] & j_ok[None, :]
            p = tl.where(vis, tl.exp2(s - lse[:, None]), 0.0)
        else:
            p = tl.exp2(s - lse[:, None])
        dv += mm(tl.trans(p.to(do.dtype)), do, DOT_PREC, UPCAST).to(dv.dtype)
        dp = mm(do, tl.trans(v), DOT_PREC, UPCAST).to(dk.dtype)
        ds = (p * (dp - dlt[:, None])).to(q.dtype)
        dk += mm(tl.trans(ds), q, DOT_PREC, UPCAST).to(dk.dtype)
        if ATOMIC_DQ:
            dq = mm(ds, k, DOT_PREC, UPCAST).to(dk.dtype) * scale
    if ATOMIC_DQ:
        dq_ptr = DQ + offs_m[:, None] * sdq_t + offs_d[None, :] * sdq_d
        # relaxed: only atomicity is needed; the launch's end orders the adds before the cast
        tl.atomic_add(dq_ptr, dq, mask=qd_mask, sem="relaxed")
    return dk, dv


@triton.jit
def _dkdv_tile(
    dk,
    dv,
    k,
    v,
    j_pos,
    j_ok,
    q_lo,
    q_hi,
    in_lo,
    in_hi,
    Q,
    DO,
    LSE,
    DLT,
    sq_t,
    sq_d,
    sdo_t,
    sdo_d,
    sl_t,
    q_start,
    offset,
    width,
    scale,
    scale2,
    log2e,
    offs_d,
    d_ok,
    DQ,
    sdq_t,
    sdq_d,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    EIDETIC: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    TRANSPOSED: tl.constexpr,
):
    """Accumulate one query head's contribution to a key tile, over query rows [q_lo, q_hi).

    Banded (EIDETIC False): visible when offset <= i - j < offset + width, j >= 0. Eidetic: ``j_pos``
    holds the slots' epos and visible when 0 <= epos <= i - width (width = w; the caller limits
    the query rows to the snapshot's chunk). The query tiles [in_lo, in_hi) (stepping BLOCK_M from
    q_lo; see ``_band_interior_q``) run without the visibility mask; pass in_lo = in_hi = q_hi for
    none. ATOMIC_DQ: also add scale·dS·K to this head's rows of DQ (the accumulator's dtype,
    strides sdq_*) by atomic adds; DQ is unused otherwise.
    """
    for m0 in range(q_lo, in_lo, BLOCK_M):
        dk, dv = _dkdv_qtile(
            dk, dv, k, v, j_pos, j_ok, m0, q_hi, Q, DO, LSE, DLT, sq_t, sq_d, sdo_t, sdo_d, sl_t, q_start,
            offset, width, scale, scale2, log2e, offs_d, d_ok, DQ, sdq_t, sdq_d,
            BLOCK_M, DOT_PREC, UPCAST, EIDETIC, ATOMIC_DQ, True, TRANSPOSED,
        )  # fmt: skip
    for m0 in range(in_lo, in_hi, BLOCK_M):
        dk, dv = _dkdv_qtile(
            dk, dv, k, v, j_pos, j_ok, m0, q_hi, Q, DO, LSE, DLT, sq_t, sq_d, sdo_t, sdo_d, sl_t, q_start,
            offset, width, scale, scale2, log2e, offs_d, d_ok, DQ, sdq_t, sdq_d,
            BLOCK_M, DOT_PREC, UPCAST, EIDETIC, ATOMIC_DQ, False, TRANSPOSED,
        )  # fmt: skip
    for m0 in range(in_hi, q_hi, BLOCK_M):
        dk, dv = _dkdv_qtile(
            dk, dv, k, v, j_pos, j_ok, m0, q_hi, Q, DO, LSE, DLT, sq_t, sq_d, sdo_t, sdo_d, sl_t, q_start,
            offset, width, scale, scale2, log2e, offs_d, d_ok, DQ, sdq_t, sdq_d,
            BLOCK_M, DOT_PREC, UPCAST, EIDETIC, ATOMIC_DQ, True, TRANSPOSED,
        )  # fmt: skip
    return dk, dv


@triton.jit
def _band_interior_q(q_lo, q_hi, q_start, j_first, whole, offset, width, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[in_lo, in_hi): the query tiles (relative rows, stepping BLOCK_M from q_lo, valid rows
    < q_hi) whose every query sees every row of a whole key tile at positions
    [j_first, j_first + BLOCK_N) under offset <= i - j < offset + width: the first query sees the
    last key (q_start + m0 >= j_first + BLOCK_N - 1 + offset), the last query sees the first key
    (q_start + m0 + BLOCK_M - 1 <= j_first + offset + width - 1) and every row is valid
    (m0 + BLOCK_M <= q_hi). ``whole``: every key row exists and has a position >= 0; otherwise,
    and when there is no such tile, both ends are q_hi (the mirror of ``fwd._band_interior``)."""
    in_lo = q_lo + tl.cdiv(tl.maximum(j_first + BLOCK_N - 1 + offset - q_start - q_lo, 0), BLOCK_M) * BLOCK_M
    in_last = tl.minimum(j_first + offset + width - BLOCK_M - q_start, q_hi - BLOCK_M)
    n_in = tl.maximum((in_last - in_lo + BLOCK_M) // BLOCK_M, 0)
    n_in = tl.where(whole, n_in, 0)
    in_hi = tl.where(n_in > 0, in_lo + n_in * BLOCK_M, q_hi)
    in_lo = tl.where(n_in > 0, in_lo, q_hi)
    return in_lo, in_hi


@triton.jit
def _attn_bwd_dkdv_band_kernel(
    Q,
    DO,
    LSE,
    DLT,
    K,
    V,
    DK,
    DV,
    DQ,
    sq_b,
    sq_t,
    sq_h,
    sq_d,
    sdo_b,
    sdo_t,
    sdo_h,
    sdo_d,
    sl_b,
    sl_h,
    sl_t,
    sk_b,
    sk_t,
    sk_h,
    sk_d,
    sv_b,
    sv_t,
    sv_h,
    sv_d,
    sdq_b,
    sdq_t,
    sdq_h,
    sdq_d,
    T,
    Tsrc,
    Hkv,
    G,
    Dh,
    q_start,
    offset,
    width,
    Scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    SPLIT_INTERIOR: tl.constexpr,
    TRANSPOSED: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """dK, dV of one banded source; DK/DV have K/V's strides. ATOMIC_DQ: also dQ into DQ (the
    accumulator's dtype, strides sdq_*) by atomic adds."""
    scale, scale2, _ln2, log2e = _softmax_consts(Scale)
    pid_n = index(tl.program_id(0), IDX64)
    pid_bh = index(tl.program_id(1), IDX64)
    sq_t, sdo_t, sl_t, sdq_t = _query_walk_strides(sq_t, sdo_t, sl_t, sdq_t, IDX64)
    b = pid_bh // Hkv
    hk = pid_bh % Hkv
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    r_ok = rows < Tsrc
    d_ok = offs_d < Dh
    kd_mask = r_ok[:, None] & d_ok[None, :]
    q_end = q_start + T - 1
    src_start = q_end + 1 - Tsrc
    j_pos = src_start + rows
    k = tl.load(K + b * sk_b + hk * sk_h + rows[:, None] * sk_t + offs_d[None, :] * sk_d, mask=kd_mask, other=0.0)
    v = tl.load(V + b * sv_b + hk * sv_h + rows[:, None] * sv_t + offs_d[None, :] * sv_d, mask=kd_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    # queries seeing this tile: i in [j_first + offset, j_last + offset + width - 1] ∩ [q_start, q_end]
    j_first = tl.maximum(src_start + pid_n * BLOCK_N, 0)
    j_last = tl.minimum(src_start + pid_n * BLOCK_N + BLOCK_N - 1, q_end)
    q_lo = tl.maximum(j_first + offset, q_start) - q_start
    q_hi = tl.minimum(j_last + offset + width - 1, q_end) - q_start + 1
    # query tiles that see the whole key tile skip the mask (when every key row exists, at >= 0)
    tile_first = src_start + pid_n * BLOCK_N
    whole = (tile_first >= 0) & (pid_n * BLOCK_N + BLOCK_N <= Tsrc)
    if SPLIT_INTERIOR:
        in_lo, in_hi = _band_interior_q(q_lo, q_hi, q_start, tile_first, whole, offset, width, BLOCK_M, BLOCK_N)
    else:
        in_lo, in_hi = q_hi, q_hi
    for gi in range(0, G):
        h = hk * G + gi
        dk, dv = _dkdv_tile(
            dk,
            dv,
            k,
            v,
            j_pos,
            r_ok,
            q_lo,
            q_hi,
            in_lo,
            in_hi,
            Q + b * sq_b + h * sq_h,
            DO + b * sdo_b + h * sdo_h,
            LSE + b * sl_b + h * sl_h,
            DLT + b * sl_b + h * sl_h,
            sq_t,
            sq_d,
            sdo_t,
            sdo_d,
            sl_t,
            q_start,
            offset,
            width,
            scale,
            scale2,
            log2e,
            offs_d,
            d_ok,
            DQ + b * sdq_b + h * sdq_h,
            sdq_t,
            sdq_d,
            BLOCK_M,
            DOT_PREC,
            UPCAST,
            False,
            ATOMIC_DQ,
            TRANSPOSED,
        )
    dk = dk * scale
    tl.store(
        DK + b * sk_b + hk * sk_h + rows[:, None] * sk_t + offs_d[None, :] * sk_d,
        dk.to(DK.dtype.element_ty),
        mask=kd_mask,
    )
    tl.store(
        DV + b * sv_b + hk * sv_h + rows[:, None] * sv_t + offs_d[None, :] * sv_d,
        dv.to(DV.dtype.element_ty),
        mask=kd_mask,
    )


@triton.jit
def _attn_bwd_dkdv_eidetic_kernel(
    Q,
    DO,
    LSE,
    DLT,
    EK,
    EV,
    EPOS,
    DEK,
    DEV,
    DQ,
    sq_b,
    sq_t,
    sq_h,
    sq_d,
    sdo_b,
    sdo_t,
    sdo_h,
    sdo_d,
    sl_b,
    sl_h,
    sl_t,
    sek_b,
    sek_s,
    sek_m,
    sek_h,
    sek_d,
    sev_b,
    sev_s,
    sev_m,
    sev_h,
    sev_d,
    sep_b,
    sep_s,
    sep_m,
    sdq_b,
    sdq_t,
    sdq_h,
    sdq_d,
    T,
    M,
    Hkv,
    G,
    Dh,
    q_start,
    window,
    chunk,
    Scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    TRANSPOSED: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """dEK, dEV of one snapshot's slot tile; DEK/DEV have EK/EV's strides. ATOMIC_DQ: also dQ
    into DQ (the accumulator's dtype, strides sdq_*) by atomic adds."""
    scale, scale2, _ln2, log2e = _softmax_consts(Scale)
    pid_n = index(tl.program_id(0), IDX64)
    s_idx = index(tl.program_id(1), IDX64)
    pid_bh = index(tl.program_id(2), IDX64)
    sq_t, sdo_t, sl_t, sdq_t = _query_walk_strides(sq_t, sdo_t, sl_t, sdq_t, IDX64)
    b = pid_bh // Hkv
    hk = pid_bh % Hkv
    slots = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    e_ok = slots < M
    d_ok = offs_d < Dh
    kd_mask = e_ok[:, None] & d_ok[None, :]
    ep = tl.load(EPOS + b * sep_b + s_idx * sep_s + slots * sep_m, mask=e_ok, other=-1)
    k = tl.load(
        EK + b * sek_b + s_idx * sek_s + hk * sek_h + slots[:, None] * sek_m + offs_d[None, :] * sek_d,
        mask=kd_mask,
        other=0.0,
    )
    v = tl.load(
        EV + b * sev_b + s_idx * sev_s + hk * sev_h + slots[:, None] * sev_m + offs_d[None, :] * sev_d,
        mask=kd_mask,
        other=0.0,
    )
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    # the queries of this snapshot's chunk (those at positions < epos + w contribute zeros)
    q_end = q_start + T - 1
    c0 = (q_start // chunk + s_idx) * chunk
    q_lo = tl.maximum(c0, q_start) - q_start
    q_hi = tl.minimum(c0 + chunk - 1, q_end) - q_start + 1
    for gi in range(0, G):
        h = hk * G + gi
        dk, dv = _dkdv_tile(
            dk,
            dv,
            k,
            v,
            ep,
            e_ok,
            q_lo,
            q_hi,
            q_hi,  # no unmasked query tiles: visibility depends on each slot's epos
            q_hi,
            Q + b * sq_b + h * sq_h,
            DO + b * sdo_b + h * sdo_h,
            LSE + b * sl_b + h * sl_h,
            DLT + b * sl_b + h * sl_h,
            sq_t,
            sq_d,
            sdo_t,
            sdo_d,
            sl_t,
            q_start,
            0,
            window,
            scale,
            scale2,
            log2e,
            offs_d,
            d_ok,
            DQ + b * sdq_b + h * sdq_h,
            sdq_t,
            sdq_d,
            BLOCK_M,
            DOT_PREC,
            UPCAST,
            True,
            ATOMIC_DQ,
            TRANSPOSED,
        )
    dk = dk * scale
    tl.store(
        DEK + b * sek_b + s_idx * sek_s + hk * sek_h + slots[:, None] * sek_m + offs_d[None, :] * sek_d,
        dk.to(DEK.dtype.element_ty),
        mask=kd_mask,
    )
    tl.store(
        DEV + b * sev_b + s_idx * sev_s + hk * sev_h + slots[:, None] * sev_m + offs_d[None, :] * sev_d,
        dv.to(DEV.dtype.element_ty),
        mask=kd_mask,
    )


@triton.jit
def _attn_bwd_delta_kernel(
    O,
    DO,
    DLSE,
    DLT,
    so_b,
    so_t,
    so_h,
    so_d,
    sdo_b,
    sdo_t,
    sdo_h,
    sdo_d,
    sdl_b,
    sdl_h,
    sdl_t,
    sd_b,
    sd_h,
    sd_t,
    T,
    H,
    Dh,
    HAS_DLSE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    """Δ = Σ_d dO·O − dlse for BLOCK_M query rows of one (batch, head): O and dO read once in their
    own dtype, products summed in ACC; DLT (ACC, strides sd_*) is what the other kernels read."""
    pid_m = index(tl.program_id(0), IDX64)
    pid_bh = index(tl.program_id(1), IDX64)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ok = offs_m < T
    mask = q_ok[:, None] & (offs_d < Dh)[None, :]
    o = tl.load(O + b * so_b + h * so_h + offs_m[:, None] * so_t + offs_d[None, :] * so_d, mask=mask, other=0.0)
    do = tl.load(DO + b * sdo_b + h * sdo_h + offs_m[:, None] * sdo_t + offs_d[None, :] * sdo_d, mask=mask, other=0.0)
    dlt = tl.sum(o.to(ACC) * do.to(ACC), axis=1)
    if HAS_DLSE:
        dlt -= tl.load(DLSE + b * sdl_b + h * sdl_h + offs_m * sdl_t, mask=q_ok, other=0.0).to(ACC)
    tl.store(DLT + b * sd_b + h * sd_h + offs_m * sd_t, dlt, mask=q_ok)
