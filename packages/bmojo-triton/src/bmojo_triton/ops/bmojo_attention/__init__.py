"""``bmojo_attention``: three-source attention in one fused Triton pass, forward and backward.

Same contract as :func:`bmojo.ops.bmojo_attention.reference.bmojo_attention` (shapes, dtypes,
``fading_offset`` δ, eidetic snapshots, keys "ending at the last query"); ``block_size`` is accepted
and ignored (results never depended on it; the kernels pick their own tiles). Files:

* ``fwd.py`` — the forward kernel: online softmax over raw window, fading window and eidetic
  snapshot, returns o and the log-sum-exp;
* ``bwd.py`` — the Δ kernel, dQ and per-source dK/dV kernels, recomputing probabilities from
  the lse (two
  variants: "split", a dQ kernel beside the dK/dV kernels, the default; "atomic", dQ added by the
  dK/dV kernels with atomics, opt-in — see ``AttnTiles.dq``);
* this file — argument checks (core's), the launchers, the ``autograd.Function`` (eager autograd)
  and ``bmojo_attention_backward``, the explicit backward of core's custom op (torch.compile).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch
import triton
from bmojo.argcheck import TORCH, check_bmojo_attention_args, check_int, fail
from bmojo.arith import resolve_fading_offset

from bmojo_triton.ops._guards import first_order_only
from bmojo_triton.ops._triton_utils import (
    MIN_DOT,
    TileTable,
    acc_dtype,
    check_grid_axis,
    check_launch,
    dot_precision,
    gpu_path,
    like,
    needs_idx64,
    on_device,
    pow2,
    refused_as,
    smaller_config,
    upcast,
)
from bmojo_triton.ops.bmojo_attention.bwd import (
    _attn_bwd_delta_kernel,
    _attn_bwd_dkdv_band_kernel,
    _attn_bwd_dkdv_eidetic_kernel,
    _attn_bwd_dq_kernel,
)
from bmojo_triton.ops.bmojo_attention.fwd import _attn_fwd_kernel

#: How the backward gets dQ (``AttnTiles.dq``; only the ``bwd_dkdv`` config chooses): "split" —
#: a dQ kernel per query tile beside the dK/dV kernels (7 matmuls per visible tile pair,
#: deterministic); "atomic" — the dK/dV kernels also add scale·dS·K into a float32 (float64 for
#: float64 inputs) buffer with atomic adds and no dQ kernel runs (5 matmuls, float add order not
#: fixed on a GPU). Opt-in until a GPU run shows it pays.
DQ_VARIANTS = ("split", "atomic")
#: The kernels with the ``AttnTiles.transposed`` option (their TRANSPOSED constexpr)
DKDV_KERNELS = ("bwd_dkdv", "bwd_dkdv_eidetic")


@dataclass(frozen=True)
class AttnTiles:
    """One attention kernel's launch: ``BLOCK_M`` query rows × ``BLOCK_N`` key rows per tile
    (powers of two >= 16), ``num_warps`` and ``num_stages`` (Triton's defaults are 4 and 3).
    ``dq`` (one of ``DQ_VARIANTS``) is the backward's dQ variant; only the ``bwd_dkdv`` config
    may say other than "split" (the eidetic dK/dV kernel follows it). ``interior``: walk each band
    as masked edge tiles plus unmasked interior tiles (True), or every tile masked in one loop
    (False: less code, fewer registers — which is faster is the GPU's call; the eidetic dK/dV
    kernel always masks). ``transposed`` (the dK/dV kernels only, each by its own config): compute
    each step key rows × query rows, Sᵀ = K·Qᵀ with Q loaded transposed, as the Triton tutorial's
    and FlexAttention's backward do, so no register tile is transposed; False: query × key rows,
    Pᵀ and dSᵀ transposed in registers. Static figures differ by tile shape either way (see
    docs/backends/triton.md); the GPU decides."""

    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    dq: str = "split"
    interior: bool = True
    transposed: bool = False

    def __post_init__(self):
        check_launch("AttnTiles", dict(block_m=self.block_m, block_n=self.block_n), self.num_warps, self.num_stages)
        if self.dq not in DQ_VARIANTS:
            fail("AttnTiles.dq", f"one of {DQ_VARIANTS}", repr(self.dq))
        if not isinstance(self.interior, bool):
            fail("AttnTiles.interior", "a bool", repr(self.interior))
        if not isinstance(self.transposed, bool):
            fail("AttnTiles.transposed", "a bool", repr(self.transposed))

    def smaller(self) -> AttnTiles | None:
        """The next rung down when the GPU refuses this config (``TileTable.fitting``):
        ``num_stages`` down to 2, then ``block_n`` and then ``block_m`` halved down to 16, then
        ``num_stages`` 1; None below that. Stages go first because they change no tile shape."""
        return smaller_config(self, ("block_n", "block_m"))

    def launch(self) -> dict:
        """Launch kwargs of the fwd, dQ and band dK/dV kernels."""
        return dict(
            BLOCK_M=self.block_m,
            BLOCK_N=self.block_n,
            num_warps=self.num_warps,
            num_stages=self.num_stages,
            SPLIT_INTERIOR=self.interior,
        )


#: Launch configs of the four attention kernels: ``fwd``; the backward's ``bwd_dq``, ``bwd_dkdv``
#: (a banded source: raw keys, and fading keys shifted by δ) and ``bwd_dkdv_eidetic``. GPU keys are
#: (head-dim block, dtype itemsize in bytes); 0 matches anything, head-dim blocks above 128 use
#: the 128 entries. These are untuned first choices (64×64; 32 key rows at head size 128, which
#: keeps q, k, v and the accumulator in registers); tune with ``python -m benchmarks.triton
#: --sections tune`` and paste the entries it prints here. Whatever the table says, T <= 16
#: (decode) uses 16 query rows. The interpreter uses the smallest legal tiles (fast in numpy, and
#: small tests cross tile edges).
TILES = TileTable(
    "bmojo_attention",
    ("block_d", "itemsize"),
    gpu={
        "fwd": {(0, 0): AttnTiles(64, 64), (128, 0): AttnTiles(64, 32)},
        "bwd_dq": {(0, 0): AttnTiles(64, 64), (128, 0): AttnTiles(64, 32)},
        "bwd_dkdv": {(0, 0): AttnTiles(64, 64), (128, 0): AttnTiles(64, 32)},
        "bwd_dkdv_eidetic": {(0, 0): AttnTiles(64, 64), (128, 0): AttnTiles(64, 32)},
    },
    interpreter={k: AttnTiles(16, 16) for k in ("fwd", "bwd_dq", "bwd_dkdv", "bwd_dkdv_eidetic")},
    config_type=AttnTiles,
)


def _config(kernel: str, q: torch.Tensor) -> AttnTiles:
    """``kernel``'s config for q (``dq`` other than "split" is refused except on ``bwd_dkdv``)."""
    cfg = TILES.get(kernel, (min(pow2(q.shape[-1]), 128), q.element_size()), q.device)
    if kernel != "bwd_dkdv" and cfg.dq != "split":
        fail(f"bmojo_attention tiles {kernel}.dq", "'split' (only bwd_dkdv chooses the dQ variant)", repr(cfg.dq))
    if kernel not in DKDV_KERNELS and cfg.transposed:
        fail(f"bmojo_attention tiles {kernel}.transposed", f"False (only {DKDV_KERNELS} have the option)", "True")
    return cfg


def _tiles(kernel: str, q: torch.Tensor) -> tuple[dict, int, AttnTiles]:
    """Launch kwargs (BLOCK_M, BLOCK_N, num_warps, num_stages, and SPLIT_INTERIOR except for the
    eidetic dK/dV kernel) of ``kernel`` for q, BLOCK_D (the head dimension padded to a power of
    two >= 16; loads are masked), and the config as launched (T <= 16, decode: 16 query rows)."""
    cfg = _config(kernel, q)
    if q.shape[1] <= MIN_DOT:  # decode: 16 query rows, whatever the config says
        cfg = replace(cfg, block_m=MIN_DOT)
    return dict(_launch(cfg, kernel)), pow2(q.shape[-1]), cfg


@functools.lru_cache(maxsize=256)
def _launch(cfg: AttnTiles, kernel: str) -> dict:
    """cfg's launch kwargs for ``kernel`` (cached: configs are frozen); the dK/dV kernels also get
    TRANSPOSED; the eidetic one has no interior split."""
    launch = cfg.launch()
    if kernel in DKDV_KERNELS:
        launch["TRANSPOSED"] = cfg.transposed
    if kernel == "bwd_dkdv_eidetic":
        del launch["SPLIT_INTERIOR"]
    return launch


#: Query rows per program of the Δ kernel (memory-bound: one read of O and dO), on a GPU and
#: under the interpreter.
DELTA_ROWS = {"gpu": 64, "interpreter": 16}


def _dot_consts(q: torch.Tensor) -> dict:
    up = upcast(q.dtype, q.device)
    return dict(ACC=acc_dtype(q.dtype), DOT_PREC="ieee" if up else dot_precision(q.dtype), UPCAST=up)


def _strides(t: torch.Tensor | None, n: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * n


class _Meta:
    """The non-tensor arguments, resolved once."""

    def __init__(self, q, kf, ek, q_start, window, fading_window, eidetic_chunk, scale, fading_offset):
        self.q_start, self.window = q_start, window
        self.fading_window = fading_window
        self.delta = resolve_fading_offset(fading_offset, window)
        self.use_fading = kf is not None and fading_window > 0
        self.use_eidetic = ek is not None and ek.shape[2] > 0
        self.chunk = eidetic_chunk if self.use_eidetic else 1
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        # Passed to the kernels as a one-element tensor in the accumulator's dtype: Triton types a
        # Python float argument as float32 on a GPU, which would round the float64 scale (the CPU
        # interpreter keeps it exact, so only the GPU conformance run showed float64 failing).
        # torch.full is one fill kernel; torch.tensor([...], device=cuda) would copy from host
        # memory and synchronise the stream on every call.
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        self.scale_t = torch.full((1,), self.scale, dtype=acc, device=q.device)


def _walk_args(q, k, v, kf, vf, ek, ev, epos, lse, meta: _Meta):
    """The arguments the forward and the dQ kernel share for their walk over the three sources:
    (the source tensors, their strides, the sizes and scalars, the source flags). Sources a flag
    switches off are passed as placeholders (k, v, lse) with zero strides, never read."""
    T, H, Dh = q.shape[1], q.shape[2], q.shape[3]
    Tk, Hkv = k.shape[1], k.shape[2]
    Tf = kf.shape[1] if meta.use_fading else 0
    M = ek.shape[2] if meta.use_eidetic else 0
    f_src = (kf, vf) if meta.use_fading else (k, v)
    e_src = (ek, ev, epos) if meta.use_eidetic else (k, v, lse)
    strides = (
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *_strides(kf if meta.use_fading else None, 4),
        *_strides(vf if meta.use_fading else None, 4),
        *_strides(ek if meta.use_eidetic else None, 5),
        *_strides(ev if meta.use_eidetic else None, 5),
        *_strides(epos if meta.use_eidetic else None, 3),
    )
    sizes = (T, Tk, Tf, M, H, H // Hkv, Dh, meta.q_start, meta.window, meta.fading_window, meta.delta, meta.chunk)
    flags = dict(HAS_FADING=meta.use_fading, HAS_EIDETIC=meta.use_eidetic)
    return (q, k, v, *f_src, *e_src), strides, (*sizes, meta.scale_t), flags


def _fwd(q, k, v, kf, vf, ek, ev, epos, meta: _Meta):
    b, T, H, _ = q.shape
    o = torch.empty_like(q)
    lse = torch.empty(b, H, T, dtype=TORCH.compute_dtype(q.dtype), device=q.device)
    srcs, strides, sizes, flags = _walk_args(q, k, v, kf, vf, ek, ev, epos, lse, meta)

    def run():  # one launch, stepped down where the GPU refuses it (TILES.fitting)
        launch, bd, cfg = _tiles("fwd", q)
        with on_device(q), refused_as(TILES, "fwd", cfg):
            _attn_fwd_kernel[(triton.cdiv(T, launch["BLOCK_M"]), b * H)](
                *srcs, o, lse, *strides, *o.stride(), *lse.stride(), *sizes, **flags,
                BLOCK_D=bd, **launch, **_dot_consts(q), IDX64=needs_idx64(*srcs, o, lse),
            )  # fmt: skip

    TILES.fitting(q.device, run)
    return o, lse


def _bwd(do, dlse, q, k, v, kf, vf, ek, ev, epos, o, lse, meta: _Meta, needs):
    b, T, H, Dh = q.shape
    Hkv = k.shape[2]
    G = H // Hkv
    M = ek.shape[2] if meta.use_eidetic else 0
    do = do.contiguous()
    consts = _dot_consts(q)
    # Δ_i = dO_i·O_i − dlse_i (float32, or float64 for float64 inputs): a (b, H, T) vector
    dlt = like(lse)  # read with lse's strides
    rows = DELTA_ROWS["gpu" if gpu_path(q.device) else "interpreter"]
    with on_device(q):
        _attn_bwd_delta_kernel[(triton.cdiv(T, rows), b * H)](
            o,
            do,
            dlse if dlse is not None else lse,  # never read without dlse
            dlt,
            *o.stride(),
            *do.stride(),
            *(dlse.stride() if dlse is not None else lse.stride()),
            *dlt.stride(),
            T,
            H,
            Dh,
            HAS_DLSE=dlse is not None,
            BLOCK_M=rows,
            BLOCK_D=pow2(Dh),
            ACC=consts["ACC"],
            IDX64=needs_idx64(o, do, dlse, dlt),
        )
    bd = pow2(Dh)
    # "atomic": the dK/dV kernels add dQ into dq_acc (accumulator dtype), no dQ kernel; without a
    # wanted dq nothing is added (and, as in "split", only the sources whose gradients are wanted
    # or which feed dQ are walked). A step down the fit ladder keeps ``dq``.
    atomic = _config("bwd_dkdv", q).dq == "atomic"
    dq = dq_acc = None
    if atomic and needs[0]:
        dq_acc = torch.zeros(q.shape, dtype=lse.dtype, device=q.device)
    dq_args = (dq_acc, *dq_acc.stride()) if dq_acc is not None else (q, *q.stride())  # q: never read
    # each launch fits itself (TILES.fitting): a refused one runs again at a smaller config, the
    # kernels before it are not re-run (a refused launch adds nothing to dq_acc: no kernel ran)

    def dq_launch():
        launch, _, cfg = _tiles("bwd_dq", q)
        srcs, strides, sizes, flags = _walk_args(q, k, v, kf, vf, ek, ev, epos, lse, meta)
        with on_device(q), refused_as(TILES, "bwd_dq", cfg):
            _attn_bwd_dq_kernel[(triton.cdiv(T, launch["BLOCK_M"]), b * H)](
                *srcs, do, lse, dlt, dq, *strides, *do.stride(), *lse.stride(), *sizes, **flags,
                BLOCK_D=bd, **launch, **consts, IDX64=needs_idx64(*srcs, do, lse, dlt, dq),
            )  # fmt: skip

    def band(kk, vv, offset, width):
        dk, dv = like(kk), like(vv)

        def launch_band():
            launch, _, cfg = _tiles("bwd_dkdv", q)
            with on_device(q), refused_as(TILES, "bwd_dkdv", cfg):
                _attn_bwd_dkdv_band_kernel[(triton.cdiv(kk.shape[1], launch["BLOCK_N"]), b * Hkv)](
                    q, do, lse, dlt, kk, vv, dk, dv, dq_args[0],
                    *q.stride(), *do.stride(), *lse.stride(), *kk.stride(), *vv.stride(), *dq_args[1:],
                    T, kk.shape[1], Hkv, G, Dh, meta.q_start, offset, width, meta.scale_t,
                    BLOCK_D=bd, ATOMIC_DQ=dq_acc is not None, **launch, **consts,
                    IDX64=needs_idx64(q, do, lse, dlt, kk, vv, dk, dv, dq_acc),
                )  # fmt: skip

        TILES.fitting(q.device, launch_band)
        return dk, dv

    def eidetic_launch():
        S = ek.shape[1]
        launch, _, cfg = _tiles("bwd_dkdv_eidetic", q)
        with on_device(q), refused_as(TILES, "bwd_dkdv_eidetic", cfg):
            _attn_bwd_dkdv_eidetic_kernel[(triton.cdiv(M, launch["BLOCK_N"]), S, b * Hkv)](
                q, do, lse, dlt, ek, ev, epos, dek, dev, dq_args[0],
                *q.stride(), *do.stride(), *lse.stride(), *ek.stride(), *ev.stride(), *epos.stride(), *dq_args[1:],
                T, M, Hkv, G, Dh, meta.q_start, meta.window, meta.chunk, meta.scale_t,
                BLOCK_D=bd, ATOMIC_DQ=dq_acc is not None, **launch, **consts,
                IDX64=needs_idx64(q, do, lse, dlt, ek, ev, epos, dek, dev, dq_acc),
            )  # fmt: skip

    if not atomic and needs[0]:  # "split": the dQ kernel only when dq is wanted
        dq = like(q)
        TILES.fitting(q.device, dq_launch)
    dk = dv = dkf = dvf = dek = dev = None
    if needs[1] or needs[2] or dq_acc is not None:
        dk, dv = band(k, v, 0, meta.window)
    if kf is not None and (needs[3] or needs[4] or (dq_acc is not None and meta.use_fading)):
        if meta.use_fading:
            dkf, dvf = band(kf, vf, meta.delta, meta.fading_window)
        else:  # f = 0: the fading keys are not used
            dkf, dvf = torch.zeros_like(kf), torch.zeros_like(vf)
    if ek is not None and (needs[5] or needs[6] or (dq_acc is not None and meta.use_eidetic)):
        if meta.use_eidetic:
            dek, dev = like(ek), like(ev)
            TILES.fitting(q.device, eidetic_launch)
        else:  # M = 0 slots
            dek, dev = torch.zeros_like(ek), torch.zeros_like(ev)
    if dq_acc is not None:
        dq = dq_acc.to(q.dtype)  # the one cast
    return dq, dk, dv, dkf, dvf, dek, dev


class BMojoAttentionFn(torch.autograd.Function):
    """Saves the inputs, o and lse; the backward runs the Triton backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, kf, vf, ek, ev, epos, meta):
        o, lse = _fwd(q, k, v, kf, vf, ek, ev, epos, meta)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not zeros
        ctx.save_for_backward(q, k, v, kf, vf, ek, ev, epos, o, lse)
        ctx.meta = meta
        ctx.tiles = TILES.active()  # the backward launches with the override in force here
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, kf, vf, ek, ev, epos, o, lse = ctx.saved_tensors
        if do is None:
            do = torch.zeros_like(o)
        needs = ctx.needs_input_grad

        def grads_():
            with TILES.applied(ctx.tiles):
                return _bwd(do, dlse, q, k, v, kf, vf, ek, ev, epos, o, lse, ctx.meta, needs)

        grads = first_order_only("bmojo_attention", grads_, q, k, v, kf, vf, ek, ev, do, dlse)
        return (*(g if n else None for g, n in zip(grads, needs[:7])), None, None)


def _prepare(
    q, k, v, kf, vf, ek, ev, epos, *, q_start, window, fading_window, eidetic_chunk, scale, block_size,
    fading_offset, grads,
):  # fmt: skip
    """Checks the arguments (``grads``: for a call that needs gradients) and returns the tensors,
    contiguous, and the resolved non-tensor arguments; the forward and the explicit backward share it."""
    check_bmojo_attention_args(TORCH, q, k, v, kf, vf, ek, ev, epos, q_start, window, fading_window, eidetic_chunk)
    check_int("block_size", block_size, minimum=1)
    # the kernels' grids: (query or key tiles, batch × heads); the eidetic dK/dV kernel's (slot
    # tiles, snapshots, batch × heads) only runs in a backward
    check_grid_axis("q", "batch × heads", q.shape[0] * q.shape[2])
    meta = _Meta(q, kf, ek, q_start, window, fading_window, eidetic_chunk, scale, fading_offset)
    if meta.use_eidetic and grads:
        check_grid_axis("ek", "eidetic snapshots (in a call that needs gradients)", ek.shape[1])
    tensors = [t.contiguous() if t is not None else None for t in (q, k, v, kf, vf, ek, ev, epos)]
    return tensors, meta


def bmojo_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kf: torch.Tensor | None = None,
    vf: torch.Tensor | None = None,
    ek: torch.Tensor | None = None,
    ev: torch.Tensor | None = None,
    epos: torch.Tensor | None = None,
    *,
    q_start: int = 0,
    window: int,
    fading_window: int = 0,
    eidetic_chunk: int | None = None,
    scale: float | None = None,
    block_size: int = 64,
    fading_offset: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.bmojo_attention.reference.bmojo_attention``; one fused Triton
    pass (forward and backward). ``block_size`` is checked and otherwise unused."""
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, kf, vf, ek, ev))
    tensors, meta = _prepare(
        q, k, v, kf, vf, ek, ev, epos, q_start=q_start, window=window, fading_window=fading_window,
        eidetic_chunk=eidetic_chunk, scale=scale, block_size=block_size, fading_offset=fading_offset, grads=grads,
    )  # fmt: skip
    return BMojoAttentionFn.apply(*tensors, meta)


def bmojo_attention_backward(grads: list, needs: list, outputs: list, *tensors, **kwargs) -> list:
    """The explicit backward core's custom op calls (``OpImpl.backward``, with the forward's
    outputs o and lse kept by autograd: ``backward_outputs``): the same kernels as
    ``BMojoAttentionFn.backward``, without running the forward again. Core passes every argument
    of the op (the eight tensors positionally, the rest by keyword); one gradient per tensor
    argument comes back (None for ``epos``)."""
    tensors, meta = _prepare(*tensors, **kwargs, grads=True)
    o, lse = outputs
    do, dlse = grads
    res = _bwd(do, dlse, *tensors, o, lse, meta, list(needs[:7]))
    return [*(g if n else None for g, n in zip(res, needs[:7])), None]
