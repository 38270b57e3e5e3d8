"""``python -m benchmarks.triton``: the Triton backend's kernels against the reference ops and the
best installable peers, on one GPU, in one run.

Per op and size it prints forward and forward+backward time (median of ``triton.testing.do_bench``),
the achieved FLOP rate or bandwidth, the roofline bound for that work on this GPU (ceilings
measured in the same run: a device-to-device copy and a large bf16 matmul) and ratios:

* ``attention`` — B'MOJO three-source attention (w, f = w, M slots) fused in one kernel vs the
  reference op; B'MOJO-F (w + fading, M = 0) fused vs the published two-call construction
  (FlexAttention sliding-window call + FlexAttention fading call, merged by log-sum-exp); window
  only vs FlexAttention (compiled). Targets: fused ≥ 1.5× faster than the two-call merge, within
  1.2× of FlexAttention on window-only.
* ``ssm`` — ``ssm_scan`` vs the reference op and flash-linear-attention's chunked simple-GLA scan
  (the same SSD recurrence) when importable. Target: within 1.2× of the best peer.
* ``norm_conv`` — rmsnorm, gated rmsnorm and causal_conv1d vs the reference ops (bandwidth).
* ``decode`` — one decode step of a 2-layer BMojoLM at several context lengths (triton backend vs
  reference). Target: flat in context length.
* ``eidetic`` — the eidetic ops' share of one B'MOJO mixer's time (benchmarks/triton/eidetic.py).
* ``tune`` (opt-in) — a pruned grid of launch configs per kernel, ranked, with the lines to paste
  into ``TILES`` (benchmarks/triton/tune.py); ``tuned`` (opt-in, after ``tune``) — the config each
  table slot adopts and the targets re-timed with them in force (rows tagged ``[tuned]``).

``--quick``: one small size per section (a few tens of seconds on a GPU); ``--tiny``: toy sizes that
also run on a CPU under ``TRITON_INTERPRET=1`` (the smoke test in tests/triton_backend uses it).
``--out results.json`` writes every row (also after each section, so a timeout keeps what ran).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks.common import check_out_path, parse_names
from benchmarks.triton.common import (
    CEIL,
    DEADLINE,
    ROWS,
    SectionTimeout,
    agree,
    attempt,
    bench,
    ceilings,
    fwd_bwd,
    ratio,
    record,
    time_limit,
)
from benchmarks.triton.eidetic import eidetic
from benchmarks.triton.tune import tune


# ----- attention -----
def _flex():
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    return flex_attention, create_block_mask


def _allow_recompiles(limit: int = 64) -> None:
    """Every (T, mask, return_lse) of the compiled FlexAttention peer is its own graph
    (dynamic=False); past dynamo's default limit of 8 it silently falls back to the unfused path,
    which materialises the full score matrix (seen on the first H200 run: 256 GiB at T = 32k)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), limit))


def attention(s, gpu, dev, dtype, backend_fn, ref_fn):
    flex = _flex() if s["flex"] else None
    if flex and gpu:
        _allow_recompiles()
    compiled = torch.compile(flex[0], dynamic=False) if (flex and gpu) else (flex[0] if flex else None)
    dname = str(dtype).replace("torch.", "")
    for T in s["T"]:
        _attention_case(s, T, gpu, dev, dtype, dname, backend_fn, ref_fn, flex, compiled)


