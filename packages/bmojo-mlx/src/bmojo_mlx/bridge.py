"""The only conversion between MLX arrays and anything else: the converters this backend declares
(``bmojo.backends.Converters``), with numpy in between. The conformance suite moves its torch
inputs through them; nothing else in this package touches another framework's arrays.

bfloat16, which numpy lacks, crosses as float32 (exact: every bfloat16 is a float32) with its
name, and is narrowed back on the other side.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

#: dtype names shared with torch/numpy → MLX dtypes.
DTYPES = {
    "float64": mx.float64,
    "float32": mx.float32,
    "float16": mx.float16,
    "bfloat16": mx.bfloat16,
    "int64": mx.int64,
    "int32": mx.int32,
    "int16": mx.int16,
    "int8": mx.int8,
    "uint8": mx.uint8,
    "bool": mx.bool_,
}
_NAMES = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype) -> str:
    name = _NAMES.get(dtype)
    if name is None:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype}")
    return name


def to_numpy(x: mx.array) -> tuple[np.ndarray, str]:
    """An ``mx.array`` as (numpy array, dtype name); bfloat16 widened to float32."""
    if not isinstance(x, mx.array):
        raise ValueError(f"x: expected an mx.array, got {type(x).__name__}")
    name = dtype_name(x.dtype)
    if x.dtype == mx.bfloat16:
        x = x.astype(mx.float32)
    return np.array(x, copy=True), name


def from_numpy(a: np.ndarray, dtype: str) -> mx.array:
    """A numpy array as an ``mx.array`` of dtype ``dtype`` (a name from :data:`DTYPES`)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"a: expected a numpy.ndarray, got {type(a).__name__}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    widened = dtype == "bfloat16" and a.dtype == np.float32
    if not widened and str(a.dtype) != dtype:
        raise ValueError(f"a: expected numpy dtype {dtype} (nothing is cast silently), got {a.dtype}")
    if widened:  # numpy has no bfloat16: float32 carrying bfloat16 values, which must round-trip exactly
        out = mx.array(a, dtype=mx.float32).astype(mx.bfloat16)
        if not mx.array_equal(out.astype(mx.float32), mx.array(a, dtype=mx.float32), equal_nan=True).item():
            raise ValueError(
                "a: expected float32 values exactly representable in bfloat16 (nothing is rounded silently), "
                "got values that would round"
            )
        return out
    # dtype given explicitly: mx.array alone would turn float64 into float32.
    return mx.array(a, dtype=DTYPES[dtype])


def vjp(fn, primals: list, cotangents: list) -> tuple[list, list]:
    """``mx.vjp``: outputs of ``fn(*primals)`` and the gradients of Σ cotangent·output."""
    outs, grads = mx.vjp(fn, list(primals), list(cotangents))
    return list(outs), list(grads)


def device_type() -> str:
    """The device MLX computes on now: ``"cpu"`` or ``"gpu"``."""
    return mx.default_device().type.name
