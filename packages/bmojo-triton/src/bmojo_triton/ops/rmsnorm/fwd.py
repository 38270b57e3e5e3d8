"""Forward kernel of ``rmsnorm`` and ``gated_rmsnorm``: one program per normalisation group.

A "row" is one group of ``group`` contiguous channels (the whole last axis for plain RMSNorm);
the gate ``silu(z)`` is fused before the mean square (Mamba-2's order), all in ACC precision.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _norm_fwd_kernel(
    X,
    Z,
    W,
    Y,
    group,
    groups_per_row,
    Eps,
    HAS_Z: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    eps = tl.load(Eps)  # a tensor: a Python float arg would be typed float32 on a GPU
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    ok = cols < group
    base = row.to(tl.int64) * group
    x = tl.load(X + base + cols, mask=ok, other=0.0).to(ACC)
    if HAS_Z:
        z = tl.load(Z + base + cols, mask=ok, other=0.0).to(ACC)
        x = x * z * tl.sigmoid(z)
    w = tl.load(W + (row % groups_per_row) * group + cols, mask=ok, other=0.0).to(ACC)
    r = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / group + eps)
    tl.store(Y + base + cols, (x * r * w).to(Y.dtype.element_ty), mask=ok)
