"""Fused three-source attention at the kernel's tile edges, forward and every gradient.

Tiles are 16 rows on the interpreter and 64 (32 keys at Dh = 128) on a GPU; the sizes below cross
both: T, w, f and M are not multiples of either, T = 150 spans three GPU tiles.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
import torch
from bmojo.ops.bmojo_attention.reference import bmojo_attention as reference
from bmojo.ops.bmojo_attention.reference import eidetic_snapshot_count
from bmojo_triton.ops._triton_utils import pow2
from bmojo_triton.ops.bmojo_attention import TILES, _tiles
from bmojo_triton.ops.bmojo_attention import bmojo_attention as fused
from triton_helpers import assert_close, compare_fwd_bwd, leaves

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


# ----- the opt-in "atomic" backward: dQ added by the dK/dV kernels, no dQ kernel -----


@contextlib.contextmanager
def atomic_dq(q):
    """Backward passes run inside the block use the "atomic" variant (the configs are read when
    the backward runs): the ``bwd_dkdv`` config q would get (the GPU table's entry on a GPU, the
    interpreter's 16×16 on CPU) with dq="atomic"."""
    cfg = TILES.get("bwd_dkdv", (min(pow2(q.shape[-1]), 128), q.element_size()), q.device)
    with TILES.override(bwd_dkdv=replace(cfg, dq="atomic")):
        yield


#: δ = w (default), 0 and 1; GQA 2:1 and 4:1; empty and zero eidetic slots; window only with
#: w < T; T spanning several GPU tiles; decode; keys before position 0 — all against the reference,
#: with a random cotangent on lse too (dlse enters Δ)
ATOMIC_CASES = {
    "ragged_three_sources_gqa2": dict(),
    "delta0": dict(T=29, delta=0, M=3),
    "delta1_w_small": dict(w=3, f=17, delta=1),
    "zero_slots": dict(M=0),
    "no_eidetic_gqa4": dict(H=4, Hkv=1, M=None),
    "window_only_w11": dict(w=11, f=0, M=None),
    "long_T150_spans_gpu_tiles": CASES["long_T150_spans_gpu_tiles"],
    "decode_T1_delta0": CASES["decode_T1_delta0"],
    "continuation_negative_positions": CASES["continuation_negative_positions"],
}


@pytest.mark.parametrize("name", list(ATOMIC_CASES))
def test_atomic_dq_matches_reference_float32(name, device):
    args, kw = make(device, torch.float32, **ATOMIC_CASES[name])
    with atomic_dq(args[0]):
        compare_fwd_bwd(f"atomic {name}", fused, reference, args, kw, torch.float32, names=NAMES)


def _grads(fn, args, kw, wanted):
    """o, lse and the gradients of the inputs named in ``wanted`` (the others need none)."""
    a = leaves(args)
    for n, t in zip(NAMES, a):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t.requires_grad_(n in wanted)
    o, lse = fn(*a, **kw)
    g = torch.Generator().manual_seed(5)
    cots = [torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in (o, lse)]
    torch.autograd.backward([o, lse], cots)
    return [o.detach(), lse.detach()] + [t.grad for n, t in zip(NAMES, a) if n in wanted]


def test_atomic_equals_split_to_float32_rounding(device):
    """Same inputs, same cotangents: the two variants differ only in the order of float32 sums
    (and where scale multiplies), far below the float32 tolerance."""
    args, kw = make(device, torch.float32, T=33, w=21, f=18, M=6, chunk=11, delta=5, seed=3)
    wanted = NAMES[:7]
    split = _grads(fused, args, kw, wanted)
    with atomic_dq(args[0]):
        atomic = _grads(fused, args, kw, wanted)
    for name, a, s in zip(("o", "lse", *(f"d{n}" for n in wanted)), atomic, split):
        scale = s.abs().max().item()
        err = (a - s).abs().max().item()
        assert err <= 1e-6 * max(scale, 1.0), f"{name}: atomic vs split differ by {err:.3g} (max |split| {scale:.3g})"
    # the variant really ran: dq's float32 sums are ordered differently (bit-equal would mean the
    # dQ kernel ran both times)
    assert not torch.equal(atomic[2], split[2])


@pytest.mark.parametrize("variant", ["split", "atomic"])
@pytest.mark.parametrize("wanted", [("q",), ("k", "v"), ("kf", "vf", "ek", "ev")], ids="+".join)
def test_backward_honours_needed_gradients(wanted, variant, device):
    """Only the wanted gradients are computed (split: no dQ kernel without dq, no raw-key dK/dV
    kernel without dk/dv); in "atomic" dq still gathers every source's term when the sources
    themselves need none (fading and eidetic kernels then run for dq alone)."""
    args, kw = make(device, torch.float32, T=23, w=9, f=7, M=4, chunk=9, delta=2, seed=4)
    ref = _grads(reference, args, kw, wanted)
    with atomic_dq(args[0]) if variant == "atomic" else contextlib.nullcontext():
        got = _grads(fused, args, kw, wanted)
    for name, a, r in zip(("o", "lse", *(f"d{n}" for n in wanted)), got, ref):
        assert_close(f"{variant} needs {wanted}: {name}", a, r, torch.float32, grad=name.startswith("d"))


# ----- one masked loop per band (AttnTiles.interior=False) and the Δ kernel's two entries -----


@contextlib.contextmanager
def one_loop(q):
    """fwd, dQ and band dK/dV kernels walk every band tile masked, in one loop."""
    key = (min(pow2(q.shape[-1]), 128), q.element_size())
    cfgs = {k: replace(TILES.get(k, key, q.device), interior=False) for k in ("fwd", "bwd_dq", "bwd_dkdv")}
    with TILES.override(**cfgs):
        yield


#: bands with interior tiles at the interpreter's 16×16 (w = 70, f = 45; w = 40 with δ = 0), a
#: band narrower than a tile, decode, and keys before position 0
ONE_LOOP_CASES = ("long_T150_spans_gpu_tiles", "delta1_w_small", "decode_T1", "continuation_negative_positions")


@pytest.mark.parametrize("name", ONE_LOOP_CASES)
def test_one_loop_bands_match_reference_and_the_split_walk(name, device):
    """interior=False against the reference, and bit-equal to the default split walk: both visit
    the same tiles in the same order, and the mask keeps every score of an interior tile."""
    args, kw = make(device, torch.float32, **CASES[name])
    with one_loop(args[0]):
        compare_fwd_bwd(f"one loop {name}", fused, reference, args, kw, torch.float32, names=NAMES)
        single = _grads(fused, args, kw, NAMES[:7])
    split = _grads(fused, args, kw, NAMES[:7])
    for what, a, s in zip(("o", "lse", *(f"d{n}" for n in NAMES[:7])), single, split):
        assert torch.equal(a, s), f"{name}: {what} differs between the one-loop and the split walk"


def test_one_loop_window_only_delta0_gqa(device):
    args, kw = make(device, torch.float32, T=70, H=4, Hkv=1, w=40, f=33, M=None, delta=0, seed=7)
    with one_loop(args[0]):
        compare_fwd_bwd("one loop gqa4 delta0", fused, reference, args, kw, torch.float32, names=NAMES)


@pytest.mark.parametrize("used", ["o", "lse"])
def test_backward_from_one_output(used, device):
    """Only o used (dlse arrives as None: Δ = dO·O) or only lse (dO arrives as None: Δ = −dlse)."""
    args, kw = make(device, torch.float32, T=41, w=17, f=12, M=4, chunk=9, seed=2)
    a_o, a_r = leaves(args), leaves(args)
    for fn, a in ((fused, a_o), (reference, a_r)):
        o, lse = fn(*a, **kw)
        g = torch.Generator().manual_seed(9)
        t = o if used == "o" else lse
        t.backward(torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device))
    for n, t_o, t_r in zip(NAMES, a_o, a_r):
        if isinstance(t_o, torch.Tensor) and t_o.is_floating_point():
            assert_close(f"only {used}: d{n}", t_o.grad, t_r.grad, torch.float32, grad=True)


