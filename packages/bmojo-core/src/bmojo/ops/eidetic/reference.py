"""Innovation scores and eidetic selection.

Selection is discrete and runs without gradient; gradients reach the selected tokens through
their keys and values, which the layer gathers by position. The memory is a fixed number of
slots (position -1 marks an empty slot, score -inf) so the decode state never changes size.
"""

from __future__ import annotations

import torch

from bmojo.argcheck import TORCH, check_eidetic_select_args, check_innovation_scores_args


def innovation_scores(k: torch.Tensor, k_pred: torch.Tensor) -> torch.Tensor:
    """a_t = mean over kv heads of ||k_t - k_pred_t||² / Dh.

    Args:
        k: (batch, T, Hkv, Dh) keys of the tokens (pre-RoPE).
        k_pred: same shape, the fading memory's prediction of each key (``Wk̃ s_{t-1}``; zero for
            the first token of a sequence).
    Returns: (batch, T) scores in float32 or float64 (never half precision: they are ranked).
    """
    check_innovation_scores_args(TORCH, k, k_pred)
    cd = TORCH.score_dtype(k.dtype)
    with torch.no_grad():
        diff = k.to(cd) - k_pred.to(cd)
        return diff.pow(2).mean(-1).mean(-1)


def _offer(mem_pos, mem_score, new_pos, new_score, capacity, eviction):
    """Merge new candidates into the memory; return the kept `capacity` slots."""
    pos = torch.cat([mem_pos, new_pos], dim=1)
    score = torch.cat([mem_score, new_score], dim=1)
    # Newest first, then a stable sort on the eviction key keeps the newer of any tie.
    order = torch.argsort(pos, dim=1, descending=True, stable=True)
    pos, score = pos.gather(1, order), score.gather(1, order)
    if eviction == "lowest":
        order = torch.argsort(score, dim=1, descending=True, stable=True)
        pos, score = pos.gather(1, order), score.gather(1, order)
    return pos[:, :capacity], score[:, :capacity]


def eidetic_select(
    scores: torch.Tensor,
    mem_pos: torch.Tensor,
    mem_score: torch.Tensor,
    pending: torch.Tensor,
    *,
    start: int,
    chunk: int,
    per_chunk: int,
    eviction: str = "lowest",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the chunked top-k selection over new tokens.

    Args:
        scores: (batch, T) innovation scores of positions ``start … start+T-1``.
        mem_pos: (batch, M) int64 positions held in memory before ``start`` (-1 = empty slot).
        mem_score: (batch, M) their scores (-inf for empty slots).
        pending: (batch, start % chunk) scores of the incomplete chunk before ``start``.
        chunk: tokens per chunk ``c``; per_chunk: ``k`` offered per completed chunk;
        eviction: ``"lowest"`` (drop the lowest score, ties drop the older) or ``"fifo"``.

    Returns:
        snapshots: (batch, S, M) memory positions seen by the queries of each chunk touched by
            this call, S = (start+T-1)//chunk - start//chunk + 1 (snapshot s serves queries i with
            i // chunk == start // chunk + s);
        mem_pos, mem_score: the memory after every chunk completed in this call;
        pending: scores of the now-incomplete chunk, shape (batch, (start+T) % chunk).
    """
    _, T, M, r = check_eidetic_select_args(
        TORCH, scores, mem_pos, mem_score, pending, start=start, chunk=chunk, per_chunk=per_chunk, eviction=eviction
    )

    mem_score = mem_score.to(scores.dtype)
    all_scores = torch.cat([pending.to(scores.dtype), scores], dim=1)
    base = start - r  # absolute position of all_scores[:, 0]
    n_complete = all_scores.shape[1] // chunk
    snapshots = [mem_pos]
    first_chunk, last_chunk = start // chunk, (start + T - 1) // chunk
    for j in range(n_complete):
        cs = all_scores[:, j * chunk : (j + 1) * chunk]
        # Top-k with ties to the earlier token: a stable descending sort keeps position order.
        top = torch.argsort(cs, dim=1, descending=True, stable=True)[:, :per_chunk]
        new_pos = base + j * chunk + top
        mem_pos, mem_score = _offer(mem_pos, mem_score, new_pos, cs.gather(1, top), M, eviction)
        if first_chunk + j + 1 <= last_chunk:
            snapshots.append(mem_pos)
    return torch.stack(snapshots, dim=1), mem_pos, mem_score, all_scores[:, n_complete * chunk :]