def _attention_case(s, T, gpu, dev, dtype, dname, backend_fn, ref_fn, flex, compiled):
    """One sequence length: every implementation and peer, and the ratios."""
    from bmojo.ops.bmojo_attention.reference import eidetic_snapshot_count

    b, H, Dh, w, f, M = s["b"], s["H"], s["Dh"], s["w"], s["f"], s["M"]
    chunk = w
    if True:
        g = torch.Generator(device="cpu").manual_seed(T)

        def rnd(*shape):
            return torch.randn(*shape, generator=g).to(dev, dtype).requires_grad_(True)

        q, k, v, kf, vf = (rnd(b, T, H, Dh) for _ in range(5))
        S = eidetic_snapshot_count(0, T, chunk)
        ek, ev = rnd(b, S, M, H, Dh), rnd(b, S, M, H, Dh)
        epos = torch.randint(0, max(1, T - w), (b, S, M), generator=g).to(dev)
        kw = dict(window=w, fading_window=f, eidetic_chunk=chunk)
        case = f"T={T} {dname}{s.get('tag', '')}"
        # FLOPs of the visible scores (2 matmuls of 2·Dh per visible pair); bytes of q, k, v, kf, vf, o
        el = torch.finfo(dtype).bits // 8
        pairs3 = b * H * T * (w + f + M)
        io3 = b * T * H * Dh * el * 6
        fl3 = 4 * pairs3 * Dh

        def ours3():
            return backend_fn(q, k, v, kf, vf, ek, ev, epos, **kw)

        def ref3():
            return ref_fn(q, k, v, kf, vf, ek, ev, epos, **kw)

        t_f = attempt(
            "attention", case, "triton fused w+f+M", "fwd", lambda: bench(ours3, gpu=gpu), flops=fl3, nbytes=io3
        )
        attempt(
            "attention",
            case,
            "triton fused w+f+M",
            "fwd+bwd",
            lambda: bench(fwd_bwd(ours3, [q, k, v, kf, vf, ek, ev]), gpu=gpu),
            flops=3.5 * fl3,
            nbytes=2.5 * io3,
        )
        if T <= s["ref_max_T"]:
            t_r = attempt(
                "attention", case, "reference op w+f+M", "fwd", lambda: bench(ref3, gpu=gpu), flops=fl3, nbytes=io3
            )
            attempt(
                "attention",
                case,
                "reference op w+f+M",
                "fwd+bwd",
                lambda: bench(fwd_bwd(ref3, [q, k, v, kf, vf, ek, ev]), gpu=gpu),
                flops=3.5 * fl3,
                nbytes=2.5 * io3,
            )
            ratio(f"attention {case}: reference/triton fwd (speed-up)", t_r, t_f)
            agree("attention", case, "triton vs reference (w+f+M)", ours3, ref3)

        # B'MOJO-F (M = 0): fused vs the two-call + log-sum-exp merge (FlexAttention)
        pairsF = b * H * T * (w + f)
        flF = 4 * pairsF * Dh

        def oursF():
            return backend_fn(q, k, v, kf, vf, window=w, fading_window=f)

        tF = attempt("attention", case, "triton fused w+f", "fwd", lambda: bench(oursF, gpu=gpu), flops=flF, nbytes=io3)
        tFb = attempt(
            "attention",
            case,
            "triton fused w+f",
            "fwd+bwd",
            lambda: bench(fwd_bwd(oursF, [q, k, v, kf, vf]), gpu=gpu),
            flops=3.5 * flF,
            nbytes=2.5 * io3,
        )

        # window only
        flW = 4 * b * H * T * w * Dh
        ioW = b * T * H * Dh * el * 4

        def oursW():
            return backend_fn(q, k, v, window=w)

        tW = attempt(
            "attention", case, "triton fused window", "fwd", lambda: bench(oursW, gpu=gpu), flops=flW, nbytes=ioW
        )
        tWb = attempt(
            "attention",
            case,
            "triton fused window",
            "fwd+bwd",
            lambda: bench(fwd_bwd(oursW, [q, k, v]), gpu=gpu),
            flops=3.5 * flW,
            nbytes=2.5 * ioW,
        )
        if compiled is None:
            return
        fa, cbm = compiled, flex[1]
        # flex wants (b, H, T, Dh); the transposes are done once, outside the timed region
        qh, kh, vh, kfh, vfh = (t.detach().transpose(1, 2).contiguous().requires_grad_(True) for t in (q, k, v, kf, vf))
        d = w  # δ = w, the published convention

        def win_mask(b_, h_, qi, ki):
            return (ki <= qi) & (qi - ki < w)

        def fad_mask(b_, h_, qi, ki):
            return (ki <= qi - d) & (qi - d - ki < f)

        try:
            bm_w = cbm(win_mask, None, None, T, T, device=dev)
            bm_f = cbm(fad_mask, None, None, T, T, device=dev)
        except Exception as err:
            record("attention", case, "flex block masks", "-", None, note=f"error: {type(err).__name__}: {err}"[:200])
            return

        def flexW():
            return fa(qh, kh, vh, block_mask=bm_w)

        def two_call():
            o1, l1 = fa(qh, kh, vh, block_mask=bm_w, return_lse=True)
            o2, l2 = fa(qh, kfh, vfh, block_mask=bm_f, return_lse=True)
            lse = torch.logaddexp(l1, l2)
            return o1 * torch.exp(l1 - lse)[..., None].to(o1.dtype) + o2 * torch.exp(l2 - lse)[..., None].to(o2.dtype)

        pW = attempt(
            "attention", case, "flex (compiled) window", "fwd", lambda: bench(flexW, gpu=gpu), flops=flW, nbytes=ioW
        )
        pWb = attempt(
            "attention",
            case,
            "flex (compiled) window",
            "fwd+bwd",
            lambda: bench(fwd_bwd(flexW, [qh, kh, vh]), gpu=gpu),
            flops=3.5 * flW,
            nbytes=2.5 * ioW,
        )
        p2 = attempt(
            "attention",
            case,
            "flex two-call + lse merge",
            "fwd",
            lambda: bench(two_call, gpu=gpu),
            flops=flF,
            nbytes=io3,
        )
        p2b = attempt(
            "attention",
            case,
            "flex two-call + lse merge",
            "fwd+bwd",
            lambda: bench(fwd_bwd(two_call, [qh, kh, vh, kfh, vfh]), gpu=gpu),
            flops=3.5 * flF,
            nbytes=2.5 * io3,
        )
        ratio(f"attention {case}: two-call merge / fused (fwd)", p2, tF, target=1.5, better="higher")
        ratio(f"attention {case}: two-call merge / fused (fwd+bwd)", p2b, tFb, target=1.5, better="higher")
        ratio(f"attention {case}: triton / flex window (fwd)", tW, pW, target=1.2)
        agree("attention", case, "triton vs flex window", lambda: oursW()[0].transpose(1, 2), flexW)
        agree("attention", case, "triton w+f vs flex two-call merge", lambda: oursF()[0].transpose(1, 2), two_call)
        ratio(f"attention {case}: triton / flex window (fwd+bwd)", tWb, pWb, target=1.2)


