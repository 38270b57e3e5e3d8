"""bmojo_attention on mx.array vs core's reference: forward (o and lse) and gradients of every
input, over the three sources, GQA, fading offsets δ (0, 1, w-1, w, None), continuation at an odd
``q_start`` with longer caches, block sizes that do and do not divide T, and argument errors."""

from __future__ import annotations

import pytest
import torch
from bmojo.arith import eidetic_snapshot_count
from bmojo.ops.bmojo_attention.reference import bmojo_attention as ref_attention
from bmojo_mlx.ops.bmojo_attention.array import bmojo_attention

from .helpers import check_against_reference, mxa

CASES = {
    # name: (b, T, H, Hkv, Dh, w, f, M, chunk, q_start, k_extra, f_extra, block, delta)
    "swa_gqa2_block3": (2, 10, 4, 2, 8, 4, 0, None, None, 0, 0, 0, 3, None),
    "full_w_ge_T": (1, 6, 2, 2, 4, 16, 0, None, None, 0, 0, 0, 64, None),
    "three_sources_gqa4": (2, 13, 4, 1, 8, 4, 4, 3, 4, 0, 0, 0, 4, None),
    "continuation_odd_start": (1, 7, 2, 1, 4, 5, 3, 2, 5, 11, 5, 8, 4, None),
    "decode_T1": (2, 1, 4, 2, 4, 4, 4, 2, 4, 9, 4, 8, 64, None),
    "delta0": (1, 9, 2, 2, 4, 4, 3, 2, 4, 0, 0, 0, 4, 0),
    "delta1_continuation": (2, 5, 2, 1, 4, 4, 4, None, None, 6, 4, 7, 2, 1),
    "delta_w_minus_1": (1, 8, 2, 2, 4, 5, 2, 2, 5, 3, 3, 5, 4, 4),
    "delta_w_explicit_decode": (1, 1, 2, 2, 4, 3, 3, None, None, 8, 3, 6, 64, 3),
    "eidetic_no_fading_block1": (1, 6, 2, 2, 4, 3, 0, 2, 3, 0, 0, 0, 1, None),
}


def attention_args(b, T, H, Hkv, Dh, w, f, M, chunk, q_start, k_extra, f_extra, block, delta, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    args = [r(b, T, H, Dh) * 1.5, r(b, T + k_extra, Hkv, Dh), r(b, T + k_extra, Hkv, Dh)]
    args += [r(b, T + f_extra, Hkv, Dh), r(b, T + f_extra, Hkv, Dh)] if f else [None, None]
    if M is not None:
        S = eidetic_snapshot_count(q_start, T, chunk)
        epos = torch.randint(0, max(1, q_start + T), (b, S, M), generator=g)
        epos = torch.where(torch.rand(b, S, M, generator=g) < 0.25, torch.full_like(epos, -1), epos)
        args += [r(b, S, M, Hkv, Dh), r(b, S, M, Hkv, Dh), epos]
    else:
        args += [None, None, None]
    kw = dict(
        q_start=q_start,
        window=w,
        fading_window=f,
        eidetic_chunk=chunk if M is not None else None,
        block_size=block,
        fading_offset=delta,
    )
    return tuple(args), kw


@pytest.mark.parametrize("name", list(CASES))
def test_attention_matches_reference_float64(name):
    args, kw = attention_args(*CASES[name], torch.float64)
    check_against_reference(bmojo_attention, ref_attention, args, kw, tol=1e-12, grad_tol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 4e-3)])
def test_attention_low_precision(dtype, tol):
    args, kw = attention_args(*CASES["three_sources_gqa4"], dtype)
    check_against_reference(bmojo_attention, ref_attention, args, kw, tol=tol)


def test_attention_argument_errors():
    args, kw = attention_args(*CASES["three_sources_gqa4"], torch.float32)
    a = [mxa(x) for x in args]
    with pytest.raises(ValueError, match=r"fading_offset: expected 0 <= fading_offset <= window \(4\), got 5"):
        bmojo_attention(*a, **dict(kw, fading_offset=5))
    with pytest.raises(ValueError, match="kf: expected fading keys when fading_window > 0"):
        bmojo_attention(a[0], a[1], a[2], **dict(kw, eidetic_chunk=None))
    with pytest.raises(ValueError, match="epos: expected an integer array"):
        bmojo_attention(*a[:7], a[5][..., 0, 0], **kw)
    with pytest.raises(ValueError, match=r"ek: expected shape \(2, 4, '\*', 1, 8\) \(axis 1 = 4\)"):
        bmojo_attention(*a[:5], a[5][:, :2], a[6][:, :2], a[7][:, :2], **kw)
    with pytest.raises(ValueError, match="k: expected at least as many keys as queries"):
        bmojo_attention(a[0], a[1][:, :3], a[2][:, :3], **dict(kw, fading_window=0, eidetic_chunk=None))
