"""Inputs of the conformance suite: a small grid of named cases per op.

Every case is built from a seeded generator, so inputs are fresh per run (the seed changes unless
``--bmojo-seed`` fixes it) yet reproducible from the seed the header prints. The grid covers the
edges a kernel gets wrong: T = 1, T not a multiple of the chunk/block, B = 1, GQA ratios, no
fading keys (f = 0), no eidetic memory (M = 0), full attention (w >= T), kernel width 1, ties in
eidetic scores, a selection starting mid-chunk, and the empty sizes the argument checks accept
(batch 0, a zero-width state, head dim, channel or norm axis).

A few ``large`` cases (marker ``bmojo_large``) add what tiny shapes miss: T beyond the block or
chunk size, batch > 2, a far ``q_start`` and non-contiguous inputs (every tensor argument a strided
view with the same values). They run by default; ``--bmojo-skip-large`` leaves them out for slow
backends (interpreters, emulators) — every op keeps its small cases, so each op is still tested.

Two non-contiguous layouts exist (``Case.layout``): ``"strided"``, every other element of a wider
buffer (last axis stride 2), and ``"sliced"``, the leading columns of a wider buffer (last axis
stride 1, rows further apart than their width: q, k and v cut from one fused projection). A kernel
that tests ``stride(-1) == 1`` and then indexes ``row * width`` passes the first and fails the second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bmojo.ops.bmojo_attention.reference import eidetic_snapshot_count

#: Ops whose gradients the suite checks (the others are discrete or defined without gradient).
DIFFERENTIABLE = {
    "ssm_scan",
    "ssm_step",
    "causal_conv1d",
    "causal_conv1d_step",
    "bmojo_attention",
    "rmsnorm",
    "gated_rmsnorm",
}


@dataclass(frozen=True)
class Case:
    op: str
    name: str
    make: Callable[..., tuple[tuple, dict]] = field(repr=False, compare=False)
    params: dict = field(default_factory=dict, compare=False)
    large: bool = field(default=False, compare=False)  #: marker ``bmojo_large`` (skippable)
    #: memory layout of the tensor inputs: "contiguous", or a key of ``LAYOUTS`` (same values, as views)
    layout: str = field(default="contiguous", compare=False)

    def __post_init__(self):
        if self.layout != "contiguous" and self.layout not in LAYOUTS:
            raise ValueError(f"layout: expected 'contiguous' or one of {sorted(LAYOUTS)}, got {self.layout!r}")

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"

    def build(self, dtype: torch.dtype, device: str, seed: int) -> tuple[tuple, dict]:
        gen = torch.Generator().manual_seed(seed)
        args, kwargs = self.make(R(gen, dtype, device), **self.params)
        if self.layout != "contiguous":
            args = tuple(LAYOUTS[self.layout](a) for a in args)
        return args, kwargs


def noncontiguous(t):
    """The same values as a non-contiguous view (every other element of a buffer twice as long in
    the last axis); 0-d tensors and non-tensors are returned as they are."""
    if not isinstance(t, torch.Tensor) or t.ndim == 0 or t.numel() == 0:
        return t
    buf = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    buf[..., ::2] = t
    view = buf[..., ::2]
    assert not view.is_contiguous() or t.shape[-1] == 1
    return view


def row_sliced(t):
    """The same values as the first columns of a wider buffer (3 more columns in the last axis):
    the last axis keeps stride 1, but rows lie further apart than their width — the layout of q, k
    and v sliced out of one fused projection. 0-d tensors, 1-d tensors (a single row) and
    non-tensors are returned as they are."""
    if not isinstance(t, torch.Tensor) or t.ndim < 2 or t.numel() == 0:
        return t
    buf = torch.zeros(*t.shape[:-1], t.shape[-1] + 3, dtype=t.dtype, device=t.device)
    buf[..., : t.shape[-1]] = t
    view = buf[..., : t.shape[-1]]
    assert view.stride(-1) == 1 and (not view.is_contiguous() or t.numel() == t.shape[-1])
    return view


#: The non-contiguous layouts a case's inputs can take (``Case.layout``).
LAYOUTS = {"strided": noncontiguous, "sliced": row_sliced}


def same_layout_copy(t: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``t`` with exactly its sizes and strides (a view of a fresh zeroed buffer),
    so a non-contiguous input keeps its layout when the suite copies it."""
    if t.is_contiguous():
        return t.detach().clone()
    extent = 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()) if n > 0) if t.numel() else 0
    buf = torch.zeros(extent, dtype=t.dtype, device=t.device)
    view = buf.as_strided(t.shape, t.stride())
    with torch.no_grad():
        view.copy_(t)
    return view


