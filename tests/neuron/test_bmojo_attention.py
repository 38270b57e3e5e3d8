"""bmojo_attention kernel (through the emulator) against core's reference and naive oracle, at the
hardware tile boundaries: several 128-row query tiles, key windows over 512 (several PSUM-bank
chunks and several 128-key transposes), Dh = 128, more than 512 eidetic slots, GQA, δ values,
decode continuation; plus the host-side tile plan."""

from __future__ import annotations

import pytest
import torch
from bmojo.ops.bmojo_attention.naive import bmojo_attention_naive
from bmojo.ops.bmojo_attention.reference import bmojo_attention as ref_attention
from bmojo.ops.bmojo_attention.reference import eidetic_snapshot_count
from bmojo_neuron.ops.bmojo_attention import bmojo_attention, plan, window_rows

from .helpers import assert_close


def inputs(b, T, H, Hkv, Dh, f=0, M=None, chunk=None, q_start=0, k_extra=0, f_extra=0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)

    args = [r(b, T, H, Dh, scale=1.5), r(b, T + k_extra, Hkv, Dh), r(b, T + k_extra, Hkv, Dh)]
    args += [r(b, T + f_extra, Hkv, Dh), r(b, T + f_extra, Hkv, Dh)] if f else [None, None]
    if M is not None:
        S = eidetic_snapshot_count(q_start, T, chunk)
        epos = torch.randint(0, q_start + T, (b, S, M), generator=g)
        epos[torch.rand(b, S, M, generator=g) < 0.25] = -1
        args += [r(b, S, M, Hkv, Dh), r(b, S, M, Hkv, Dh), epos]
    else:
        args += [None, None, None]
    return tuple(args)


