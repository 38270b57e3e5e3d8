"""Compile every kernel launch for a GPU target without a GPU (no driver, no device memory).

``python -m bmojo_triton.aot [--arch 90]`` runs each op's launcher on small CPU tensors with
Triton's launch replaced by an ahead-of-time ``triton.compile`` for ``cuda:<arch>`` (Triton ships
its own ptxas), so code that only fails in the GPU compiler (types, layouts, unsupported ops) is
caught on a CPU machine. Kernels do not run: outputs are left unwritten. Must run without
``TRITON_INTERPRET`` (the interpreter never compiles).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import replace

import torch

_DTYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.bool: "i1",
}


def _signature(kernel, args, kwargs):
    names = kernel.arg_names
    bound = dict(zip(names, args))
    bound.update(kwargs)
    sig, const = {}, {}
    for p in kernel.params:
        v = bound[p.name]
        if p.is_constexpr:
            sig[p.name], const[p.name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = "*" + _DTYPES[v.dtype]
        elif isinstance(v, bool):
            sig[p.name] = "i1"
        elif isinstance(v, int):
            sig[p.name] = "i32" if -(2**31) <= v < 2**31 else "i64"
        elif isinstance(v, float):
            sig[p.name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: argument {p.name} has unsupported type {type(v).__name__}")
    return sig, const


@contextlib.contextmanager
def compile_instead_of_launch(arch: int, log: list):
    """Inside the block, ``kernel[grid](...)`` compiles for ``cuda:arch`` and records the result."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    target = GPUTarget("cuda", arch, 32)
    seen: dict = {}
    original = JITFunction.__getitem__

    def getitem(self, grid):
        def launch(*args, **kwargs):
            # the launch options of the op's tile table are compiled too (they change the code)
            opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
            sig, const = _signature(self, args, kwargs)
            key = (
                self.__name__,
                tuple(sorted(sig.items())),
                tuple(sorted((k, str(v)) for k, v in const.items())),
                tuple(sorted(opts.items())),
            )
            if key in seen:
                return None
            t0 = time.perf_counter()
            triton.compile(ASTSource(self, sig, const), target=target, options=opts)
            seen[key] = True
            log.append((self.__name__, {k: v for k, v in const.items()}, time.perf_counter() - t0))
            return None

        return launch

    from bmojo_triton.ops import _triton_utils

    JITFunction.__getitem__ = getitem
    _triton_utils.AS_GPU = True
    try:
        yield
    finally:
        JITFunction.__getitem__ = original
        _triton_utils.AS_GPU = False


def _atomic_dq(q: torch.Tensor):
    """The attention backward's opt-in "atomic" dQ variant at the GPU table's ``bwd_dkdv`` tiles for q."""
    from bmojo_triton.ops import bmojo_attention as att
    from bmojo_triton.ops._triton_utils import pow2

    cfg = att.TILES.lookup("bwd_dkdv", (min(pow2(q.shape[-1]), 128), q.element_size()))
    return att.TILES.override(bwd_dkdv=replace(cfg, dq="atomic"))


def run_all(arch: int, dtypes=(torch.float32, torch.bfloat16, torch.float16, torch.float64)) -> list:
    """Launch every op (forward and backward where the backend has one) on tiny CPU inputs; the
    attention backward in both dQ variants (the default "split" and the opt-in "atomic")."""
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
    with compile_instead_of_launch(arch, log):
        for dtype in dtypes:
            for case in CASES:
                fn = fns.get(case.op)
                if fn is None:
                    continue
                args, kw = case.build(dtype, "cpu", 0)
                args = [
                    a.requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
                ]
                variants = [contextlib.nullcontext()]
                if case.op == "bmojo_attention":
                    variants.append(_atomic_dq(args[0]))
                for variant in variants:
                    with variant:
                        out = fn(*args, **kw)
                        outs = [out] if isinstance(out, torch.Tensor) else list(out)
                        diff = [o for o in outs if o.requires_grad]
                        if diff:
                            torch.autograd.backward(diff, [torch.zeros_like(o) for o in diff])
    return log


def main(argv=None) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: the interpreter does not compile")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, action="append", help="compute capability x10 (default: 80 and 90)")
    a = ap.parse_args(argv)
    for arch in a.arch or [80, 90]:
        t0 = time.perf_counter()
        log = run_all(arch)
        print(f"sm_{arch}: compiled {len(log)} kernel variants in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