class R:
    """Random tensors on the CPU generator, moved to the device under test."""

    def __init__(self, gen, dtype, device):
        self.gen, self.dtype, self.device = gen, dtype, device

    def randn(self, *shape, scale=1.0):
        return (torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale).to(self.device, self.dtype)

    def rand(self, *shape, lo=0.0, hi=1.0):
        u = torch.rand(*shape, generator=self.gen, dtype=torch.float64)
        return (lo + (hi - lo) * u).to(self.device, self.dtype)

    def randint(self, lo, hi, *shape):
        return torch.randint(lo, hi, shape, generator=self.gen).to(self.device)


# ----- ssm -----
def _ssm_scan(r, b, T, H, P, G, N, chunk, D=True, state=True):
    args = (
        r.randn(b, T, H, P),
        r.rand(b, T, H, lo=0.01, hi=0.3),  # dt > 0 (softplus already applied)
        -r.rand(H, lo=0.5, hi=2.0),  # A < 0
        r.randn(b, T, G, N, scale=0.5),
        r.randn(b, T, G, N, scale=0.5),
        r.randn(H) if D else None,
        r.randn(b, H, P, N, scale=0.5) if state else None,
    )
    return args, {"chunk_size": chunk}


def _ssm_step(r, b, H, P, G, N, D=True):
    return (
        r.randn(b, H, P, N, scale=0.5),
        r.randn(b, H, P),
        r.rand(b, H, lo=0.01, hi=0.3),
        -r.rand(H, lo=0.5, hi=2.0),
        r.randn(b, G, N, scale=0.5),
        r.randn(b, G, N, scale=0.5),
        r.randn(H) if D else None,
    ), {}


# ----- conv -----
def _conv(r, b, T, ch, K, bias=True, state=True, activation="silu"):
    return (
        r.randn(b, T, ch),
        r.randn(ch, K, scale=0.5),
        r.randn(ch) if bias else None,
        r.randn(b, K - 1, ch) if state else None,
        activation,
    ), {}


def _conv_step(r, b, ch, K, bias=True, activation="silu"):
    return (
        r.randn(b, ch),
        r.randn(b, K - 1, ch),
        r.randn(ch, K, scale=0.5),
        r.randn(ch) if bias else None,
        activation,
    ), {}


# ----- attention -----
def _attention(
    r, b, T, H, Hkv, Dh, w, f=0, M=None, chunk=None, q_start=0, k_extra=0, f_extra=0, block=64, delta=None, scale=None
):
    args = [r.randn(b, T, H, Dh, scale=1.5), r.randn(b, T + k_extra, Hkv, Dh), r.randn(b, T + k_extra, Hkv, Dh)]
    if f:
        args += [r.randn(b, T + f_extra, Hkv, Dh), r.randn(b, T + f_extra, Hkv, Dh)]
    else:
        args += [None, None]
    if M is not None:
        S = eidetic_snapshot_count(q_start, T, chunk)
        hi = max(1, q_start + T)
        epos = r.randint(0, hi, b, S, M)
        epos = torch.where(r.randint(0, 4, b, S, M) == 0, torch.full_like(epos, -1), epos)  # ~1/4 empty
        args += [r.randn(b, S, M, Hkv, Dh), r.randn(b, S, M, Hkv, Dh), epos]
    else:
        args += [None, None, None]
    kw = dict(
        q_start=q_start,
        window=w,
        fading_window=f,
        eidetic_chunk=chunk if M is not None else None,
        block_size=block,
        fading_offset=delta,  # δ (spec §2.1); None: δ = w
    )
    if scale is not None:  # an explicit softmax scale (None: 1/sqrt(Dh), the op's default)
        kw["scale"] = scale
    return tuple(args), kw


