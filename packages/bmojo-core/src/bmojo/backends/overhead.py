"""Measure the per-call cost of op dispatch on small (decode-sized) shapes::

    python -m bmojo.backends.overhead [--threads 1] [--iters 2000]

Prints, per op, the reference called directly, the public dispatched function in eager
no-grad mode (fast path: registry lookup, then the kernel), and the same through the
``torch.ops.bmojo`` custom op (what autograd and torch.compile use). Numbers quoted in
docs/backends.md come from this script.
"""

from __future__ import annotations

import argparse
import time

import torch

from bmojo.backends import dispatch
from bmojo.testing.conformance.cases import CASES

SMALL = {
    "rmsnorm": "B1_T1_eps",
    "gated_rmsnorm": "B1_T1",
    "ssm_step": "B1_noD",
    "causal_conv1d_step": "B1_K2_linear",
    "innovation_scores": "B1_T1",
    "eidetic_select": "T1_completes",
    "ssm_scan": "T1",
    "bmojo_attention": "T1_decode",
}


def _best(fn, args, kwargs, iters: int) -> float:
    for _ in range(max(10, iters // 20)):
        fn(*args, **kwargs)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(iters):
            fn(*args, **kwargs)
        best = min(best, (time.perf_counter() - t) / iters)
    return best * 1e6


def measure(iters: int = 2000) -> list[tuple[str, float, float, float]]:
    rows = []
    for op, name in SMALL.items():
        case = next(c for c in CASES if c.op == op and c.name == name)
        args, kwargs = case.build(torch.float32, "cpu", 0)
        public = getattr(dispatch, op)
        with torch.no_grad():
            ref = _best(dispatch._reference(op), args, kwargs, iters)
            fast = _best(public, args, kwargs, iters)
            with dispatch.custom_ops_always():
                custom = _best(public, args, kwargs, iters)
        rows.append((f"{op} ({name})", ref, fast, custom))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=2000)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'op (case)':<36}{'reference':>12}{'dispatched':>12}{'custom op':>12}   (µs per call, best of 5)")
    for label, ref, fast, custom in measure(args.iters):
        print(f"{label:<36}{ref:>12.1f}{fast:>12.1f}{custom:>12.1f}   +{fast - ref:.1f} / +{custom - ref:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
