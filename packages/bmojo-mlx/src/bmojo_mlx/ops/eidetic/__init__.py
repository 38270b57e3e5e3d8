"""Innovation scores and eidetic selection on ``mx.array`` (pure MLX; discrete and tiny, so no
Metal kernel)."""

from bmojo.config import EVICTIONS

from bmojo_mlx.ops.eidetic.array import eidetic_select, innovation_scores

__all__ = ["EVICTIONS", "eidetic_select", "innovation_scores"]