# ----- eidetic -----
def _scores(r, b, T, Hkv, Dh):
    return (r.randn(b, T, Hkv, Dh), r.randn(b, T, Hkv, Dh)), {}


def _select(r, b, start, T, chunk, per_chunk, M, eviction="lowest", filled=0):
    """Integer-valued scores (so ties happen) in the scores' dtype; memory prefilled with
    ``filled`` distinct positions from chunks completed before ``start``."""
    sdt = torch.float64 if r.dtype == torch.float64 else torch.float32
    scores = r.randint(0, 6, b, T).to(sdt)
    done = start - start % chunk
    mem_pos = torch.full((b, M), -1, dtype=torch.int64, device=r.device)
    mem_score = torch.full((b, M), float("-inf"), dtype=sdt, device=r.device)
    for i in range(b):
        n = min(filled, M, done)
        if n:
            pos = torch.randperm(done, generator=r.gen)[:n].to(r.device)
            mem_pos[i, :n] = pos
            mem_score[i, :n] = r.randint(0, 6, n).to(sdt)
    pending = r.randint(0, 6, b, start % chunk).to(sdt)
    return (scores, mem_pos, mem_score, pending), dict(start=start, chunk=chunk, per_chunk=per_chunk, eviction=eviction)


# ----- norms -----
def _rmsnorm(r, shape, eps=1e-6):
    return (r.randn(*shape), r.randn(shape[-1], scale=0.5) + 1.0, eps), {}


def _gated(r, shape, eps=1e-6, group=None):
    return (r.randn(*shape), r.randn(*shape), r.randn(shape[-1], scale=0.5) + 1.0, eps, group), {}


def _c(op, name, make, **params) -> Case:
    return Case(op, name, make, params)


def _large(op, name, make, **params) -> Case:
    """A large case (T beyond a block/chunk, batch 3, non-contiguous inputs)."""
    return Case(op, name, make, params, large=True, layout="strided")


def _strided(op, name, make, **params) -> Case:
    """A small case with non-contiguous inputs (cheap enough to always run)."""
    return Case(op, name, make, params, layout="strided")


def _sliced(op, name, make, **params) -> Case:
    """A small case whose inputs are row-sliced views (last axis stride 1, rows further apart)."""
    return Case(op, name, make, params, layout="sliced")


