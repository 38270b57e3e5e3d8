"""Selective scan and its decode step on ``mx.array``.

``array.py`` is the pure-MLX chunked scan and step (always available, what runs and is tested on
CPU); ``metal.py`` a fused Metal kernel for the step (decode is launch-bound: one kernel instead
of several per token). ``ssm_step`` picks visibly (``kernel=``, else Metal when available; see
``ops/_kernels.py``). The sequence scan is matmul-bound, which MLX already runs on the GPU, so it
has no hand-written kernel.
"""

from __future__ import annotations

from bmojo_mlx.ops._kernels import pick
from bmojo_mlx.ops.ssm_scan.array import ssm_scan
from bmojo_mlx.ops.ssm_scan.array import ssm_step as _ssm_step_array


def ssm_step(state, x, dt, A, B, C, D=None, *, kernel: str | None = None):
    """One decode step (same contract as ``bmojo.ops.ssm_scan.reference.ssm_step``); ``kernel``:
    ``"array"``, ``"metal"`` or None (Metal when available)."""
    if pick("ssm_step", kernel, getattr(x, "dtype", None)) == "metal":
        from bmojo_mlx.ops.ssm_scan.metal import ssm_step as ssm_step_metal

        return ssm_step_metal(state, x, dt, A, B, C, D)
    return _ssm_step_array(state, x, dt, A, B, C, D)


__all__ = ["ssm_scan", "ssm_step"]