# ----- ssm -----
def _fla_scan():
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception:
        return None
    return chunk_simple_gla


def ssm(s, gpu, dev, dtype, backend_fn, ref_fn):
    """Every size: ours (inference forward, training forward, forward+backward), the reference,
    fla's forward; then fla's forward+backward for every size last (its autotuned backward JIT is
    the slowest step on a cold cache: the second H200 run's time limit ended inside it)."""
    fla = _fla_scan() if gpu else None
    if gpu and fla is None:
        print("  ssm: flash-linear-attention (fla) not installed: peer skipped", flush=True)
        ROWS.append(dict(section="ssm", case="-", impl="fla chunk_simple_gla", note="not installed"))
    later = [_ssm_case(s, T, gpu, dev, dtype, backend_fn, ref_fn, fla) for T in s["T"]]
    for fn in later:
        if fn is not None:
            fn()


#: The state passes' N tile in the benchmark's "[parallel]" rows (N = 128: four programs per state).
PARALLEL_BLOCK_N = 32


def _parallel(step, x, N):
    """``step`` (a call of the scan, forward or forward+backward) with every chunk-parallel option
    on at the tiles in force: y by the chunk-output kernel (``parallel_out``), the gradients by the
    chunk-gradient kernel (``parallel_grads``), both sequential passes split over N as well
    (``block_n``) — the three-phase layout of Mamba-2's and fla's chunked kernels."""
    from bmojo_triton.ops import ssm_scan as scan

    cfgs = scan.chunk_parallel_tiles(x, N, PARALLEL_BLOCK_N)

    def run():
        with scan.TILES.override(**cfgs):
            return step()

    return run


def _recompute(step, x, N, enabled: bool):
    """``step`` with the training forward's states kept (``enabled=False``) or recomputed by the
    backward (``ScanTiles.recompute``; the table's default is on)."""
    from bmojo_triton.ops import ssm_scan as scan

    def run():
        with scan.recompute_states(enabled):
            return step()

    return run


def _kept_by_forward(section, case, impl, make, dev) -> None:
    """Record the MiB one training forward (``make()``) allocates and still holds when it returns
    (its outputs and what autograd keeps for the backward) — on a GPU, within the run's budget;
    a failure is a row's note, never the section's end."""
    if dev.type != "cuda":
        return
    if time.perf_counter() > DEADLINE[0]:
        ROWS.append(dict(section=section, case=case, impl=impl, mode="kept by forward", note="skipped: --budget"))
        return
    try:
        fwd = make()
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        out = fwd()
        torch.cuda.synchronize(dev)
        mib = (torch.cuda.memory_allocated(dev) - before) / 2**20
        del out
    except Exception as err:  # e.g. out of memory at the largest size
        note = f"error: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        ROWS.append(dict(section=section, case=case, impl=impl, mode="kept by forward", note=note))
        print(f"  {section:9s} {case:26s} {impl:28s} kept by the forward: {note}", flush=True)
        return
    ROWS.append(dict(section=section, case=case, impl=impl, mode="kept by forward", value=mib, unit="MiB"))
    print(f"  {section:9s} {case:26s} {impl:28s} kept by the forward: {mib:9.1f} MiB", flush=True)