# fmt: off
CASES: tuple[Case, ...] = (
    _c("ssm_scan", "base", _ssm_scan, b=2, T=32, H=4, P=8, G=2, N=8, chunk=16),
    _c("ssm_scan", "T_ragged", _ssm_scan, b=2, T=37, H=4, P=8, G=2, N=8, chunk=16, D=False, state=False),
    _c("ssm_scan", "T1", _ssm_scan, b=2, T=1, H=2, P=4, G=1, N=4, chunk=16),
    _c("ssm_scan", "B1_G1", _ssm_scan, b=1, T=20, H=2, P=4, G=1, N=8, chunk=8),
    _c("ssm_scan", "chunk_gt_T", _ssm_scan, b=2, T=5, H=4, P=4, G=4, N=4, chunk=64),
    _c("ssm_step", "base", _ssm_step, b=2, H=4, P=8, G=2, N=8),
    _c("ssm_step", "B1_noD", _ssm_step, b=1, H=2, P=4, G=2, N=4, D=False),
    _c("causal_conv1d", "base", _conv, b=2, T=13, ch=12, K=4),
    _c("causal_conv1d", "T1", _conv, b=2, T=1, ch=8, K=4),
    _c("causal_conv1d", "linear_nobias_nostate", _conv, b=1, T=9, ch=8, K=3, bias=False, state=False, activation=None),
    _c("causal_conv1d", "K1", _conv, b=2, T=6, ch=8, K=1),
    _c("causal_conv1d", "T_lt_K", _conv, b=2, T=2, ch=8, K=4),
    _c("causal_conv1d_step", "base", _conv_step, b=2, ch=12, K=4),
    _c("causal_conv1d_step", "B1_K2_linear", _conv_step, b=1, ch=8, K=2, bias=False, activation=None),
    _c("bmojo_attention", "swa_gqa2_ragged", _attention, b=2, T=21, H=4, Hkv=2, Dh=8, w=8, block=8),
    _c("bmojo_attention", "full_w_ge_T", _attention, b=2, T=12, H=2, Hkv=2, Dh=8, w=16),
    _c(
        "bmojo_attention",
        "three_sources_gqa4",
        _attention,
        b=2,
        T=19,
        H=4,
        Hkv=1,
        Dh=8,
        w=4,
        f=4,
        M=3,
        chunk=4,
        block=4,
    ),
    _c(
        "bmojo_attention",
        "T1_decode",
        _attention,
        b=2,
        T=1,
        H=4,
        Hkv=2,
        Dh=8,
        w=8,
        f=8,
        M=2,
        chunk=8,
        q_start=23,
        k_extra=7,
        f_extra=15,
    ),
    _c("bmojo_attention", "B1_M0_fading_only", _attention, b=1, T=17, H=2, Hkv=1, Dh=8, w=4, f=6, block=4),
    _c("bmojo_attention", "f0_eidetic", _attention, b=2, T=16, H=2, Hkv=2, Dh=8, w=4, M=3, chunk=4, block=4),
    _c("bmojo_attention", "eidetic_zero_slots", _attention, b=2, T=9, H=2, Hkv=1, Dh=8, w=3, f=3, M=0, chunk=3),
    _c(
        "bmojo_attention",
        "continuation",
        _attention,
        b=2,
        T=11,
        H=2,
        Hkv=1,
        Dh=8,
        w=6,
        f=3,
        M=2,
        chunk=3,
        q_start=10,
        k_extra=5,
        f_extra=9,
        block=3,
    ),
    # fading_offset δ ∈ {0, 1, w-1, w} (spec §2.1): fading keys at (i-δ-f, i-δ]
    _c("bmojo_attention", "delta0_three_sources", _attention, b=2, T=19, H=4, Hkv=2, Dh=8, w=5, f=4, M=3, chunk=5,
       block=5, delta=0),
    _c("bmojo_attention", "delta1_fading_only", _attention, b=2, T=17, H=2, Hkv=1, Dh=8, w=4, f=6, block=4, delta=1),
    _c("bmojo_attention", "delta_w_minus_1_continuation", _attention, b=2, T=11, H=2, Hkv=1, Dh=8, w=6, f=3, M=2,
       chunk=3, q_start=10, k_extra=5, f_extra=9, block=3, delta=5),
    _c("bmojo_attention", "delta_w_explicit", _attention, b=2, T=13, H=2, Hkv=2, Dh=8, w=4, f=4, M=2, chunk=4,
       block=4, delta=4),
    _c("bmojo_attention", "delta0_T1_decode", _attention, b=2, T=1, H=4, Hkv=2, Dh=8, w=8, f=8, M=2, chunk=8,
       q_start=23, k_extra=7, f_extra=7, delta=0),
    # an explicit scale, and a head size that is not a power of two (a kernel's padded block must
    # not leak into the scale or the dot products); found by mutation testing of this suite
    _c("bmojo_attention", "explicit_scale", _attention, b=2, T=13, H=2, Hkv=2, Dh=8, w=4, f=4, M=2, chunk=4,
       block=4, delta=4, scale=0.3),
    _c("bmojo_attention", "Dh12", _attention, b=2, T=13, H=2, Hkv=2, Dh=12, w=4, f=4, M=2, chunk=4, block=4, delta=4),
    # caches that do not reach back as far as the windows: positions before k's (kf's) first row
    # are not keys at all (not zero keys); and cache rows at negative positions, never visible
    _c("bmojo_attention", "truncated_cache", _attention, b=2, T=6, H=2, Hkv=1, Dh=8, w=6, f=3, M=2, chunk=3,
       q_start=10, k_extra=1, f_extra=2, block=3),
    _c("bmojo_attention", "cache_before_pos0", _attention, b=2, T=5, H=2, Hkv=1, Dh=8, w=6, f=3, M=2, chunk=3,
       q_start=2, k_extra=5, f_extra=9, block=3),
    # a query block spanning an eidetic chunk boundary (block 8 > chunk 6): each query reads its
    # own chunk's snapshot, not its block's
    _c("bmojo_attention", "block_gt_chunk", _attention, b=2, T=19, H=4, Hkv=2, Dh=8, w=4, f=4, M=3, chunk=6,
       block=8),
    _c("innovation_scores", "base", _scores, b=2, T=13, Hkv=2, Dh=8),
    _c("innovation_scores", "Dh12", _scores, b=2, T=13, Hkv=2, Dh=12),
    _c("innovation_scores", "B1_T1", _scores, b=1, T=1, Hkv=1, Dh=4),
    _c("eidetic_select", "base_ties", _select, b=2, start=0, T=20, chunk=4, per_chunk=2, M=5),
    _c("eidetic_select", "fifo", _select, b=2, start=0, T=20, chunk=4, per_chunk=2, M=5, eviction="fifo"),
    _c("eidetic_select", "mid_chunk", _select, b=2, start=6, T=9, chunk=4, per_chunk=2, M=4, filled=2),
    _c("eidetic_select", "T1_completes", _select, b=1, start=7, T=1, chunk=4, per_chunk=1, M=3, filled=2),
    _c("eidetic_select", "M_eq_k", _select, b=2, start=0, T=10, chunk=3, per_chunk=2, M=2),
    _c("rmsnorm", "base", _rmsnorm, shape=(2, 7, 32)),
    _c("rmsnorm", "B1_T1_eps", _rmsnorm, shape=(1, 1, 16), eps=1e-2),
    _c("gated_rmsnorm", "base", _gated, shape=(2, 7, 32)),
    _c("gated_rmsnorm", "grouped", _gated, shape=(2, 5, 32), group=8),
    _c("gated_rmsnorm", "B1_T1", _gated, shape=(1, 1, 16)),
    # widths that are not powers of two: a kernel's padded block must not enter the mean
    _c("rmsnorm", "width24", _rmsnorm, shape=(2, 7, 24)),
    _c("gated_rmsnorm", "grouped_width36", _gated, shape=(2, 5, 36), group=12),
    # Empty and degenerate sizes the argument checks accept: no batch rows, and a zero-width axis
    # (state size N, head dim P, channels, rmsnorm width; gated_rmsnorm refuses width 0). Outputs
    # come back with the reference's shapes and dtypes (for N = 0, the skip term D·x alone), with
    # no launch on an empty grid.
    _c("ssm_scan", "B0", _ssm_scan, b=0, T=5, H=2, P=4, G=1, N=4, chunk=4),
    _c("ssm_scan", "N0_skip_only", _ssm_scan, b=2, T=9, H=2, P=4, G=1, N=0, chunk=4),
    _c("ssm_scan", "P0", _ssm_scan, b=2, T=5, H=2, P=0, G=1, N=4, chunk=4),
    _c("ssm_step", "B0", _ssm_step, b=0, H=2, P=4, G=1, N=4),
    _c("ssm_step", "N0_skip_only", _ssm_step, b=2, H=2, P=4, G=1, N=0),
    _c("causal_conv1d", "B0", _conv, b=0, T=5, ch=8, K=4),
    _c("causal_conv1d", "ch0", _conv, b=2, T=5, ch=0, K=4),
    _c("causal_conv1d_step", "B0", _conv_step, b=0, ch=8, K=4),
    _c("causal_conv1d_step", "ch0", _conv_step, b=2, ch=0, K=4),
    _c("bmojo_attention", "B0_three_sources", _attention, b=0, T=9, H=2, Hkv=1, Dh=8, w=3, f=3, M=2, chunk=3),
    _c("bmojo_attention", "H0", _attention, b=2, T=5, H=0, Hkv=1, Dh=8, w=3, f=3),
    _c("bmojo_attention", "H0_T1_decode", _attention, b=2, T=1, H=0, Hkv=1, Dh=8, w=3, q_start=4, k_extra=2),
    _c("innovation_scores", "B0", _scores, b=0, T=5, Hkv=2, Dh=8),
    _c("eidetic_select", "B0", _select, b=0, start=2, T=8, chunk=4, per_chunk=1, M=2),
    _c("rmsnorm", "rows0", _rmsnorm, shape=(0, 3, 16)),
    _c("rmsnorm", "width0", _rmsnorm, shape=(2, 3, 0)),
    _c("gated_rmsnorm", "rows0", _gated, shape=(0, 3, 16)),
    # Non-contiguous inputs at batch 3 for the step ops and attention's T = 1 decode (cheap: always run).
    _strided("ssm_step", "B3_strided", _ssm_step, b=3, H=4, P=8, G=2, N=8),
    _strided("causal_conv1d_step", "B3_strided", _conv_step, b=3, ch=12, K=4),
    _strided("bmojo_attention", "T1_decode_B3_strided", _attention, b=3, T=1, H=4, Hkv=2, Dh=8, w=8, f=8, M=2,
             chunk=8, q_start=23, k_extra=7, f_extra=15),
    _strided("bmojo_attention", "T1_decode_window_only_strided", _attention, b=2, T=1, H=2, Hkv=1, Dh=8, w=4,
             q_start=9, k_extra=3),
    # Row-sliced inputs (last axis stride 1, rows further apart than their width; cheap: always run).
    _sliced("ssm_scan", "sliced", _ssm_scan, b=2, T=20, H=2, P=4, G=1, N=8, chunk=8),
    _sliced("ssm_step", "sliced", _ssm_step, b=2, H=4, P=8, G=2, N=8),
    _sliced("causal_conv1d", "sliced", _conv, b=2, T=9, ch=8, K=4),
    _sliced("bmojo_attention", "three_sources_sliced", _attention, b=2, T=13, H=4, Hkv=2, Dh=8, w=4, f=4, M=2,
            chunk=4, block=4),
    _sliced("bmojo_attention", "T1_decode_sliced", _attention, b=2, T=1, H=4, Hkv=2, Dh=8, w=8, f=8, M=2,
            chunk=8, q_start=23, k_extra=7, f_extra=15),
    _sliced("innovation_scores", "sliced", _scores, b=2, T=13, Hkv=2, Dh=8),
    _sliced("rmsnorm", "sliced", _rmsnorm, shape=(2, 7, 24)),
    _sliced("gated_rmsnorm", "grouped_sliced", _gated, shape=(2, 5, 32), group=8),
    # Large (marker bmojo_large): T over 2 chunks/blocks, batch 3, far q_start, strided inputs.
    _large("ssm_scan", "large_T150_B3", _ssm_scan, b=3, T=150, H=4, P=8, G=2, N=8, chunk=64),
    _large("causal_conv1d", "large_T100_B3", _conv, b=3, T=100, ch=16, K=4),
    # T = 80 > the default block_size 64; every source; δ = w (default).
    _large("bmojo_attention", "large_T80_default_block_B3", _attention, b=3, T=80, H=4, Hkv=2, Dh=16, w=24, f=16,
           M=4, chunk=8),
    # A continuation at a far position (q_start = 5000, past every small case's range) with δ < w.
    _large("bmojo_attention", "large_far_q_start_delta", _attention, b=3, T=40, H=4, Hkv=1, Dh=8, w=12, f=8, M=4,
           chunk=6, q_start=5000, k_extra=11, f_extra=12, block=16, delta=5),
    _large("innovation_scores", "large_T100_B3", _scores, b=3, T=100, Hkv=2, Dh=8),
    _large("eidetic_select", "large_far_T100_B3", _select, b=3, start=4003, T=100, chunk=8, per_chunk=2, M=6,
           filled=5),
    _large("rmsnorm", "large_B3", _rmsnorm, shape=(3, 40, 64)),
    _large("gated_rmsnorm", "large_B3_grouped", _gated, shape=(3, 40, 64), group=16),
)
# fmt: on

