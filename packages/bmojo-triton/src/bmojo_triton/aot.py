"""Compile every kernel launch for a GPU target without a GPU (no driver, no device memory).

``python -m bmojo_triton.aot [--arch 90]`` runs each op's launcher on small CPU tensors with
Triton's launch replaced by an ahead-of-time ``triton.compile`` for ``cuda:<arch>`` (Triton ships
its own ptxas), so code that only fails in the GPU compiler (types, layouts, unsupported ops) is
caught on a CPU machine. Kernels do not run: outputs are left unwritten. Must run without
``TRITON_INTERPRET`` (the interpreter never compiles).

Each launch is specialised as Triton's JIT would specialise it (its binder: pointer alignment,
integers divisible by 16 or equal to 1), so the compiled code is the code a launch with the same
arguments compiles on a GPU.

``--report`` prints the static resources of every variant (registers, spills, shared memory,
MMA instructions, occupancy; see ``bmojo_triton.resources``) at the GPU benchmark's shapes;
``--tiles op.kernel=SPEC`` reports a candidate launch config instead of the table's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from bmojo.argcheck import fail


@dataclass
class Variant:
    """One compiled kernel variant (one specialization and launch config)."""

    kernel: str
    constexprs: dict
    num_warps: int
    num_stages: int
    seconds: float
    case: str = ""
    resources: object = None  # resources.KernelResources when inspected

    def flags(self) -> str:
        """The true boolean constexprs, "HAS_" dropped (UPCAST: an interpreter-only switch)."""
        on = [k.removeprefix("HAS_") for k, v in self.constexprs.items() if v is True and k != "UPCAST"]
        return ",".join(on) or "-"

    def blocks(self) -> str:
        """The block constexprs, e.g. ``M64 N64 D64`` (``BLOCK`` alone: ``B``)."""
        return " ".join(
            f"{'B' if k == 'BLOCK' else k.removeprefix('BLOCK_')}{v}"
            for k, v in self.constexprs.items()
            if k.startswith("BLOCK")
        )


class _Session:
    """What the launch hook records into: ``log`` (new variants) and the current ``case`` label."""

    def __init__(self, log: list, inspect: bool):
        self.log, self.inspect, self.case = log, inspect, ""
        self.refused: list[str] = []  # what the target refused, a line each


@contextlib.contextmanager
def compile_instead_of_launch(arch: int, log: list, *, inspect: bool = False):
    """Inside the block, ``kernel[grid](...)`` compiles for ``cuda:arch`` (specialised as a real
    launch would be) and appends a :class:`Variant` to ``log`` for each variant not compiled yet in
    this block; ``inspect``: with its static resources. Yields a session whose ``case`` attribute
    labels the variants compiled from then on.

    A variant needing more shared memory than one CTA may have on ``arch`` (where
    ``resources.SM_LIMITS`` knows it) is refused as the driver would refuse it: Triton's
    ``OutOfResources``, so the launchers' fit ladder (``TileTable.fitting``) steps down exactly as
    on that GPU. Refused variants are not logged; ``session.refused`` describes them."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.errors import OutOfResources
    from triton.runtime.jit import JITFunction, create_function_from_signature

    from bmojo_triton.resources import SM_LIMITS, inspect_compiled

    if not hasattr(JITFunction, "_pack_args"):
        raise RuntimeError(
            f"bmojo_triton.aot follows the JIT internals of triton 3.6 (JITFunction._pack_args); "
            f"triton {triton.__version__} lacks them"
        )
    limits = SM_LIMITS.get(arch)
    smem_limit = limits.smem_per_block if limits is not None else float("inf")
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    session = _Session(log, inspect)
    seen: dict = {}  # variant key -> its shared memory (bytes)
    binders: dict = {}
    original = JITFunction.__getitem__

    def getitem(self, grid):
        def launch(*args, **kwargs):
            # as JITFunction.run: bind, specialise, pack (num_warps/num_stages are options)
            kwargs["debug"] = kwargs.get("debug", self.debug) or knobs.runtime.debug
            kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
            if self not in binders:
                binders[self] = create_function_from_signature(self.signature, self.params, backend)
            bound, spec, options = binders[self](*args, **kwargs)
            key = (self.cache_key, str(spec), str(sorted(options.items())))
            if key not in seen:
                opts, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound, spec, options)
                t0 = time.perf_counter()
                src = ASTSource(self, signature, constexprs, attrs)
                compiled = triton.compile(src, target=target, options=opts.__dict__)
                seen[key] = compiled.metadata.shared
                const = {p.name: bound[p.name] for p in self.params if p.is_constexpr}
                var = Variant(
                    self.__name__, const, opts.num_warps, opts.num_stages, time.perf_counter() - t0, session.case
                )
                if seen[key] > smem_limit:
                    session.refused.append(
                        (f"{var.case}: " if var.case else "")
                        + f"{var.kernel} {var.blocks()} w{var.num_warps} s{var.num_stages} needs "
                        f"{seen[key] / 1024:.1f} KiB > {smem_limit / 1024:.0f}"
                    )
                else:
                    if session.inspect:
                        var.resources = inspect_compiled(compiled)
                    session.log.append(var)
            if seen[key] > smem_limit:  # as the driver refuses it at launch (CompiledKernel._init_handles)
                raise OutOfResources(seen[key], smem_limit, "shared memory")
            return None

        return launch

    from bmojo_triton.ops import _triton_utils

    JITFunction.__getitem__ = getitem
    _triton_utils.AS_GPU = True
    try:
        yield session
    finally:
        JITFunction.__getitem__ = original
        _triton_utils.AS_GPU = False


