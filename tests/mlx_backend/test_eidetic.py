"""innovation_scores / eidetic_select on mx.array vs core's reference, including the tie rules
(ties keep the earlier token; eviction drops the older of equal scores), fifo, a call starting
mid-chunk and several chunks per call; selection is discrete, so positions must be equal."""

from __future__ import annotations

import itertools

import pytest
import torch
from bmojo.ops.eidetic.reference import eidetic_select as ref_select
from bmojo.ops.eidetic.reference import innovation_scores as ref_scores
from bmojo_mlx.ops.eidetic.array import eidetic_select, innovation_scores

from .helpers import check_against_reference, mxa, tt


def test_innovation_scores():
    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-14), (torch.float32, 1e-6), (torch.bfloat16, 1e-6)):
        k, kp = (torch.randn(2, 7, 3, 4, generator=g).to(dtype) for _ in range(2))
        check_against_reference(innovation_scores, ref_scores, (k, kp), {}, tol=tol)


def _memory(b, M, filled, start, g):
    pos = torch.full((b, M), -1, dtype=torch.int64)
    score = torch.full((b, M), float("-inf"), dtype=torch.float32)
    if filled:
        pos[:, :filled] = torch.stack([torch.randperm(max(start, filled), generator=g)[:filled] for _ in range(b)])
        score[:, :filled] = torch.randint(0, 3, (b, filled), generator=g).float()  # coarse: ties with new scores
    return pos, score


GRID = list(
    itertools.product(
        [0, 5, 8],  # start (mid-chunk at 5)
        [1, 4, 19],  # T (one token, a chunk, several chunks)
        [(4, 2, 3), (4, 4, 4), (1, 1, 2)],  # (chunk, per_chunk, M)
        ["lowest", "fifo"],
        [0, 2],  # memory slots filled before the call
    )
)


@pytest.mark.parametrize("start,T,sizes,eviction,filled", GRID)
def test_select_matches_reference_with_ties(start, T, sizes, eviction, filled):
    chunk, per_chunk, M = sizes
    filled = min(filled, M)
    g = torch.Generator().manual_seed(start * 1000 + T * 10 + chunk)
    b = 2
    scores = torch.randint(0, 3, (b, T), generator=g).float()  # three values: many ties
    pending = torch.randint(0, 3, (b, start % chunk), generator=g).float()
    mem_pos, mem_score = _memory(b, M, filled, start, g)
    kw = dict(start=start, chunk=chunk, per_chunk=per_chunk, eviction=eviction)
    check_against_reference(eidetic_select, ref_select, (scores, mem_pos, mem_score, pending), kw, tol=0.0)


def test_select_argument_errors():
    scores, pos, score = mxa(torch.zeros(1, 4)), mxa(torch.full((1, 2), -1)), mxa(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"pending: expected shape \(1, 1\)"):
        eidetic_select(scores, pos, score, mxa(torch.zeros(1, 0)), start=1, chunk=4, per_chunk=1)
    with pytest.raises(ValueError, match=r"per_chunk: expected at most min\(chunk=4, capacity=2\)"):
        eidetic_select(scores, pos, score, mxa(torch.zeros(1, 0)), start=0, chunk=4, per_chunk=3)
    with pytest.raises(ValueError, match="mem_pos: expected an integer array"):
        eidetic_select(scores, score, score, mxa(torch.zeros(1, 0)), start=0, chunk=4, per_chunk=1)
    with pytest.raises(ValueError, match="eviction: expected one of"):
        eidetic_select(scores, pos, score, mxa(torch.zeros(1, 0)), start=0, chunk=4, per_chunk=1, eviction="lru")


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32])
def test_select_narrow_position_dtype_promotes_like_reference(dtype):
    """Any integer mem_pos passes the argument check; the reference promotes new positions to
    int64, so must MLX (int8 once wrapped position 200 to -56, an "empty" slot)."""
    scores = torch.arange(8, dtype=torch.float32).flip(0)[None]
    mem_pos, mem_score = torch.full((1, 2), -1, dtype=dtype), torch.full((1, 2), float("-inf"))
    kw = dict(start=40_000, chunk=4, per_chunk=1)
    check_against_reference(eidetic_select, ref_select, (scores, mem_pos, mem_score, torch.zeros(1, 0)), kw, tol=0.0)


@pytest.mark.parametrize("eviction", ["lowest", "fifo"])
def test_select_nan_scores_rank_like_reference(eviction):
    """torch's descending sort puts NaN above every number (+inf too), NaNs tied; MLX's pairwise
    ranks must agree (a bare ``>`` once dropped a real token for an empty slot)."""
    nan, inf = float("nan"), float("inf")
    rows = [[nan, nan, 1, 2], [1, nan, 3, 2], [inf, nan, inf, 0], [2, 2, nan, 2]]
    scores = torch.tensor([r * 3 for r in rows], dtype=torch.float32)  # three chunks per row
    mem_pos = torch.tensor([[-1, -1, -1], [1, -1, -1], [0, 2, -1], [3, 1, 0]])
    mem_score = torch.tensor([[-inf] * 3, [nan, -inf, -inf], [1.0, nan, -inf], [2.0, 2.0, nan]])
    kw = dict(start=4, chunk=4, per_chunk=2, eviction=eviction)
    expected = ref_select(scores, mem_pos, mem_score, torch.zeros(4, 0), **kw)
    actual = tt(eidetic_select(mxa(scores), mxa(mem_pos), mxa(mem_score), mxa(torch.zeros(4, 0)), **kw))
    for i in (0, 1):  # snapshots, mem_pos: equal positions
        assert torch.equal(actual[i], expected[i]), (i, actual[i].tolist(), expected[i].tolist())
    assert torch.equal(actual[2].isnan(), expected[2].isnan())
    assert torch.equal(actual[2].nan_to_num(), expected[2].nan_to_num())
