"""Argument checks for ``mx.array`` ops: the same messages as core's ``bmojo._checks`` ("name:
expected …, got …"), written for MLX arrays (core's checkers are torch-typed and importing them
would import torch). Nothing here reshapes or casts."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

FLOAT_DTYPES = (mx.float16, mx.bfloat16, mx.float32, mx.float64)
INT_DTYPES = (mx.int8, mx.int16, mx.int32, mx.int64, mx.uint8, mx.uint16, mx.uint32, mx.uint64)


def fail(name: str, expected: str, actual: object) -> None:
    raise ValueError(f"{name}: expected {expected}, got {actual}")


def check_array(
    name: str,
    x: object,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool | None = True,
) -> mx.array:
    """Validate an ``mx.array`` argument; ``None`` entries in ``shape`` are free."""
    if not isinstance(x, mx.array):
        fail(name, "an mx.array", type(x).__name__)
    if ndim is None and shape is not None:
        ndim = len(shape)
    if ndim is not None and x.ndim != ndim:
        fail(name, f"a {ndim}-d array", f"shape {tuple(x.shape)} ({x.ndim}-d)")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, x.shape)):
            if want is not None and want != got:
                want_s = tuple("*" if s is None else s for s in shape)
                fail(name, f"shape {want_s} (axis {axis} = {want})", f"shape {tuple(x.shape)}")
    if floating is True and x.dtype not in FLOAT_DTYPES:
        fail(name, "a floating-point array", x.dtype)
    if floating is False and x.dtype not in INT_DTYPES:
        fail(name, "an integer array", x.dtype)
    return x


def check_same(name: str, x: mx.array, ref_name: str, ref: mx.array) -> None:
    """Arrays that are combined must agree in dtype; we never cast silently."""
    if x.dtype != ref.dtype:
        fail(name, f"dtype {ref.dtype} (same as {ref_name})", x.dtype)


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(name, "an int", f"{value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        fail(name, f"an int >= {minimum}", value)
    return value


def compute_dtype(dtype) -> mx.Dtype:
    """Half precision accumulates in float32 (as core's reference does); float32/64 stay."""
    return mx.float32 if dtype in (mx.float16, mx.bfloat16) else dtype


def score_dtype(dtype) -> mx.Dtype:
    """Ranked scores are float32, or float64 for float64 inputs (never half precision)."""
    return mx.float64 if dtype == mx.float64 else mx.float32
