"""The native MLX model (bmojo-mlx) against the PyTorch reference model on the same CPU: prefill
tokens/s and decode tokens/s, same checkpoint, float32, one run.

    python -m benchmarks.mlx_model [--prefill 1024] [--steps 32] [--repeats 5] [--threads 1]

Both models load one ``BMojoLM.save_pretrained`` directory (preset ``bmojo``: D = 256, 2 layers,
4 heads, w = f = 256, M = 64, byte vocabulary, like section d of ``python -m benchmarks``).
Prefill: ``prefill`` of ``--prefill`` tokens from a fresh state (MLX: including ``mx.eval``).
Decode: ``--steps`` single-token ``step`` calls from the state after that prefill (MLX: each step's
logits evaluated, as generation must). The two are timed interleaved (``timeit_many``: warm-up, then
rounds in rotating order, median), and the logits are compared (max |difference| in the JSON).
Not part of ``python -m benchmarks`` (it needs MLX); results go to
``benchmarks/results/mlx-<UTC stamp>.json`` and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bmojo._checks import check_threads

from benchmarks.common import (
    RESULTS_DIR,
    Settings,
    check_int,
    check_out_dir,
    check_out_path,
    timeit_many,
    write_json,
)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, checked before anything is imported or measured."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.mlx_model", description=__doc__.split("\n\n")[0])
    p.add_argument("--prefill", type=int, default=1024, help="prompt tokens (>= 1; default 1024)")
    p.add_argument("--steps", type=int, default=32, help="decode steps per timed call (>= 1; default 32)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (>= 1; default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (>= 1; default 1: shared machines)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/mlx-<stamp>.json)")
    args = p.parse_args(argv)
    try:
        for name, minimum in (("prefill", 1), ("steps", 1), ("repeats", 1)):
            check_int(getattr(args, name), f"--{name}", minimum)
        check_threads("--threads", args.threads)
        if args.out is not None:
            check_out_path(args.out)
        else:
            check_out_dir(RESULTS_DIR, "--out (default folder)")
    except ValueError as err:
        p.error(str(err))
    return args


def require_mlx():
    """Import MLX and bmojo-mlx (not dependencies of the benchmarks) or say how to get them."""
    try:
        import bmojo_mlx
        import mlx.core as mx
    except ImportError as err:
        raise SystemExit(
            f"benchmarks.mlx_model: needs bmojo-mlx and MLX ({err}); install them with "
            "`pip install -e packages/bmojo-mlx` (it pulls in MLX)"
        ) from err
    return mx, bmojo_mlx


def main(argv=None) -> int:
    args = parse_args(argv)
    mx, bmojo_mlx = require_mlx()
    torch.set_num_threads(args.threads)

    from bmojo import BMojoLM, ModelConfig

    cfg = ModelConfig.preset("bmojo", vocab_size=256, d_model=256, n_layers=2, n_heads=4, window=256)
    cfg = cfg.replace(layers=tuple(layer.replace(eidetic_capacity=64) for layer in cfg.layers))
    torch.manual_seed(0)
    ref = BMojoLM(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        native = bmojo_mlx.load(d)
    ids = torch.randint(0, 256, (1, args.prefill + args.steps), generator=torch.Generator().manual_seed(1))
    prompt_t, prompt_m = ids[:, : args.prefill], mx.array(ids[:, : args.prefill].numpy())
    tokens = [ids[:, args.prefill + i] for i in range(args.steps)]
    tokens_m = [mx.array(t.numpy()) for t in tokens]

    with torch.no_grad():
        _, ref_state = ref.prefill(prompt_t)
    mlx_logits, mlx_state = native.prefill(prompt_m)
    mx.eval(mlx_logits, mlx_state.layers)

    def prefill_torch():
        with torch.no_grad():
            return ref.prefill(prompt_t)[0]

    def prefill_mlx():
        out = native.prefill(prompt_m)[0]
        mx.eval(out)
        return out

    def decode_torch():
        state, outs = ref_state, []
        with torch.no_grad():
            for t in tokens:
                logits, state = ref.step(t, state)
                outs.append(logits)
        return torch.stack(outs, 1)

    def decode_mlx():
        state, outs = mlx_state, []
        for t in tokens_m:
            logits, state = native.step(t, state)
            mx.eval(logits)
            outs.append(logits)
        return mx.stack(outs, 1)

    settings = Settings(repeats=args.repeats, warmup=1, case_budget_s=60.0)
    load0 = os.getloadavg()
    t0 = time.time()
    pre, pre_out = timeit_many({"torch": prefill_torch, "mlx": prefill_mlx}, settings)
    dec, dec_out = timeit_many({"torch": decode_torch, "mlx": decode_mlx}, settings)
    # Context for the prefill figure: one 1024^3 float32 matmul in each framework (same CPU, same run).
    a_t = torch.randn(1024, 1024)
    a_m = mx.array(a_t.numpy())
    gemm, _ = timeit_many({"torch": lambda: a_t @ a_t, "mlx": lambda: mx.eval(a_m @ a_m)}, settings)
    diff_pre = float(np.abs(np.array(pre_out["mlx"]) - pre_out["torch"].numpy()).max())
    diff_dec = float(np.abs(np.array(dec_out["mlx"]) - dec_out["torch"].numpy()).max())
    result = {
        "config": cfg.to_dict(),
        "prefill_tokens": args.prefill,
        "decode_steps": args.steps,
        "prefill_tokens_per_s": {k: args.prefill / v for k, v in pre.items()},
        "decode_tokens_per_s": {k: args.steps / v for k, v in dec.items()},
        "max_abs_logit_diff": {"prefill": diff_pre, "decode": diff_dec},
        "gemm_1024_gflops": {k: 2 * 1024**3 / v / 1e9 for k, v in gemm.items()},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "mlx": mx.__version__,
            "mlx_device": str(mx.default_device()),
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
            "wall_s": time.time() - t0,
        },
    }
    print(f"{'':24}{'PyTorch BMojoLM':>18}{'MLX BMojoMLX':>16}{'MLX / PyTorch':>16}")
    for name, key in (("prefill tokens/s", "prefill_tokens_per_s"), ("decode tokens/s", "decode_tokens_per_s")):
        v = result[key]
        print(f"{name:<24}{v['torch']:>18.1f}{v['mlx']:>16.1f}{v['mlx'] / v['torch']:>16.2f}")
    g = result["gemm_1024_gflops"]
    print(f"{'1024^3 matmul GFLOP/s':<24}{g['torch']:>18.1f}{g['mlx']:>16.1f}{g['mlx'] / g['torch']:>16.2f}")
    print(f"max |logit difference|: prefill {diff_pre:.2e}, decode {diff_dec:.2e}; load {load0} -> {os.getloadavg()}")
    out = args.out or RESULTS_DIR / f"mlx-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    print(f"wrote {write_json(out, result, indent=2)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
