"""Triton-only helpers shared by this package's kernels (launch grids, dtype constants).

Argument checks and the compute-dtype rule come from core (``bmojo._checks``), never from here.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

#: Smallest block edge ``tl.dot`` accepts; smaller dimensions are padded (masked loads).
MIN_DOT = 16


def pow2(n: int, minimum: int = MIN_DOT) -> int:
    """Smallest power of two >= max(n, minimum): a block edge covering n."""
    return max(minimum, triton.next_power_of_2(max(int(n), 1)))


def acc_dtype(dtype: torch.dtype):
    """Accumulator type: float64 for float64 inputs, else float32 (half inputs accumulate in float32)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: full IEEE float32 for float32 (the default would be TF32, whose
    10-bit mantissa misses the float32 tolerance), the hardware default otherwise."""
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def on_device(t: torch.Tensor):
    """Launch on the tensor's own GPU (Triton launches on the current CUDA device)."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
