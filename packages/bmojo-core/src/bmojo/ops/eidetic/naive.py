"""Eidetic selection token by token with Python lists, straight from spec §3. Test oracle only."""

from __future__ import annotations


def eidetic_select_naive(scores, *, chunk, per_chunk, capacity, eviction="lowest"):
    """scores: list of floats for positions 0..T-1 (one sequence, from an empty memory).

    Returns, for every position i, the sorted list of memory positions visible to query i before
    the window restriction (the memory after the i // chunk chunks completed before i).
    """
    memory: list[tuple[float, int]] = []  # (score, position)
    seen = []
    T = len(scores)
    for i in range(T):
        seen.append(sorted(p for _, p in memory))
        if (i + 1) % chunk == 0:  # chunk ending at i completes
            lo = i + 1 - chunk
            cands = sorted(range(lo, i + 1), key=lambda p: (-scores[p], p))[:per_chunk]
            memory = memory + [(scores[p], p) for p in cands]
            if eviction == "lowest":
                memory.sort(key=lambda e: (-e[0], -e[1]))  # high score first; ties keep newer
            else:
                memory.sort(key=lambda e: -e[1])  # newest first
            memory = memory[:capacity]
    return seen
