"""``innovation_scores`` in Triton. ``eidetic_select`` is not provided by this backend: it is a
small discrete top-k over one chunk's scores, and core's reference (torch) serves it."""

from __future__ import annotations

import torch
from bmojo.argcheck import TORCH, check_innovation_scores_args

from bmojo_triton.ops._guards import check_block
from bmojo_triton.ops._triton_utils import acc_dtype, on_device, pow2
from bmojo_triton.ops.eidetic.fwd import _innovation_kernel


def innovation_scores(k: torch.Tensor, k_pred: torch.Tensor) -> torch.Tensor:
    """Same contract as ``bmojo.ops.eidetic.reference.innovation_scores`` (mean over heads of the
    per-head mean, i.e. the mean over Hkv·Dh values)."""
    check_innovation_scores_args(TORCH, k, k_pred)
    b, T, Hkv, Dh = k.shape
    check_block("k", "Hkv × Dh (one program reduces a token's keys)", Hkv * Dh)
    cd = TORCH.score_dtype(k.dtype)
    out = torch.empty(b, T, dtype=cd, device=k.device)
    width = Hkv * Dh
    if out.numel() and width:
        with on_device(k):
            _innovation_kernel[(b * T,)](
                k.contiguous(), k_pred.contiguous(), out, width, BLOCK=pow2(width, 1), ACC=acc_dtype(cd)
            )
    elif out.numel():
        out.fill_(float("nan"))  # the mean of nothing, as torch's mean gives
    return out
