"""Decode step of the causal convolution: one token per batch row, state shifted in the kernel."""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index


@triton.jit
def _conv_step_kernel(
    X,
    S,
    W,
    BIAS,
    Y,
    NEW_S,
    CH,
    K,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    b = index(tl.program_id(0), IDX64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < CH
    x = tl.load(X + b * CH + c, mask=c_ok, other=0.0)
    acc = tl.load(W + c * K + (K - 1), mask=c_ok, other=0.0).to(ACC) * x.to(ACC)
    if HAS_BIAS:
        acc += tl.load(BIAS + c, mask=c_ok, other=0.0).to(ACC)
    state_base = b * (K - 1) * CH
    for k in range(0, K - 1):
        s = tl.load(S + state_base + k * CH + c, mask=c_ok, other=0.0)
        acc += tl.load(W + c * K + k, mask=c_ok, other=0.0).to(ACC) * s.to(ACC)
        if k > 0:  # new state row k-1 = old row k
            tl.store(NEW_S + state_base + (k - 1) * CH + c, s, mask=c_ok)
    if K > 1:
        tl.store(NEW_S + state_base + (K - 2) * CH + c, x, mask=c_ok)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(Y + b * CH + c, acc.to(Y.dtype.element_ty), mask=c_ok)
