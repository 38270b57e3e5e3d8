"""RMSNorm and gated RMSNorm on ``mx.array`` (pure MLX; no Metal kernel: MLX fuses these
element-wise chains itself, and ``mx.fast.rms_norm`` does not cover the gated, grouped form)."""

from bmojo_mlx.ops.rmsnorm.array import gated_rmsnorm, rmsnorm

__all__ = ["gated_rmsnorm", "rmsnorm"]
