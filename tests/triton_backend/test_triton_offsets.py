"""Offsets past 2³¹ − 1 elements: the kernels' 64-bit indexing (``IDX64``, ``needs_idx64``).

A tensor of more than 2³¹ elements — q of a batch of long sequences, the scan's chunk states at
long context — puts element offsets past what an int32 holds; formed from int32 program ids and
strides, they wrap to a wrong address (on a GPU an illegal access or a silently wrong read). The
interpreter computes in numpy with Triton's integer types, so it wraps the same way.

The inputs here are *spread* views: the values of a small tensor, laid out in a storage of
over 2³¹ elements with one dimension's stride so large that its last index lies past 2³¹. The
storage is allocated but never written outside the view, so only the touched pages take memory
(a few MiB; the address space is reserved, not committed). The launchers are called below the
public ops (which would copy the views into contiguous tensors) and must give *bitwise* the
results of the same launch on compact copies — the same arithmetic at other addresses — with
``IDX64`` on for the spread run, off for the compact one.

Without ``IDX64`` the interpreter reads the wrapped address: a regression shows as a crash of
the test process (pytest's faulthandler names the test), as it would on a GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bmojo_triton.ops import _triton_utils
from bmojo_triton.ops._triton_utils import INT32_MAX, needs_idx64


def spread(t: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    """t's values in a view whose ``dim`` has the smallest stride that puts its last index past
    ``INT32_MAX`` (the stride itself below 2³¹, so Triton passes it as an int32; the other
    dimensions compact)."""
    if t is None:
        return None
    n = t.shape[dim]
    assert n >= 3, f"spread along dim {dim} needs size >= 3, got {n}"
    strides, inner = [0] * t.dim(), 1
    for i in reversed(range(t.dim())):
        if i != dim:
            strides[i], inner = inner, inner * t.shape[i]
    strides[dim] = max(INT32_MAX // (n - 1) + 1, inner)
    store = torch.empty((n - 1) * strides[dim] + inner, dtype=t.dtype, device=t.device)
    view = store.as_strided(t.shape, strides)
    view.copy_(t)
    return view


def test_needs_idx64_measures_the_furthest_element():
    assert not needs_idx64(None, torch.empty(0))
    small = torch.empty(4, 8)
    assert not needs_idx64(small)
    # meta tensors: sizes and strides without storage
    at_limit = torch.empty_strided((2, 1), (INT32_MAX, 1), device="meta")
    past = torch.empty_strided((3, 1), (INT32_MAX // 2 + 1, 1), device="meta")
    assert not needs_idx64(torch.empty((2**31,), device="meta"))  # the last element at INT32_MAX
    assert needs_idx64(torch.empty((2**31 + 1,), device="meta"))
    assert not needs_idx64(at_limit)
    assert needs_idx64(small, past)


@pytest.fixture
def cpu_only(device):
    if torch.device(device).type != "cpu":
        pytest.skip("spread views of billions of elements: a CPU (interpreter) test, lazily allocated pages")
    return device


def _assert_same(name, a, b):
    if a is None or b is None:
        assert a is None and b is None, name
        return
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert torch.equal(a, b), f"{name}: max diff {(a.double() - b.double()).abs().max().item():.3g}"


# ----- bmojo_attention -----------------------------------------------------------------------

#: which dimension of which sources is spread: batch (every tensor), time (q, keys of both
#: bands), snapshots and slots (the eidetic tensors)
ATTN_SPREAD = {
    "batch": dict(q=0, k=0, v=0, kf=0, vf=0, ek=0, ev=0, epos=0),
    "time": dict(q=1, k=1, v=1, kf=1, vf=1),
    "snapshot": dict(ek=1, ev=1, epos=1),
    "slot": dict(ek=2, ev=2, epos=2),
}


@pytest.mark.parametrize("variant", ["split", "atomic"])
@pytest.mark.parametrize("where", list(ATTN_SPREAD))
def test_attention_launchers_index_past_int32(where, variant, cpu_only, monkeypatch):
    from bmojo_triton.ops import bmojo_attention as attn
    from test_triton_attention import NAMES, atomic_dq, make

    args, kw = make("cpu", torch.float16, b=3, T=23, H=2, Hkv=1, w=6, f=5, M=3, chunk=7, seed=3)
    dims = ATTN_SPREAD[where]
    wide = [spread(t, dims[n]) if n in dims else t for n, t in zip(NAMES, args)]
    assert needs_idx64(*(t for t in wide if t is not None))
    g = torch.Generator().manual_seed(4)
    do = torch.randn(args[0].shape, generator=g).to(torch.float16)
    dlse = torch.randn(args[0].shape[0], args[0].shape[2], args[0].shape[1], generator=g)

    launched = []
    real = _triton_utils.needs_idx64

    def run(tensors):
        q, k, v, kf, vf, ek, ev, epos = tensors
        meta = attn._Meta(q, kf, ek, kw["q_start"], kw["window"], kw["fading_window"], kw["eidetic_chunk"], None, None)
        o, lse = attn._fwd(q, k, v, kf, vf, ek, ev, epos, meta)
        with atomic_dq(q) if variant == "atomic" else contextlib.nullcontext():
            grads = attn._bwd(do, dlse, q, k, v, kf, vf, ek, ev, epos, o, lse, meta, [True] * 7)
        return (o, lse, *grads)

    compact = run(args)
    monkeypatch.setattr(attn, "needs_idx64", lambda *ts: launched.append(real(*ts)) or launched[-1])
    spread_out = run(wide)
    assert any(launched), "no launch saw the spread tensors as needing 64-bit offsets"
    names = ("o", "lse", "dq", "dk", "dv", "dkf", "dvf", "dek", "dev")
    for name, a, b in zip(names, spread_out, compact):
        _assert_same(f"{where}/{variant} {name}", a, b)


# ----- ssm_scan ------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "chunk_parallel"])
@pytest.mark.parametrize("dim", [0, 1], ids=["batch", "time"])
def test_scan_launchers_index_past_int32(dim, parallel, cpu_only, monkeypatch):
    """x (and y, dy, dx, which share its strides), dt, B and C spread over batch or time; the
    training forward keeps its states; both walks (``parallel_out``/``parallel_grads``)."""
    from dataclasses import replace

    from bmojo_triton.ops import ssm_scan as scan
    from test_triton_ops import scan_args

    args = list(scan_args("cpu", torch.float16, b=3, T=37, H=2, P=24, G=2, N=20, seed=5))
    x, N = args[0], args[3].shape[-1]
    g = torch.Generator().manual_seed(6)
    dy = torch.randn(x.shape, generator=g).to(x.dtype)
    dht = torch.randn(args[6].shape, generator=g).to(x.dtype)
    fwd_cfg = replace(scan._scan_tiles("fwd_train", x, N), recompute=False, parallel_out=parallel)
    bwd_cfg = replace(scan._scan_tiles("bwd", x, N), parallel_grads=parallel)

    def run(x, dt, A, B, C, D, h0, dy):
        y, final, states = scan._fwd(x, dt, A, B, C, D, h0, fwd_cfg, "fwd_train", save_states=True)
        y_inf, final_inf, _ = scan._fwd(x, dt, A, B, C, D, h0, fwd_cfg, "fwd", save_states=False)
        grads = scan._bwd(dy, dht, x, dt, A, B, C, D, h0, states, fwd_cfg.block_l, bwd_cfg)
        return (y, final, y_inf, final_inf, *grads)

    compact = run(*args, dy)
    wide = [spread(t, dim) if i in (0, 1, 3, 4) else t for i, t in enumerate(args)]
    launched = []
    real = _triton_utils.needs_idx64
    monkeypatch.setattr(scan, "needs_idx64", lambda *ts: launched.append(real(*ts)) or launched[-1])
    spread_out = run(*wide, spread(dy, dim))
    assert any(launched), "no launch saw the spread tensors as needing 64-bit offsets"
    names = ("y", "final", "y_inference", "final_inference", "dx", "ddt", "dA", "dB", "dC", "dD", "dh0")
    for name, a, b in zip(names, spread_out, compact):
        _assert_same(f"scan {name}", a, b)


# ----- causal_conv1d -------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1], ids=["batch", "time"])
def test_conv_launchers_index_past_int32(dim, cpu_only, monkeypatch):
    """x (and y, dy, g, dx: x's strides) and the initial state spread over batch or time."""
    from bmojo_triton.ops import causal_conv1d as conv

    g = torch.Generator().manual_seed(7)
    b, T, ch, K = 3, 37, 20, 4
    x = torch.randn(b, T, ch, generator=g).to(torch.float16)
    w = torch.randn(ch, K, generator=g).to(torch.float16)
    bias = torch.randn(ch, generator=g).to(torch.float16)
    state = torch.randn(b, K - 1, ch, generator=g).to(torch.float16)
    dy = torch.randn(b, T, ch, generator=g).to(torch.float16)
    dfinal = torch.randn(b, K - 1, ch, generator=g).to(torch.float16)

    def run(x, state, dy):
        y, final = conv._fwd(x, w, bias, state, "silu")
        return (y, final, *conv._bwd(dy, dfinal, x, w, bias, state, "silu"))

    compact = run(x, state, dy)
    launched = []
    real = _triton_utils.needs_idx64
    monkeypatch.setattr(conv, "needs_idx64", lambda *ts: launched.append(real(*ts)) or launched[-1])
    spread_out = run(spread(x, dim), spread(state, dim), spread(dy, dim))
    assert any(launched), "no launch saw the spread tensors as needing 64-bit offsets"
    for name, a, b_ in zip(("y", "final", "dx", "dw", "dbias", "dstate"), spread_out, compact):
        _assert_same(f"conv {name}", a, b_)


# ----- every kernel's 64-bit variant compiles for a GPU ---------------------------------------

#: Launches every kernel that takes ``IDX64`` (forward and backward; the attention's opt-in atomic
#: dQ, transposed dK/dV and one-loop bands; the scan's sequential and chunk-parallel passes, its
#: N-split inference; the decode steps) with ``needs_idx64`` forced on,
#: compiled for the target ``sys.argv[1]`` by ``bmojo_triton.aot`` instead of run (no GPU).
IDX64_COMPILE = r"""
import json, sys, time, torch
from bmojo_triton import aot
from bmojo_triton.ops import bmojo_attention as att, causal_conv1d as conv, ssm_scan as scan
for mod in (att, conv, scan):
    mod.needs_idx64 = lambda *ts: True
arch = int(sys.argv[1])
g = torch.Generator().manual_seed(0)
def rn(*s, grad=True):
    return torch.randn(*s, generator=g).bfloat16().requires_grad_(grad)
log = []
t0 = time.time()
with aot.compile_instead_of_launch(arch, log) as session:
    # attention: three sources, GQA 2:1, split and atomic dQ
    q, k, v, kf, vf = rn(1, 40, 2, 64), rn(1, 40, 1, 64), rn(1, 40, 1, 64), rn(1, 40, 1, 64), rn(1, 40, 1, 64)
    ek, ev = rn(1, 3, 4, 1, 64), rn(1, 3, 4, 1, 64)
    epos = torch.randint(0, 40, (1, 3, 4))
    kw = dict(window=8, fading_window=8, eidetic_chunk=16)
    aot._backward(att.bmojo_attention(q, k, v, kf, vf, ek, ev, epos, **kw))
    for opt_in in (aot._atomic_dq(q), aot._transposed(q, "atomic"), aot._one_loop(q)):
        with opt_in:
            aot._backward(att.bmojo_attention(q, k, v, kf, vf, ek, ev, epos, **kw))
    # scan: the sequential passes, then the chunk-parallel ones
    x, dt, A = rn(1, 64, 2, 64), (torch.rand(1, 64, 2, generator=g) * 0.1).bfloat16().requires_grad_(), rn(2)
    B, C, D = rn(1, 64, 1, 128), rn(1, 64, 1, 128), rn(2)
    aot._backward(scan.ssm_scan(x, dt, A, B, C, D))
    with aot._scan_options(x, 128):
        aot._backward(scan.ssm_scan(x, dt, A, B, C, D))
        with torch.no_grad():  # inference: the state pass split over N, then the chunk outputs
            scan.ssm_scan(x, dt, A, B, C, D)
    with aot._scan_backward_options(x, 128, block_n=32):
        aot._backward(scan.ssm_scan(x, dt, A, B, C, D))
    scan.ssm_step(rn(1, 2, 64, 128, grad=False), rn(1, 2, 64, grad=False), rn(1, 2, grad=False), rn(2, grad=False),
                  rn(1, 1, 128, grad=False), rn(1, 1, 128, grad=False))
    # conv
    xc, w, bias, st = rn(1, 40, 32), rn(32, 4), rn(32), rn(1, 3, 32)
    aot._backward(conv.causal_conv1d(xc, w, bias, st))
    conv.causal_conv1d_step(rn(1, 32, grad=False), rn(1, 3, 32, grad=False), rn(32, 4, grad=False))
print(json.dumps(dict(seconds=round(time.time() - t0, 1), refused=session.refused,
                      kernels=sorted({(v.kernel, v.constexprs.get("IDX64")) for v in log}))))
"""

#: Kernels with row offsets formed in int64 always (one scalar per program), no ``IDX64``.
ALWAYS_INT64 = {"_innovation_kernel", "_norm_fwd_kernel", "_norm_bwd_kernel"}


def _kernels() -> dict[str, bool]:
    """Every ``@triton.jit`` kernel of bmojo_triton.ops: whether it takes ``IDX64``."""
    import importlib
    import inspect
    import pkgutil

    import bmojo_triton.ops as ops
    from triton.runtime.jit import KernelInterface  # a JITFunction, or an InterpretedFunction

    out = {}
    for mod in pkgutil.walk_packages(ops.__path__, "bmojo_triton.ops."):
        for name, obj in vars(importlib.import_module(mod.name)).items():
            if isinstance(obj, KernelInterface) and name.endswith("_kernel"):
                out[name] = "IDX64" in inspect.signature(obj.fn).parameters
    return out


def test_every_kernel_indexes_in_int64_or_takes_idx64():
    kernels = _kernels()
    assert len(kernels) >= 17, sorted(kernels)
    without = {k for k, has in kernels.items() if not has}
    assert without == ALWAYS_INT64, f"kernels without IDX64: {sorted(without - ALWAYS_INT64)}"


def test_idx64_variants_compile_for_sm90():
    """The interpreter runs the 64-bit kernels but cannot compile them: a type Triton's compiler
    refuses (a loop-carried value changing from int32 to int64) would pass every CPU test."""
    env = dict(os.environ, TRITON_INTERPRET="0", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", IDX64_COMPILE, "90"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["refused"] == []
    compiled = {k for k, _ in out["kernels"]}
    assert all(idx64 is True for _, idx64 in out["kernels"]), out["kernels"]
    assert compiled == {k for k, has in _kernels().items() if has}


# ----- on a GPU: real tensors past 2³¹ elements through the public op -------------------------


def test_attention_past_int32_on_a_gpu(device):
    """q, k, v of 33 × 32768 × 16 × 128 bfloat16 (2.2·10⁹ elements each, 4.4 GB): the last batch
    element's output, lse and gradients must equal those of the same element run alone (below
    the limit, the 32-bit kernels) — bitwise, the arithmetic being the same. About 40 GB of device
    memory; not on a CPU, where the interpreter would take days (the spread-view tests above
    cover the same kernels there)."""
    if torch.device(device).type != "cuda":
        pytest.skip("needs a GPU with about 40 GB free: 2.2e9-element tensors (the CPU runs the spread-view tests)")
    from bmojo_triton.ops.bmojo_attention import bmojo_attention

    b, T, H, Dh = 33, 32768, 16, 128
    assert b * T * H * Dh > INT32_MAX + 1
    g = torch.Generator(device=device).manual_seed(8)

    def rn():
        return torch.randn(b, T, H, Dh, generator=g, device=device, dtype=torch.bfloat16)

    q, k, v = rn(), rn(), rn()
    assert needs_idx64(q)
    kw = dict(window=64)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    o, lse = bmojo_attention(*leaves, **kw)
    do = torch.ones_like(o[-1:])  # the cotangent reaches the last batch element only
    torch.autograd.backward([o[-1:]], [do])
    full = [t.detach().clone() for t in (o[-1:], lse[-1:], *(x.grad[-1:] for x in leaves))]  # not views
    del o, lse
    for t in leaves:
        t.grad = None
    solo = [t[-1:].detach().clone().requires_grad_() for t in (q, k, v)]
    assert not needs_idx64(*solo)
    o1, lse1 = bmojo_attention(*solo, **kw)
    torch.autograd.backward([o1], [do])
    alone = (o1.detach(), lse1.detach(), *(t.grad for t in solo))
    del q, k, v, leaves, o1, lse1, solo
    torch.cuda.empty_cache()  # ~40 GB back to the GPU for the tests running beside this one
    for name, a, b_ in zip(("o", "lse", "dq", "dk", "dv"), full, alone):
        _assert_same(f"last batch element {name}", a, b_)
