"""``ssm_scan`` (chunked SSD) and ``ssm_step`` (one decode step).

Same contract as ``bmojo.ops.ssm_scan.reference``; the checks are core's. ``ssm_scan`` has a
Triton backward (``bwd.py``, through ``SsmScanFn``); ``ssm_step`` is forward only and registered
with ``differentiable=False`` (its gradients recompute core's reference).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import triton
from bmojo.argcheck import TORCH, check_int, check_ssm_scan_args, fail

from bmojo_triton.ops._guards import first_order_only
from bmojo_triton.ops._triton_utils import (
    TileTable,
    acc_dtype,
    check_grid_axis,
    check_launch,
    gpu_path,
    in_layout,
    like,
    needs_idx64,
    on_device,
    pow2,
    refused_as,
    smaller_config,
    updated_in_place,
)
from bmojo_triton.ops.ssm_scan.bwd import _ssd_bwd_chunk_kernel, _ssd_bwd_kernel, _ssd_bwd_state_kernel
from bmojo_triton.ops.ssm_scan.fwd import _ssd_chunk_out_kernel, _ssd_fwd_kernel
from bmojo_triton.ops.ssm_scan.step import _ssm_step_kernel


@dataclass(frozen=True)
class ScanTiles:
    """One scan kernel's launch: ``block_l`` tokens per chunk, ``block_p`` head-dim rows per
    program (None: all of P, padded to a power of two), ``num_warps``, ``num_stages``.

    The backward's chunk must be the chunk of the forward that saved its states, so ``bwd`` entries
    leave ``block_l`` None (its chunk comes from ``fwd_train``); the backward's ``block_p`` None
    is one program per head holding all P rows, a number splits P over programs whose partial
    dB, dC, d(dt), dA, dD the launcher sums (see ``bwd.py``). ``parallel_out`` (``fwd`` and
    ``fwd_train`` only): the sequential pass only carries and stores the chunk states, and a
    chunk-parallel kernel computes y from them (see ``fwd.py``); False: y in the sequential pass.
    ``parallel_grads`` (``bwd`` only), its mirror: the reverse pass only carries the state gradient
    and stores it per chunk, and a chunk-parallel kernel computes the input gradients (see
    ``bwd.py``); False: the gradients in the reverse pass. ``block_n`` (None: all of N) splits the
    state's N columns over programs in the one sequential pass of those options — the state pass
    of ``parallel_out``, the state-gradient pass of ``parallel_grads`` — whose columns are
    independent; it needs that entry's option (the passes that also compute y or the gradients
    sum over N). ``recompute`` (``fwd_train`` only): the training forward stores no chunk states
    and runs as an inference call does (at the ``fwd`` entry); the backward first recomputes the
    states with one state pass at this entry's chunk and tiles (flash-linear-attention's default)
    — ``b·H·⌈T/L⌉·P·N`` float32 values per call are then not kept from forward to backward."""

    block_l: int | None = 64
    block_p: int | None = None
    num_warps: int = 4
    num_stages: int = 3
    parallel_out: bool = False
    parallel_grads: bool = False
    block_n: int | None = None
    recompute: bool = False

    def smaller(self) -> ScanTiles | None:
        """The next rung down when the GPU refuses this config (``TileTable.fitting``; the
        launchers pass it with ``block_p`` resolved): ``num_stages`` down to 2, then ``block_p``,
        ``block_l`` and ``block_n`` (where set) halved down to 16, then ``num_stages`` 1; None
        below that. The backward's chunk is not its own (``block_l`` None), so its walk ends at
        16 P rows and one stage."""
        return smaller_config(self, ("block_p", "block_l", "block_n"))

    def __post_init__(self):
        blocks = dict(block_l=self.block_l, block_p=self.block_p, block_n=self.block_n)
        check_launch("ScanTiles", blocks, self.num_warps, self.num_stages)
        for name in ("parallel_out", "parallel_grads", "recompute"):
            if not isinstance(getattr(self, name), bool):
                fail(f"ScanTiles.{name}", "a bool", repr(getattr(self, name)))


#: Launch configs of the scan: ``fwd`` (inference: no states saved), ``fwd_train`` (the forward
#: of a call that needs gradients: it stores the state entering each ``block_l`` chunk) and ``bwd``
#: (reverse chunk walk, chunk = ``fwd_train``'s). GPU keys are (P block, N block) — the state a
#: program holds is P × N — with 0 matching anything. None is timed-tuned. Inference: 32-token
#: chunks and 16 P rows, the shape the static report (``python -m bmojo_triton.aot --report``)
#: found spilling on neither sm_80 nor sm_90 at P = 64, N = 128 (the first choice, 64 × 32,
#: spilled 456 B/thread on sm_90 and fell into ptxas's 32-register mode with 6.4 KB of stack on
#: sm_80). Training: 32-token chunks, all of P per backward program, 8 backward warps, the
#: sequential backward — these spill on both (backward 1136 B/thread sm_90, 1976 sm_80); 16-token
#: chunks with 32-row P tiles and 8 warps do not, with either backward walk (``parallel_grads``),
#: but double the saved states, so the choice waits for GPU timings. ``recompute`` is on (GPU and
#: interpreter): the training forward keeps no states and the backward recomputes them, as
#: flash-linear-attention's and Mamba-2's chunked scans do — kept, they are 8× a bf16 x at L = 32
#: (the ``ssm`` benchmark's ``[recompute=False]`` row times the other choice). Tune with ``python -m benchmarks.triton
#: --sections tune`` and paste the entries it prints here. The interpreter uses 16-token chunks
#: and 16 P rows.
TILES = TileTable(
    "ssm_scan",
    ("block_p", "block_n"),
    gpu={
        "fwd": {(0, 0): ScanTiles(block_l=32, block_p=16)},
        "fwd_train": {(0, 0): ScanTiles(block_l=32, block_p=None, recompute=True)},
        "bwd": {(0, 0): ScanTiles(block_l=None, block_p=None, num_warps=8)},
    },
    interpreter={
        "fwd": ScanTiles(block_l=16, block_p=16),
        "fwd_train": ScanTiles(block_l=16, block_p=None, recompute=True),
        "bwd": ScanTiles(block_l=None, block_p=None),
    },
    config_type=ScanTiles,
)


def _scan_tiles(kernel: str, x: torch.Tensor, N: int) -> ScanTiles:
    P = x.shape[-1]
    cfg = TILES.get(kernel, (pow2(P), pow2(N)), x.device)
    if kernel == "bwd" and cfg.block_l is not None:
        fail("ssm_scan tiles bwd.block_l", "None (the chunk is fwd_train's)", cfg.block_l)
    if kernel == "bwd" and cfg.parallel_out:
        fail("ssm_scan tiles bwd.parallel_out", "False (a forward option)", cfg.parallel_out)
    if kernel != "bwd" and cfg.parallel_grads:
        fail(f"ssm_scan tiles {kernel}.parallel_grads", "False (a backward option)", cfg.parallel_grads)
    if kernel != "bwd" and cfg.block_l is None:
        fail(f"ssm_scan tiles {kernel}.block_l", "a power of two >= 16", None)
    if kernel != "fwd_train" and cfg.recompute:
        fail(f"ssm_scan tiles {kernel}.recompute", "False (a training-forward option)", cfg.recompute)
    option = "parallel_grads" if kernel == "bwd" else "parallel_out"
    if cfg.block_n is not None and not getattr(cfg, option):
        fail(f"ssm_scan tiles {kernel}.block_n", f"None without {option} (only its state pass splits N)", cfg.block_n)
    return cfg


#: ``recompute_states``' process-wide setting (None: each ``fwd_train`` entry's ``recompute``).
_RECOMPUTE: list[bool | None] = [None]


@contextlib.contextmanager
def recompute_states(enabled: bool = True):
    """While the block runs, training calls of ``ssm_scan`` keep no chunk states from forward to
    backward (``enabled=False``: they keep them) whatever ``fwd_train.recompute`` says; the tiles
    stay the table's. A process-wide setting, not a context variable, so that autograd's CUDA
    device thread and a ``torch.utils.checkpoint`` re-run of the forward see the same choice as
    the forward did: wrap the whole training step (forward and backward) in it. Under core's
    custom-op path (``torch.compile``) the forward saves only the inputs anyway and its explicit
    backward (``ssm_scan_backward``) always recomputes the states: this setting does not apply."""
    if not isinstance(enabled, bool):
        fail("recompute_states enabled", "a bool", repr(enabled))
    previous, _RECOMPUTE[0] = _RECOMPUTE[0], enabled
    try:
        yield
    finally:
        _RECOMPUTE[0] = previous


def chunk_parallel_tiles(x: torch.Tensor, N: int, block_n: int | None = None) -> dict[str, ScanTiles]:
    """The configs in force for ``x`` (state width ``N``) with every chunk-parallel option on —
    y by the chunk-output kernel (``parallel_out``), the gradients by the chunk-gradient kernel
    (``parallel_grads``), both sequential passes split over ``block_n`` columns — the three-phase
    layout of Mamba-2's and flash-linear-attention's chunked kernels. For ``TILES.override(**…)``
    (the benchmark, the static report); the library itself never overrides."""
    return dict(
        fwd=replace(_scan_tiles("fwd", x, N), parallel_out=True, block_n=block_n),
        fwd_train=replace(_scan_tiles("fwd_train", x, N), parallel_out=True, block_n=block_n),
        bwd=replace(_scan_tiles("bwd", x, N), parallel_grads=True, block_n=block_n),
    )


def _tile(n: int, block: int | None) -> int:
    """A tile edge over n: all of it (padded to a power of two) when ``block`` is None."""
    return pow2(n) if block is None else min(pow2(n), block)


def _launched(cfg: ScanTiles, bp: int, bn: int) -> ScanTiles:
    """cfg with the P tile (and the N tile, where set) it launches with: the config the fit
    ladder steps down from (``refused_as``)."""
    return replace(cfg, block_p=bp, block_n=bn if cfg.block_n is not None else None)


def _scan_precision(dtype: torch.dtype, gpu: bool) -> str:
    """The scan's matmuls take float32 operands for every input dtype: TF32 tensor cores for
    bfloat16 inputs (TF32's 10-bit mantissa is finer than bf16's 7), full IEEE float32 otherwise
    (float16 has as many mantissa bits as TF32, so TF32 would lose to it)."""
    return "tf32" if (gpu and dtype == torch.bfloat16) else "ieee"


def _fwd(x, dt, A, B, C, D, h0, cfg: ScanTiles, kernel: str, *, save_states: bool, output: bool = True):
    """Launch the forward at ``cfg``, the table's ``kernel`` entry ("fwd" or "fwd_train", named
    when the GPU refuses it): (y, final state, states); with ``save_states`` the states are
    the state entering every ``cfg.block_l`` chunk (the backward must use that chunk), else None.
    ``output=False`` (with ``save_states``): only the state pass, for a backward that recomputes
    the states (y is None)."""
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    if cfg.parallel_out and output:  # grid (chunks, batch × heads, P tiles)
        check_grid_axis("x", "batch × heads (with ScanTiles.parallel_out)", b * H)
    y = like(x) if output else None  # y has x's strides
    final = torch.empty(b, H, P, N, dtype=x.dtype, device=x.device)
    gpu = gpu_path(x.device)
    bl = cfg.block_l
    bp = _tile(P, cfg.block_p)
    cd = TORCH.compute_dtype(x.dtype)
    states = None
    n_chunks = triton.cdiv(T, bl)
    state_pass = cfg.parallel_out or not output  # the sequential pass computes no y
    if save_states or state_pass:
        states = torch.empty(b, H, n_chunks, P, N, dtype=cd, device=x.device)
    consts = dict(BLOCK_L=bl, BLOCK_P=bp, BLOCK_N=pow2(N), ACC=acc_dtype(cd), DOT_PREC=_scan_precision(x.dtype, gpu))
    idx64 = needs_idx64(x, dt, B, C, h0, y, final, states)
    launch = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, IDX64=idx64)
    # strides and sizes, in the order both kernels take them
    sizes = (*x.stride()[:3], *dt.stride()[:2], *B.stride()[:3], T, H, P, N, H // G)
    bn = _tile(N, cfg.block_n)  # < N only with parallel_out (no y in this pass)
    with on_device(x), refused_as(TILES, kernel, _launched(cfg, bp, bn)):
        # N = 0: one program per P tile still runs, y = D·x (an empty N axis would leave y unwritten)
        _ssd_fwd_kernel[(b * H, triton.cdiv(P, bp), max(1, triton.cdiv(N, bn)))](
            x,
            dt,
            A,
            B,
            C,
            D if D is not None else A,
            h0 if h0 is not None else final,
            y if y is not None else final,
            final,
            states if states is not None else final,
            *sizes,
            HAS_D=D is not None,
            HAS_H0=h0 is not None,
            SAVE_STATES=states is not None,
            OUTPUT=not state_pass,
            **{**consts, "BLOCK_N": bn},
            **launch,
        )
        if cfg.parallel_out and output and n_chunks > 0:
            _ssd_chunk_out_kernel[(n_chunks, b * H, triton.cdiv(P, bp))](
                x,
                dt,
                A,
                B,
                C,
                D if D is not None else A,
                states,
                y,
                *sizes,
                HAS_D=D is not None,
                **consts,
                **launch,
            )
    return y, final, (states if save_states else None)


def _bwd_tiles(x: torch.Tensor, N: int) -> ScanTiles:
    """The backward's config, its grid checked; the forward of a call that needs gradients
    resolves it too, so a bad ``bwd`` entry is refused before any launch."""
    cfg = _scan_tiles("bwd", x, N)
    if cfg.parallel_grads:  # grid (chunks, batch × heads, P tiles)
        check_grid_axis("x", "batch × heads (with ScanTiles.parallel_grads)", x.shape[0] * x.shape[2])
    return cfg


def _bwd(dy, dht, x, dt, A, B, C, D, h0, states, bl, cfg: ScanTiles):
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    gpu = gpu_path(x.device)
    cd = TORCH.compute_dtype(x.dtype)
    dy = in_layout(dy, x)  # the kernels read dy with x's strides
    dht = dht.contiguous() if dht is not None else None
    bp = _tile(P, cfg.block_p)
    n_p = triton.cdiv(P, bp)  # head-dim tiles: partial sums of every gradient that sums over P
    n_chunks = triton.cdiv(T, bl)
    # dA, dD partials: one per P tile, and per chunk too when the chunks run in parallel
    n_slots = n_p * (n_chunks if cfg.parallel_grads else 1)
    dx = like(x)
    ddt_p = torch.empty(b, T, H, n_p, dtype=cd, device=x.device)
    db_h = torch.empty(b, T, H * n_p, N, dtype=cd, device=x.device)
    dc_h = torch.empty(b, T, H * n_p, N, dtype=cd, device=x.device)
    da_b = torch.empty(b, H, n_slots, dtype=cd, device=x.device)
    dd_b = torch.empty(b, H, n_slots, dtype=cd, device=x.device)
    dh0 = torch.empty(b, H, P, N, dtype=x.dtype, device=x.device)
    sizes = (*x.stride()[:3], *dt.stride()[:2], *B.stride()[:3], T, H, P, N, H // G)
    consts = dict(BLOCK_L=bl, BLOCK_P=bp, BLOCK_N=pow2(N), ACC=acc_dtype(cd), DOT_PREC=_scan_precision(x.dtype, gpu))
    idx64 = needs_idx64(x, dt, B, C, h0, dy, dht, states, dx, ddt_p, db_h, dc_h, da_b, dd_b, dh0)
    launch = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, IDX64=idx64)
    d_arg = D if D is not None else A
    grads = (dx, ddt_p, db_h, dc_h, da_b, dd_b)
    bn = _tile(N, cfg.block_n)
    with on_device(x), refused_as(TILES, "bwd", _launched(cfg, bp, bn)):
        if not cfg.parallel_grads:
            _ssd_bwd_kernel[(b * H, n_p)](
                x, dt, A, B, C, d_arg, dy, dht if dht is not None else dy, states, *grads, dh0, *sizes,
                HAS_D=D is not None, HAS_DHT=dht is not None, **consts, **launch,
            )  # fmt: skip
        else:
            dstates = torch.empty_like(states)  # the gradient of the state leaving every chunk
            _ssd_bwd_state_kernel[(b * H, n_p, max(1, triton.cdiv(N, bn)))](
                dt, A, C, dy, dht if dht is not None else dy, dstates, dh0, *sizes,
                HAS_DHT=dht is not None, **{**consts, "BLOCK_N": bn}, **launch,
            )  # fmt: skip
            _ssd_bwd_chunk_kernel[(n_chunks, b * H, n_p)](
                x, dt, A, B, C, d_arg, dy, states, dstates, *grads, *sizes,
                HAS_D=D is not None, **consts, **launch,
            )  # fmt: skip
    # dB, dC: the heads of a group (and a head's P tiles) share B and C
    dB = db_h.view(b, T, G, (H // G) * n_p, N).sum(3).to(B.dtype)
    dC = dc_h.view(b, T, G, (H // G) * n_p, N).sum(3).to(C.dtype)
    ddt = (ddt_p.squeeze(3) if n_p == 1 else ddt_p.sum(3)).to(dt.dtype)  # n_p = 0 when P = 0
    dA = da_b.sum((0, 2)).to(A.dtype)
    dD = dd_b.sum((0, 2)).to(D.dtype) if D is not None else None
    return dx, ddt, dA, dB, dC, dD, (dh0 if h0 is not None else None)


def _fwd_fitted(x, dt, A, B, C, D, h0, kernel: str, **kw):
    """``_fwd`` at the table's ``kernel`` entry, stepped down where the GPU refuses it
    (``TILES.fitting``): (y, final, states, the config launched)."""

    def run():
        cfg = _scan_tiles(kernel, x, B.shape[-1])
        return (*_fwd(x, dt, A, B, C, D, h0, cfg, kernel, **kw), cfg)

    return TILES.fitting(x.device, run)


def _inference(x, dt, A, B, C, D, h0):
    """The forward of a call that keeps no states: (y, final state), at the ``fwd`` entry."""
    y, final, _, _ = _fwd_fitted(x, dt, A, B, C, D, h0, "fwd", save_states=False)
    return y, final


def _grads(dy, dht, x, dt, A, B, C, D, h0, states=None, chunk=None):
    """The backward, at the configs in force. ``states``: the chunk-entry states the forward kept,
    at its ``chunk``; None: recomputed here, one state pass at the ``fwd_train`` entry's tiles.
    The state pass and the backward each fit the GPU on their own (``TILES.fitting``): a refused
    backward does not run the state pass again."""
    if dy is None:
        dy = torch.zeros_like(x)
    if states is None:
        _, _, states, train = _fwd_fitted(x, dt, A, B, C, D, h0, "fwd_train", save_states=True, output=False)
        chunk = train.block_l
    return TILES.fitting(
        x.device, lambda: _bwd(dy, dht, x, dt, A, B, C, D, h0, states, chunk, _bwd_tiles(x, B.shape[-1]))
    )


class SsmScanFn(torch.autograd.Function):
    """Saves the inputs and the chunk-entry states (none with ``fwd_train.recompute``: the backward
    recomputes them); the backward is ``bwd.py``'s kernels. The configs are resolved in the
    forward too, so a bad entry is refused before any launch, and the backward runs under the
    override in force at its forward (on CUDA autograd runs backward on its own device thread,
    where the caller's ``TILES.override`` is not set)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0):
        train = _scan_tiles("fwd_train", x, B.shape[-1])
        _bwd_tiles(x, B.shape[-1])  # a bad bwd entry is refused before any launch
        ctx.tiles = TILES.active()
        recompute = _RECOMPUTE[0]  # recompute_states() in force, else the table's choice
        if recompute is None:
            recompute = train.recompute
        if recompute:  # an inference forward; the backward recomputes the states
            y, final = _inference(x, dt, A, B, C, D, h0)
            states = ctx.chunk = None
        else:  # the chunk the GPU took (a smaller one if it refused the table's) is the backward's
            y, final, states, train = _fwd_fitted(x, dt, A, B, C, D, h0, "fwd_train", save_states=True)
            ctx.chunk = train.block_l
        ctx.save_for_backward(x, dt, A, B, C, D, h0, states)
        return y, final

    @staticmethod
    def backward(ctx, dy, dht):
        x, dt, A, B, C, D, h0, states = ctx.saved_tensors

        def grads_():
            with TILES.applied(ctx.tiles):
                return _grads(dy, dht, x, dt, A, B, C, D, h0, states, ctx.chunk)

        grads = first_order_only("ssm_scan", grads_, x, dt, A, B, C, D, h0, dy, dht)
        return tuple(g if n else None for g, n in zip(grads, ctx.needs_input_grad))


def _prepare(x, dt, A, B, C, D, initial_state, chunk_size) -> list:
    check_ssm_scan_args(TORCH, x, dt, A, B, C, D, initial_state, step=False)
    check_int("chunk_size", chunk_size, minimum=1)
    return [t.contiguous() if t is not None else None for t in (x, dt, A, B, C, D, initial_state)]


def ssm_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.ssm_scan.reference.ssm_scan`` (``chunk_size`` is checked; the
    kernel uses its own chunk tile). Differentiable: the backward is a Triton kernel."""
    args = _prepare(x, dt, A, B, C, D, initial_state, chunk_size)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return SsmScanFn.apply(*args)
    return _inference(*args)


def ssm_scan_backward(grads, needs, x, dt, A, B, C, D=None, initial_state=None, *, chunk_size=64) -> list:
    """The explicit backward core's custom op calls (``OpImpl.backward``; torch.compile): the
    states come from one state pass (as with ``recompute``), not from running the forward again.
    One gradient per tensor argument."""
    args = _prepare(x, dt, A, B, C, D, initial_state, chunk_size)
    return list(_grads(*grads, *args))


def _step(state, x, dt, A, B, C, D, out_state):
    b, H, P = x.shape
    G, N = B.shape[-2:]
    y = torch.empty_like(x)
    bp = min(pow2(P, 1), 64)
    if x.numel():
        with on_device(x):
            _ssm_step_kernel[(b * H, triton.cdiv(P, bp))](
                state,
                x,
                dt,
                A.contiguous(),
                B,
                C,
                D.contiguous() if D is not None else A,
                y,
                out_state,
                H,
                P,
                N,
                H // G,
                G,
                HAS_D=D is not None,
                BLOCK_P=bp,
                BLOCK_N=pow2(N, 1),
                ACC=acc_dtype(TORCH.compute_dtype(x.dtype)),
                IDX64=needs_idx64(state, x, dt, B, C, y, out_state),
            )
    return y


def ssm_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``bmojo.ops.ssm_scan.reference.ssm_step``; the new state is a new tensor
    (what the registered op must do: custom ops may not mutate their inputs)."""
    check_ssm_scan_args(TORCH, x, dt, A, B, C, D, state, step=True)
    state, x, dt, B, C = (t.contiguous() for t in (state, x, dt, B, C))
    new_state = torch.empty_like(state, dtype=x.dtype)
    return _step(state, x, dt, A, B, C, D, new_state), new_state


def ssm_step_(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """``ssm_step`` updating ``state`` in place (a preallocated decode cache); returns y.

    Not registered with the backend (ops return new tensors); for callers that manage their own
    cache. ``state`` must be contiguous and of x's dtype; no argument may require grad (no autograd
    here) and ``state``'s version counter is bumped, as torch's in-place ops do.
    """
    check_ssm_scan_args(TORCH, x, dt, A, B, C, D, state, step=True)
    if not state.is_contiguous() or state.dtype != x.dtype:
        fail(
            "state",
            f"a contiguous {x.dtype} tensor (updated in place)",
            f"contiguous={state.is_contiguous()}, dtype={state.dtype}",
        )
    with updated_in_place(state, x=x, dt=dt, A=A, B=B, C=C, D=D):
        x, dt, B, C = (t.contiguous() for t in (x, dt, B, C))
        return _step(state, x, dt, A, B, C, D, state)