CASES = {
    # name: (input sizes, op keywords)
    "q_tiles_3_swa": (dict(b=1, T=300, H=2, Hkv=1, Dh=16), dict(window=40)),
    "raw_span_over_512": (dict(b=1, T=200, H=2, Hkv=2, Dh=8, k_extra=500), dict(window=600, q_start=500)),
    "dh128_gqa4": (dict(b=1, T=130, H=4, Hkv=1, Dh=128), dict(window=16)),
    "fading_span_over_512_delta0": (
        dict(b=1, T=150, H=2, Hkv=1, Dh=8, f=500, f_extra=450),
        dict(window=8, fading_window=500, fading_offset=0, q_start=450),
    ),
    "eidetic_600_slots_chunk_96": (
        dict(b=2, T=200, H=2, Hkv=1, Dh=8, f=4, M=600, chunk=96, q_start=50, k_extra=50, f_extra=50),
        dict(window=8, fading_window=4, eidetic_chunk=96, q_start=50, fading_offset=3),
    ),
    "decode_three_sources": (
        dict(b=2, T=1, H=4, Hkv=2, Dh=8, f=8, M=3, chunk=8, q_start=700, k_extra=20, f_extra=30),
        dict(window=8, fading_window=8, eidetic_chunk=8, q_start=700),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_against_reference_float64(name):
    sizes, kw = CASES[name]
    args = inputs(**sizes)
    o, lse = bmojo_attention(*args, **kw)
    o_ref, lse_ref = ref_attention(*args, **kw)
    assert_close(o, o_ref, torch.float64, "o")
    assert_close(lse, lse_ref, torch.float64, "lse")


@pytest.mark.parametrize("delta", [0, 1, 4, None])
def test_against_naive_oracle_float32(delta):
    args = inputs(2, 37, 4, 2, 8, f=5, M=3, chunk=4, q_start=3, k_extra=3, f_extra=3, dtype=torch.float32)
    kw = dict(window=4, fading_window=5, eidetic_chunk=4, q_start=3, fading_offset=delta)
    o, lse = bmojo_attention(*args, **kw)
    o_n, lse_n = bmojo_attention_naive(*args, **{k: v for k, v in kw.items()})
    assert_close(o, o_n, torch.float32, "o")
    assert_close(lse, lse_n.float(), torch.float32, "lse")


def test_plan_windows_cover_exactly_the_visible_keys():
    """Host side: every key a query of tile n may see lies in rows n·Bq ... n·Bq + span - 1."""
    for T, q_start, Tk, Tf, w, f, d, chunk in [
        (300, 0, 300, 300, 40, 20, 40, None),
        (37, 3, 40, 40, 4, 5, 0, 4),
        (1, 700, 21, 31, 8, 8, 3, 8),
        (10, 0, 10, 10, 50, 50, 50, None),
    ]:
        pl = plan(T, q_start, Tk, Tf, w, f, d, chunk)
        assert 1 <= pl.Bq <= 128 and (chunk is None or chunk % pl.Bq == 0)
        qs0 = q_start - pl.lead
        assert qs0 % pl.Bq == 0 and pl.nq * pl.Bq >= pl.lead + T
        k_start, f_start, q_end = q_start + T - Tk, q_start + T - Tf, q_start + T - 1
        for n in range(pl.nq):
            for i in range(max(q_start, qs0 + n * pl.Bq), min(q_end, qs0 + (n + 1) * pl.Bq - 1) + 1):
                for p in range(max(0, k_start, i - w + 1), i + 1):  # raw keys visible to query i
                    assert 0 <= p - pl.start_r - n * pl.Bq < pl.span_r
                for p in range(max(0, f_start, i - d - f + 1), min(q_end, i - d) + 1):  # fading keys
                    assert 0 <= p - pl.start_f - n * pl.Bq < pl.span_f


def test_window_rows_pads_with_zeros():
    seq = torch.arange(1, 6, dtype=torch.float64).view(1, 5, 1, 1)  # positions 10..14
    rows = window_rows(seq, 10, 8, 9).flatten().tolist()
    assert rows == [0, 0, 1, 2, 3, 4, 5, 0, 0]


def test_errors_name_the_argument():
    q, k, v = (torch.randn(1, 4, 1, 130) for _ in range(3))
    with pytest.raises(ValueError, match=r"^q: expected a head dim of at most 128"):
        bmojo_attention(q, k, v, window=2)
    q, k, v = (torch.randn(1, 4, 1, 8) for _ in range(3))
    with pytest.raises(ValueError, match=r"^fading_offset: expected 0 <= fading_offset <= window"):
        bmojo_attention(q, k, v, q, q, window=2, fading_window=2, fading_offset=3)


HUGE = 2**31 - 1  # core takes any window >= 1; far beyond the kernel's FAR (-1e9) "no key" position


@pytest.mark.parametrize(
    "kw, ref_kw",
    [
        # (op keywords, the same visibility with bounds no longer than q_start + T), T = 5
        (dict(window=HUGE), dict(window=5)),
        (dict(window=2, fading_window=HUGE, fading_offset=1), dict(window=2, fading_window=5, fading_offset=1)),
        (
            dict(window=HUGE, fading_window=HUGE, fading_offset=2, q_start=3),
            dict(window=8, fading_window=8, fading_offset=2, q_start=3),
        ),
        (  # δ = q_end: only the last query sees fading key 0
            dict(window=HUGE, fading_window=HUGE, fading_offset=7, q_start=3),
            dict(window=8, fading_window=8, fading_offset=7, q_start=3),
        ),
        (  # δ = w (default) beyond every query: no fading key, no eidetic slot visible
            dict(window=HUGE, fading_window=4, eidetic_chunk=4, q_start=3),
            dict(window=8, fading_window=4, eidetic_chunk=4, q_start=3),
        ),
    ],
    ids=["raw", "fading", "both_q_start", "delta_q_end", "delta_default_eidetic"],
)
def test_huge_windows_equal_the_reference_at_the_sequence_length(kw, ref_kw):
    q_start = kw.get("q_start", 0)
    args = inputs(
        1,
        5,
        2,
        1,
        4,
        f=1,
        M=3 if "eidetic_chunk" in kw else None,
        chunk=4,
        q_start=q_start,
        k_extra=q_start,
        f_extra=q_start,
    )
    o, lse = bmojo_attention(*args, **kw)
    o_ref, lse_ref = ref_attention(*args, **ref_kw)
    assert_close(o, o_ref, torch.float64, "o")
    assert_close(lse, lse_ref, torch.float64, "lse")


@pytest.mark.parametrize("T", [5, 300])
def test_a_fading_source_without_rows_is_not_launched(T, monkeypatch):
    """Tf = 0 (or δ beyond every query): the fading source goes to the kernel as None, not as
    empty or all-padding rows."""
    import bmojo_neuron.ops.bmojo_attention as host

    sent = []

    def spy(kernel, *a):
        sent.append(a[5:8])  # KFT, VF, FPOS
        return launch(kernel, *a)

    launch = host.launch
    monkeypatch.setattr(host, "launch", spy)
    q, k, v, *_ = inputs(1, T, 2, 1, 4)
    kf = torch.zeros(1, 0, 1, 4, dtype=torch.float64)
    for kw, fading in [
        (dict(window=3, fading_window=4), (kf, kf)),
        (dict(window=T + 2, fading_window=4), (k, v)),  # δ = w > q_end: no fading key visible
    ]:
        o, lse = bmojo_attention(q, k, v, *fading, **kw)
        o_ref, lse_ref = ref_attention(q, k, v, *fading, **kw)
        assert_close(o, o_ref, torch.float64, "o")
        assert_close(lse, lse_ref, torch.float64, "lse")
        assert sent[-1] == (None, None, None)
