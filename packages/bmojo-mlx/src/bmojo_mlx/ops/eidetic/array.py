"""Innovation scores and eidetic selection in pure MLX; same contract as
``bmojo.ops.eidetic.reference``.

The reference's tie rules rest on *stable* sorts (ties keep the earlier token; eviction drops the
older of equal scores). ``mx.argsort`` promises no stability, so orders here come from explicit
ranks: an entry's rank is the number of entries that must come before it, counted pairwise with
the tie-break written out. Rows are short (a chunk, or M + k slots), so the O(n²) count is cheap,
and it is exact. Selection is discrete: no gradients (``mx.stop_gradient``).
"""

from __future__ import annotations

import mlx.core as mx
from bmojo.argcheck import check_eidetic_select_args, check_innovation_scores_args

from bmojo_mlx.ops._checks import MLX


def innovation_scores(k: mx.array, k_pred: mx.array) -> mx.array:
    """a_t = mean over kv heads of ||k_t - k_pred_t||² / Dh; (batch, T) in float32/float64."""
    check_innovation_scores_args(MLX, k, k_pred)
    cd = MLX.score_dtype(k.dtype)
    diff = mx.stop_gradient(k).astype(cd) - mx.stop_gradient(k_pred).astype(cd)
    return mx.mean(mx.mean(diff * diff, axis=-1), axis=-1)


def _order(before: mx.array) -> mx.array:
    """Indices sorting each row, given ``before[..., i, j]`` = entry j comes before entry i (a
    strict total order): entry i goes to slot rank_i = Σ_j before[i, j]."""
    rank = mx.sum(before.astype(mx.int32), axis=-1)
    return mx.argsort(rank, axis=-1)  # ranks are distinct, so any sort is exact


def _higher(si: mx.array, sj: mx.array) -> tuple[mx.array, mx.array]:
    """(sj ranks above si, sj ties si) as torch's descending sort orders floats: NaN above every
    number (+inf included), NaNs equal to each other. A bare ``>`` is False for every NaN, which
    breaks the strict total order ``_order`` needs."""
    ni, nj = mx.isnan(si), mx.isnan(sj)
    return (sj > si) | (nj & ~ni), (sj == si) | (nj & ni)


def _top(scores: mx.array, k: int) -> mx.array:
    """Indices of the k highest scores per row, ties to the earlier index (stable descending)."""
    n = scores.shape[-1]
    idx = mx.arange(n)
    higher, tie = _higher(scores[..., :, None], scores[..., None, :])
    before = higher | (tie & (idx[None, :] < idx[:, None]))
    return _order(before)[..., :k]


def _offer(mem_pos, mem_score, new_pos, new_score, capacity, eviction):
    """Merge candidates into the memory; keep ``capacity`` slots ordered like the reference:
    newest first, then (for "lowest") by score descending with the newer of equal scores first."""
    pos = mx.concatenate([mem_pos, new_pos], axis=1)
    score = mx.concatenate([mem_score, new_score], axis=1)
    n = pos.shape[1]
    idx = mx.arange(n)
    pi, pj = pos[:, :, None], pos[:, None, :]
    # Newest first; equal positions (only empty slots, -1) keep their order.
    by_pos = (pj > pi) | ((pj == pi) & (idx[None, :] < idx[:, None]))
    if eviction == "lowest":
        higher, tie = _higher(score[:, :, None], score[:, None, :])
        before = higher | (tie & by_pos)
    else:
        before = by_pos
    order = _order(before)[:, :capacity]
    return mx.take_along_axis(pos, order, axis=1), mx.take_along_axis(score, order, axis=1)


def eidetic_select(
    scores: mx.array,
    mem_pos: mx.array,
    mem_score: mx.array,
    pending: mx.array,
    *,
    start: int,
    chunk: int,
    per_chunk: int,
    eviction: str = "lowest",
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """(snapshots (b, S, M), mem_pos (b, M), mem_score (b, M), pending (b, (start+T) % chunk))."""
    _, T, M, r = check_eidetic_select_args(
        MLX, scores, mem_pos, mem_score, pending, start=start, chunk=chunk, per_chunk=per_chunk, eviction=eviction
    )

    scores = mx.stop_gradient(scores)
    mem_score = mx.stop_gradient(mem_score).astype(scores.dtype)
    all_scores = mx.concatenate([mx.stop_gradient(pending).astype(scores.dtype), scores], axis=1)
    base = start - r
    n_complete = all_scores.shape[1] // chunk
    snapshots = [mem_pos]
    last_chunk = (start + T - 1) // chunk
    for j in range(n_complete):
        cs = all_scores[:, j * chunk : (j + 1) * chunk]
        top = _top(cs, per_chunk)
        # int64 as the reference's (int64 ``top`` promotes it there): a narrower mem_pos dtype
        # would wrap large positions (200 -> -56 in int8, read as an empty slot).
        new_pos = (base + j * chunk + top).astype(mx.int64)
        mem_pos, mem_score = _offer(mem_pos, mem_score, new_pos, mx.take_along_axis(cs, top, axis=1), M, eviction)
        if start // chunk + j + 1 <= last_chunk:
            snapshots.append(mem_pos)
    return mx.stack(snapshots, axis=1), mem_pos, mem_score, all_scores[:, n_complete * chunk :]
