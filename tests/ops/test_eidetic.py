"""innovation_scores and eidetic_select (spec §3, §7) against ``eidetic_select_naive``."""

from __future__ import annotations

import random

import pytest
import torch
from bmojo.ops.eidetic import eidetic_select, innovation_scores
from bmojo.ops.eidetic.naive import eidetic_select_naive
from conftest import randn
from hypothesis import given, settings
from hypothesis import strategies as st


def empty_memory(b, M, dtype=torch.float64):
    return torch.full((b, M), -1, dtype=torch.int64), torch.full((b, M), float("-inf"), dtype=dtype)


def visible(snaps, bi, i, chunk, start=0):
    """Sorted memory positions (empty slots dropped) that query i sees, from a call at ``start``."""
    s = i // chunk - start // chunk
    return sorted(p for p in snaps[bi, s].tolist() if p >= 0)


def select_in_pieces(scores, cuts, *, chunk, per_chunk, capacity, eviction):
    """Feed ``scores`` to eidetic_select in pieces ending at ``cuts``; return the memory seen by
    every query and the final (mem_pos, mem_score, pending)."""
    b, T = scores.shape
    mem_pos, mem_score = empty_memory(b, capacity, scores.dtype)
    pending = scores.new_zeros(b, 0)
    seen = [[None] * T for _ in range(b)]
    start = 0
    for end in [*cuts, T]:
        if end <= start:
            continue
        snaps, mem_pos, mem_score, pending = eidetic_select(
            scores[:, start:end],
            mem_pos,
            mem_score,
            pending,
            start=start,
            chunk=chunk,
            per_chunk=per_chunk,
            eviction=eviction,
        )
        assert snaps.shape == (b, (end - 1) // chunk - start // chunk + 1, capacity)
        for bi in range(b):
            for i in range(start, end):
                seen[bi][i] = visible(snaps, bi, i, chunk, start)
        start = end
    return seen, (mem_pos, mem_score, pending)


def check_against_naive(scores, *, chunk, per_chunk, capacity, eviction, cuts=()):
    seen, (mem_pos, mem_score, pending) = select_in_pieces(
        scores, list(cuts), chunk=chunk, per_chunk=per_chunk, capacity=capacity, eviction=eviction
    )
    T = scores.shape[1]
    for bi in range(scores.shape[0]):
        expected = eidetic_select_naive(
            scores[bi].tolist(), chunk=chunk, per_chunk=per_chunk, capacity=capacity, eviction=eviction
        )
        assert seen[bi] == expected, f"batch {bi}: memory seen per query differs from the oracle"
    # Pending holds exactly the scores of the incomplete last chunk.
    assert torch.equal(pending, scores[:, T - T % chunk :])
    return mem_pos, mem_score


def tied_scores(b, T, levels=3):
    """Scores from a handful of values, so ties inside a chunk and across the memory are common."""
    return torch.randint(0, levels, (b, T)).double()


@pytest.mark.parametrize("eviction", ["lowest", "fifo"])
@pytest.mark.parametrize(
    "T, chunk, per_chunk, capacity",
    [(40, 4, 2, 5), (37, 5, 3, 3), (9, 4, 1, 1), (3, 4, 2, 4), (50, 8, 4, 16), (25, 1, 1, 3)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_one_call_matches_naive(eviction, T, chunk, per_chunk, capacity, ties):
    scores = tied_scores(2, T) if ties else randn(2, T)
    check_against_naive(scores, chunk=chunk, per_chunk=per_chunk, capacity=capacity, eviction=eviction)


def test_ties_go_to_earlier_token_and_lowest_evicts_older():
    """Hand-built case: within a chunk the earlier of tied tokens wins; when the memory is full,
    'lowest' drops the older of two tied lowest scores, 'fifo' drops the oldest entry."""
    # chunk 4, per_chunk 1, capacity 2
    scores = torch.tensor([[1.0, 5.0, 5.0, 0.0, 2.0, 2.0, 0.0, 0.0, 9.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    args = dict(start=0, chunk=4, per_chunk=1)
    mem_pos, mem_score = empty_memory(1, 2)
    pending = scores.new_zeros(1, 0)
    _, pos_low, _, _ = eidetic_select(scores, mem_pos, mem_score, pending, eviction="lowest", **args)
    # chunks pick positions 1 (5.0), 4 (2.0), 8 (9.0); lowest evicts 4 (the lowest score) -> {1, 8}
    assert sorted(pos_low[0].tolist()) == [1, 8]
    _, pos_fifo, _, _ = eidetic_select(scores, mem_pos, mem_score, pending, eviction="fifo", **args)
    assert sorted(pos_fifo[0].tolist()) == [4, 8]
    # Tied lowest: memory {1: 5.0, 4: 2.0}, next chunk offers 9 (2.0): the older tie (4) goes.
    scores2 = torch.tensor([[1.0, 5.0, 5.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0]], dtype=torch.float64)
    _, pos, score, _ = eidetic_select(scores2, mem_pos, mem_score, pending, eviction="lowest", **args)
    assert sorted(pos[0].tolist()) == [1, 9]
    assert sorted(score[0].tolist()) == [2.0, 5.0]
    # The oracle agrees: query 12 (one token past the third chunk) sees the memory after it.
    for s, expected in ((scores, {"lowest": [1, 8], "fifo": [4, 8]}), (scores2, {"lowest": [1, 9]})):
        for eviction, want in expected.items():
            seen = eidetic_select_naive([*s[0].tolist(), 0.0], chunk=4, per_chunk=1, capacity=2, eviction=eviction)
            assert seen[12] == want


@pytest.mark.parametrize("eviction", ["lowest", "fifo"])
@pytest.mark.parametrize("ties", [False, True])
def test_chunked_calls_equal_one_call(eviction, ties):
    """Pieces starting mid-chunk (pending scores, start > 0) give the memory one call gives."""
    T, chunk, per_chunk, capacity = 45, 4, 2, 6
    scores = tied_scores(3, T) if ties else randn(3, T)
    one = check_against_naive(scores, chunk=chunk, per_chunk=per_chunk, capacity=capacity, eviction=eviction)
    for cuts in ([1, 2, 3, 9, 10, 30], [5, 18, 19, 44], list(range(1, T))):
        pieces = check_against_naive(
            scores, chunk=chunk, per_chunk=per_chunk, capacity=capacity, eviction=eviction, cuts=cuts
        )
        # Same (position, score) pairs in memory at the end (slot order is not semantic).
        (pos_a, score_a), (pos_b, score_b) = pieces, one
        order_a, order_b = pos_a.argsort(dim=1), pos_b.argsort(dim=1)
        assert torch.equal(pos_a.gather(1, order_a), pos_b.gather(1, order_b))
        assert torch.equal(score_a.gather(1, order_a), score_b.gather(1, order_b))


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 40),
    chunk=st.integers(1, 8),
    per_chunk_frac=st.floats(0, 1),
    capacity=st.integers(1, 10),
    eviction=st.sampled_from(["lowest", "fifo"]),
    levels=st.sampled_from([2, 4, 1000]),
    n_cuts=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_property_random_splits_match_naive(T, chunk, per_chunk_frac, capacity, eviction, levels, n_cuts, seed):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    per_chunk = 1 + int(per_chunk_frac * (min(chunk, capacity) - 1))
    scores = tied_scores(2, T, levels)
    cuts = sorted(rng.randrange(1, T) for _ in range(n_cuts)) if T > 1 else []
    check_against_naive(scores, chunk=chunk, per_chunk=per_chunk, capacity=capacity, eviction=eviction, cuts=cuts)


def test_innovation_scores_formula():
    b, T, Hkv, Dh = 2, 7, 3, 4
    k, k_pred = randn(b, T, Hkv, Dh, requires_grad=True), randn(b, T, Hkv, Dh)
    a = innovation_scores(k, k_pred)
    assert a.shape == (b, T) and a.dtype == torch.float64
    assert not a.requires_grad, "selection is discrete: scores carry no gradient"
    for bi in range(b):
        for t in range(T):
            expected = sum(((k[bi, t, h] - k_pred[bi, t, h]) ** 2).sum() / Dh for h in range(Hkv)) / Hkv
            assert abs(a[bi, t].item() - expected.item()) <= 1e-14 * max(1.0, expected.item())


def test_innovation_scores_half_precision_ranked_in_float32():
    k, k_pred = randn(1, 5, 2, 4), randn(1, 5, 2, 4)
    a = innovation_scores(k.to(torch.bfloat16), k_pred.to(torch.bfloat16))
    assert a.dtype == torch.float32
