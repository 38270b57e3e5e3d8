"""``tune`` section: time a small grid of legal launch configs of the attention and scan kernels.

The library never autotunes (JIT time on conformance runs already hits timeouts): its configs are
data, ``TILES`` in ``bmojo_triton/ops/<op>/__init__.py``. This section picks, a human commits. Per
group (one kernel, one variant) it runs the default config first, then every (block) tile shape
at the default warps/stages, then the two best shapes with every (num_warps, num_stages) — each
config's output and gradients are compared with the default config's (core's bfloat16 tolerance
row); a config that disagrees is reported as wrong and not timed, one that fails to compile
(e.g. out of shared memory) as illegal. Groups share the section's time budget; what did not fit
is listed as not timed. It prints a ranked table per group and the line to paste into the table.

Groups (benchmark shape, T = 8k): attention ``fwd`` (window only; w + f), ``bwd_dq`` (window
only; w + f) and ``bwd_dkdv`` (w + f: the raw and the fading keys' launches), timed forward
(``fwd``) or forward+backward (the backward kernels, the others at their defaults); the backward's
"atomic" dQ variant (window only; w + f: ``bwd_dkdv`` configs with ``dq="atomic"``, no dQ kernel),
whose baseline and reference is the default "split" backward, so its ranking says whether
"atomic" pays and at which tiles; ``ssm_scan`` ``fwd`` (inference: no states saved) and ``train``
(``fwd_train``'s chunk, which the backward shares, × the backward's P tile, warps and stages),
timed forward and forward+backward. Bool launch options (attention's ``interior``, and
``transposed`` in the ``bwd_dkdv`` groups, the scan's
``parallel_out`` and, in ``train``, ``parallel_grads``) are tried flipped at the default tiles
and again at the best config of the tile pass, and the best two (shape, option) pairs get the
warps × stages sweep.

Adoption (:func:`choose`, read by the ``tuned`` section of the same run): per table slot (the
attention's ``fwd``, ``bwd_dq`` and ``bwd_dkdv``; the scan's ``fwd`` and ``train``) the config
with the best geometric mean of (default time / its time) over the slot's groups that could time
it — all of them for a tile config, the two "atomic" groups for an atomic one — is adopted when
that mean is at least ``ADOPT_SPEEDUP``; a config timed in only some of its groups is not
eligible. The ``tuned`` section re-times the targets with the adopted configs in force, so one
GPU run yields both the lines to paste and the figures those lines give.

Resources: on a GPU each checked config's row also carries, for the kernels it tunes, the
registers and spills of the kernel Triton compiled for it (``n_regs``; ``n_spills``: local memory
in 4-byte words, from the driver). ``static="flag"`` (``--tune-static flag``) compiles each
config first without running it (``bmojo_triton.aot``'s ahead-of-time path, the same
specialisation, so the later JIT compile is a cache hit) and reads its static resources
(``bmojo_triton.resources``: registers, stack, LDL/STL, shared memory, occupancy); a config whose
tuned kernels spill is flagged in its status, ``static="skip"`` does not time it (the default
config, the group's reference, is always timed).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass, replace

import torch
from bmojo.testing.conformance.tolerances import TOLERANCES

from benchmarks.triton.common import DEADLINE, ROWS, bench

#: The grid of the brief: tile edges, warps, stages; pruned per kernel (see ``_legal``).
GRID = dict(block=(32, 64, 128), num_warps=(4, 8), num_stages=(2, 3, 4))
#: At most this many fp32 score/accumulator elements per thread (BLOCK_M·BLOCK_N / threads):
#: beyond it the tile spills registers on any NVIDIA GPU — not worth a compile.
MAX_TILE_PER_THREAD = 64


#: (kernel, variant, dQ variant of the candidates) of the attention groups, in the order they run
#: (the forward first; then the atomic backward against split, the backward's biggest open question)
ATTN_GROUPS = (
    ("fwd", "window", None),
    ("fwd", "w+f", None),
    ("bwd_dkdv", "window", "atomic"),
    ("bwd_dkdv", "w+f", "atomic"),
    ("bwd_dkdv", "w+f", None),
    ("bwd_dq", "window", None),
    ("bwd_dq", "w+f", None),
)


#: Configs an attention group times right after the default and its flipped flags, before the
#: tile pass (whose order is by distance from the default, so at a budget of seconds per group it
#: would try 32-row tiles first). Picked from compile-time figures alone — `python -m
#: bmojo_triton.aot --report --arch 90 --tiles bmojo_attention.<kernel>=<spec>` at the benchmark
#: shape, bf16, head size 64, 2026-11-28 — as the spill-free configs with more warps per SM than
#: the default or larger tiles; none has been timed. (regs window / w + f; warps per SM)
ATTN_SEEDS = {
    # default 64x64 w4: 140 / 200 regs, 12 / 8 warps per SM
    "fwd": (
        dict(block_m=64, block_n=64, num_warps=8, num_stages=3),  # 112 / 111 regs, 16 / 16
        dict(block_m=128, block_n=64, num_warps=8, num_stages=3),  # 128 / 180 regs, 16 / 8
        # 128 key rows per step (half the online-softmax rescales), as FlexAttention's sm_90
        # forward (128 x 128 on 4 warps, which spills 216 B here)
        dict(block_m=64, block_n=128, num_warps=4, num_stages=3),  # 255 / 255 regs, 8 / 8
    ),
    # default 64x64 w4: 188 / 188 regs, 8 / 8 warps per SM
    "bwd_dq": (
        dict(block_m=64, block_n=64, num_warps=8, num_stages=3),  # 128 / 128 regs, 16 / 16
        # FlexAttention's sm_90 dQ layout (64 query rows, 128 key rows per step, 8 warps)
        dict(block_m=64, block_n=128, num_warps=8, num_stages=3),  # 255 / 255 regs, 8 / 8
        dict(block_m=64, block_n=32, num_warps=4, num_stages=3),  # 104 / 136 regs, 16 / 12
    ),
    # default 64x64 w4: 252 regs (w + f), 8 warps per SM; transposed, it spills 16 B
    "bwd_dkdv": (
        dict(block_m=64, block_n=32, num_warps=4, num_stages=3),  # 144 regs, 12
        # FlexAttention's sm_90 dK/dV layout (64 query rows per step, 128 key rows, 8 warps; torch
        # 2.13's template_heuristics): spills 272 B untransposed, none transposed (255 regs, 8)
        dict(block_m=64, block_n=128, num_warps=8, num_stages=3, transposed=True),
        dict(block_m=32, block_n=128, num_warps=8, num_stages=3, transposed=True),  # 191 regs, 8
    ),
}

#: A slot's best config is adopted only when it beats the default by at least this factor (the
#: geometric mean of default time / its time over the slot's groups); below it, noise could decide
ADOPT_SPEEDUP = 1.03
#: The groups of the last :func:`tune` call in this process (the ``tuned`` section reads them)
LAST: list = []

#: ``static`` values of :func:`tune`: None (off), "flag" (time, flag spills), "skip" (do not time spills)
STATIC_MODES = (None, "flag", "skip")


def _kernel_names(*fns) -> tuple[str, ...]:
    return tuple(f.__name__ for f in fns)


@contextlib.contextmanager
def _launches(record: list):
    """Inside the block, every Triton JIT launch appends (kernel name, CompiledKernel) to
    ``record`` (nothing under the interpreter, whose kernels are not JIT functions)."""
    from triton.runtime.jit import JITFunction

    original = JITFunction.run

    def run(self, *args, **kwargs):
        kernel = original(self, *args, **kwargs)
        record.append((self.__name__, kernel))
        return kernel

    JITFunction.run = run
    try:
        yield
    finally:
        JITFunction.run = original


def _compiled_info(record: list, names) -> list[dict]:
    """n_regs/n_spills (the driver's, after loading) of the launched kernels named in ``names``."""
    out, seen = [], set()
    for name, k in record:
        if name not in names or k is None or not hasattr(k, "n_regs"):
            continue
        info = dict(
            kernel=name,
            num_warps=k.metadata.num_warps,
            num_stages=k.metadata.num_stages,
            n_regs=k.n_regs,
            n_spills=k.n_spills,
        )
        key = tuple(info.values())
        if key not in seen:
            seen.add(key)
            out.append(info)
    return out


def static_resources(measure, cfg, names, arch: int) -> list[dict]:
    """Compile (never run) the kernels ``measure(cfg, check=True)`` launches, for ``cuda:arch``;
    the static resources of those named in ``names`` (one dict per variant; ``ctas_per_sm`` where
    ``bmojo_triton.resources`` knows the arch's SM limits)."""
    from bmojo_triton.aot import compile_instead_of_launch
    from bmojo_triton.resources import SM_LIMITS, occupancy

    log: list = []
    with compile_instead_of_launch(arch, log, inspect=True):
        measure(cfg, check=True)
    out = []
    for v in log:
        if v.kernel not in names:
            continue
        r = v.resources
        row = dict(kernel=v.kernel, num_warps=v.num_warps, num_stages=v.num_stages, **r.as_dict())
        if arch in SM_LIMITS:
            row["ctas_per_sm"] = occupancy(SM_LIMITS[arch], regs=r.regs, num_warps=v.num_warps, smem=r.smem).ctas_per_sm
        out.append(row)
    if not out:
        raise RuntimeError(f"static pre-check: none of {names} was launched by the group's call")
    return out


def static_note(static: list[dict]) -> str | None:
    """Why the static resources flag a config (spills of the tuned kernels), or None."""
    bad = [s for s in static if s["spills"]]
    if not bad:
        return None
    return "static spills: " + "; ".join(
        f"{s['kernel']} {s['regs']} regs, stack {s['stack']} B, LDL/STL {s['spill_loads']}/{s['spill_stores']}"
        for s in bad
    )


def _smem_limit(dev) -> int | None:
    if dev.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(dev)
    return getattr(props, "shared_memory_per_block_optin", None) or getattr(props, "shared_memory_per_block", None)


def _legal_attn(cfg, block_d: int, itemsize: int, smem: int | None) -> str | None:
    """Why the attention config is pruned, or None: register tile too big for its warps, or the
    pipelined key/value tiles (num_stages × 2 × BLOCK_N × BLOCK_D) plus the query tile over the
    GPU's shared memory per block."""
    threads = 32 * cfg.num_warps
    if cfg.block_m * cfg.block_n / threads > MAX_TILE_PER_THREAD:
        return f"{cfg.block_m}x{cfg.block_n} tile on {cfg.num_warps} warps spills"
    if smem:
        need = itemsize * block_d * (cfg.num_stages * 2 * max(cfg.block_n, cfg.block_m) + cfg.block_m)
        if need > smem:
            return f"needs ~{need // 1024} KiB shared memory > {smem // 1024} KiB"
    return None


def _legal_scan(cfg, P: int, N: int, smem: int | None) -> str | None:
    if cfg.block_n is not None and not (cfg.parallel_out or cfg.parallel_grads):
        return "block_n without a chunk-parallel option (only their state passes split N)"
    threads = 32 * cfg.num_warps
    bp = P if cfg.block_p is None else min(P, cfg.block_p)
    bl = cfg.block_l or 0
    # the chunk's (L × L) decay/score tiles and the (P × N) state are register-resident
    if max(bl * bl, bp * N) / threads > 2 * MAX_TILE_PER_THREAD:
        return f"L={bl}, P={bp}, N={N} on {cfg.num_warps} warps spills"
    return None


def _close(a: torch.Tensor, b: torch.Tensor, grad: bool) -> tuple[bool, float, float]:
    """max|a − b| against core's bfloat16 row (the default config's result is the reference)."""
    tol = TOLERANCES["bfloat16"]
    atol, rtol = (tol.grad_atol, tol.grad_rtol) if grad else (tol.atol, tol.rtol)
    a, b = a.detach().float(), b.detach().float()
    err = (a - b).abs().max().item() if a.numel() else 0.0
    scale = b.abs().max().item() if b.numel() else 0.0
    ok = bool(torch.isfinite(a).all()) and err <= atol + rtol * scale
    return ok, err, atol + rtol * scale


def _run_outputs(fn, params, with_grad: bool, seed: int = 0):
    """fn()'s floating outputs and, with_grad, the gradients of params for a fixed cotangent."""
    for p in params:
        p.grad = None
    outs = fn()
    outs = [outs] if isinstance(outs, torch.Tensor) else [o for o in outs if isinstance(o, torch.Tensor)]
    res = [o.detach().clone() for o in outs]
    if with_grad:
        g = torch.Generator(device="cpu").manual_seed(seed)
        diff = [o for o in outs if o.requires_grad]
        cots = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in diff]
        torch.autograd.backward(diff, cots)
        res += [p.grad.detach().clone() for p in params]
        for p in params:
            p.grad = None
    return res