# ----- the dK/dV kernels transposed (AttnTiles.transposed: key rows × query rows per step) -----


@contextlib.contextmanager
def transposed(q, dq="split", interior=True):
    """Both dK/dV kernels compute Sᵀ = K·Qᵀ (their own configs), with the dQ variant ``dq``."""
    key = (min(pow2(q.shape[-1]), 128), q.element_size())
    band = replace(TILES.get("bwd_dkdv", key, q.device), transposed=True, dq=dq, interior=interior)
    eid = replace(TILES.get("bwd_dkdv_eidetic", key, q.device), transposed=True)
    with TILES.override(bwd_dkdv=band, bwd_dkdv_eidetic=eid):
        yield


#: three sources with GQA and empty slots, δ = 0, a band narrower than a tile, bands with interior
#: tiles at the interpreter's 16×16, decode, keys before position 0, head size 128
TRANSPOSED_CASES = (
    "ragged_three_sources_gqa2",
    "delta0",
    "delta1_w_small",
    "long_T150_spans_gpu_tiles",
    "decode_T1",
    "continuation_negative_positions",
    "head128",
)


@pytest.mark.parametrize("dq", ["split", "atomic"])
@pytest.mark.parametrize("name", TRANSPOSED_CASES)
def test_transposed_dkdv_matches_reference(name, dq, device):
    args, kw = make(device, torch.float32, **CASES[name])
    with transposed(args[0], dq):
        compare_fwd_bwd(f"transposed {dq} {name}", fused, reference, args, kw, torch.float32, names=NAMES)


