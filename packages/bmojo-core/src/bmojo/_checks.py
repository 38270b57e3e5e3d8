"""Argument checks shared by ops, layers and models, for torch tensors.

Every failure names the argument, what was expected and what was given, so a
user can fix the call without reading our source. Nothing here reshapes or casts.
The checkers are :mod:`bmojo.argcheck`'s (array-agnostic, torch-free) bound to torch tensors;
backends use :mod:`bmojo.argcheck` directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from bmojo import argcheck
from bmojo.argcheck import TORCH, check_array, check_int, fail

__all__ = [
    "FLOAT_DTYPES",
    "check_device",
    "check_flag",
    "check_int",
    "check_same",
    "check_tensor",
    "check_threads",
    "compute_dtype",
    "fail",
]

FLOAT_DTYPES = TORCH.floating


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
    return check_array(TORCH, name, t, ndim=ndim, shape=shape, floating=floating, dtype=dtype)


def check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Tensors that are combined must agree in dtype and device; we never cast silently."""
    argcheck.check_same(TORCH, name, t, ref_name, ref)


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


#: Seeds of the jobs that seed torch's CPU generator (mt19937 keeps 32 bits of a seed: larger
#: seeds would alias smaller ones, and the derived data seeds must stay in int64).
SEED_BOUND = 2**32


def check_seed(name: str, value) -> int:
    """A job's ``--seed``: an int in [0, 2**32), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_BOUND:
        raise ValueError(f"{name}: expected an int in [0, 2**32), got {value!r}")
    return value


#: The most torch CPU threads a command takes (``--threads``: bmojo train, bmojo mqar, the
#: benchmarks); far more crash torch.
MAX_THREADS = 1024


def check_threads(name: str, value) -> int:
    """A ``--threads`` value: an int in [1, MAX_THREADS], or a ValueError naming ``name`` (the
    messages of ``bmojo train``'s check)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if value > MAX_THREADS:
        raise ValueError(f"{name}: expected at most {MAX_THREADS} torch CPU threads, got {value}")
    return value


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reference ops accumulate half-precision inputs in float32; float32/64 stay as they are."""
    return TORCH.compute_dtype(dtype)


def check_device(flag: str, name: str) -> torch.device:
    """A torch device that exists here, or a ValueError naming ``flag``."""
    try:
        device = torch.device(name)
        if device.type == "meta":  # allocates nothing, so the probe below would pass
            raise ValueError("the meta device holds no data to compute with")
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{flag}: expected an available torch device, got {name!r} ({first})") from None
    return device