GRAD_CASES = tuple(c for c in CASES if c.op in DIFFERENTIABLE)
#: opcheck is slow (it traces with fake tensors and AOT autograd): the first case of each op.
OPCHECK_CASES = tuple({c.op: c for c in reversed(CASES)}.values())[::-1] + tuple(
    c for c in CASES if c.id == "bmojo_attention-three_sources_gqa4"
)

#: Layer configurations for the parallel == recurrent property (LayerConfig.preset names).
LAYER_PRESETS = ("bmojo", "bmojo_f", "mamba2", "swa")
LAYER_SMALL = dict(d_model=32, window=4, n_heads=4, attn_block_size=4)
LAYER_SSM = dict(ssm_head_dim=16, ssm_chunk_size=8, ssm_state_size=8)


# ----- bad inputs: what every backend must refuse, naming the argument -----
@dataclass(frozen=True)
class BadCase:
    """Valid inputs of case ``base`` with one thing spoiled; the call must raise ``ValueError`` or
    ``TypeError`` whose message names ``arg``, and leave every input unchanged."""

    op: str
    name: str
    base: str  #: id of the CASES entry whose inputs are spoiled
    arg: str  #: the argument the error must name
    spoil: Callable[[list, dict], None] = field(repr=False, compare=False)  #: edits args/kwargs in place

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"

    def build(self, dtype: torch.dtype, device: str, seed: int) -> tuple[tuple, dict]:
        args, kwargs = _BY_ID[self.base].build(dtype, device, seed)
        args, kwargs = list(args), dict(kwargs)
        self.spoil(args, kwargs)
        return tuple(args), kwargs


