"""RMSNorm and the gated RMSNorm of the Mamba-2 output (``rmsnorm(y · silu(z))``)."""

from bmojo.ops.rmsnorm.reference import gated_rmsnorm, rmsnorm

__all__ = ["gated_rmsnorm", "rmsnorm"]
