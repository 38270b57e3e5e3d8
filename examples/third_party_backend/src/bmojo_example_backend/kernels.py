"""The example backend's kernel: same signature and semantics as ``bmojo.ops.rmsnorm.reference.rmsnorm``.

Checks and the compute-dtype rule come from core (``bmojo.argcheck``), never written again here:
the backend then rejects exactly what the reference rejects, with the same message.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from bmojo.argcheck import TORCH, check_rmsnorm_args


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    check_rmsnorm_args(TORCH, x, weight, eps)
    cd = TORCH.compute_dtype(x.dtype)  # core's rule: half precision is normalised in float32
    return F.rms_norm(x.to(cd), (x.shape[-1],), weight.to(cd), eps).to(x.dtype)