def _ssm_case(s, T, gpu, dev, dtype, backend_fn, ref_fn, fla):
    """Times one size; returns a closure timing fla's forward+backward (None without fla)."""
    b, H, P, N, G = s["b"], s["H"], s["P"], s["N"], 1
    dname = str(dtype).replace("torch.", "")
    el = torch.finfo(dtype).bits // 8
    g = torch.Generator(device="cpu").manual_seed(T)
    x = torch.randn(b, T, H, P, generator=g).to(dev, dtype).requires_grad_(True)
    dt = (torch.rand(b, T, H, generator=g) * 0.1 + 0.01).to(dev, dtype).requires_grad_(True)
    A = (-torch.rand(H, generator=g) - 0.5).to(dev, dtype).requires_grad_(True)
    B = (torch.randn(b, T, G, N, generator=g) * 0.5).to(dev, dtype).requires_grad_(True)
    C = (torch.randn(b, T, G, N, generator=g) * 0.5).to(dev, dtype).requires_grad_(True)
    D = torch.randn(H, generator=g).to(dev, dtype).requires_grad_(True)
    case = f"T={T} {dname}{s.get('tag', '')}"
    L = 64
    flops = b * H * T * (2 * L * N + 2 * L * P + 4 * N * P)
    nbytes = el * (2 * b * T * H * P + 2 * b * T * G * N + b * T * H)

    def ours():
        return backend_fn(x, dt, A, B, C, D)

    def ref():
        return ref_fn(x, dt, A, B, C, D)

    def ours_inference():
        with torch.no_grad():
            return backend_fn(x, dt, A, B, C, D)

    params = [x, dt, A, B, C, D]

    def timed(impl, mode, make, **kw):
        """Time ``make()`` (built inside the attempt: a failing or skipped row builds nothing)."""
        return attempt("ssm", case, impl, mode, lambda: bench(make(), gpu=gpu), **kw)

    # "fwd" (inputs requiring grad) is the training forward: it stores the chunk states. Order:
    # the defaults, the peer, the opt-in layouts, then what matters least (a tight budget cuts it)
    rate = dict(flops=flops, nbytes=nbytes)
    t_o = timed("triton ssm_scan", "fwd", lambda: ours, **rate)
    t_i = timed("triton ssm_scan (no_grad)", "fwd", lambda: ours_inference, **rate)
    t_ob = timed("triton ssm_scan", "fwd+bwd", lambda: fwd_bwd(ours, params))
    peer, t_p = None, None
    if fla is not None:
        # SSD == simple GLA: q = C, k = B (shared by the heads of a group), v = dt·x, g = dt·A
        qg = C.detach().expand(b, T, H, N).contiguous().requires_grad_(True)
        kg = B.detach().expand(b, T, H, N).contiguous().requires_grad_(True)
        vg = (x * dt[..., None]).detach().contiguous().requires_grad_(True)
        gg = (dt * A).detach().float().contiguous().requires_grad_(True)

        def peer():
            return fla(q=qg, k=kg, v=vg, g=gg, scale=1.0)[0]

        # fla's inputs require grad, so its forward is a training forward too
        t_p = timed("fla chunk_simple_gla", "fwd", lambda: peer, **rate)
        ratio(f"ssm {case}: triton / fla (fwd)", t_o, t_p, target=1.2)
    if s.get("lean"):  # the tuned re-timing: ours and the peer only
        return _fla_later(timed, case, peer, [qg, kg, vg, gg], t_ob, None) if peer else None
    # the opt-in chunk-parallel layout (ScanTiles.parallel_out / parallel_grads / block_n)
    t_po = timed("triton ssm_scan [parallel]", "fwd", lambda: _parallel(ours, x, N), **rate)
    t_pi = timed("triton ssm_scan [parallel] (no_grad)", "fwd", lambda: _parallel(ours_inference, x, N), **rate)
    t_op = timed("triton ssm_scan [parallel]", "fwd+bwd", lambda: _parallel(fwd_bwd(ours, params), x, N))
    ratio(f"ssm {case}: triton fwd, [parallel] / default", t_po, t_o)
    ratio(f"ssm {case}: triton no_grad fwd, [parallel] / default", t_pi, t_i)
    ratio(f"ssm {case}: triton fwd+bwd, [parallel] / default", t_op, t_ob)
    ratio(f"ssm {case}: triton [parallel] / fla (fwd)", t_po, t_p, target=1.2)
    # the memory option's other choice: the default recomputes the states in the backward
    # (ScanTiles.recompute); keeping them from the forward costs memory and saves a state pass
    t_keep = timed(
        "triton ssm_scan [recompute=False]", "fwd+bwd", lambda: _recompute(fwd_bwd(ours, params), x, N, False)
    )
    ratio(f"ssm {case}: triton fwd+bwd, [recompute=False] / default", t_keep, t_ob)
    for impl, make in (
        ("triton ssm_scan [recompute=True]", lambda: _recompute(ours, x, N, True)),
        ("triton ssm_scan [recompute=False]", lambda: _recompute(ours, x, N, False)),
    ):
        _kept_by_forward("ssm", case, impl, make, torch.device(dev))
    t_r = timed("reference op", "fwd", lambda: ref, **rate)
    timed("reference op", "fwd+bwd", lambda: fwd_bwd(ref, params))
    ratio(f"ssm {case}: triton / reference (fwd)", t_o, t_r)
    # ours again last: a drift between the two timings of ours shows the GPU's state changed
    t_o2 = timed("triton ssm_scan (again)", "fwd", lambda: ours)
    ratio(f"ssm {case}: triton fwd, second / first timing (stable = 1)", t_o2, t_o)
    if peer is None:
        return None
    return _fla_later(timed, case, peer, [qg, kg, vg, gg], t_ob, t_op)


def _fla_later(timed, case, peer, peer_params, t_ob, t_op):
    """The closure timing fla's forward+backward and its ratios (run after every size)."""

    def later():
        t_pb = timed("fla chunk_simple_gla", "fwd+bwd", lambda: fwd_bwd(peer, peer_params))
        ratio(f"ssm {case}: triton / fla (fwd+bwd)", t_ob, t_pb, target=1.2)
        if t_op is not None:
            ratio(f"ssm {case}: triton [parallel] / fla (fwd+bwd)", t_op, t_pb, target=1.2)

    return later


