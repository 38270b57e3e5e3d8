"""bmojo_attention (spec §2, §7): the blocked reference against the per-query oracle
``bmojo_attention_naive``, forward (output and log-sum-exp) and backward."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from bmojo.ops.bmojo_attention import bmojo_attention, eidetic_snapshot_count
from bmojo.ops.bmojo_attention.naive import bmojo_attention_naive
from bmojo.testing.conformance.cases import Case, _attention
from conftest import TOL, assert_close, randn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REFERENCE = importlib.import_module("bmojo.ops.bmojo_attention.reference")


@pytest.fixture(autouse=True, params=["default", "unfused"])
def attention_path(request, monkeypatch):
    """Run every test on each code path of the reference: by default it may use ATen's fused CPU
    kernel per block; ``USE_FUSED_CPU_KERNEL = False`` forces the pure-einsum path."""
    if request.param == "unfused":
        if not hasattr(REFERENCE, "USE_FUSED_CPU_KERNEL"):
            pytest.skip("this reference has a single code path")
        monkeypatch.setattr(REFERENCE, "USE_FUSED_CPU_KERNEL", False)
    return request.param


def make_inputs(
    b, T, H, Hkv, Dh, *, q_start=0, k_extra=0, f=0, f_extra=0, M=None, chunk=None, empty=0.3, dtype=torch.float64
):
    """Queries at q_start…q_start+T-1; raw keys ending at the last query with ``k_extra`` cached
    rows before the first query (some at negative positions when q_start < k_extra); fading keys
    likewise; M eidetic slots per snapshot with random positions (a fraction ``empty`` is -1)."""
    q = randn(b, T, H, Dh, dtype=dtype, scale=1.5)  # peaky softmax: a wrong key set shows
    k = randn(b, T + k_extra, Hkv, Dh, dtype=dtype)
    v = randn(b, T + k_extra, Hkv, Dh, dtype=dtype)
    kw = {}
    if f:
        kw["kf"] = randn(b, T + f_extra, Hkv, Dh, dtype=dtype)
        kw["vf"] = randn(b, T + f_extra, Hkv, Dh, dtype=dtype)
    if M is not None:
        S = eidetic_snapshot_count(q_start, T, chunk)
        q_end = q_start + T - 1
        kw["ek"] = randn(b, S, M, Hkv, Dh, dtype=dtype)
        kw["ev"] = randn(b, S, M, Hkv, Dh, dtype=dtype)
        epos = torch.randint(0, q_end + 1, (b, S, M))
        epos[torch.rand(b, S, M) < empty] = -1
        kw["epos"] = epos
    return q, k, v, kw


# name: (b, T, H, Hkv, Dh, q_start, k_extra, w, f, f_extra, M, chunk, block)
CASES = {
    "swa_b1": (1, 13, 2, 2, 4, 0, 0, 4, 0, 0, None, None, 4),
    "swa_gqa_b3": (3, 11, 4, 2, 4, 0, 0, 3, 0, 0, None, None, 3),
    "w_ge_T": (2, 7, 2, 1, 4, 0, 0, 9, 0, 0, None, None, 4),
    "w_eq_T": (1, 7, 2, 2, 4, 0, 0, 7, 0, 0, None, None, 2),
    "T_lt_w_cache": (2, 3, 2, 2, 4, 10, 6, 6, 0, 0, None, None, 4),
    "fading_only": (2, 17, 4, 2, 4, 0, 0, 4, 4, 0, None, None, 4),
    "fading_f_ne_w": (1, 19, 2, 2, 4, 0, 0, 3, 5, 0, None, None, 5),
    "fading_cache": (2, 9, 2, 1, 4, 5, 4, 4, 6, 10, None, None, 3),
    "eidetic_only": (2, 21, 2, 2, 4, 0, 0, 4, 0, 0, 3, 4, 4),
    "eidetic_f0_kf_ignored": (1, 12, 2, 2, 4, 0, 0, 3, 0, 0, 2, 3, 2),
    "all_three": (2, 23, 4, 2, 4, 0, 0, 4, 4, 0, 3, 4, 4),
    "all_three_cache": (2, 15, 4, 1, 6, 7, 4, 4, 4, 8, 4, 4, 2),
    "all_three_chunk_lt_w": (1, 26, 2, 2, 4, 3, 3, 6, 3, 9, 5, 3, 64),
    "decode_T1": (2, 1, 4, 2, 4, 30, 8, 8, 8, 16, 4, 8, 4),
    "M0_slots": (2, 10, 2, 2, 4, 0, 0, 3, 3, 0, 0, 3, 3),
    "block1": (1, 9, 2, 1, 4, 2, 2, 2, 2, 4, 2, 2, 1),
    # fading_offset δ (spec §2.1): fading keys at (i-δ-f, i-δ]; δ given in DELTA below
    "delta0_all_three": (2, 23, 4, 2, 4, 0, 0, 4, 4, 0, 3, 4, 4),
    "delta0_cache": (2, 9, 2, 1, 4, 5, 4, 4, 6, 10, None, None, 3),
    "delta1_fading_f_ne_w": (1, 19, 2, 2, 4, 0, 0, 3, 5, 0, None, None, 5),
    "delta_w_minus_1_cache": (2, 15, 4, 1, 6, 7, 4, 4, 4, 8, 4, 4, 2),
    "delta0_decode_T1": (2, 1, 4, 2, 4, 30, 8, 8, 8, 7, 4, 8, 4),
    "delta3_decode_T1_near_start": (1, 1, 2, 1, 4, 4, 4, 6, 5, 4, None, None, 4),
}
#: fading_offset per case (absent: None, i.e. δ = w).
DELTA = {
    "delta0_all_three": 0,
    "delta0_cache": 0,
    "delta1_fading_f_ne_w": 1,
    "delta_w_minus_1_cache": 3,
    "delta0_decode_T1": 0,
    "delta3_decode_T1_near_start": 3,
}


def run_both(case, dtype=torch.float64, empty=0.3, requires_grad=False):
    b, T, H, Hkv, Dh, q_start, k_extra, w, f, f_extra, M, chunk, block = CASES[case]
    q, k, v, kw = make_inputs(
        b, T, H, Hkv, Dh, q_start=q_start, k_extra=k_extra, f=f or (case == "eidetic_f0_kf_ignored"),
        f_extra=f_extra, M=M, chunk=chunk, empty=empty, dtype=dtype,
    )  # fmt: skip
    if requires_grad:
        for t in (q, k, v, *[t for t in kw.values() if t.is_floating_point()]):
            t.requires_grad_(True)
    common = dict(q_start=q_start, window=w, fading_window=f, eidetic_chunk=chunk, fading_offset=DELTA.get(case))
    out = bmojo_attention(q, k, v, **kw, **common, block_size=block)
    ref = bmojo_attention_naive(q, k, v, **kw, **common)
    return out, ref, (q, k, v, kw)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_naive(case):
    (o, lse), (o_ref, lse_ref), _ = run_both(case)
    assert o.shape == o_ref.shape and lse.shape == lse_ref.shape
    assert lse.dtype == torch.float64
    assert_close(o, o_ref, 1e-12, "output")
    assert_close(lse, lse_ref, 1e-12, "lse")


@pytest.mark.parametrize("case", ["all_three", "eidetic_only"])
def test_all_eidetic_slots_empty(case):
    (o, lse), (o_ref, lse_ref), (*_, kw) = run_both(case, empty=1.0)
    assert (kw["epos"] == -1).all()
    assert_close(o, o_ref, 1e-12, "output")
    assert_close(lse, lse_ref, 1e-12, "lse")


def test_empty_eidetic_equals_no_eidetic():
    """Empty slots (-1) contribute nothing: same result as passing no eidetic memory."""
    (o, lse), _, (q, k, v, kw) = run_both("all_three", empty=1.0)
    *_, q_start, _, w, f, _, _, _, _ = CASES["all_three"]
    o2, lse2 = bmojo_attention(q, k, v, kw["kf"], kw["vf"], q_start=q_start, window=w, fading_window=f)
    assert_close(o, o2, 1e-14, "output")
    assert_close(lse, lse2, 1e-14, "lse")


def test_window_ge_T_is_causal_softmax():
    """Cross-check the oracle itself: w >= T and no other source is plain causal attention."""
    q, k, v, _ = make_inputs(2, 9, 4, 2, 4)
    o, lse = bmojo_attention(q, k, v, window=20, block_size=4)
    kk, vv = k.repeat_interleave(2, 2), v.repeat_interleave(2, 2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, kk) / math.sqrt(4)
    s = s.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    assert_close(o, torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), vv), 1e-13, "output")
    assert_close(lse, s.logsumexp(-1), 1e-13, "lse")


@pytest.mark.parametrize("case", ["swa_gqa_b3", "all_three_cache", "decode_T1", "delta0_all_three"])
def test_float32_matches_float64_naive(case):
    (o, lse), _, (q, k, v, kw) = run_both(case, dtype=torch.float32)
    *_, q_start, _, w, f, _, _, chunk, _ = CASES[case]
    kw64 = {n: t.double() if t.is_floating_point() else t for n, t in kw.items()}
    o_ref, lse_ref = bmojo_attention_naive(
        q.double(), k.double(), v.double(), **kw64, q_start=q_start, window=w, fading_window=f, eidetic_chunk=chunk,
        fading_offset=DELTA.get(case),
    )  # fmt: skip
    assert o.dtype == torch.float32 and lse.dtype == torch.float32
    assert_close(o, o_ref, TOL[torch.float32], "output")
    assert_close(lse, lse_ref, TOL[torch.float32], "lse")


GRAD_CASES = [
    "swa_gqa_b3", "fading_cache", "all_three", "all_three_chunk_lt_w", "decode_T1",
    "delta0_all_three", "delta_w_minus_1_cache", "delta0_decode_T1",
]  # fmt: skip


def compare_grads(case, through_output, through_lse):
    """Reference and oracle give the same gradients for one shared random upstream gradient."""
    (o, lse), (o_ref, lse_ref), (q, k, v, kw) = run_both(case, requires_grad=True)
    leaves = [q, k, v, *[t for t in kw.values() if t.is_floating_point()]]
    names = ["q", "k", "v", *[n for n, t in kw.items() if t.is_floating_point()]]
    go, gl = randn(*o.shape) * through_output, randn(*lse.shape) * through_lse
    grads = torch.autograd.grad((o * go).sum() + (lse * gl).sum(), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad((o_ref * go).sum() + (lse_ref * gl).sum(), leaves, allow_unused=True)
    for name, g, g_ref in zip(names, grads, grads_ref):
        if g_ref is None:  # lse does not depend on values
            assert g is None or g.abs().max() == 0, name
            continue
        assert g_ref.abs().max() > 0, f"{name}: oracle gradient is zero, the case tests nothing"
        assert g is not None, f"grad {name}: no gradient reaches it"
        assert_close(g, g_ref, 1e-11, f"grad {name}")


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradients_match_naive(case):
    """Upstream gradient on the output o."""
    compare_grads(case, through_output=1.0, through_lse=0.0)


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradients_through_lse_match_naive(case):
    """Upstream gradient on both outputs (o and the log-sum-exp, which spec §2 says the backward
    and tests need): the op must be differentiable through lse too. (This caught the fused CPU
    path returning ATen's lse without a gradient.)"""
    compare_grads(case, through_output=1.0, through_lse=1.0)


def test_gradcheck_all_sources():
    """gradcheck of both outputs, o and lse."""
    q, k, v, kw = make_inputs(1, 5, 2, 1, 2, q_start=2, k_extra=2, f=2, f_extra=3, M=2, chunk=2, empty=0.0)
    epos = kw.pop("epos")
    floats = (q, k, v, kw["kf"], kw["vf"], kw["ek"], kw["ev"])
    for t in floats:
        t.requires_grad_(True)

    def fn(*a):
        return bmojo_attention(*a, epos, q_start=2, window=2, fading_window=2, eidetic_chunk=2, block_size=2)

    assert torch.autograd.gradcheck(fn, floats)


@pytest.mark.parametrize("case", ["all_three", "all_three_cache", "decode_T1", "fading_f_ne_w"])
def test_fading_offset_w_is_version_1_bit_for_bit(case):
    """Spec §4.6: δ = w (explicit) is exactly the default (version-1) op, bit for bit."""
    b, T, H, Hkv, Dh, q_start, k_extra, w, f, f_extra, M, chunk, block = CASES[case]
    q, k, v, kw = make_inputs(b, T, H, Hkv, Dh, q_start=q_start, k_extra=k_extra, f=f, f_extra=f_extra, M=M,
                              chunk=chunk, dtype=torch.float32)  # fmt: skip
    common = dict(q_start=q_start, window=w, fading_window=f, eidetic_chunk=chunk, block_size=block)
    o1, lse1 = bmojo_attention(q, k, v, **kw, **common)
    o2, lse2 = bmojo_attention(q, k, v, **kw, **common, fading_offset=w)
    assert torch.equal(o1, o2) and torch.equal(lse1, lse2)


def test_fading_offset_changes_the_key_set():
    """The δ = 0 oracle differs from δ = w (so the δ cases above can fail): the query's own fading
    token is visible only at δ = 0."""
    q, k, v, kw = make_inputs(1, 9, 2, 1, 4, f=3)
    a = bmojo_attention_naive(q, k, v, **kw, window=3, fading_window=3)[0]
    b = bmojo_attention_naive(q, k, v, **kw, window=3, fading_window=3, fading_offset=0)[0]
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("delta", [-1, 5, 1.5, True])
def test_fading_offset_out_of_range(delta):
    q, k, v, kw = make_inputs(1, 4, 2, 1, 4, f=2)
    with pytest.raises((ValueError, TypeError), match=r"^fading_offset: expected"):
        bmojo_attention(q, k, v, **kw, window=4, fading_window=2, fading_offset=delta)


@pytest.mark.parametrize("b, H", [(0, 2), (2, 0)])
@pytest.mark.parametrize("T", [1, 9])
def test_no_rows_give_empty_outputs(b, H, T):
    """Batch 0 or no query heads (both legal): empty o and lse of the right shapes on both paths
    (ATen's kernel divides by zero on zero query rows; the einsum path once failed to reshape an
    empty lse), and a backward through them runs."""
    q, k, v, kw = make_inputs(b, T, H, 1, 4, q_start=3, k_extra=2, f=3, f_extra=4, M=2, chunk=3)
    q.requires_grad_(True)
    o, lse = bmojo_attention(q, k, v, **kw, q_start=3, window=3, fading_window=3, eidetic_chunk=3, block_size=4)
    assert o.shape == (b, T, H, 4) and lse.shape == (b, H, T) and lse.dtype == torch.float64
    (g,) = torch.autograd.grad(o.sum() + lse.sum(), q)
    assert g.shape == q.shape


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    b=st.integers(1, 2),
    T=st.integers(1, 24),
    heads=st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 1), (4, 2)]),
    w=st.integers(1, 12),
    f=st.sampled_from([0, 0, 1, 3, 7]),
    M=st.sampled_from([None, 0, 1, 3]),
    chunk=st.integers(1, 8),
    q_start=st.sampled_from([0, 0, 1, 5, 17, 40]),
    extra=st.integers(0, 12),
    block=st.sampled_from([1, 3, 4, 8, 64]),
    delta=st.one_of(st.none(), st.integers(0, 12)),
    layout=st.sampled_from(["contiguous", "strided", "sliced"]),
    seed=st.integers(0, 2**16),
)
def test_property_random_configs_match_naive(b, T, heads, w, f, M, chunk, q_start, extra, block, delta, layout, seed):
    """Random sizes, positions, sources, block sizes, fading offsets and memory layouts (every
    input contiguous, a strided view or a row-sliced view), on both paths: output and lse equal the oracle's."""
    H, Hkv = heads
    delta = None if delta is None else min(delta, w)
    # cached rows before the first query (at negative positions when extra > q_start: never visible)
    k_extra, f_extra = extra, (extra + 3 if f else 0)
    case = Case("bmojo_attention", "random", _attention, dict(
        b=b, T=T, H=H, Hkv=Hkv, Dh=4, w=w, f=f, M=M, chunk=chunk, q_start=q_start, k_extra=k_extra,
        f_extra=f_extra, block=block, delta=delta,
    ), layout=layout)  # fmt: skip
    args, kw = case.build(torch.float64, "cpu", seed)
    o, lse = bmojo_attention(*args, **kw)
    kw.pop("block_size")
    o_ref, lse_ref = bmojo_attention_naive(*args, **kw)
    assert_close(o, o_ref, 1e-12, "output")
    assert_close(lse, lse_ref, 1e-12, "lse")
