"""The example backend's kernel: same signature and semantics as ``bmojo.ops.rmsnorm.reference.rmsnorm``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # Like the reference: half precision is normalised in float32 and cast back.
    cd = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return F.rms_norm(x.to(cd), (x.shape[-1],), weight.to(cd), eps).to(x.dtype)