def _timed(fn, params, with_grad: bool, gpu: bool) -> float:
    if not with_grad:
        return bench(fn, gpu=gpu)
    outs = fn()
    outs = [outs] if isinstance(outs, torch.Tensor) else [o for o in outs if o.requires_grad]
    cots = [torch.randn_like(o) for o in outs]

    def run():
        for p in params:
            p.grad = None
        r = fn()
        r = [r] if isinstance(r, torch.Tensor) else [o for o in r if o.requires_grad]
        torch.autograd.backward(r, cots)

    return bench(run, gpu=gpu)


def _fmt(cfg) -> str:
    fields = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in cfg.__dataclass_fields__)
    return f"{type(cfg).__name__}({fields})"


def _entry(op: str, kernel: str, key: tuple, cfg) -> str:
    """The dict entry to paste into ``TILES`` of ``bmojo_triton/ops/<op>/__init__.py``."""
    return f"{key}: {_fmt(cfg)},  # -> {op} TILES gpu[{kernel!r}]"


class Group:
    """One kernel × variant: runs candidates until its deadline, ranks, prints the snippet.

    ``extra``: fields every candidate but the default takes (``dq="atomic"``: the default, the
    group's baseline and reference, is the other variant). ``op``/``slot``: the table and the
    slot its configs compete for (groups of one slot are ranked together by :func:`choose`);
    ``entries(cfg)``: the table entries a config stands for (kernel name -> config)."""

    def __init__(
        self,
        name,
        case,
        table_line,
        default,
        tiles,
        launches,
        legal,
        measure,
        with_grad,
        gpu,
        cap,
        extra=None,
        kernels=(),
        static=None,
        arch=None,
        flags=(),
        op=None,
        slot=None,
        entries=None,
        seeds=(),
    ):
        self.name, self.case, self.table_line = name, case, table_line
        self.op, self.slot = op, slot
        self.entries = entries or (lambda cfg: {slot: cfg})
        #: launch configs (field -> value) tried right after the default and its flipped flags
        self.seeds = tuple(seeds)
        #: the Triton kernels the candidates configure; ``static``/``arch``: the static pre-check
        self.kernels, self.static, self.arch = tuple(kernels), static, arch
        self.default, self.tiles, self.launches = default, tiles, launches
        self.extra = extra or {}
        #: bool launch options (e.g. attention's ``interior``): each is tried flipped at the default
        #: tiles, and the best shapes' launches keep the value they ranked with
        self.flags = tuple(flags)
        self.legal, self.measure, self.with_grad, self.gpu, self.cap = legal, measure, with_grad, gpu, cap
        self.results: list[tuple[object, float]] = []
        self.tried: set = set()
        self.ref = None
        self.n_fwd_outputs = 2  # outputs before the gradients (o, lse / y, final state)

    def _row(self, cfg, seconds, status, **extra):
        row = dict(section="tune", case=self.case, impl=self.name, mode="fwd+bwd" if self.with_grad else "fwd")
        row.update(config=_fmt(cfg), seconds=seconds, status=status, **extra)
        ROWS.append(row)
        t = "-" if seconds is None else f"{seconds * 1e3:9.3f} ms"
        res = [f"[{k['kernel']}: {k['n_regs']} regs, {k['n_spills']} spills]" for k in extra.get("compiled", [])]
        if "static_note" in extra and extra["static_note"] not in status:
            res.append(f"[{extra['static_note']}]")
        note = " ".join([status, *res])
        print(f"  tune {self.name:30s} {self.case:22s} {_fmt(cfg):75s} {t:>12s}  {note}", flush=True)

    def candidates(self):
        """default; each bool flag flipped at the default tiles; the seeds; each tile shape at the default
        launch (8 warps where 4 would spill), nearest to the default's shape first; each flag
        flipped at the best config so far; then the 2 best (shape, flags) × every launch."""
        yield self.default
        for f in self.flags:
            yield replace(self.default, **self.extra, **{f: not getattr(self.default, f)})
        for seed in self.seeds:
            yield replace(self.default, **seed, **self.extra)

        def bits(v):
            return 0 if v is None else v.bit_length()  # None: "all of it" (the scan's block_p)

        def distance(t):
            def d(k, v):
                ref = getattr(self.default, k)
                return abs(bits(v) - bits(ref if ref is not None else v))

            return sum(d(k, v) for k, v in t.items())

        for t in sorted(self.tiles, key=distance):
            cfg = replace(self.default, **t, **self.extra)
            if self.legal(cfg) and any(w > cfg.num_warps for w, _ in self.launches):
                cfg = replace(cfg, num_warps=max(w for w, _ in self.launches))
            yield cfg
        if self.flags and self.results:  # each flag flipped at the best tile shape so far too
            best = min(self.results, key=lambda r: r[1])[0]
            for f in self.flags:
                yield replace(best, **self.extra, **{f: not getattr(best, f)})
        ranked = sorted(self.results, key=lambda r: r[1])
        shapes = []
        for cfg, _ in ranked:
            shape = {k: getattr(cfg, k) for k in (*(self.tiles[0] if self.tiles else ()), *self.flags)}
            if shape not in shapes:
                shapes.append(shape)
        for shape in shapes[:2]:
            for w, s in self.launches:
                yield replace(self.default, **shape, **self.extra, num_warps=w, num_stages=s)

    def run(self, deadline: float, why: str = "tune budget") -> None:
        """Check and time candidates until ``deadline`` (a perf_counter time); the configs left
        are listed as "not timed: ``why``"."""
        n = 0
        for cfg in self.candidates():
            if cfg in self.tried:
                continue
            self.tried.add(cfg)
            if n >= self.cap:
                break
            if time.perf_counter() > deadline:
                self._row(cfg, None, f"not timed: {why}")
                continue
            why = self.legal(cfg)
            if why:
                self._row(cfg, None, f"pruned: {why}")
                continue
            extra, flag = {}, None
            if self.static:
                try:
                    extra["static"] = static_resources(self.measure, cfg, self.kernels, self.arch)
                except Exception as err:  # the compiler rejects it: the timed launch says so below
                    extra["static_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
                else:
                    flag = static_note(extra["static"])
                    extra["static_spills"] = flag is not None
                    if flag:
                        extra["static_note"] = flag
                if flag and self.static == "skip" and cfg != self.default:
                    self._row(cfg, None, f"pruned: {flag}", **extra)
                    continue
            n += 1
            record: list = []
            try:
                with _launches(record) if self.gpu else contextlib.nullcontext():
                    outs = self.measure(cfg, check=True)
            except Exception as err:  # a config the compiler or the GPU rejects
                self._row(cfg, None, f"illegal: {type(err).__name__}: {str(err).splitlines()[0][:120]}", **extra)
                continue
            compiled = _compiled_info(record, self.kernels)
            if compiled:
                extra["compiled"] = compiled
            if self.ref is None:
                self.ref = outs  # the default config's result: the reference of the group
            else:
                bad = [
                    (i, err, tol)
                    for i, (a, b) in enumerate(zip(outs, self.ref))
                    for ok, err, tol in [_close(a, b, grad=i >= self.n_fwd_outputs)]
                    if not ok
                ]
                if bad:
                    i, err, tol = bad[0]
                    msg = f"WRONG: output {i} differs from the default's by {err:.3g} > {tol:.3g}"
                    self._row(cfg, None, msg, **extra)
                    continue
            t = self.measure(cfg, check=False)
            self.results.append((cfg, t))
            self._row(cfg, t, "ok", **extra)

    def report(self) -> None:
        if not self.results:
            print(f"  tune {self.name}: nothing timed", flush=True)
            return
        ranked = sorted(self.results, key=lambda r: r[1])
        t_def = next((t for c, t in self.results if c == self.default), None)
        print(f"  tune {self.name} ({self.case}) ranked:", flush=True)
        for i, (cfg, t) in enumerate(ranked, 1):
            rel = f"{t_def / t:5.2f}x vs default" if t_def else ""
            print(f"    {i:2d}. {t * 1e3:9.3f} ms  {rel}  {_fmt(cfg)}", flush=True)
        best, t_best = ranked[0]
        snippet = self.table_line(best)
        note = f"{t_best * 1e3:.3f} ms vs default {t_def * 1e3:.3f} ms" if t_def else f"{t_best * 1e3:.3f} ms"
        print(f"  paste ({self.case}: {note}):", flush=True)
        for line in snippet.splitlines():
            print(f"    {line}", flush=True)
        ROWS.append(
            dict(
                section="tune",
                case=self.case,
                impl=self.name,
                mode="best",
                config=_fmt(best),
                seconds=t_best,
                default_seconds=t_def,
                speedup=(t_def / t_best) if t_def else None,
                snippet=snippet,
            )
        )


def _attn_groups(s, gpu, dev, dtype, cap):
    from bmojo_triton.ops import bmojo_attention as att

    b, H, Dh, w, f, T = s["b"], s["H"], s["Dh"], s["w"], s["f"], s["T"]
    g = torch.Generator(device="cpu").manual_seed(T)
    q, k, v, kf, vf = (torch.randn(b, T, H, Dh, generator=g).to(dev, dtype).requires_grad_(True) for _ in range(5))
    bd = max(16, 1 << (Dh - 1).bit_length())
    key = (min(bd, 128), torch.finfo(dtype).bits // 8)
    smem = _smem_limit(dev)
    tiles = [dict(block_m=m, block_n=n) for m, n in itertools.product(s["blocks"], s["blocks"])]
    launches = list(itertools.product(s["num_warps"], s["num_stages"]))
    variants = {
        "window": (lambda: att.bmojo_attention(q, k, v, window=w), [q, k, v]),
        "w+f": (lambda: att.bmojo_attention(q, k, v, kf, vf, window=w, fading_window=f), [q, k, v, kf, vf]),
    }
    names = {
        "fwd": _kernel_names(att._attn_fwd_kernel),
        "bwd_dq": _kernel_names(att._attn_bwd_dq_kernel),
        "bwd_dkdv": _kernel_names(att._attn_bwd_dkdv_band_kernel),
    }
    groups = []
    for kernel, variant, dq in ATTN_GROUPS:
        fn, params = variants[variant]
        with_grad = kernel != "fwd"

        def measure(cfg, check, kernel=kernel, fn=fn, params=params, with_grad=with_grad):
            with att.TILES.override(**{kernel: cfg}):
                if check:
                    return _run_outputs(fn, params, with_grad)
                return _timed(fn, params, with_grad, gpu)

        default = att.TILES.get(kernel, key, dev)
        grp = Group(
            f"attention.{kernel}" + (f"[dq={dq}]" if dq else ""),
            f"{variant} T={T} {str(dtype).replace('torch.', '')}",
            lambda cfg, kernel=kernel: _entry("bmojo_attention", kernel, key, cfg),
            default,
            # interpreter: one other config — the variant at the default tiles, or a tile shape
            tiles if gpu else [dict() if dq else dict(block_m=32, block_n=16)],
            launches if gpu else [],
            lambda cfg: _legal_attn(cfg, bd, key[1], smem),
            measure,
            with_grad,
            gpu,
            cap,
            extra=dict(dq=dq) if dq else None,
            # the dK/dV kernel's orientation too (AttnTiles.transposed)
            flags=("interior", "transposed") if kernel == "bwd_dkdv" else ("interior",),
            kernels=names[kernel],
            op="bmojo_attention",
            slot=kernel,
            seeds=ATTN_SEEDS.get(kernel, ()) if s.get("seeds") else (),
        )
        grp.n_fwd_outputs = 2  # o, lse; the rest are gradients
        groups.append(grp)
    return groups


def _chunk_and_p_tile(cfg) -> dict:
    """A scan config's (chunk, P tile)."""
    return dict(block_l=cfg.block_l, block_p=cfg.block_p)


def _scan_groups(s, gpu, dev, dtype, cap):
    from bmojo_triton.ops import ssm_scan as scan

    b, H, P, N, T = s["b"], s["H"], s["P"], s["N"], s["T"]
    g = torch.Generator(device="cpu").manual_seed(T)
    x = torch.randn(b, T, H, P, generator=g).to(dev, dtype)
    dt = (torch.rand(b, T, H, generator=g) * 0.1 + 0.01).to(dev, dtype)
    A = (-torch.rand(H, generator=g) - 0.5).to(dev, dtype)
    B = (torch.randn(b, T, 1, N, generator=g) * 0.5).to(dev, dtype)
    C = (torch.randn(b, T, 1, N, generator=g) * 0.5).to(dev, dtype)
    D = torch.randn(H, generator=g).to(dev, dtype)
    params = [t.clone().requires_grad_(True) for t in (x, dt, A, B, C, D)]
    bp, bn = max(16, 1 << (P - 1).bit_length()), max(16, 1 << (N - 1).bit_length())
    key = (bp, bn)
    smem = _smem_limit(dev)
    launches = list(itertools.product(s["num_warps"], s["num_stages"]))
    case = f"T={T} {str(dtype).replace('torch.', '')}"

    def m_fwd(cfg, check):
        with scan.TILES.override(fwd=cfg), torch.no_grad():
            fn = lambda: scan.ssm_scan(x, dt, A, B, C, D)  # noqa: E731
            return _run_outputs(fn, [], False) if check else _timed(fn, [], False, gpu)

    d_fwd = scan.TILES.get("fwd", key, dev)
    fwd_tiles = [
        dict(block_l=bl_, block_p=bp_, block_n=None) for bl_, bp_ in itertools.product(s["blocks"], s["p_blocks"])
    ]
    # the state pass split over N: with parallel_out only, at the default chunk and P tile
    fwd_tiles += [dict(_chunk_and_p_tile(d_fwd), block_n=bn_, parallel_out=True) for bn_ in s["n_blocks"]]
    g_fwd = Group(
        "ssm_scan.fwd",
        case,
        lambda cfg: _entry("ssm_scan", "fwd", key, cfg),
        d_fwd,
        fwd_tiles if gpu else [dict(block_l=32, block_p=16, block_n=None)],
        launches if gpu else [],
        lambda cfg: _legal_scan(cfg, bp, bn, smem),
        m_fwd,
        False,
        gpu,
        cap,
        kernels=_kernel_names(scan._ssd_fwd_kernel, scan._ssd_chunk_out_kernel),
        flags=("parallel_out",),
        op="ssm_scan",
        slot="fwd",
    )
    g_fwd.n_fwd_outputs = 2
    # train: the chunk (fwd_train.block_l, shared by the backward) × the backward's launch; the
    # config tried is a ScanTiles whose block_l is fwd_train's and warps/stages are bwd's
    d_train = scan.TILES.get("fwd_train", key, dev)
    d_bwd = scan.TILES.get("bwd", key, dev)
    d_pair = replace(
        d_train,
        block_p=d_bwd.block_p,
        num_warps=d_bwd.num_warps,
        num_stages=d_bwd.num_stages,
        parallel_grads=d_bwd.parallel_grads,
        # one block_n for both state passes (the training forward's and the backward's)
        block_n=d_bwd.block_n if d_bwd.parallel_grads else d_train.block_n,
    )

    def bwd_of(cfg):  # the backward's share of a train-group config
        return replace(
            d_bwd,
            block_p=cfg.block_p,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
            parallel_grads=cfg.parallel_grads,
            block_n=cfg.block_n if cfg.parallel_grads else None,
        )

    def fwd_of(cfg):  # the training forward's share
        n = cfg.block_n if cfg.parallel_out else None
        return replace(d_train, block_l=cfg.block_l, parallel_out=cfg.parallel_out, block_n=n)

    def m_train(cfg, check):
        with scan.TILES.override(fwd_train=fwd_of(cfg), bwd=bwd_of(cfg)):
            fn = lambda: scan.ssm_scan(*params)  # noqa: E731
            return _run_outputs(fn, params, True) if check else _timed(fn, params, True, gpu)

    g_train = Group(
        "ssm_scan.train",
        case,
        lambda cfg: "\n".join(
            (
                _entry("ssm_scan", "fwd_train", key, fwd_of(cfg)),
                _entry("ssm_scan", "bwd", key, bwd_of(cfg)),
            )
        ),
        d_pair,
        [
            dict(block_l=bl_, block_p=bp_, block_n=None)
            for bl_ in s["train_blocks"]
            for bp_ in (None, *s["bwd_p_blocks"])
        ]
        # every chunk-parallel option with the state passes split over N, at the default tiles
        + [
            dict(_chunk_and_p_tile(d_pair), block_n=bn_, parallel_out=True, parallel_grads=True)
            for bn_ in s["n_blocks"]
        ]
        if gpu
        else [dict(block_l=32, block_p=16, block_n=None)],
        launches if gpu else [],
        lambda cfg: _legal_scan(cfg, bp, bn, smem),
        m_train,
        True,
        gpu,
        cap,
        kernels=_kernel_names(
            scan._ssd_fwd_kernel,
            scan._ssd_chunk_out_kernel,
            scan._ssd_bwd_kernel,
            scan._ssd_bwd_state_kernel,
            scan._ssd_bwd_chunk_kernel,
        ),
        flags=("parallel_out", "parallel_grads"),
        op="ssm_scan",
        slot="train",
        entries=lambda cfg: {"fwd_train": fwd_of(cfg), "bwd": bwd_of(cfg)},
    )
    g_train.n_fwd_outputs = 2
    return [g_fwd, g_train]


def tune(s, gpu, dev, dtype, budget: float | None, static: str | None = None) -> None:
    """Run every group, sharing ``budget`` seconds (the rest of the time is split evenly among
    the groups not yet run; the run's deadline, ``--budget``, ends it sooner), then print the
    ranked tables and snippets. ``static``: the static pre-check (one of ``STATIC_MODES``; needs
    a GPU: the interpreter compiles nothing)."""
    if static not in STATIC_MODES:
        raise ValueError(f"tune static: expected one of {STATIC_MODES}, got {static!r}")
    arch = None
    if static:
        if not gpu:
            raise ValueError("tune static pre-check: needs a CUDA GPU (the interpreter compiles nothing)")
        major, minor = torch.cuda.get_device_capability(dev)
        arch = 10 * major + minor
    groups = _attn_groups(s["attention"], gpu, dev, dtype, s["cap"]) + _scan_groups(s["ssm"], gpu, dev, dtype, s["cap"])
    for grp in groups:
        grp.static, grp.arch = static, arch
    LAST[:] = groups
    # the section's budget, cut short by the run's deadline (--budget) when that comes first
    section_end = time.perf_counter() + (budget or float("inf"))
    t_end = min(section_end, DEADLINE[0])
    why = "tune budget" if section_end <= DEADLINE[0] else "--budget exhausted"
    for i, grp in enumerate(groups):
        left = t_end - time.perf_counter()
        grp.run(time.perf_counter() + left / (len(groups) - i), why)
        if gpu:
            torch.cuda.empty_cache()
    print("  tune results (paste the chosen lines into the op's TILES table, then rerun conformance):", flush=True)
    for grp in groups:
        grp.report()


@dataclass(frozen=True)
class Choice:
    """One table slot's outcome: the best eligible config, its speed-up over the default and
    whether it is adopted (``config`` None: no config but the default was timed where needed)."""

    op: str
    slot: str
    config: object
    speedup: float | None
    adopted: bool
    #: the groups (impl, case) whose timings gave ``speedup``
    groups: tuple
    #: table entries (kernel -> config) when adopted, else {}
    entries: dict
    #: the lines to paste into the table when adopted, else ""
    lines: str
    #: why a slot adopts nothing although its best beat the threshold ("" otherwise)
    note: str = ""


def choose(groups=None, min_speedup: float | None = None) -> list[Choice]:
    """Per (op, slot) of ``groups`` (default: the last :func:`tune` run's), the config with the
    best geometric mean of default time / its time over every group of the slot that could time it
    (the groups whose ``extra`` settings it shares: an "atomic" config the atomic groups, a tile
    config the others); a config missing a timing in one of them is not eligible, nor is the
    default (its speed-up is 1 by definition). Adopted when the mean is >= ``min_speedup``
    (default ``ADOPT_SPEEDUP``)."""
    groups = LAST if groups is None else groups
    min_speedup = ADOPT_SPEEDUP if min_speedup is None else min_speedup
    slots: dict = {}
    for g in groups:
        slots.setdefault((g.op, g.slot), []).append(g)
    out = []
    for (op, slot), gs in slots.items():
        fields = sorted({k for g in gs for k in g.extra})

        def setting(g, fields=fields):
            return tuple(g.extra.get(k, getattr(g.default, k)) for k in fields)

        times = [dict(g.results) for g in gs]
        best = None
        # in the order first timed (a tie goes to the earlier config, whatever the hash order)
        for cfg in dict.fromkeys(c for g in gs for c, _ in g.results):
            if any(cfg == g.default for g in gs):
                continue
            mine = tuple(getattr(cfg, k) for k in fields)
            homes = [(g, t) for g, t in zip(gs, times) if setting(g) == mine]
            ratios = [t[g.default] / t[cfg] for g, t in homes if cfg in t and g.default in t]
            if not homes or len(ratios) < len(homes):
                continue
            mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
            if best is None or mean > best[1]:
                best = (cfg, mean, tuple((g.name, g.case) for g, _ in homes), homes[0][0])
        if best is None:
            out.append(Choice(op, slot, None, None, False, (), {}, ""))
            continue
        cfg, mean, used, grp = best
        ok = mean >= min_speedup
        out.append(
            Choice(op, slot, cfg, mean, ok, used, grp.entries(cfg) if ok else {}, grp.table_line(cfg) if ok else "")
        )
    # an adopted "atomic" bwd_dkdv runs no dQ kernel: bwd_dq's config would be unused
    dkdv = next((c for c in out if (c.op, c.slot) == ("bmojo_attention", "bwd_dkdv")), None)
    if dkdv is not None and dkdv.adopted and getattr(dkdv.config, "dq", None) == "atomic":
        for i, c in enumerate(out):
            if (c.op, c.slot) == ("bmojo_attention", "bwd_dq") and c.adopted:
                note = "unused: bwd_dkdv adopts the atomic dQ (no dQ kernel runs)"
                out[i] = replace(c, adopted=False, entries={}, lines="", note=note)
    return out
