"""Backward kernel of the norms: one program per group, recomputing the statistics.

With u = x·silu(z) (or x), r = 1/sqrt(mean(u²) + eps), y = u·r·w:

    du = r·(dy·w) − u·r³·mean(dy·w·u),   dx = du·silu(z),   dz = du·x·silu'(z),
    dw = Σ_rows dy·u·r  (each program writes its row's term; the launcher sums them).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _norm_bwd_kernel(
    X,
    Z,
    W,
    DY,
    DX,
    DZ,
    DW_ROWS,
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
    u = x
    if HAS_Z:
        z = tl.load(Z + base + cols, mask=ok, other=0.0).to(ACC)
        sig = tl.sigmoid(z)
        u = x * z * sig
    w = tl.load(W + (row % groups_per_row) * group + cols, mask=ok, other=0.0).to(ACC)
    dy = tl.load(DY + base + cols, mask=ok, other=0.0).to(ACC)
    r = 1.0 / tl.sqrt(tl.sum(u * u, axis=0) / group + eps)
    dyw = dy * w
    du = r * dyw - u * (r * r * r) * (tl.sum(dyw * u, axis=0) / group)
    tl.store(DW_ROWS + base + cols, (dy * u * r).to(DW_ROWS.dtype.element_ty), mask=ok)
    if HAS_Z:
        tl.store(DX + base + cols, (du * z * sig).to(DX.dtype.element_ty), mask=ok)
        dz = du * x * sig * (1.0 + z * (1.0 - sig))
        tl.store(DZ + base + cols, dz.to(DZ.dtype.element_ty), mask=ok)
    else:
        tl.store(DX + base + cols, du.to(DX.dtype.element_ty), mask=ok)