def _atomic_dq(q: torch.Tensor):
    """The attention backward's opt-in "atomic" dQ variant at the ``bwd_dkdv`` tiles in force for q
    (an active override's, else the GPU table's)."""
    from bmojo_triton.ops import bmojo_attention as att

    return att.TILES.override(bwd_dkdv=replace(att._config("bwd_dkdv", q), dq="atomic"))


def _transposed(q: torch.Tensor, dq: str):
    """The dK/dV kernels' opt-in key × query orientation (``AttnTiles.transposed``) at the configs
    in force, with the dQ variant ``dq``."""
    from bmojo_triton.ops import bmojo_attention as att

    return att.TILES.override(
        bwd_dkdv=replace(att._config("bwd_dkdv", q), transposed=True, dq=dq),
        bwd_dkdv_eidetic=replace(att._config("bwd_dkdv_eidetic", q), transposed=True),
    )


def _one_loop(q: torch.Tensor):
    """The attention kernels' opt-in band walk without the interior split (``AttnTiles.interior``)."""
    from bmojo_triton.ops import bmojo_attention as att

    return att.TILES.override(**{k: replace(att._config(k, q), interior=False) for k in ("fwd", "bwd_dq", "bwd_dkdv")})


def _scan_options(x: torch.Tensor, N: int):
    """The scan's opt-in launch options: y by the chunk-parallel kernel (``parallel_out``) in
    inference (its state pass split over 16 N columns) and training (all of N), and the backward
    split over 16-row P tiles (at the configs in force: an active override's, else the GPU
    table's)."""
    from bmojo_triton.ops import ssm_scan

    cfg = {k: ssm_scan._scan_tiles(k, x, N) for k in ssm_scan.TILES.kernels}
    return ssm_scan.TILES.override(
        fwd=replace(cfg["fwd"], parallel_out=True, block_n=16),
        fwd_train=replace(cfg["fwd_train"], parallel_out=True, recompute=False),
        bwd=replace(cfg["bwd"], block_p=16),
    )


