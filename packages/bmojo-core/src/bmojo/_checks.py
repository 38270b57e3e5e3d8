"""Argument checks shared by ops, layers and models.

Every failure names the argument, what was expected and what was given, so a
user can fix the call without reading our source. Nothing here reshapes or casts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fail(name: str, expected: str, actual: object) -> None:
    raise ValueError(f"{name}: expected {expected}, got {actual}")


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool | None = True,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Validate a tensor argument; `None` entries in `shape` are free."""
    if not isinstance(t, torch.Tensor):
        fail(name, "a torch.Tensor", type(t).__name__)
    if ndim is None and shape is not None:
        ndim = len(shape)
    if ndim is not None and t.ndim != ndim:
        fail(name, f"a {ndim}-d tensor", f"shape {tuple(t.shape)} ({t.ndim}-d)")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, t.shape)):
            if want is not None and want != got:
                want_s = tuple("*" if s is None else s for s in shape)
                fail(name, f"shape {want_s} (axis {axis} = {want})", f"shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        fail(name, f"dtype {dtype}", t.dtype)
    if floating is True and t.dtype not in FLOAT_DTYPES:
        fail(name, "a floating-point tensor", t.dtype)
    if floating is False and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        fail(name, "an integer tensor", t.dtype)
    return t


def check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Tensors that are combined must agree in dtype and device; we never cast silently."""
    if t.dtype != ref.dtype:
        fail(name, f"dtype {ref.dtype} (same as {ref_name})", t.dtype)
    if t.device != ref.device:
        fail(name, f"device {ref.device} (same as {ref_name})", t.device)


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(name, "an int", f"{value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        fail(name, f"an int >= {minimum}", value)
    return value


def check_flag(name: str, value, *, minimum: int | None = None, positive_float: bool = False):
    """Check a command-line value (or list of values); the error names the flag as the user typed it."""
    if positive_float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not value:
        raise ValueError(f"{name}: expected at least one value, got none")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
            raise ValueError(f"{name}: expected an int >= {minimum}, got {v!r}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reference ops accumulate half-precision inputs in float32; float32/64 stay as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
