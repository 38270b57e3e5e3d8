"""Timing, recording and budget helpers shared by the sections of ``python -m benchmarks.triton``.

Every measurement becomes one row of ``ROWS`` (written to ``--out`` after each section); a
measurement that fails is a row with ``note="error: ..."``, never fatal; a section that runs past
its time budget is stopped (``SectionTimeout``) and the next section runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
import traceback

import torch

ROWS: list[dict] = []
CEIL: dict = {}


# ----- timing -----
def bench(fn, *, gpu: bool, reps: int = 1) -> float:
    """Median seconds of fn(): triton.testing.do_bench on a GPU, perf_counter elsewhere."""
    if gpu:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median") / 1e3
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fwd_bwd(fn, params):
    """A closure running fn() and backpropagating a fixed random cotangent into params."""
    outs = fn()
    outs = [outs] if isinstance(outs, torch.Tensor) else [o for o in outs if o.requires_grad]
    grads = [torch.randn_like(o) for o in outs]

    def run():
        for p in params:
            p.grad = None
        res = fn()
        res = [res] if isinstance(res, torch.Tensor) else [o for o in res if o.requires_grad]
        torch.autograd.backward(res, grads)

    return run


def record(section, case, impl, mode, seconds, *, flops=None, nbytes=None, note="", **extra):
    """One row: time, achieved rate and the roofline bound (max of compute and memory time)."""
    row = dict(section=section, case=case, impl=impl, mode=mode, seconds=seconds, note=note, **extra)
    if seconds is not None and flops:
        row["tflops"] = flops / seconds / 1e12
    if seconds is not None and nbytes:
        row["gbps"] = nbytes / seconds / 1e9
    bound = 0.0
    if flops and CEIL.get("matmul_tflops"):
        bound = max(bound, flops / (CEIL["matmul_tflops"] * 1e12))
    if nbytes and CEIL.get("copy_gbps"):
        bound = max(bound, nbytes / (CEIL["copy_gbps"] * 1e9))
    if bound and seconds:
        row["roofline_s"] = bound
        row["roofline_frac"] = bound / seconds
    ROWS.append(row)
    t = "-" if seconds is None else f"{seconds * 1e3:9.3f} ms"
    rate = f"{row['tflops']:7.1f} TFLOP/s" if "tflops" in row else f"{row['gbps']:7.0f} GB/s" if "gbps" in row else ""
    roof = f"  {100 * row['roofline_frac']:5.1f}% of roofline" if "roofline_frac" in row else ""
    print(f"  {section:9s} {case:26s} {impl:28s} {mode:7s} {t}  {rate}{roof}  {note}", flush=True)
    return seconds


#: perf_counter deadline after which remaining measurements are skipped (``--budget``)
DEADLINE = [float("inf")]


def attempt(section, case, impl, mode, fn, **kw):
    if time.perf_counter() > DEADLINE[0]:
        record(section, case, impl, mode, None, note="skipped: --budget exhausted")
        return None
    try:
        return record(section, case, impl, mode, fn(), **kw)
    except Exception as err:  # a peer that fails is reported, never fatal
        msg = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        record(section, case, impl, mode, None, note=f"error: {msg}")
        if os.environ.get("BMOJO_BENCH_TRACE"):
            traceback.print_exc()
        return None


def ratio(name, num, den, target=None, better="lower"):
    """Print and record ours/peer (or its inverse) with the target it is held to."""
    if num is None or den is None:
        ROWS.append(dict(section="ratio", case=name, value=None, target=target))
        print(f"  ratio {name}: n/a", flush=True)
        return
    val = num / den
    ok = None if target is None else (val <= target if better == "lower" else val >= target)
    ROWS.append(dict(section="ratio", case=name, value=val, target=target, met=ok))
    tgt = (
        ""
        if target is None
        else f"  (target {'<=' if better == 'lower' else '>='} {target}: {'met' if ok else 'NOT met'})"
    )
    print(f"  ratio {name}: {val:.2f}{tgt}", flush=True)


def agree(section, case, what, ours, peer):
    """Record max|ours − peer| of the first output (the comparison is only meaningful if equal)."""
    try:
        with torch.no_grad():
            a, b = ours(), peer()
            a = a[0] if isinstance(a, tuple) else a
            b = b[0] if isinstance(b, tuple) else b
            diff = (a.float() - b.float()).abs().max().item()
            scale = b.float().abs().max().item()
    except Exception as err:
        diff, scale = None, None
        print(f"  {section:9s} {case:26s} max|diff| {what}: error {type(err).__name__}: {err}"[:200], flush=True)
    ROWS.append(dict(section=section, case=case, impl=what, mode="max_abs_diff", value=diff, scale=scale))
    if diff is not None:
        print(f"  {section:9s} {case:26s} max|diff| {what}: {diff:.2e} (max|peer| {scale:.2e})", flush=True)


# ----- ceilings -----
def ceilings(gpu, dev):
    if not gpu:
        CEIL.update(copy_gbps=None, matmul_tflops=None)
        return
    n = 1 << 28  # 512 MiB of bf16
    src = torch.empty(n, dtype=torch.bfloat16, device=dev)
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src), gpu=gpu)  # noqa: F821 (ruff misreads the del below)
    CEIL["copy_gbps"] = 2 * src.numel() * 2 / t / 1e9
    del src, dst
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
    t = bench(lambda: a @ b, gpu=gpu)
    CEIL["matmul_tflops"] = 2 * 8192**3 / t / 1e12
    print(f"ceilings: copy {CEIL['copy_gbps']:.0f} GB/s, bf16 matmul {CEIL['matmul_tflops']:.0f} TFLOP/s", flush=True)


# ----- per-section time budgets -----
class SectionTimeout(BaseException):
    """Raised inside a section when its time budget runs out. A BaseException, so that the
    ``except Exception`` of ``attempt`` (and of any library) lets it through to the section."""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise SectionTimeout in the main thread after ``seconds`` (SIGALRM; POSIX). A long call
    into C++ (a Triton compile, a kernel) is interrupted when it returns to Python."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise SectionTimeout(f"{what}: section budget of {seconds:.0f} s exhausted")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
