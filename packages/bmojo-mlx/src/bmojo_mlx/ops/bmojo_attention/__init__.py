"""Three-source B'MOJO attention on ``mx.array`` (pure MLX, ``array.py``). No Metal kernel yet:
the blocked form is two matmuls and a softmax per block, which MLX already runs on the GPU; a
fused kernel would pay for long prefill and is left for when it can be measured on a Mac."""

from bmojo_mlx.ops.bmojo_attention.array import bmojo_attention

__all__ = ["bmojo_attention"]
