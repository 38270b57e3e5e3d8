"""Spec arithmetic every backend shares, importable without torch (the MLX backend's inference
path must not import torch; ``bmojo.ops`` does)."""

from __future__ import annotations


def eidetic_snapshot_count(q_start: int, T: int, chunk: int) -> int:
    """Number of eidetic memory snapshots that queries q_start … q_start+T-1 see."""
    return (q_start + T - 1) // chunk - q_start // chunk + 1
