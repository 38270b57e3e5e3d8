"""Blocked three-source attention in pure MLX; same contract as
``bmojo.ops.bmojo_attention.reference`` (read its docstring for the visibility rules).

Queries are cut into blocks of at most ``block_size`` rows that never straddle an eidetic chunk.
A block at positions [i0, i1] reads only the raw keys in (i0-w, i1], the fading keys in
(i0-δ-f, i1-δ] and its chunk's eidetic snapshot, so its scores have at most
(w+Bq-1) + (f+Bq-1) + M columns and memory is O(T·(w+f+M)), never O(T²). Keys of all sources are
concatenated and masked by position; one softmax per row. GQA: the g query heads of a kv head are
stacked as rows of one matmul, keys are never repeated. Differentiable by ``mx.grad``.
"""

from __future__ import annotations

import math

import mlx.core as mx
from bmojo.argcheck import check_bmojo_attention_args, check_int
from bmojo.arith import resolve_fading_offset

from bmojo_mlx.ops._checks import MLX
from bmojo_mlx.ops._math import exp, logsumexp


def _blocks(q_start: int, T: int, block: int, chunk: int | None):
    """Row ranges [r0, r1) of at most ``block`` rows, cut at eidetic chunk boundaries."""
    r0 = 0
    while r0 < T:
        r1 = min(T, r0 + block)
        if chunk is not None:
            r1 = min(r1, ((q_start + r0) // chunk + 1) * chunk - q_start)
        yield r0, r1
        r0 = r1


def _slice(seq, seq_start, lo, hi):
    """Rows of ``seq`` (row 0 at absolute position seq_start) at positions [lo, hi] that exist
    and are >= 0, and the position of the first one; None when there are none."""
    first = max(lo, seq_start, 0)
    last = min(hi, seq_start + seq.shape[1] - 1)
    if last < first:
        return None, first
    return seq[:, first - seq_start : last - seq_start + 1], first


def bmojo_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    kf: mx.array | None = None,
    vf: mx.array | None = None,
    ek: mx.array | None = None,
    ev: mx.array | None = None,
    epos: mx.array | None = None,
    *,
    q_start: int = 0,
    window: int,
    fading_window: int = 0,
    eidetic_chunk: int | None = None,
    scale: float | None = None,
    block_size: int = 64,
    fading_offset: int | None = None,
) -> tuple[mx.array, mx.array]:
    """o (batch, T, H, Dh) in q's dtype and lse (batch, H, T) in float32 (float64 for float64)."""
    b, T, H, Dh, Hkv = check_bmojo_attention_args(
        MLX, q, k, v, kf, vf, ek, ev, epos, q_start, window, fading_window, eidetic_chunk
    )
    check_int("block_size", block_size, minimum=1)
    g = H // Hkv
    w, f = window, fading_window
    d = resolve_fading_offset(fading_offset, w)
    use_fading = kf is not None and f > 0
    use_eidetic = ek is not None and ek.shape[2] > 0
    scale = 1.0 / math.sqrt(Dh) if scale is None else float(scale)
    cd = MLX.compute_dtype(q.dtype)
    out_dtype = q.dtype
    q, k, v = q.astype(cd) * scale, k.astype(cd), v.astype(cd)
    if use_fading:
        kf, vf = kf.astype(cd), vf.astype(cd)
    if use_eidetic:
        ek, ev = ek.astype(cd), ev.astype(cd)
    q_end = q_start + T - 1
    k_start = q_end + 1 - k.shape[1]
    f_start = q_end + 1 - kf.shape[1] if use_fading else 0
    chunk = eidetic_chunk if use_eidetic else None

    outs, lses = [], []
    for r0, r1 in _blocks(q_start, T, block_size, chunk):
        L = r1 - r0
        i0, i1 = q_start + r0, q_start + r1 - 1
        qpos = mx.arange(i0, i1 + 1)[:, None]  # (L, 1)
        keys, vals, masks = [], [], []
        rows, first = _slice(k, k_start, i0 - w + 1, i1)  # never empty: the query's own key
        kpos = mx.arange(first, first + rows.shape[1])[None, :]
        keys.append(rows)
        vals.append(_slice(v, k_start, i0 - w + 1, i1)[0])
        masks.append(mx.broadcast_to(((kpos <= qpos) & (kpos > qpos - w))[None], (b, L, rows.shape[1])))
        if use_fading:
            rows, first = _slice(kf, f_start, i0 - d - f + 1, i1 - d)
            if rows is not None:
                fpos = mx.arange(first, first + rows.shape[1])[None, :]
                keys.append(rows)
                vals.append(_slice(vf, f_start, i0 - d - f + 1, i1 - d)[0])
                visible = (fpos <= qpos - d) & (fpos > qpos - d - f)
                masks.append(mx.broadcast_to(visible[None], (b, L, rows.shape[1])))
        if use_eidetic:
            s = i0 // chunk - q_start // chunk
            ep = epos[:, s][:, None, :]  # (b, 1, M)
            keys.append(ek[:, s])
            vals.append(ev[:, s])
            masks.append((ep >= 0) & (ep <= qpos[None] - w))
        kk = mx.concatenate(keys, axis=1) if len(keys) > 1 else keys[0]  # (b, K, Hkv, Dh)
        vv = mx.concatenate(vals, axis=1) if len(vals) > 1 else vals[0]
        mask = mx.concatenate(masks, axis=-1) if len(masks) > 1 else masks[0]  # (b, L, K)
        K = kk.shape[1]
        qb = q[:, r0:r1].reshape(b, L, Hkv, g, Dh).transpose(0, 2, 3, 1, 4).reshape(b, Hkv, g * L, Dh)
        scores = (qb @ kk.transpose(0, 2, 3, 1)).reshape(b, Hkv, g, L, K)
        scores = mx.where(mask[:, None, None], scores, -mx.inf)
        lse = logsumexp(scores, axis=-1)  # every row sees its own key: finite
        p = exp(scores - lse).reshape(b, Hkv, g * L, K)
        o = (p @ vv.transpose(0, 2, 1, 3)).reshape(b, Hkv, g, L, Dh)
        outs.append(o.transpose(0, 3, 1, 2, 4).reshape(b, L, H, Dh))
        lses.append(lse.reshape(b, H, L))
    o = mx.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]
    lse = mx.concatenate(lses, axis=2) if len(lses) > 1 else lses[0]
    return o.astype(out_dtype), lse