_BY_ID = {c.id: c for c in CASES}


def _other_dtype(t: torch.Tensor) -> torch.Tensor:
    """The same values in another floating dtype (float16, or float32 for float16 inputs)."""
    return t.to(torch.float32 if t.dtype == torch.float16 else torch.float16)


def _set(i, value):
    """Replace argument ``i`` by ``value(args[i])``."""

    def spoil(args, kwargs):
        args[i] = value(args[i])

    return spoil


def _set_all(idx, value):
    def spoil(args, kwargs):
        for i in idx:
            args[i] = value(args[i])

    return spoil


def _kw(**changes):
    def spoil(args, kwargs):
        kwargs.update(changes)

    return spoil


def _extra_group(t):
    """One more group/head along axis -2 (a count that divides nothing it should)."""
    return torch.cat([t, t[..., :1, :]], -2)


_SCAN, _STEP, _CONV, _CSTEP = "ssm_scan-base", "ssm_step-base", "causal_conv1d-base", "causal_conv1d_step-base"
_ATT, _SWA = "bmojo_attention-three_sources_gqa4", "bmojo_attention-swa_gqa2_ragged"

# fmt: off
BAD_CASES: tuple[BadCase, ...] = (
    BadCase("ssm_scan", "dt_shorter", _SCAN, "dt", _set(1, lambda t: t[:, :-1])),
    BadCase("ssm_scan", "groups_not_dividing_heads", _SCAN, "B", _set_all((3, 4), _extra_group)),
    BadCase("ssm_scan", "A_other_dtype", _SCAN, "A", _set(2, _other_dtype)),
    BadCase("ssm_scan", "initial_state_shape", _SCAN, "initial_state", _set(6, lambda t: t[..., :-1])),
    BadCase("ssm_scan", "x_integer", _SCAN, "x", _set(0, lambda t: t.round().to(torch.int32))),
    BadCase("ssm_scan", "chunk_size_0", _SCAN, "chunk_size", _kw(chunk_size=0)),
    BadCase("ssm_scan", "x_empty_sequence", _SCAN, "x", _set_all((0, 1, 3, 4), lambda t: t[:, :0])),
    BadCase("ssm_step", "state_shape", _STEP, "state", _set(0, lambda t: t[..., :-1])),
    BadCase("ssm_step", "D_shape", _STEP, "D", _set(6, lambda t: t[:-1])),
    BadCase("causal_conv1d", "weight_channels", _CONV, "weight", _set(1, lambda t: t[:-1])),
    BadCase("causal_conv1d", "activation_unknown", _CONV, "activation", _set(4, lambda a: "relu")),
    BadCase("causal_conv1d", "initial_state_width", _CONV, "state", _set(3, lambda t: t[:, :-1])),
    BadCase("causal_conv1d_step", "state_width", _CSTEP, "state", _set(1, lambda t: t[:, :-1])),
    BadCase("causal_conv1d_step", "bias_other_dtype", _CSTEP, "bias", _set(3, _other_dtype)),
    BadCase("bmojo_attention", "window_0", _ATT, "window", _kw(window=0)),
    BadCase("bmojo_attention", "fading_offset_gt_window", _ATT, "fading_offset", _kw(fading_offset=5)),
    BadCase("bmojo_attention", "fading_offset_negative", _ATT, "fading_offset", _kw(fading_offset=-1)),
    BadCase("bmojo_attention", "block_size_0", _ATT, "block_size", _kw(block_size=0)),
    BadCase("bmojo_attention", "kv_heads_not_dividing", _SWA, "k", _set_all((1, 2), _extra_group)),
    BadCase("bmojo_attention", "fewer_keys_than_queries", _SWA, "k", _set_all((1, 2), lambda t: t[:, 1:])),
    BadCase("bmojo_attention", "head_size_mismatch", _SWA, "k", _set_all((1, 2), lambda t: t[..., :-1])),
    BadCase("bmojo_attention", "k_other_dtype", _SWA, "k", _set(1, _other_dtype)),
    BadCase("bmojo_attention", "vf_missing", _ATT, "vf", _set(4, lambda t: None)),
    BadCase("bmojo_attention", "eidetic_partial", _ATT, "ek/ev/epos", _set(6, lambda t: None)),
    BadCase("bmojo_attention", "snapshot_count", _ATT, "ek", _set_all((5, 6, 7), lambda t: t[:, :-1])),
    BadCase("bmojo_attention", "epos_floating", _ATT, "epos", _set(7, lambda t: t.to(torch.float32))),
    BadCase("bmojo_attention", "eidetic_chunk_missing", _ATT, "eidetic_chunk", _kw(eidetic_chunk=None)),
    BadCase("innovation_scores", "k_pred_shape", "innovation_scores-base", "k_pred", _set(1, lambda t: t[:, :-1])),
    BadCase("eidetic_select", "eviction_unknown", "eidetic_select-base_ties", "eviction", _kw(eviction="random")),
    BadCase("eidetic_select", "per_chunk_over_chunk", "eidetic_select-base_ties", "per_chunk", _kw(per_chunk=5)),
    BadCase("eidetic_select", "mem_pos_floating", "eidetic_select-base_ties", "mem_pos",
            _set(1, lambda t: t.to(torch.float32))),
    BadCase("eidetic_select", "pending_length", "eidetic_select-mid_chunk", "pending", _set(3, lambda t: t[:, :-1])),
    BadCase("rmsnorm", "weight_size", "rmsnorm-base", "weight", _set(1, lambda t: t[:-1])),
    BadCase("rmsnorm", "eps_0", "rmsnorm-base", "eps", _set(2, lambda e: 0.0)),
    BadCase("gated_rmsnorm", "z_shape", "gated_rmsnorm-base", "z", _set(1, lambda t: t[..., :-1])),
    BadCase("gated_rmsnorm", "group_not_dividing", "gated_rmsnorm-base", "group_size", _set(4, lambda g: 5)),
)
# fmt: on
