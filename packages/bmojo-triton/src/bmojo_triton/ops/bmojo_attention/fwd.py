"""Forward kernel: one pass over the three sources with an online softmax.

Grid: (query tiles of BLOCK_M rows, batch × query heads). A program holds its BLOCK_M queries and
walks, in turn,

1. the raw keys at positions (i-w, i]     — only the key tiles the band of its queries touches,
2. the fading keys at positions (i-δ-f, i-δ] — same band logic, shifted by δ,
3. the eidetic slots of each snapshot its queries fall in (usually one, two when the tile
   straddles a chunk edge), visible when 0 <= epos <= i-w,

updating one running max ``m``, denominator ``l`` and accumulator per query row (flash-attention's
online softmax), so the three sources share one softmax and nothing score-sized is written to
memory. It stores ``o = acc / l`` and ``lse = m + log l`` (what the backward needs).

Scores are kept in base-2 units, ``s₂ = (q·kᵀ)·scale·log₂e``, so each probability is one
``exp2(s₂ − m₂)`` (a fused multiply-add and the hardware's ex2, where ``exp`` would add a multiply
per score); the stored lse is converted back to natural log: ``lse = (m₂ + log₂ l)·ln 2``. The
constants come from ``_softmax_consts`` (computed in the accumulator's dtype from the one-element
``Scale`` tensor, so float64 inputs keep float64 constants).

``SPLIT_INTERIOR`` (a launch option, ``AttnTiles.interior``): walk each band as masked boundary
tiles plus unmasked interior tiles (three loops), or as one masked loop (fewer registers).
"""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index, mm

#: Finite "minus infinity" for the running max: a fully masked tile then gives exp(-inf - m) = 0
#: without the NaN of (-inf) - (-inf).
NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def _softmax_consts(Scale):
    """(scale, scale·log₂e, ln 2, log₂e) in the dtype of ``Scale`` (a one-element tensor in the
    accumulator's dtype). The scale is a tensor and ln 2 is computed here because Triton types a
    Python float — argument or literal — as float32, which would round float64 inputs' constants;
    2.0 and 1.0 are exact in any float type. Shared by every attention kernel."""
    scale = tl.load(Scale)
    ln2 = tl.log(tl.full([], 2.0, scale.dtype))
    log2e = 1.0 / ln2
    return scale, scale * log2e, ln2, log2e


@triton.jit
def _walk_strides(sk_t, sv_t, skf_t, svf_t, sek_s, sek_m, sev_s, sev_m, sep_s, sep_m, IDX64: tl.constexpr):
    """The strides the forward's and the dQ kernel's walks multiply by a loop's position (key
    rows of both bands, snapshots, slots), widened to int64 with ``IDX64``: everything derived
    from a program id already is (``index``), but a loop counter may stay int32 on a GPU and is
    a Python int under the interpreter. Unchanged without ``IDX64``."""
    return (
        index(sk_t, IDX64), index(sv_t, IDX64), index(skf_t, IDX64), index(svf_t, IDX64), index(sek_s, IDX64),
        index(sek_m, IDX64), index(sev_s, IDX64), index(sev_m, IDX64), index(sep_s, IDX64), index(sep_m, IDX64),
    )  # fmt: skip


