"""Section b: ``bmojo_attention`` against SDPA with a dense sliding-window mask and FlexAttention.

With fading/eidetic sources the peers attend over ``[raw keys; fading keys]`` (2T keys) with a
dense mask that encodes the same visibility (window, fading window, each query's eidetic
snapshot), so every peer computes the same function; the outputs are compared to ours and the
largest difference is recorded in the JSON (``max_abs_diff``).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from bmojo.ops.bmojo_attention import bmojo_attention
from bmojo.ops.eidetic import eidetic_select

from benchmarks.common import Row, Settings, timeit_many

SECTION = "b. bmojo_attention"
#: Target: bmojo_attention at least 2x faster than SDPA with a dense window mask at T=4k, w=256.
TARGET_T = 4096


def shapes(settings: Settings) -> dict:
    if settings.tiny:
        return dict(b=1, H=2, Dh=16, Ts=(128,), w=32, M=8, per_chunk=2)
    if settings.quick:
        return dict(b=1, H=8, Dh=64, Ts=(1024, 4096), w=256, M=64, per_chunk=4)
    return dict(b=1, H=8, Dh=64, Ts=(1024, 4096, 16384), w=256, M=64, per_chunk=4)


def make_case(b, T, H, Dh, w, M, per_chunk, *, sources: bool, seed=0):
    """Inputs for our op and the dense visibility mask (T, Tk_total) the peers use."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, T, H, Dh, generator=g) for _ in range(3))
    i = torch.arange(T)
    rel = i[None, :] - i[:, None]
    window = (rel <= 0) & (rel > -w)
    ours = dict(q=q, k=k, v=v, window=w)
    if not sources:
        return ours, (k, v, window), None
    kf, vf = (torch.randn(b, T, H, Dh, generator=g) for _ in range(2))
    # Eidetic snapshots from the real selection rule on random scores (chunk c = w).
    scores = torch.rand(b, T, generator=g)
    snaps, _, _, _ = eidetic_select(
        scores,
        torch.full((b, M), -1, dtype=torch.long),
        torch.full((b, M), float("-inf")),
        torch.zeros(b, 0),
        start=0,
        chunk=w,
        per_chunk=per_chunk,
    )
    S = snaps.shape[1]
    idx = snaps.clamp(min=0)[..., None, None].expand(b, S, M, H, Dh)
    ek = k[:, None].expand(b, S, T, H, Dh).gather(2, idx)
    ev = v[:, None].expand(b, S, T, H, Dh).gather(2, idx)
    ours.update(kf=kf, vf=vf, ek=ek, ev=ev, epos=snaps, fading_window=w, eidetic_chunk=w)
    if b != 1:
        raise ValueError("the dense peers are built for batch 1")
    member = torch.zeros(S, T + 1, dtype=torch.bool)  # column T collects the empty slots (-1)
    member.scatter_(1, torch.where(snaps[0] >= 0, snaps[0], T), True)
    eidetic = member[i // w, :T] & (rel <= -w)
    fading = (rel <= -w) & (rel > -2 * w)
    mask = torch.cat([window | eidetic, fading], dim=1)
    return ours, (torch.cat([k, kf], dim=1), torch.cat([v, vf], dim=1), mask), member[:, :T]


def _sdpa(q, kk, vv, mask):
    qt, kt, vt = (t.transpose(1, 2) for t in (q, kk, vv))
    return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask).transpose(1, 2)


def _flex_mask_mod(T, w, member):
    if member is None:

        def mask_mod(b, h, qi, ki):
            return (ki <= qi) & (ki > qi - w)

        return mask_mod

    def mask_mod(b, h, qi, ki):
        raw = ki < T
        kr = torch.clamp(ki, max=T - 1)
        j = ki - T
        in_raw = ((kr <= qi) & (kr > qi - w)) | (member[qi // w, kr] & (kr <= qi - w))
        in_fading = (j <= qi - w) & (j > qi - 2 * w)
        return torch.where(raw, in_raw, in_fading)

    return mask_mod


def run(settings: Settings) -> list[Row]:
    s = shapes(settings)
    flex = _flex_available()
    compiled = torch.compile(flex, dynamic=False) if (flex is not None and settings.flex_compile) else None
    rows = []
    for sources in (False, True):
        for T in s["Ts"]:
            rows += _case(settings, s, T, sources, flex, compiled)
    return rows


def _case(settings: Settings, s: dict, T: int, sources: bool, flex, compiled) -> list[Row]:
    b, H, Dh, w = s["b"], s["H"], s["Dh"], s["w"]
    ours_kw, (kk, vv, mask), member = make_case(b, T, H, Dh, w, s["M"], s["per_chunk"], sources=sources)
    q, S = ours_kw["q"], kk.shape[1]
    label = f"T={T} w={w} " + (f"+fading f={w} +eidetic M={s['M']}" if sources else "window only")
    target = 0.5 if (T == TARGET_T and not sources) else None
    fns = {"ours": lambda: bmojo_attention(**ours_kw)[0]}
    notes = {}
    mask_gib = 4 * T * S / 2**30  # SDPA turns the boolean mask into a float one
    if mask_gib <= settings.dense_budget_gib:
        fns["sdpa"] = lambda: _sdpa(q, kk, vv, mask)
        notes["sdpa"] = "dense window mask"
    else:
        notes["sdpa"] = f"skipped: dense mask {mask_gib:.1f} GiB > budget"
    if flex is None:
        notes["flex"] = "unavailable in this torch"
    else:
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, kk, vv))
        block_mask = _block_mask(T, S, w, member)
        scores_gib = 4 * T * S * H * 3 / 2**30  # eager flex materialises scores and probabilities
        if scores_gib <= settings.dense_budget_gib:
            fns["flex"] = lambda: flex(qt, kt, vt, block_mask=block_mask).transpose(1, 2)
            notes["flex"] = "eager"
        else:
            notes["flex"] = f"eager skipped: dense scores {scores_gib:.0f} GiB"
        if compiled is not None:
            fns["flex_compiled"] = lambda: compiled(qt, kt, vt, block_mask=block_mask).transpose(1, 2)
            notes["flex_compiled"] = "torch.compile, compile time excluded"
    with torch.no_grad():
        times, outs = timeit_many(fns, settings, compiled=("flex_compiled",))  # its first call compiles
    for name, err in outs["errors"].items():
        notes[name] = f"failed: {err}"
    o_ours = outs["ours"]
    rows = []
    for name, peer in (("sdpa", "SDPA"), ("flex", "FlexAttention"), ("flex_compiled", "FlexAttention")):
        if name not in notes:
            continue
        out = outs.get(name)
        diff = None if out is None else (out - o_ours).abs().max().item()
        rows.append(
            Row(
                SECTION,
                label,
                "time_s",
                "bmojo_attention",
                times["ours"],
                peer,
                times.get(name),
                notes[name],
                target if name == "sdpa" else None,
                {"max_abs_diff": diff},
            )
        )
    return rows


def _flex_available():
    # Eager FlexAttention warns on every call that it is unfused: that is the point of measuring it.
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    return flex_attention


def _block_mask(T, S, w, member):
    from torch.nn.attention.flex_attention import create_block_mask

    # Large masks are built by a compiled kernel; the eager builder evaluates the full (T, S) grid.
    return create_block_mask(_flex_mask_mod(T, w, member), None, None, T, S, device="cpu", _compile=T * S > 2**25)
