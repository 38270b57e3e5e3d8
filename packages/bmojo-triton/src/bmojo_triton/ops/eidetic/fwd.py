"""``innovation_scores`` kernel: one program per token, mean squared key error over heads × Dh."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _innovation_kernel(K, KP, OUT, width, BLOCK: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    ok = cols < width
    base = row.to(tl.int64) * width
    d = tl.load(K + base + cols, mask=ok, other=0.0).to(ACC) - tl.load(KP + base + cols, mask=ok, other=0.0).to(ACC)
    tl.store(OUT + row, tl.sum(d * d, axis=0) / width)
