"""Spec arithmetic every backend shares, importable without torch (the MLX backend's inference
path must not import torch; ``bmojo.ops`` does)."""

from __future__ import annotations


def eidetic_snapshot_count(q_start: int, T: int, chunk: int) -> int:
    """Number of eidetic memory snapshots that queries q_start … q_start+T-1 see."""
    return (q_start + T - 1) // chunk - q_start // chunk + 1


def attention_block_size(block_size: int, T: int, chunk: int | None) -> int:
    """Query block of blocked attention: the largest size <= min(block_size, T) that divides the
    eidetic chunk (when there is one), so a block never straddles two memory snapshots."""
    limit = max(1, min(block_size, T))
    if chunk is None:
        return limit
    return max(d for d in range(1, limit + 1) if chunk % d == 0)


def resolve_fading_offset(fading_offset: int | None, window: int) -> int:
    """δ (spec §2.1): ``None`` means the published convention δ = w; otherwise 0 <= δ <= w.
    Raises ValueError naming ``fading_offset`` (same wording as ``bmojo._checks``)."""
    if fading_offset is None:
        return window
    if isinstance(fading_offset, bool) or not isinstance(fading_offset, int):
        raise ValueError(f"fading_offset: expected an int, got {fading_offset!r} ({type(fading_offset).__name__})")
    if not 0 <= fading_offset <= window:
        raise ValueError(f"fading_offset: expected 0 <= fading_offset <= window ({window}), got {fading_offset}")
    return fading_offset