@triton.jit
def _band_interior(lo, hi, i_lo, i_hi, src_start, offset, width, BLOCK_N: tl.constexpr):
    """[in_lo, in_hi): the source-row tiles (stepping BLOCK_N from ``lo``) that every query in
    [i_lo, i_hi] sees whole, for a band offset <= i - j < offset + width over source rows
    [lo, hi) at absolute positions src_start + r. A tile start n0 is interior when the last query
    still sees row n0 (n0 >= i_hi - offset - width + 1 - src_start), the first query already sees
    row n0 + BLOCK_N - 1 (n0 + BLOCK_N - 1 <= i_lo - offset - src_start) and every row exists
    (n0 + BLOCK_N <= hi). Without interior tiles both ends are ``hi``, so the three loops
    [lo, in_lo), [in_lo, in_hi), [in_hi, hi) always cover [lo, hi) once."""
    in_lo = lo + tl.cdiv(tl.maximum(i_hi - offset - width + 1 - src_start - lo, 0), BLOCK_N) * BLOCK_N
    in_last = tl.minimum(i_lo - offset - src_start - BLOCK_N + 1, hi - BLOCK_N)
    n_in = tl.maximum((in_last - in_lo + BLOCK_N) // BLOCK_N, 0)
    in_hi = tl.where(n_in > 0, in_lo + n_in * BLOCK_N, hi)
    in_lo = tl.where(n_in > 0, in_lo, hi)
    return in_lo, in_hi


@triton.jit
def _band_tile_scores(
    q,
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
    """k and v of source rows [n0, n0 + BLOCK_N) (rows >= hi read as 0) and the scores
    q·kᵀ·scale2 (callers pass scale·log₂e: base-2 units), -inf where a query does not see a row
    (offset <= i - j < offset + width fails, the row
    or the query does not exist). MASKED False: the caller guarantees every row is < hi and
    visible from every valid query of the tile (an interior tile), so no mask is computed (the
    mask would keep every score of the valid rows; rows past T are never stored). The forward
    and the backward's dQ walk read their tiles through this."""
    rows = n0 + tl.arange(0, BLOCK_N)
    r_ok = rows < hi
    k = tl.load(
        K + rows[:, None] * stride_kt + offs_d[None, :] * stride_kd, mask=r_ok[:, None] & d_ok[None, :], other=0.0
    )
    v = tl.load(
        V + rows[:, None] * stride_vt + offs_d[None, :] * stride_vd, mask=r_ok[:, None] & d_ok[None, :], other=0.0
    )
    s = mm(q, tl.trans(k), DOT_PREC, UPCAST) * scale2
    if MASKED:
        rel = i_pos[:, None] - (src_start + rows)[None, :] - offset
        vis = (rel >= 0) & (rel < width) & r_ok[None, :] & q_ok[:, None]
        s = tl.where(vis, s, float("-inf"))
    return k, v, s


@triton.jit
def _band_fwd_tile(
    acc,
    m_i,
    l_i,
    q,
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
    """Online-softmax update (base 2: m_i and the scores in units of log₂) with source rows
    [n0, n0 + BLOCK_N) (``MASKED``: see ``_band_tile_scores``)."""
    _k, v, s = _band_tile_scores(
        q, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
        src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, MASKED,
    )  # fmt: skip
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + mm(p.to(v.dtype), v, DOT_PREC, UPCAST).to(acc.dtype)
    return acc, m_new, l_i


@triton.jit
def _band_fwd(
    acc,
    m_i,
    l_i,
    q,
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
    """Online-softmax update with the keys at positions j with offset <= i - j < offset + width.

    The source's row r is at absolute position src_start + r (its rows end at the last query);
    positions < 0 are never visible. Only the rows the tile's queries [i_lo, i_hi] can see are
    visited, in tiles of BLOCK_N from ``lo``. SPLIT_INTERIOR: first the tiles some query sees only
    in part (masked), then the interior tiles every query sees whole (no mask: flash-attention's
    split of diagonal and off-diagonal blocks), then the rest (masked); otherwise one masked loop.
    """
    lo = tl.maximum(i_lo - offset - width + 1, tl.maximum(src_start, 0)) - src_start
    hi = tl.minimum(i_hi - offset + 1 - src_start, Tsrc)
    if SPLIT_INTERIOR:
        in_lo, in_hi = _band_interior(lo, hi, i_lo, i_hi, src_start, offset, width, BLOCK_N)
    else:
        in_lo, in_hi = hi, hi
    for n0 in range(lo, in_lo, BLOCK_N):
        acc, m_i, l_i = _band_fwd_tile(
            acc, m_i, l_i, q, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
            src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, True,
        )  # fmt: skip
    for n0 in range(in_lo, in_hi, BLOCK_N):
        acc, m_i, l_i = _band_fwd_tile(
            acc, m_i, l_i, q, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
            src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, False,
        )  # fmt: skip
    for n0 in range(in_hi, hi, BLOCK_N):
        acc, m_i, l_i = _band_fwd_tile(
            acc, m_i, l_i, q, i_pos, q_ok, n0, hi, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
            src_start, offset, width, scale2, offs_d, d_ok, BLOCK_N, DOT_PREC, UPCAST, True,
        )  # fmt: skip
    return acc, m_i, l_i


@triton.jit
def _attn_fwd_kernel(
    Q,
    K,
    V,
    KF,
    VF,
    EK,
    EV,
    EPOS,
    O,
    LSE,
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
    so_b,
    so_t,
    so_h,
    so_d,
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
    _scale, scale2, ln2, _log2e = _softmax_consts(Scale)
    pid_m = index(tl.program_id(0), IDX64)
    pid_bh = index(tl.program_id(1), IDX64)
    # the strides a loop's positions multiply, int64 with IDX64 (offsets past 2**31 - 1 elements)
    sk_t, sv_t, skf_t, svf_t, sek_s, sek_m, sev_s, sev_m, sep_s, sep_m = _walk_strides(
        sk_t, sv_t, skf_t, svf_t, sek_s, sek_m, sev_s, sev_m, sep_s, sep_m, IDX64
    )
    b = pid_bh // H
    h = pid_bh % H
    hk = h // G  # the kv head this query head reads (GQA)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ok = offs_m < T
    d_ok = offs_d < Dh
    i_pos = q_start + offs_m  # absolute query positions
    q = tl.load(
        Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_t + offs_d[None, :] * sq_d,
        mask=q_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)
    m_i = tl.full([BLOCK_M], NEG_BIG, dtype=ACC)
    l_i = tl.zeros([BLOCK_M], dtype=ACC)
    q_end = q_start + T - 1
    i_first = q_start + pid_m * BLOCK_M  # the tile's first and last query positions
    i_last = tl.minimum(i_first + BLOCK_M - 1, q_end)

    # 1. raw keys: (i - w, i]
    acc, m_i, l_i = _band_fwd(
        acc,
        m_i,
        l_i,
        q,
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
    # 2. fading keys: (i - δ - f, i - δ]
    if HAS_FADING:
        acc, m_i, l_i = _band_fwd(
            acc,
            m_i,
            l_i,
            q,
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
    # 3. eidetic slots of the snapshot each query's chunk uses; visible when 0 <= epos <= i - w
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
                s = tl.where(vis, s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                alpha = tl.exp2(m_i - m_new)
                p = tl.exp2(s - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, axis=1)
                acc = acc * alpha[:, None] + mm(p.to(v.dtype), v, DOT_PREC, UPCAST).to(ACC)
                m_i = m_new

    seen = l_i > 0
    l_safe = tl.where(seen, l_i, 1.0)
    o = acc / l_safe[:, None]
    lse = tl.where(seen, (m_i + tl.log2(l_safe)) * ln2, 0.0)  # base 2 back to natural
    tl.store(
        O + b * so_b + h * so_h + offs_m[:, None] * so_t + offs_d[None, :] * so_d,
        o.to(O.dtype.element_ty),
        mask=q_ok[:, None] & d_ok[None, :],
    )
    tl.store(LSE + b * sl_b + h * sl_h + offs_m * sl_t, lse.to(LSE.dtype.element_ty), mask=q_ok)
