"""Triton-only helpers shared by this package's kernels (launch grids, dtype constants).

Argument checks and the compute-dtype rule come from core (``bmojo.argcheck``), never from here.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

#: Smallest block edge ``tl.dot`` accepts; smaller dimensions are padded (masked loads).
MIN_DOT = 16

#: Set by ``bmojo_triton.aot`` only: launch with the GPU's tiles and math on CPU tensors, so the
#: ahead-of-time compile check sees exactly the kernels a GPU would run.
AS_GPU = False


def gpu_path(device: torch.device) -> bool:
    """Whether launches use the GPU's tiles and math (True on CUDA), or the interpreter's small
    tiles and bf16 upcast (CPU tensors, which only run under TRITON_INTERPRET=1)."""
    return device.type == "cuda" or AS_GPU


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


def upcast(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernels must run their matmuls in float32: Triton's interpreter (the only way
    they run on a CPU) stores bfloat16 as raw uint16 and multiplies those bits. Upcasting the
    bfloat16 operands gives the GPU's own math (exact bf16 products, float32 sums)."""
    return not gpu_path(device) and dtype == torch.bfloat16


@triton.jit
def mm(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """``tl.dot(a, b)`` with the input precision PREC; UPCAST: operands to float32 first."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PREC)