# ----- tuned -----
def tuned(s, sz, gpu, dev, dtype, attn_fns, scan_fns):
    """The configs this run's ``tune`` section found (``tune.choose``: per table slot the best
    geometric-mean speed-up over its groups, adopted from ``tune.ADOPT_SPEEDUP`` on), the lines to
    paste, then attention (with its peers, without the reference op) and the scan (ours and fla) at
    ``s["T"]`` re-timed with the adopted configs in force, their rows and ratios tagged
    " [tuned]": the targets as the configs a commit would paste give them, from one GPU run."""
    from bmojo_triton.ops import bmojo_attention as att
    from bmojo_triton.ops import ssm_scan as scan

    from benchmarks.triton import tune as tn

    if not tn.LAST:
        msg = "no tune results in this run (put tune before tuned in --sections): nothing re-timed"
        print(f"  tuned: {msg}", flush=True)
        ROWS.append(dict(section="tuned", case="-", note=msg))
        return
    choices = tn.choose()
    over: dict = {"bmojo_attention": {}, "ssm_scan": {}}
    for c in choices:
        if c.config is None:
            verdict, best = "default kept", "no other config timed in every group of the slot"
        else:
            verdict = "adopted" if c.adopted else c.note or f"default kept (< {tn.ADOPT_SPEEDUP:.2f}x)"
            cases = "; ".join(case for _, case in c.groups)
            best = f"best {c.speedup:.3f}x vs default over {cases}: {tn._fmt(c.config)}"
        print(f"  tuned {c.op}.{c.slot:9s} {verdict}; {best}", flush=True)
        ROWS.append(
            dict(
                section="tuned",
                case=f"{c.op}.{c.slot}",
                impl="choice",
                mode="adopted" if c.adopted else "default kept",
                config=None if c.config is None else tn._fmt(c.config),
                speedup=c.speedup,
                snippet=c.lines,
            )
        )
        over[c.op].update(c.entries)
    if not any(over.values()):
        print("  tuned: every slot keeps its default config: nothing to re-time", flush=True)
        return
    print("  paste (tuned: the rows below ran with these):", flush=True)
    for c in choices:
        for line in c.lines.splitlines():
            print(f"    {line}", flush=True)
    tag = " [tuned]"
    with att.TILES.override(**over["bmojo_attention"]), scan.TILES.override(**over["ssm_scan"]):
        if over["bmojo_attention"]:
            attention(dict(sz["attention"], T=s["T"], ref_max_T=0, tag=tag), gpu, dev, dtype, *attn_fns)
        if over["ssm_scan"]:
            ssm(dict(sz["ssm"], T=s["T"], lean=True, tag=tag), gpu, dev, dtype, *scan_fns)


