"""What core's argument checks (:mod:`bmojo.argcheck`, torch-free) need to know about MLX arrays:
the array type, its dtypes, and that it has no device. Every check itself (and its "name:
expected …, got …" message) is core's; only this description is MLX-specific."""

from __future__ import annotations

import mlx.core as mx
from bmojo.argcheck import ArrayKind

INT_DTYPES = (mx.int8, mx.int16, mx.int32, mx.int64, mx.uint8, mx.uint16, mx.uint32, mx.uint64)

#: ``mx.array`` for ``bmojo.argcheck``: messages say "an mx.array", "a 4-d array"; half precision
#: computes in float32 (``MLX.compute_dtype``), ranked scores in float32/64 (``MLX.score_dtype``).
MLX = ArrayKind(
    array_type=mx.array,
    type_name="an mx.array",
    noun="array",
    half=(mx.float16, mx.bfloat16),
    float32=mx.float32,
    float64=mx.float64,
    is_integer=INT_DTYPES.__contains__,
)
