"""Choosing between an op's pure-MLX path (``array.py``, always there) and its fused Metal kernel
(``metal.py``), visibly: an explicit ``kernel=`` argument, else Metal when it is available and the
dtype is one Metal computes (not float64). Each choice is logged once on ``bmojo_mlx.ops``; asking
for ``"metal"`` where Metal is unavailable is an error, never a silent fallback."""

from __future__ import annotations

import functools
import logging

import mlx.core as mx
from bmojo.argcheck import fail

log = logging.getLogger("bmojo_mlx.ops")

KERNELS = ("array", "metal")
_logged: set[tuple] = set()


@functools.cache
def metal_available() -> bool:
    return bool(mx.metal.is_available())


def pick(op: str, kernel: str | None, dtype) -> str:
    """``"array"`` or ``"metal"`` for ``op`` on arrays of ``dtype``."""
    if kernel is not None and kernel not in KERNELS:
        fail("kernel", f"one of {KERNELS} or None (automatic)", repr(kernel))
    if kernel == "metal":
        if not metal_available():
            raise RuntimeError(f"{op}: kernel='metal' was requested but Metal is not available here (mx.metal)")
        if dtype == mx.float64:
            fail("kernel", f"'array' for float64 inputs ({op}: Metal has no float64)", "'metal'")
    if kernel is None:
        kernel = "metal" if metal_available() and dtype != mx.float64 else "array"
    key = (op, kernel, str(dtype))
    if key not in _logged:
        _logged.add(key)
        log.info("bmojo_mlx: %s (%s) -> %s path", op, dtype, kernel)
    return kernel