@pytest.mark.parametrize("variant", ["atomic", "transposed"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_backward_variants_other_dtypes(dtype, variant, device):
    """The opt-in backward variants (atomic dQ; transposed dK/dV) in bfloat16 and float64."""
    args, kw = make(device, dtype, **CASES["ragged_three_sources_gqa2"])
    with atomic_dq(args[0]) if variant == "atomic" else transposed(args[0]):
        compare_fwd_bwd(f"{variant} {dtype}", fused, reference, args, kw, dtype, names=NAMES)


def test_transposed_equals_untransposed_to_float32_rounding(device):
    """The same products per tile (the matmuls transposed), so the gradients agree to float32
    rounding; one masked loop too (interior=False). The option reaches the kernels (their launch
    says TRANSPOSED), and under the interpreter, whose numpy matmuls round the transposed products
    differently, no dK/dV gradient is bit-equal (on a GPU the float32 dots may well be)."""
    args, kw = make(device, torch.float32, T=40, w=21, f=18, M=6, chunk=11, delta=5, seed=3)
    wanted = NAMES[:7]
    plain = _grads(fused, args, kw, wanted)
    for interior in (True, False):
        with transposed(args[0], interior=interior):
            got = _grads(fused, args, kw, wanted)
        for what, a, s in zip(("o", "lse", *(f"d{n}" for n in wanted)), got, plain):
            scale = s.abs().max().item()
            err = (a - s).abs().max().item()
            assert err <= 1e-6 * max(scale, 1.0), f"{what}: transposed vs not differ by {err:.3g} (max {scale:.3g})"
        # o, lse and dq come from kernels the option does not touch
        assert all(torch.equal(a, s) for a, s in zip(got[:3], plain[:3]))
        if device.type == "cpu":
            assert not any(torch.equal(a, s) for a, s in zip(got[3:], plain[3:]))
    with transposed(args[0]):
        assert all(_tiles(k, args[0])[0]["TRANSPOSED"] for k in ("bwd_dkdv", "bwd_dkdv_eidetic"))
    assert not any(_tiles(k, args[0])[0]["TRANSPOSED"] for k in ("bwd_dkdv", "bwd_dkdv_eidetic"))


def test_transposed_is_refused_outside_the_dkdv_kernels(device):
    """Named, at the launch of the kernel whose config says so (bwd_dq's launches in the backward)."""
    for kernel in ("fwd", "bwd_dq"):
        q = torch.zeros(1, 4, 2, 16, device=device, requires_grad=True)
        cfg = replace(TILES.get(kernel, (16, 4), q.device), transposed=True)
        with TILES.override(**{kernel: cfg}), pytest.raises(ValueError, match=f"tiles {kernel}.transposed"):
            fused(q, q, q, window=2)[0].sum().backward()
