"""Blocked three-source attention in pure PyTorch.

Queries are cut into blocks of ``Bq`` tokens aligned to absolute positions. Block n only needs the
raw keys in (start-w, end], the fading keys in (start-w-f, end-w] and one eidetic snapshot, so
each block's scores have ``(w+Bq-1) + (f+Bq-1) + M`` columns: memory is O(T·(w+f+M)), never
O(T²). Blocks are gathered with ``unfold`` (a view) and scored in batched matmuls; groups of
blocks are processed in turn so the score tensor stays under a fixed element budget.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bmojo._checks import check_int, check_same, check_tensor, compute_dtype, fail

#: Upper bound on score-tensor elements materialised at once (per group of blocks).
SCORE_BUDGET = 1 << 24


def eidetic_snapshot_count(q_start: int, T: int, chunk: int) -> int:
    """Number of eidetic memory snapshots that queries q_start … q_start+T-1 see."""
    return (q_start + T - 1) // chunk - q_start // chunk + 1


def _block_size(block_size: int, T: int, chunk: int | None) -> int:
    """Largest size <= min(block_size, T) that divides the eidetic chunk, so a block never
    straddles two memory snapshots."""
    limit = max(1, min(block_size, T))
    if chunk is None:
        return limit
    return max(d for d in range(1, limit + 1) if chunk % d == 0)


def _check(q, k, v, kf, vf, ek, ev, epos, q_start, window, fading_window, eidetic_chunk):
    check_tensor("q", q, ndim=4)
    b, T, H, Dh = q.shape
    if T == 0:
        fail("q", "at least one query (T >= 1)", f"shape {tuple(q.shape)}")
    check_tensor("k", k, ndim=4)
    Tk, Hkv = k.shape[1], k.shape[2]
    check_tensor("k", k, shape=(b, None, None, Dh))
    check_tensor("v", v, shape=tuple(k.shape))
    if Tk < T:
        fail("k", f"at least as many keys as queries ({T}); keys end at the last query", Tk)
    if Hkv == 0 or H % Hkv:
        fail("k", f"a kv-head count dividing the query heads {H}", Hkv)
    for name, t in (("k", k), ("v", v)):
        check_same(name, t, "q", q)
    check_int("q_start", q_start, minimum=0)
    check_int("window", window, minimum=1)
    check_int("fading_window", fading_window, minimum=0)
    if (kf is None) != (vf is None):
        fail("vf", "given exactly when kf is given", "one of kf/vf missing")
    if fading_window > 0 and kf is None:
        fail("kf", "fading keys when fading_window > 0", None)
    if kf is not None:
        check_tensor("kf", kf, shape=(b, None, Hkv, Dh))
        check_tensor("vf", vf, shape=tuple(kf.shape))
        check_same("kf", kf, "q", q)
        check_same("vf", vf, "q", q)
    given = [t is not None for t in (ek, ev, epos)]
    if any(given) and not all(given):
        fail("ek/ev/epos", "all three or none", f"given: {given}")
    if ek is not None:
        if eidetic_chunk is None:
            fail("eidetic_chunk", "the chunk size when eidetic memory is given", None)
        check_int("eidetic_chunk", eidetic_chunk, minimum=1)
        S = eidetic_snapshot_count(q_start, T, eidetic_chunk)
        check_tensor("ek", ek, shape=(b, S, None, Hkv, Dh))
        check_tensor("ev", ev, shape=tuple(ek.shape))
        check_tensor("epos", epos, shape=tuple(ek.shape[:3]), floating=False)
        check_same("ek", ek, "q", q)
        check_same("ev", ev, "q", q)
    return b, T, H, Dh, Hkv


def _windows(seq, seq_start, first_pos, nb, Bq, span, q_end):
    """Per-block windows of `seq` (whose row 0 is at absolute position `seq_start`).

    Block n covers positions first_pos + n*Bq + [0, span). Rows outside `seq` are zero padding
    and marked invalid. Returns (b, nb, span, Hkv, Dh) windows, their positions and validity.
    """
    first = first_pos - seq_start
    left = max(0, -first)
    length = (nb - 1) * Bq + span
    right = max(0, first + length - seq.shape[1])
    padded = F.pad(seq, (0, 0, 0, 0, left, right))
    begin = first + left
    padded = padded[:, begin : begin + length]
    win = padded.unfold(1, span, Bq).permute(0, 1, 4, 2, 3)
    pos = first_pos + torch.arange(nb, device=seq.device)[:, None] * Bq + torch.arange(span, device=seq.device)
    valid = (pos >= max(seq_start, 0)) & (pos <= q_end)
    return win, pos, valid


def bmojo_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kf: torch.Tensor | None = None,
    vf: torch.Tensor | None = None,
    ek: torch.Tensor | None = None,
    ev: torch.Tensor | None = None,
    epos: torch.Tensor | None = None,
    *,
    q_start: int = 0,
    window: int,
    fading_window: int = 0,
    eidetic_chunk: int | None = None,
    scale: float | None = None,
    block_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Three-source attention, one softmax over the union of visible keys.

    Query i (absolute position ``q_start + row``) sees
      * raw keys at positions j with i-w < j <= i,
      * fading keys at positions j with i-w-f < j <= i-w,
      * eidetic keys of its chunk's snapshot at positions j <= i-w.

    Args:
        q: (batch, T, H, Dh) queries (RoPE applied) at positions q_start … q_start+T-1.
        k, v: (batch, Tk, Hkv, Dh) raw keys/values at the Tk positions ending at the last query
            (a decode cache followed by the new tokens). Negative positions are never visible.
        kf, vf: (batch, Tf, Hkv, Dh) fading keys/values, also ending at the last query.
        ek, ev: (batch, S, M, Hkv, Dh) eidetic snapshots; epos (batch, S, M) their positions,
            -1 for an empty slot. Snapshot s serves queries i with
            i // eidetic_chunk == q_start // eidetic_chunk + s.
        window: w >= 1 (the query's own token is always visible).
        fading_window: f >= 0. scale: defaults to 1/sqrt(Dh). block_size: query block target.

    Returns:
        o: (batch, T, H, Dh) in q's dtype; lse: (batch, H, T) log-sum-exp of the scaled scores,
        in float32 (float64 for float64 inputs).
    """
    b, T, H, Dh, Hkv = _check(q, k, v, kf, vf, ek, ev, epos, q_start, window, fading_window, eidetic_chunk)
    check_int("block_size", block_size, minimum=1)
    g = H // Hkv
    w, f = window, fading_window
    use_fading = kf is not None and f > 0
    use_eidetic = ek is not None and ek.shape[2] > 0
    scale = 1.0 / math.sqrt(Dh) if scale is None else float(scale)
    cd = compute_dtype(q.dtype)
    out_dtype = q.dtype
    q, k, v = q.to(cd), k.to(cd), v.to(cd)

    Bq = _block_size(block_size, T, eidetic_chunk if use_eidetic else None)
    lead = q_start % Bq
    qs0 = q_start - lead  # absolute position of the first (padded) query row
    nb = -(-(lead + T) // Bq)
    q_end = q_start + T - 1
    qp = F.pad(q * scale, (0, 0, 0, 0, lead, nb * Bq - lead - T)).view(b, nb, Bq, Hkv, g, Dh)
    qpos = qs0 + torch.arange(nb * Bq, device=q.device).view(nb, Bq)

    kr, kpos, kvalid = _windows(k, q_end + 1 - k.shape[1], qs0 - w + 1, nb, Bq, w + Bq - 1, q_end)
    vr = _windows(v, q_end + 1 - v.shape[1], qs0 - w + 1, nb, Bq, w + Bq - 1, q_end)[0]
    rel = kpos[:, None, :] - qpos[:, :, None]  # (nb, Bq, span): key minus query position
    mask_r = kvalid[:, None, :] & (rel <= 0) & (rel > -w)
    sources = [(kr, vr, mask_r)]
    if use_fading:
        kf, vf = kf.to(cd), vf.to(cd)
        fs = q_end + 1 - kf.shape[1]
        kw, fpos, fvalid = _windows(kf, fs, qs0 - w - f + 1, nb, Bq, f + Bq - 1, q_end)
        vw = _windows(vf, fs, qs0 - w - f + 1, nb, Bq, f + Bq - 1, q_end)[0]
        rel = fpos[:, None, :] - qpos[:, :, None]
        sources.append((kw, vw, fvalid[:, None, :] & (rel <= -w) & (rel > -w - f)))
    if use_eidetic:
        snap = ((qs0 + torch.arange(nb, device=q.device) * Bq) // eidetic_chunk - q_start // eidetic_chunk).clamp(
            0, ek.shape[1] - 1
        )
        ep = epos[:, snap]  # (b, nb, M)
        mask_e = (ep[:, :, None, :] >= 0) & (ep[:, :, None, :] <= qpos[None, :, :, None] - w)
        sources.append((ek[:, snap].to(cd), ev[:, snap].to(cd), mask_e))

    width = sum(s[0].shape[2] for s in sources)
    group = max(1, SCORE_BUDGET // max(1, b * H * Bq * width))
    outs, lses = [], []
    for n0 in range(0, nb, group):
        n1 = min(nb, n0 + group)
        o, lse = _attend(qp[:, n0:n1], [(kk[:, n0:n1], vv[:, n0:n1], _rows(m, n0, n1)) for kk, vv, m in sources])
        outs.append(o)
        lses.append(lse)
    o = torch.cat(outs, dim=1).reshape(b, nb * Bq, H, Dh)[:, lead : lead + T]
    lse = torch.cat(lses, dim=3).reshape(b, H, nb * Bq)[:, :, lead : lead + T]
    return o.to(out_dtype), lse


def _rows(mask, n0, n1):
    """Slice the block axis of a mask shaped (nb, Bq, K) or (batch, nb, Bq, K)."""
    return mask[n0:n1] if mask.ndim == 3 else mask[:, n0:n1]


def _attend(qp, sources):
    """Softmax over the concatenated sources for a group of blocks.

    qp: (b, n, Bq, Hkv, g, Dh). Each source: keys/values (b, n, K, Hkv, Dh) and a mask
    (n, Bq, K) or (b, n, Bq, K). Rows with no visible key (only padding rows) give zeros.
    """
    scores = []
    for kk, _, mask in sources:
        s = torch.einsum("bnqhgd,bnkhd->bhgnqk", qp, kk)
        m = mask[None, None, None] if mask.ndim == 3 else mask[:, None, None]
        scores.append(s.masked_fill(~m, float("-inf")))
    s = torch.cat(scores, dim=-1)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    p = p / denom
    lse = (m + torch.log(denom)).squeeze(-1)  # (b, Hkv, g, n, Bq)
    o = 0
    col = 0
    for _, vv, _ in sources:
        width = vv.shape[2]
        o = o + torch.einsum("bhgnqk,bnkhd->bnqhgd", p[..., col : col + width], vv)
        col += width
    b, n, Bq = o.shape[:3]
    return o, lse.reshape(b, -1, n, Bq)
