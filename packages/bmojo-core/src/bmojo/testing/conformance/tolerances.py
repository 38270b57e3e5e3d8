"""The one tolerance table of the conformance suite.

A backend's output ``a`` matches the reference ``r`` when ``max|a - r| <= atol + rtol * max|r|``
(the error is measured against the largest reference value, so one large element does not excuse
errors elsewhere, and tiny values do not demand impossible relative precision). Gradients use the
``grad_*`` columns. Integer outputs (eidetic positions) must be equal. The layer column is the
parallel == recurrent bound of spec §5, relative to the largest output.

| dtype    | atol  | rtol  | grad_atol | grad_rtol | layer (spec §5) |
|----------|-------|-------|-----------|-----------|-----------------|
| float64  | 1e-10 | 1e-10 | 1e-9      | 1e-9      | 1e-10           |
| float32  | 1e-5  | 1e-4  | 1e-4      | 1e-3      | 1e-4            |
| bfloat16 | 1e-2  | 2e-2  | 2e-2      | 5e-2      | —               |
| float16  | 1e-3  | 4e-3  | 4e-3      | 1e-2      | —               |

Why these: the reference accumulates half precision in float32, so a half-precision backend is
held to about two ulps of its storage type (bf16 ulp = 7.8e-3, fp16 ulp = 9.8e-4) on forward and
a few on gradients; float32 allows re-association over chunk/block orders (≈1e-6 relative per
reduction, with margin); float64 is tight enough to catch any algorithmic difference.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    grad_atol: float
    grad_rtol: float
    layer: float | None


#: dtype name → tolerance (keep in sync with the table in the module docstring).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(1e-10, 1e-10, 1e-9, 1e-9, 1e-10),
    "float32": Tolerance(1e-5, 1e-4, 1e-4, 1e-3, 1e-4),
    "bfloat16": Tolerance(1e-2, 2e-2, 2e-2, 5e-2, None),
    "float16": Tolerance(1e-3, 4e-3, 4e-3, 1e-2, None),
}

DTYPES = tuple(TOLERANCES)
DEFAULT_DTYPES = ("float32", "float64")
