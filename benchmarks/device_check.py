"""One short run on a CUDA machine: does the pure-PyTorch reference path behave on a GPU?

1. correctness: reference ops on CUDA vs their naive oracles on CPU (float64), and a B'MOJO LM's
   parallel forward vs prefill/step on CUDA (float64 and float32);
2. speed, as ratios in this run: ``bmojo_attention`` (reference, blocked) vs SDPA with a dense
   sliding-window mask, T = 4k and 16k, w = 256, float32 and bfloat16.

Writes ``$OUT/device_check.json`` when OUT is set (a device run's output folder), else
``benchmarks/results/device-check-<UTC stamp>.json`` in the repository (wherever it is run from).
Not a unit test. Usage: ``python benchmarks/device_check.py``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bmojo import BMojoLM, ModelConfig
from bmojo.ops.bmojo_attention import bmojo_attention, eidetic_snapshot_count
from bmojo.ops.bmojo_attention.naive import bmojo_attention_naive
from bmojo.ops.ssm_scan import ssm_scan
from bmojo.ops.ssm_scan.naive import ssm_scan_naive

#: benchmarks/results/ of this repository (as benchmarks.common.RESULTS_DIR: this file also runs as a
#: plain script, without the repository root on sys.path)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def destination(env=None) -> Path:
    """Where the JSON goes: ``$OUT/device_check.json``, else a timestamped file in RESULTS_DIR."""
    env = os.environ if env is None else env
    if env.get("OUT"):
        return Path(env["OUT"]) / "device_check.json"
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return RESULTS_DIR / f"device-check-{stamp}.json"


def rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-300)).item()


def correctness(dev):
    out = {}
    g = torch.Generator().manual_seed(0)
    d64 = torch.float64

    def r(*s):
        return torch.randn(*s, generator=g, dtype=d64)

    b, T, H, P, G, N = 2, 77, 4, 8, 2, 16
    args = (
        r(b, T, H, P),
        torch.rand(b, T, H, generator=g, dtype=d64) * 0.3,
        -torch.rand(H, generator=g, dtype=d64),
        r(b, T, G, N),
        r(b, T, G, N),
        r(H),
        r(b, H, P, N),
    )
    y, h = ssm_scan(*[a.to(dev) for a in args], chunk_size=16)
    y0, h0 = ssm_scan_naive(*args)
    out["ssm_scan_f64_rel"] = max(rel(y, y0), rel(h, h0))

    b, T, H, Hkv, Dh, w, f, c, M, qs = 2, 70, 4, 2, 16, 12, 9, 6, 5, 13
    S = eidetic_snapshot_count(qs, T, c)
    q, k, v = r(b, T, H, Dh), r(b, T + w, Hkv, Dh), r(b, T + w, Hkv, Dh)
    kf, vf = r(b, T + w + f, Hkv, Dh), r(b, T + w + f, Hkv, Dh)
    ek, ev = r(b, S, M, Hkv, Dh), r(b, S, M, Hkv, Dh)
    epos = torch.randint(-1, qs + T, (b, S, M), generator=g)
    kw = dict(q_start=qs, window=w, fading_window=f, eidetic_chunk=c)
    o, lse = bmojo_attention(*[t.to(dev) for t in (q, k, v, kf, vf, ek, ev, epos)], **kw)
    o0, lse0 = bmojo_attention_naive(q, k, v, kf, vf, ek, ev, epos, **kw)
    out["bmojo_attention_f64_rel"] = max(rel(o, o0), rel(lse, lse0))

    for dtype, name in ((torch.float64, "f64"), (torch.float32, "f32")):
        for preset in ("bmojo", "bmojo_f", "swa", "mamba2"):
            torch.manual_seed(0)
            cfg = ModelConfig.preset(
                preset,
                vocab_size=97,
                d_model=64,
                n_layers=2,
                **({} if preset == "mamba2" else {"window": 16}),  # mamba2 fixes window = 0
                ssm_head_dim=16,
                ssm_chunk_size=16,
                attn_block_size=8,
            )
            m = BMojoLM(cfg).to(dev, dtype)
            ids = torch.randint(0, 97, (3, 100), generator=g).to(dev)
            with torch.no_grad():
                full = m(ids)
                lg1, st = m.prefill(ids[:, :37])
                steps = []
                for t in range(37, 45):
                    lg, st = m.step(ids[:, t], st)
                    steps.append(lg[:, None])
                lg2, st = m.prefill(ids[:, 45:], st)
            inc = torch.cat([lg1, *steps, lg2], dim=1)
            out[f"lm_{preset}_{name}_rel"] = rel(inc, full)
    return out


def timed(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(dev):
    rows = []
    H, Dh, w = 8, 64, 256
    for dtype in (torch.float32, torch.bfloat16):
        for T in (4096, 16384):
            q = torch.randn(1, T, H, Dh, device=dev, dtype=dtype)
            k, v = torch.randn_like(q), torch.randn_like(q)
            i = torch.arange(T, device=dev)
            mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - w)

            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
            ours = functools.partial(bmojo_attention, q, k, v, window=w)
            sdpa = functools.partial(F.scaled_dot_product_attention, qt, kt, vt, attn_mask=mask)
            err = rel(ours()[0].transpose(1, 2).float(), sdpa().float())
            t_ours, t_sdpa = timed(ours), timed(sdpa)
            rows.append(
                dict(
                    dtype=str(dtype),
                    T=T,
                    w=w,
                    heads=H,
                    head_dim=Dh,
                    ms_bmojo_reference=1e3 * t_ours,
                    ms_sdpa_dense_mask=1e3 * t_sdpa,
                    speedup_vs_sdpa=t_sdpa / t_ours,
                    rel_err=err,
                )
            )
            print(rows[-1], flush=True)
    return rows


def main():
    if not torch.cuda.is_available():
        raise SystemExit("device_check: expected a CUDA device, found none")
    dev = torch.device("cuda")
    out = destination()
    out.parent.mkdir(parents=True, exist_ok=True)  # before the run: a bad OUT fails at once
    result = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version()}
    result["correctness"] = correctness(dev)
    print(json.dumps(result["correctness"], indent=1), flush=True)
    result["attention_speed"] = speed(dev)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