# ----- norms and conv -----
def norm_conv(s, gpu, dev, dtype, ops, refs):
    b, T, width, ch, K = s["b"], s["T"][0], s["width"], s["ch"], 4
    el = torch.finfo(dtype).bits // 8
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(b, T, width, generator=g).to(dev, dtype).requires_grad_(True)
    z = torch.randn(b, T, width, generator=g).to(dev, dtype).requires_grad_(True)
    wt = torch.ones(width, device=dev, dtype=dtype).requires_grad_(True)
    case = f"T={T} x {width}"
    for name, args, nb in (
        ("rmsnorm", (x, wt), 2 * x.numel() * el),
        ("gated_rmsnorm", (x, z, wt, 1e-6, width // 8), 3 * x.numel() * el),
    ):
        for impl, fn in (("triton", ops[name]), ("reference op", refs[name])):
            attempt(
                "norm_conv",
                f"{name} {case}",
                impl,
                "fwd",
                lambda fn=fn, args=args: bench(lambda: fn(*args), gpu=gpu),
                nbytes=nb,
            )
            attempt(
                "norm_conv",
                f"{name} {case}",
                impl,
                "fwd+bwd",
                lambda fn=fn, args=args: bench(
                    fwd_bwd(lambda: fn(*args), [a for a in args if isinstance(a, torch.Tensor)]), gpu=gpu
                ),
                nbytes=2.5 * nb,
            )
    xc = torch.randn(b, T, ch, generator=g).to(dev, dtype)
    wc = torch.randn(ch, K, generator=g).to(dev, dtype)
    bc = torch.randn(ch, generator=g).to(dev, dtype)
    for impl, fn in (("triton", ops["causal_conv1d"]), ("reference op", refs["causal_conv1d"])):
        attempt(
            "norm_conv",
            f"causal_conv1d T={T} x {ch}",
            impl,
            "fwd",
            lambda fn=fn: bench(lambda: fn(xc, wc, bc), gpu=gpu),
            nbytes=2 * xc.numel() * el,
        )


# ----- decode -----
def decode(s, gpu, dev, dtype):
    from bmojo.backends import use_backend
    from bmojo.config import ModelConfig
    from bmojo.model import BMojoLM

    cfg = ModelConfig.preset(
        "bmojo", vocab_size=256, d_model=s["D"], n_layers=2, window=s["w"], eidetic_capacity=s["M"], n_heads=s["H"]
    )
    torch.manual_seed(0)
    net = BMojoLM(cfg).to(dev, dtype).eval()
    times = {}
    for backend in ("triton", "reference"):
        with use_backend(backend), torch.no_grad():
            for ctx in s["ctx"]:
                ids = torch.randint(0, 256, (1, ctx), device=dev)
                state = None
                for i in range(0, ctx, s["prefill_chunk"]):
                    logits, state = net.prefill(ids[:, i : i + s["prefill_chunk"]], state)
                tok = logits[:, -1].argmax(-1)
                t = attempt(
                    "decode",
                    f"ctx={ctx}",
                    f"{backend} 2-layer step",
                    "step",
                    lambda state=state, tok=tok: bench(lambda: net.step(tok, state), gpu=gpu),
                )
                times[(backend, ctx)] = t
    c0, c1 = s["ctx"][0], s["ctx"][-1]
    ratio(
        f"decode triton step ctx={c1} / ctx={c0} (flat = 1)",
        times.get(("triton", c1)),
        times.get(("triton", c0)),
        target=1.2,
    )
    ratio(f"decode reference/triton step ctx={c1} (speed-up)", times.get(("reference", c1)), times.get(("triton", c1)))


_TUNE_GRID = dict(blocks=(32, 64, 128), num_warps=(4, 8), num_stages=(2, 3, 4))
SIZES = {
    "full": dict(
        attention=dict(b=4, H=16, Dh=64, w=512, f=512, M=64, T=[2048, 8192, 32768], ref_max_T=8192, flex=True),
        ssm=dict(b=4, H=16, P=64, N=128, T=[2048, 8192, 32768]),
        norm_conv=dict(b=4, T=[8192], width=2048, ch=2048),
        decode=dict(D=1024, H=16, w=512, M=64, ctx=[1024, 4096, 16384], prefill_chunk=4096),
        eidetic=dict(b=4, H=16, Dh=64, w=512, M=64, P=64, N=128, T=[2048, 8192]),
        tune=dict(
            attention=dict(b=4, H=16, Dh=64, w=512, f=512, T=8192, seeds=True, **_TUNE_GRID),
            ssm=dict(
                b=4,
                H=16,
                P=64,
                N=128,
                T=8192,
                p_blocks=(16, 32, 64),
                train_blocks=(16, 32, 64),
                bwd_p_blocks=(32, 16),
                n_blocks=(32, 64),
                **_TUNE_GRID,
            ),
            cap=14,
            budget=90.0,
        ),
        tuned=dict(T=[8192]),
    ),
    "quick": dict(
        attention=dict(b=4, H=16, Dh=64, w=512, f=512, M=64, T=[2048], ref_max_T=2048, flex=True),
        ssm=dict(b=4, H=16, P=64, N=128, T=[2048]),
        norm_conv=dict(b=4, T=[2048], width=2048, ch=2048),
        decode=dict(D=512, H=8, w=256, M=32, ctx=[512, 2048], prefill_chunk=2048),
        eidetic=dict(b=4, H=16, Dh=64, w=512, M=64, P=64, N=128, T=[2048]),
        tune=dict(
            attention=dict(b=4, H=16, Dh=64, w=512, f=512, T=2048, seeds=True, **_TUNE_GRID),
            ssm=dict(
                b=4,
                H=16,
                P=64,
                N=128,
                T=2048,
                p_blocks=(32, 64),
                train_blocks=(32, 64),
                bwd_p_blocks=(32,),
                n_blocks=(32,),
                **_TUNE_GRID,
            ),
            cap=4,
            budget=30.0,
        ),
        tuned=dict(T=[2048]),
    ),
    "tiny": dict(
        attention=dict(b=1, H=2, Dh=16, w=8, f=8, M=4, T=[40], ref_max_T=64, flex=False),
        ssm=dict(b=1, H=2, P=16, N=16, T=[40]),
        norm_conv=dict(b=1, T=[16], width=32, ch=16),
        decode=dict(D=32, H=2, w=4, M=2, ctx=[8, 16], prefill_chunk=8),
        eidetic=dict(b=1, H=2, Dh=16, w=8, M=4, P=16, N=16, T=[40]),
        tune=dict(
            # on the interpreter: the default config and one other per group (see tune.py)
            attention=dict(b=1, H=2, Dh=16, w=8, f=8, T=40, blocks=(16, 32), num_warps=(4,), num_stages=(3,)),
            ssm=dict(
                b=1,
                H=2,
                P=16,
                N=16,
                T=40,
                blocks=(16, 32),
                p_blocks=(16,),
                train_blocks=(16, 32),
                bwd_p_blocks=(16,),
                n_blocks=(16,),
                num_warps=(4,),
                num_stages=(3,),
            ),
            cap=2,
            budget=None,
        ),
        tuned=dict(T=[40]),
    ),
}
SECTIONS = ("attention", "ssm", "decode", "norm_conv", "eidetic", "tune", "tuned")
#: sections whose sizes ``name@T1+T2`` may override (their "T" list)
SIZED = ("attention", "ssm", "eidetic", "tuned")
#: not in the default ``--sections``: ``tune`` takes minutes, ``tuned`` needs it first
OPT_IN = ("tune", "tuned")
#: what ``--dtypes`` takes (the dtypes of the Triton kernels and the reference ops); default bfloat16
DTYPES = ("bfloat16", "float16", "float32", "float64")
DEFAULT_DTYPES = "bfloat16"
#: sections that run in the first of ``--dtypes`` on a GPU and in float32 on the CPU interpreter
CPU_FLOAT32 = ("decode", "eidetic", "tune", "tuned")


def parse_sections(text: str) -> list[tuple[str, list[int] | None, float | None]]:
    """``name[@T1+T2...][:seconds]`` comma-separated, run in the order given: e.g.
    ``ssm:60,attention@32768:45,tune:75`` (``@``: the sequence lengths of that run of the
    section; ``:``: its time budget, after which it is stopped and the next one runs). A section
    may run twice only at different sizes (``attention@8192,attention@32768``)."""
    out = []
    if not text.strip():
        raise ValueError(f"--sections: expected comma-separated names from {','.join(SECTIONS)}, got {text!r}")
    seen = set()
    for item in (x.strip() for x in text.split(",")):
        if not item:
            raise ValueError(f"--sections: expected comma-separated sections without empty entries, got {text!r}")
        name, _, secs = item.partition(":")
        name, _, sizes = name.partition("@")
        if name not in SECTIONS:
            raise ValueError(f"--sections: expected names from {SECTIONS}, got {name!r} (in {item!r})")
        Ts = None
        if sizes:
            if name not in SIZED:
                raise ValueError(f"--sections: {name!r} takes no @sizes (only {SIZED}), got {item!r}")
            try:
                Ts = [int(t) for t in sizes.split("+")]
            except ValueError:
                raise ValueError(f"--sections: sizes must be ints joined by '+', got {item!r}") from None
            if any(t < 1 for t in Ts):
                raise ValueError(f"--sections: sizes must be >= 1, got {item!r}")
            if len(set(Ts)) != len(Ts):
                raise ValueError(f"--sections: expected each size once, got {item!r}")
        budget = None
        if secs:
            try:
                budget = float(secs)
            except ValueError:
                raise ValueError(f"--sections: a budget in seconds after ':', got {item!r}") from None
            if not (math.isfinite(budget) and budget > 0):
                raise ValueError(f"--sections: expected a finite budget > 0 seconds after ':', got {item!r}")
        key = (name, tuple(Ts) if Ts else None)
        if key in seen:
            raise ValueError(f"--sections: expected each section (at its sizes) once, got {item!r} more than once")
        seen.add(key)
        out.append((name, Ts, budget))
    return out


def parse_dtypes(text: str) -> list[torch.dtype]:
    """``--dtypes``: comma-separated names from ``DTYPES``, each once."""
    return [getattr(torch, name) for name in parse_names(text, "--dtypes", DTYPES)]


def section_dtypes(sec: str, dtypes: list[torch.dtype], gpu: bool) -> list[torch.dtype]:
    """The dtypes a section runs in: attention and ssm every one of ``dtypes``, norm_conv the
    first; the others the first on a GPU and float32 on the CPU interpreter (``CPU_FLOAT32``)."""
    if sec in ("attention", "ssm"):
        return list(dtypes)
    if sec in CPU_FLOAT32 and not gpu:
        return [torch.float32]
    return [dtypes[0]]


def check_args(a: argparse.Namespace, gpu: bool) -> None:
    """Every flag, before anything is measured; sets ``a.section_list`` and ``a.dtype_list``.
    Raises ValueError ("--flag: expected ..., got ...")."""
    a.section_list = parse_sections(a.sections)
    a.dtype_list = parse_dtypes(DEFAULT_DTYPES if a.dtypes is None else a.dtypes)
    if a.budget is not None and not (math.isfinite(a.budget) and a.budget > 0):
        raise ValueError(f"--budget: expected finite seconds > 0, got {a.budget}")
    if a.out is not None:
        check_out_path(a.out)
    forced = [sec for sec, _, _ in a.section_list if sec in CPU_FLOAT32]
    if not gpu and a.dtypes is not None and forced and a.dtype_list[0] != torch.float32:
        # without --dtypes they run in float32 here (the default); a request for another is refused
        raise ValueError(
            f"--dtypes: expected float32 first on the CPU interpreter (the sections {', '.join(dict.fromkeys(forced))} "
            f"run in float32 only there), got {a.dtypes!r}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.triton", description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one small size per section")
    size.add_argument("--tiny", action="store_true", help="toy sizes; runs on CPU under TRITON_INTERPRET=1")
    ap.add_argument(
        "--sections",
        default=",".join(s for s in SECTIONS if s not in OPT_IN),
        help=f"comma-separated, in order, from {','.join(SECTIONS)}; each may be name[@T1+T2][:seconds]"
        " (sizes of that run, its time budget)",
    )
    ap.add_argument(
        "--dtypes",
        default=None,
        help=f"from {','.join(DTYPES)} (default {DEFAULT_DTYPES}): attention and ssm run each, the other sections"
        " the first (on the CPU interpreter decode, eidetic, tune and tuned run in float32)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write all rows as JSON here")
    ap.add_argument("--budget", type=float, default=None, help="seconds (> 0); later measurements are skipped (listed)")
    ap.add_argument(
        "--tune-static",
        choices=("flag", "skip"),
        default=None,
        help="tune: compile each config first and read its static resources (GPU only); flag configs whose"
        " tuned kernels spill, or skip timing them",
    )
    a = ap.parse_args(argv)
    gpu = torch.cuda.is_available()
    try:
        check_args(a, gpu)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    sections, dtypes = a.section_list, a.dtype_list
    interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if not gpu and not interp:
        print("benchmarks.triton: needs a CUDA GPU, or TRITON_INTERPRET=1 with --tiny", file=sys.stderr)
        return 2
    if not gpu and not a.tiny:
        print("benchmarks.triton: on CPU (interpreter) only --tiny is supported", file=sys.stderr)
        return 2
    if a.tune_static and not gpu:
        print("benchmarks.triton: --tune-static needs a CUDA GPU (the interpreter compiles nothing)", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if gpu else "cpu")
    scale = "tiny" if a.tiny else "quick" if a.quick else "full"

    from bmojo.ops.bmojo_attention.reference import bmojo_attention as ref_attention
    from bmojo.ops.causal_conv1d.reference import causal_conv1d as ref_conv
    from bmojo.ops.rmsnorm.reference import gated_rmsnorm as ref_gated
    from bmojo.ops.rmsnorm.reference import rmsnorm as ref_rms
    from bmojo.ops.ssm_scan.reference import ssm_scan as ref_scan
    from bmojo_triton.ops.bmojo_attention import bmojo_attention
    from bmojo_triton.ops.causal_conv1d import causal_conv1d
    from bmojo_triton.ops.rmsnorm import gated_rmsnorm, rmsnorm
    from bmojo_triton.ops.ssm_scan import ssm_scan

    info = dict(
        device=torch.cuda.get_device_name() if gpu else "cpu (Triton interpreter)",
        torch=torch.__version__,
        scale=scale,
        dtypes=DEFAULT_DTYPES if a.dtypes is None else a.dtypes,
        sections=a.sections,
        # what each section runs in (on the CPU interpreter some run in float32 only)
        section_dtypes={
            sec: [str(d).replace("torch.", "") for d in section_dtypes(sec, dtypes, gpu)] for sec, _, _ in sections
        },
    )
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    print(
        f"benchmarks.triton on {info['device']} (torch {info['torch']}, triton {info.get('triton')}), scale {scale}",
        flush=True,
    )
    t_start = time.perf_counter()
    DEADLINE[0] = float("inf") if a.budget is None else t_start + a.budget
    try:
        ceilings(gpu, dev)
    except Exception as err:  # e.g. out of memory: the sections still run, rooflines print as unknown
        print(f"ceilings failed: {type(err).__name__}: {err}; rooflines unknown", flush=True)
        traceback.print_exc()
        CEIL.update(copy_gbps=None, matmul_tflops=None)
        ROWS.append(dict(section="ceilings", note=f"failed: {type(err).__name__}: {err}"))

    def dump():
        """Rewrite --out with every row so far; a failed write is reported and the run goes on
        (stdout keeps every figure), so a full disk never costs the sections still to run."""
        if not a.out:
            return
        try:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(dict(info=info, ceilings=CEIL, rows=ROWS), indent=1, default=str))
        except OSError as err:
            print(f"  writing {a.out} failed: {err} (the figures above are complete)", flush=True)

    sz = SIZES[scale]
    for sec, Ts, budget in sections:
        t0 = time.perf_counter()
        label = sec + (f"@{'+'.join(map(str, Ts))}" if Ts else "")
        print(f"[{label}]" + (f" (budget {budget:.0f} s)" if budget else ""), flush=True)
        spec = dict(sz[sec], T=Ts) if Ts else sz[sec]
        try:
            sec_dtypes = section_dtypes(sec, dtypes, gpu)
            with time_limit(budget, label):
                if sec == "attention":
                    for dt in sec_dtypes:
                        attention(spec, gpu, dev, dt, bmojo_attention, ref_attention)
                elif sec == "ssm":
                    for dt in sec_dtypes:
                        ssm(spec, gpu, dev, dt, ssm_scan, ref_scan)
                elif sec == "norm_conv":
                    ops = dict(rmsnorm=rmsnorm, gated_rmsnorm=gated_rmsnorm, causal_conv1d=causal_conv1d)
                    refs = dict(rmsnorm=ref_rms, gated_rmsnorm=ref_gated, causal_conv1d=ref_conv)
                    norm_conv(spec, gpu, dev, sec_dtypes[0], ops, refs)
                elif sec == "decode":
                    decode(spec, gpu, dev, sec_dtypes[0])
                elif sec == "eidetic":
                    eidetic(spec, gpu, dev, sec_dtypes[0])
                elif sec == "tune":
                    # the groups share 90 % of the section's budget: the rest prints the tables
                    tb = 0.9 * budget if budget else spec["budget"]
                    tune(spec, gpu, dev, sec_dtypes[0], tb, static=a.tune_static)
                elif sec == "tuned":
                    dt = sec_dtypes[0]
                    tuned(spec, sz, gpu, dev, dt, (bmojo_attention, ref_attention), (ssm_scan, ref_scan))
        except SectionTimeout as err:
            print(f"  section {label} stopped: {err}", flush=True)
            ROWS.append(dict(section=sec, case=label, note=f"stopped: {err}"))
        except Exception as err:
            print(f"  section {label} failed: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc()
            ROWS.append(dict(section=sec, error=f"{type(err).__name__}: {err}"))
        print(f"[{label}] {time.perf_counter() - t0:.1f} s", flush=True)
        if gpu:
            torch.cuda.empty_cache()
        dump()
    info["total_s"] = time.perf_counter() - t_start
    dump()
    errors = [r for r in ROWS if str(r.get("note", "")).startswith("error") and "triton" in str(r.get("impl", ""))]
    errors += [r for r in ROWS if "error" in r]
    errors += [r for r in ROWS if str(r.get("status", "")).startswith("WRONG")]
    print(f"done in {info['total_s']:.1f} s; {len(errors)} error rows in our kernels/sections", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
