"""Causal depthwise conv1d and its decode step on ``mx.array`` (pure MLX; K shifted
multiply-adds are already one fused element-wise graph for MLX, so no Metal kernel)."""

from bmojo_mlx.ops.causal_conv1d.array import causal_conv1d, causal_conv1d_step

__all__ = ["causal_conv1d", "causal_conv1d_step"]