def _scan_backward_options(
    x: torch.Tensor, N: int, block_n: int | None = None, recompute: bool = True, parallel_grads: bool = True
):
    """The scan's backward options at the ``bwd`` / ``fwd_train`` configs in force: the
    chunk-parallel walk (``parallel_grads``), its state-gradient pass split over ``block_n``
    columns, and ``recompute``
    (``fwd_train.recompute``, the table's default True): False keeps the states from the forward."""
    from bmojo_triton.ops import ssm_scan

    cfg = replace(ssm_scan._scan_tiles("bwd", x, N), parallel_grads=parallel_grads, block_n=block_n)
    train = replace(ssm_scan._scan_tiles("fwd_train", x, N), recompute=recompute)
    return ssm_scan.TILES.override(bwd=cfg, fwd_train=train)


@contextlib.contextmanager
def _opt_in_noted(session: _Session, label: str):
    """Inside the block, an opt-in variant (a tile override) the target refuses is noted in
    ``session.refused`` instead of ending the run (overrides are never stepped down)."""
    from bmojo_triton.ops._triton_utils import TilesDoNotFit

    try:
        yield
    except TilesDoNotFit as err:
        if not err.overridden:
            raise
        session.refused.append(f"{label}: an opt-in variant, not run: {err}")


def _backward(out) -> None:
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    diff = [o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]
    if diff:
        torch.autograd.backward(diff, [torch.zeros_like(o) for o in diff])


def run_all(
    arch: int,
    dtypes=(torch.float32, torch.bfloat16, torch.float16, torch.float64),
    inspect=False,
    only=(),
    refused: list | None = None,
) -> list:
    """Launch every op (forward and backward where the backend has one) on tiny CPU inputs; the
    attention backward in both dQ variants (the default "split" and the opt-in "atomic"), the
    attention without the interior split, its dK/dV kernels transposed (both dQ variants), and
    the scan with its opt-in options (``_scan_options``, ``_scan_backward_options``).
    ``only``: the cases whose "op name" label contains one of these strings (default: all).
    Returns the compiled :class:`Variant` list (the launched ones); ``refused`` (a list) gets a
    line per variant the target refused (the launcher stepped down from it) and per opt-in
    variant that does not fit the target at all."""
    from bmojo.testing.conformance.cases import CASES

    from bmojo_triton.ops import bmojo_attention as att
    from bmojo_triton.ops import causal_conv1d as conv
    from bmojo_triton.ops import eidetic, rmsnorm, ssm_scan

    fns = {
        "ssm_scan": ssm_scan.ssm_scan,
        "ssm_step": ssm_scan.ssm_step,
        "causal_conv1d": conv.causal_conv1d,
        "causal_conv1d_step": conv.causal_conv1d_step,
        "bmojo_attention": att.bmojo_attention,
        "innovation_scores": eidetic.innovation_scores,
        "rmsnorm": rmsnorm.rmsnorm,
        "gated_rmsnorm": rmsnorm.gated_rmsnorm,
    }
    log: list = []
    with compile_instead_of_launch(arch, log, inspect=inspect) as session:
        for dtype in dtypes:
            for case in CASES:
                fn = fns.get(case.op)
                label = f"{case.op} {case.name}"
                if fn is None or (only and not any(o in label for o in only)):
                    continue
                session.case = label
                args, kw = case.build(dtype, "cpu", 0)
                args = [
                    a.requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
                ]
                variants = [contextlib.nullcontext()]
                if case.op == "bmojo_attention":
                    variants += [
                        _atomic_dq(args[0]),
                        _one_loop(args[0]),
                        _transposed(args[0], "split"),
                        _transposed(args[0], "atomic"),
                    ]
                if case.op == "ssm_scan":
                    variants += [
                        _scan_options(args[0], args[3].shape[-1]),
                        _scan_backward_options(args[0], args[3].shape[-1], 16, recompute=False),
                    ]
                for variant in variants:
                    with variant, _opt_in_noted(session, label):
                        _backward(fn(*args, **kw))
    if refused is not None:
        refused.extend(session.refused)
    return log


