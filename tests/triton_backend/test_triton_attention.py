"""Fused three-source attention at the kernel's tile edges, forward and every gradient.

Tiles are 16 rows on the interpreter and 64 (32 keys at Dh = 128) on a GPU; the sizes below cross
both: T, w, f and M are not multiples of either, T = 150 spans three GPU tiles.
"""

from __future__ import annotations

import pytest
import torch
from bmojo.ops.bmojo_attention.reference import bmojo_attention as reference
from bmojo.ops.bmojo_attention.reference import eidetic_snapshot_count
from bmojo_triton.ops.bmojo_attention import bmojo_attention as fused
from triton_helpers import compare_fwd_bwd

NAMES = ("q", "k", "v", "kf", "vf", "ek", "ev", "epos")


def make(
    device,
    dtype,
    *,
    b=1,
    T=37,
    H=4,
    Hkv=2,
    Dh=32,
    w=19,
    f=13,
    M=5,
    chunk=7,
    q_start=0,
    k_extra=0,
    f_extra=0,
    empty=0.25,
    delta=None,
    seed=0,
):
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, s=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * s).to(device, dtype)

    args = [rn(b, T, H, Dh, s=1.5), rn(b, T + k_extra, Hkv, Dh), rn(b, T + k_extra, Hkv, Dh)]
    args += [rn(b, T + f_extra, Hkv, Dh), rn(b, T + f_extra, Hkv, Dh)] if f else [None, None]
    if M is not None:
        S = eidetic_snapshot_count(q_start, T, chunk)
        epos = torch.randint(0, max(1, q_start + T), (b, S, M), generator=g)
        epos = torch.where(torch.rand(b, S, M, generator=g) < empty, torch.full_like(epos, -1), epos)
        args += [rn(b, S, M, Hkv, Dh), rn(b, S, M, Hkv, Dh), epos.to(device)]
    else:
        args += [None, None, None]
    kw = dict(
        q_start=q_start, window=w, fading_window=f, eidetic_chunk=chunk if M is not None else None, fading_offset=delta
    )
    return args, kw


CASES = {
    # name: make() overrides
    "ragged_three_sources_gqa2": dict(),
    "delta0": dict(delta=0),
    "delta1_w_small": dict(w=3, f=17, delta=1),
    "all_slots_empty": dict(empty=1.0),
    "zero_slots": dict(M=0),
    "no_eidetic_gqa4": dict(H=4, Hkv=1, M=None),
    "window_only_w_ge_T": dict(w=64, f=0, M=None),
    "long_T150_spans_gpu_tiles": dict(T=150, H=2, Hkv=1, w=70, f=45, M=9, chunk=50),
    "decode_T1": dict(T=1, q_start=40, k_extra=30, f_extra=40, chunk=8),
    "decode_T1_delta0": dict(T=1, q_start=40, k_extra=30, f_extra=40, chunk=8, delta=0),
    "continuation_negative_positions": dict(T=9, q_start=3, k_extra=10, f_extra=12, chunk=4),
    "head64_B2": dict(b=2, T=21, Dh=64, w=8, f=8, M=3, chunk=8),
    "head128": dict(T=18, H=2, Hkv=2, Dh=128, w=9, f=5, M=3, chunk=9),
    "head_dim_8": dict(T=20, Dh=8, w=6, f=6, M=3, chunk=6),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_matches_reference_float32(name, device):
    args, kw = make(device, torch.float32, **CASES[name])
    compare_fwd_bwd(name, fused, reference, args, kw, torch.float32, names=NAMES)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("name", ["ragged_three_sources_gqa2", "decode_T1_delta0"])
def test_fused_matches_reference_other_dtypes(name, dtype, device):
    args, kw = make(device, dtype, **CASES[name])
    compare_fwd_bwd(name, fused, reference, args, kw, dtype, names=NAMES)


def test_lse_dtype_and_unused_sources_get_zero_gradients(device):
    """lse is float32 for half inputs; f = 0 with kf given and all-empty eidetic slots give
    exact zero gradients for those inputs (every row of every gradient is written)."""
    args, kw = make(device, torch.bfloat16, T=10, f=0, empty=1.0)
    args[3] = torch.randn(1, 10, 2, 32, device=device, dtype=torch.bfloat16)
    args[4] = torch.randn(1, 10, 2, 32, device=device, dtype=torch.bfloat16)
    q, k, v, kf, vf, ek, ev, epos = [
        a.requires_grad_(True) if a is not None and a.is_floating_point() else a for a in args
    ]
    o, lse = fused(q, k, v, kf, vf, ek, ev, epos, **kw)
    assert lse.dtype == torch.float32 and o.dtype == torch.bfloat16
    (o.float().sum() + lse.sum()).backward()
    for t in (kf, vf, ek, ev):
        assert t.grad is not None and not t.grad.any()


def test_non_contiguous_inputs(device):
    args, _ = make(device, torch.float32, T=20, H=2, Hkv=2, M=None, f=0, w=7)
    q = args[0].transpose(1, 2).contiguous().transpose(1, 2)  # (b, T, H, Dh) with H-major strides
    assert not q.is_contiguous()
    o, lse = fused(q, args[1], args[2], window=7)
    o_r, lse_r = reference(q, args[1], args[2], window=7)
    assert torch.allclose(o, o_r, atol=1e-5) and torch.allclose(lse, lse_r, atol=1e-5)


def test_bad_input_names_the_argument(device):
    args, _ = make(device, torch.float32, T=5, M=None, f=0, w=3)
    with pytest.raises(ValueError, match="fading_offset"):
        fused(*args[:3], window=3, fading_offset=4)
    with pytest.raises(ValueError, match="k"):
        fused(args[0], args[1][:, :2], args[2][:, :2], window=3)