# ----- the GPU benchmark's shapes (benchmarks/triton/__main__.py, SIZES["full"]) -----
#: Compile-relevant sizes of the benchmark: head sizes, heads (integer arguments are specialised
#: on divisibility by 16, so H matches too), w, f, M, chunk = w; batch 1 and a T that fills every
#: tile (T is a multiple of 16 as in the benchmark), since kernels do not run.
BENCH = dict(
    attention=dict(H=16, Dh=64, w=512, f=512, M=64, T=1024),
    ssm=dict(H=16, P=64, N=128, T=256),
    norm=dict(T=64, width=2048),
    conv=dict(T=64, ch=2048, K=4),
    eidetic=dict(T=64, H=16, Dh=64),
)


def _table_key(op: str, dtype: torch.dtype) -> tuple:
    """The tile-table key the benchmark shapes look up (see each op's ``TILES``)."""
    from bmojo_triton.ops._triton_utils import pow2

    if op == "bmojo_attention":
        return (min(pow2(BENCH["attention"]["Dh"]), 128), torch.finfo(dtype).bits // 8)
    if op == "ssm_scan":
        return (pow2(BENCH["ssm"]["P"]), pow2(BENCH["ssm"]["N"]))
    fail("--tiles op", "bmojo_attention or ssm_scan (the ops with a tile table)", repr(op))
    return ()


def bench_cases(dtype: torch.dtype) -> list:
    """(label, thunk) per benchmark call: each thunk launches the op as the benchmark times it
    (forward, or forward and backward)."""
    from bmojo.ops.bmojo_attention.reference import eidetic_snapshot_count

    from bmojo_triton.ops.bmojo_attention import bmojo_attention
    from bmojo_triton.ops.causal_conv1d import causal_conv1d
    from bmojo_triton.ops.eidetic import innovation_scores
    from bmojo_triton.ops.rmsnorm import gated_rmsnorm, rmsnorm
    from bmojo_triton.ops.ssm_scan import TILES as ssm_tiles
    from bmojo_triton.ops.ssm_scan import chunk_parallel_tiles as ssm_tiles_parallel
    from bmojo_triton.ops.ssm_scan import ssm_scan

    g = torch.Generator().manual_seed(0)

    def rnd(*shape, grad=True, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype).requires_grad_(grad)

    a = BENCH["attention"]
    T, H, Dh, w = a["T"], a["H"], a["Dh"], a["w"]

    def attention(kind, atomic):
        def run():
            q, k, v, kf, vf = (rnd(1, T, H, Dh) for _ in range(5))
            kw = dict(window=w)
            extra = ()
            if kind != "window":
                kw.update(fading_window=a["f"])
                extra = (kf, vf)
            if kind == "w+f+M":
                S = eidetic_snapshot_count(0, T, w)
                epos = torch.randint(0, T - w, (1, S, a["M"]), generator=g)
                extra += (rnd(1, S, a["M"], H, Dh), rnd(1, S, a["M"], H, Dh), epos)
                kw.update(eidetic_chunk=w)
            with _atomic_dq(q) if atomic else contextlib.nullcontext():
                _backward(bmojo_attention(q, k, v, *extra, **kw))

        return run

    s = BENCH["ssm"]

    def ssm(train, variant=None):
        """variant: None (the table's), "parallel_grads" (that option alone), "parallel" (every
        chunk-parallel option, the N split at 32 columns as the benchmark's "[parallel]" rows),
        "keep states" (``fwd_train.recompute=False``: the states kept by the forward, not recomputed)."""

        def run():
            x = rnd(1, s["T"], s["H"], s["P"], grad=train)
            dt = (torch.rand(1, s["T"], s["H"], generator=g) * 0.1 + 0.01).to(dtype).requires_grad_(train)
            A = (-torch.rand(s["H"], generator=g) - 0.5).to(dtype).requires_grad_(train)
            B, C = (rnd(1, s["T"], 1, s["N"], grad=train, scale=0.5) for _ in range(2))
            D = rnd(s["H"], grad=train)
            over = contextlib.nullcontext()
            if variant == "parallel_grads":
                over = _scan_backward_options(x, s["N"])
            elif variant == "parallel":
                over = ssm_tiles.override(**ssm_tiles_parallel(x, s["N"], 32))
            elif variant == "keep states":
                over = _scan_backward_options(x, s["N"], recompute=False, parallel_grads=False)
            with over:
                if train:
                    _backward(ssm_scan(x, dt, A, B, C, D))
                else:
                    with torch.no_grad():
                        ssm_scan(x, dt, A, B, C, D)

        return run

    n, c, e = BENCH["norm"], BENCH["conv"], BENCH["eidetic"]

    def norms():
        x, z = rnd(1, n["T"], n["width"]), rnd(1, n["T"], n["width"])
        wt = torch.ones(n["width"], dtype=dtype, requires_grad=True)
        _backward(rmsnorm(x, wt))
        _backward(gated_rmsnorm(x, z, wt, 1e-6, n["width"] // 8))

    def conv():
        causal_conv1d(rnd(1, c["T"], c["ch"], grad=False), rnd(c["ch"], c["K"], grad=False), rnd(c["ch"], grad=False))

    def eid():
        innovation_scores(rnd(1, e["T"], e["H"], e["Dh"], grad=False), rnd(1, e["T"], e["H"], e["Dh"], grad=False))

    cases = [
        (f"attention {kind}" + (" [dq=atomic]" if atomic else ""), attention(kind, atomic))
        for kind in ("window", "w+f", "w+f+M")
        for atomic in (False, True)
    ]
    cases += [("ssm_scan inference", ssm(False)), ("ssm_scan train", ssm(True))]
    cases += [("ssm_scan train [parallel_grads]", ssm(True, "parallel_grads"))]
    cases += [
        ("ssm_scan inference [parallel]", ssm(False, "parallel")),
        ("ssm_scan train [parallel]", ssm(True, "parallel")),
        ("ssm_scan train [keep states]", ssm(True, "keep states")),
    ]
    cases += [("rmsnorm, gated_rmsnorm", norms), ("causal_conv1d", conv), ("innovation_scores", eid)]
    return cases


# ----- tile overrides: --tiles op.kernel=SPEC -----
_COMPACT = re.compile(r"^(\d+|None)x(\d+|None)(?:w(\d+))?(?:s(\d+))?$")


def _value(text: str):
    if text == "None":
        return None
    if text in ("True", "False"):  # bool options, e.g. AttnTiles.interior
        return text == "True"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def parse_tiles(text: str, dtype: torch.dtype):
    """``op.kernel=SPEC`` → (op's TileTable, kernel, config). SPEC: ``AxB[wW][sS]`` (the config's
    first two fields, e.g. ``block_m x block_n`` for attention, ``block_l x block_p`` for the
    scan; ``w`` num_warps, ``s`` num_stages) and/or comma-separated ``field=value``; unnamed
    fields keep the table's entry at the benchmark shape's key."""
    from bmojo_triton.ops import bmojo_attention, ssm_scan

    tables = {"bmojo_attention": bmojo_attention.TILES, "ssm_scan": ssm_scan.TILES}
    target, sep, spec = text.partition("=")
    op, dot, kernel = target.partition(".")
    if not sep or not dot or not spec:
        fail("--tiles", "op.kernel=SPEC, e.g. bmojo_attention.fwd=128x64w8s3", repr(text))
    if op not in tables:
        fail("--tiles op", f"one of {sorted(tables)}", repr(op))
    table = tables[op]
    if kernel not in table.kernels:
        fail(f"--tiles {op} kernel", f"one of {table.kernels}", repr(kernel))
    names = [f.name for f in fields(table.config_type)]
    changes: dict = {}
    for i, item in enumerate(spec.split(",")):
        m = _COMPACT.match(item)
        if i == 0 and m:
            changes.update({names[0]: _value(m.group(1)), names[1]: _value(m.group(2))})
            if m.group(3):
                changes["num_warps"] = int(m.group(3))
            if m.group(4):
                changes["num_stages"] = int(m.group(4))
            continue
        name, eq, val = item.partition("=")
        if not eq or name not in names:
            fail(f"--tiles {op}.{kernel} item", f"AxB[wW][sS] first, or field=value with a field from {names}", item)
        changes[name] = _value(val)
    return table, kernel, replace(table.lookup(kernel, _table_key(op, dtype)), **changes)


def report(
    arch: int, dtype: torch.dtype, overrides=(), shape: str = "bench", only=(), refused: list | None = None
) -> list:
    """Compile (and inspect) every variant at ``shape`` ("bench": the GPU benchmark's calls;
    "conformance": every conformance case), with ``overrides`` (:func:`parse_tiles` results) in
    force; ``only``: the cases whose label contains one of these strings; ``refused``: as
    :func:`run_all`'s."""
    with contextlib.ExitStack() as stack:
        by_table: dict = {}
        for table, kernel, cfg in overrides:
            by_table.setdefault(id(table), (table, {}))[1][kernel] = cfg
        for table, cfgs in by_table.values():
            stack.enter_context(table.override(**cfgs))
        if shape == "conformance":
            return run_all(arch, (dtype,), inspect=True, only=only, refused=refused)
        log: list = []
        with compile_instead_of_launch(arch, log, inspect=True) as session:
            for label, run in bench_cases(dtype):
                if only and not any(o in label for o in only):
                    continue
                session.case = label
                with _opt_in_noted(session, label):
                    run()
        if refused is not None:
            refused.extend(session.refused)
        return log


def rows(log: list, arch: int) -> list[dict]:
    """One JSON-able dict per variant: kernel, constexprs, launch, resources, occupancy."""
    from bmojo_triton.resources import occupancy, sm_limits

    limits = sm_limits(arch)
    out = []
    for v in log:
        r = v.resources
        occ = occupancy(limits, regs=r.regs, num_warps=v.num_warps, smem=r.smem)
        plain = (bool, int, float, str, type(None))
        const = {k: (c if isinstance(c, plain) else str(c)) for k, c in v.constexprs.items()}
        out.append(
            dict(
                case=v.case,
                kernel=v.kernel,
                arch=arch,
                constexprs=const,
                num_warps=v.num_warps,
                num_stages=v.num_stages,
                compile_seconds=round(v.seconds, 3),
                resources=r.as_dict(),
                occupancy=asdict(occ),
            )
        )
    return out


_COLUMNS = (
    ("case", 32),
    ("kernel", 30),
    ("flags", 22),
    ("blocks", 16),
    ("w", 2),
    ("s", 2),
    ("regs", 4),
    ("stack", 5),
    ("LDL/STL", 7),
    ("smem KiB", 8),
    ("CTAs/SM", 7),
    ("warps/SM", 8),
    ("limit", 6),
    ("mma", 16),
)


def table(log: list, arch: int) -> str:
    """The report as a Markdown table (one row per variant)."""
    from bmojo_triton.resources import occupancy, sm_limits

    limits = sm_limits(arch)
    lines = [
        "| " + " | ".join(n.ljust(w) for n, w in _COLUMNS) + " |",
        "| " + " | ".join("-" * w for _, w in _COLUMNS) + " |",
    ]
    for v in log:
        r = v.resources
        occ = occupancy(limits, regs=r.regs, num_warps=v.num_warps, smem=r.smem)
        cells = (
            v.case,
            v.kernel,
            v.flags(),
            v.blocks(),
            v.num_warps,
            v.num_stages,
            r.regs,
            r.stack,
            f"{r.spill_loads}/{r.spill_stores}",
            f"{r.smem / 1024:.1f}",
            occ.ctas_per_sm,
            occ.warps_per_sm,
            occ.limiter,
            r.mma_text(),
        )
        lines.append("| " + " | ".join(str(c).ljust(w) for c, (_, w) in zip(cells, _COLUMNS)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from bmojo_triton.plugin import interpreting

    if interpreting():
        raise SystemExit("unset TRITON_INTERPRET: the interpreter does not compile")
    ap = argparse.ArgumentParser(prog="python -m bmojo_triton.aot", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--arch", type=int, action="append", help="compute capability x10, one of 80, 86, 89, 90 (default: 80 and 90)"
    )
    ap.add_argument("--report", action="store_true", help="print each variant's static resources (one --arch)")
    ap.add_argument("--dtype", default="bfloat16", help="--report: the inputs' dtype (default bfloat16)")
    ap.add_argument("--shape", choices=("bench", "conformance"), default="bench", help="--report: which launches")
    ap.add_argument(
        "--tiles",
        action="append",
        default=[],
        help="--report: op.kernel=SPEC, e.g. bmojo_attention.fwd=128x64w8s3 or ssm_scan.fwd=block_l=32 (repeatable)",
    )
    ap.add_argument(
        "--case",
        action="append",
        default=[],
        help="--report: only the cases whose label contains this (repeatable), e.g. 'attention w+f'",
    )
    ap.add_argument("--json", type=Path, default=None, help="--report: also write the rows here")
    a = ap.parse_args(argv)
    from bmojo_triton.resources import cuobjdump, sm_limits

    for arch in a.arch or []:
        try:
            sm_limits(arch)
        except ValueError as err:
            ap.error(str(err))
    if not a.report:
        if a.tiles or a.json or a.case:
            ap.error("--tiles, --case and --json need --report")
        for arch in a.arch or [80, 90]:
            t0 = time.perf_counter()
            refused: list = []
            log = run_all(arch, refused=refused)
            print(
                f"sm_{arch}: compiled {len(log)} kernel variants in {time.perf_counter() - t0:.1f} s"
                f" ({len(refused)} refused for shared memory)"
            )
            for line in refused:
                print(f"  refused on sm_{arch}: {line}")
        return 0
    if a.arch and len(a.arch) > 1:
        ap.error(f"--report takes one --arch, got {a.arch}")
    arch = a.arch[0] if a.arch else 90
    dtype = getattr(torch, a.dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        ap.error(f"--dtype: expected a floating dtype name (bfloat16, float16, float32, float64), got {a.dtype!r}")
    try:
        overrides = [parse_tiles(t, dtype) for t in a.tiles]
    except ValueError as err:
        ap.error(str(err))
    if cuobjdump() is None:
        raise SystemExit("--report needs cuobjdump (shipped in triton's wheel, or TRITON_CUOBJDUMP_PATH)")
    t0 = time.perf_counter()
    refused: list = []
    log = report(arch, dtype, overrides, a.shape, a.case, refused)
    if not log:
        raise SystemExit(f"--report: no case matched --case {a.case}")
    opts = "".join(f", --tiles {t}" for t in a.tiles) + "".join(f", --case {c!r}" for c in a.case)
    print(f"sm_{arch} {a.dtype}, {a.shape} shapes{opts}:")
    print(table(log, arch))
    print(f"{len(log)} variants compiled and inspected in {time.perf_counter() - t0:.1f} s (compile-time figures)")
    for line in refused:
        print(f"refused on sm_{arch}: {line}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(arch=arch, dtype=a.dtype, shape=a.shape, tiles=a.tiles, cases=a.case)
        a.json.write_text(json.dumps(dict(meta, rows=rows(log, arch)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
