"""Memory grows as O(T·(w+f+M)), never O(T²) (spec §7).

At T = 8192 one dense T×T float32 matrix is 268 MB. Each check runs in a fresh subprocess (CPU
torch has no allocator statistics) and measures the peak resident-set growth during the call:
``ru_maxrss`` after the call minus the resident set just before it (read from /proc). The
harness refuses to measure if an earlier peak sits above the current resident set (it would hide
growth). Inputs are
created before the measurement starts. The limit is a quarter of one dense matrix.

A warm-up call at small T comes first, so lazy imports are not counted.
``test_measurement_catches_a_dense_matrix`` runs the same harness on a dense T×T float32 tensor
and checks it reports at least ~268 MB, so a passing bound is meaningful.
"""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
import sys
import textwrap

import pytest

T, W, F, M = 8192, 64, 64, 32
DENSE_BYTES = T * T * 4  # one T×T float32 matrix: 268 MB
LIMIT = DENSE_BYTES // 4

HARNESS = textwrap.dedent(
    """
    import importlib, json, os, resource, sys
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    mode, T = sys.argv[1], int(sys.argv[2])
    W, F, M = {W}, {F}, {M}

    def rss_now():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    if mode.startswith("attention"):
        from bmojo.ops.bmojo_attention import bmojo_attention, eidetic_snapshot_count

        # "attention:unfused" forces the pure-einsum path of the reference where it has a fused one
        ref = importlib.import_module("bmojo.ops.bmojo_attention.reference")
        if mode.endswith(":unfused"):
            ref.USE_FUSED_CPU_KERNEL = False
        b, H, Hkv, Dh, chunk = 1, 1, 1, 16, W  # one head: the dense cost is one T×T matrix
        S = eidetic_snapshot_count(0, T, chunk)
        q = torch.randn(b, T, H, Dh)
        k, v, kf, vf = (torch.randn(b, T, Hkv, Dh) for _ in range(4))
        ek, ev = torch.randn(b, S, M, Hkv, Dh), torch.randn(b, S, M, Hkv, Dh)
        epos = torch.randint(0, T, (b, S, M))

        def run(n=T):
            s = eidetic_snapshot_count(0, n, chunk)
            return bmojo_attention(q[:, :n], k[:, :n], v[:, :n], kf[:, :n], vf[:, :n], ek[:, :s], ev[:, :s],
                                   epos[:, :s], window=W, fading_window=F, eidetic_chunk=chunk)

    elif mode == "layer":
        from bmojo import BMojoMixer, LayerConfig

        cfg = LayerConfig(d_model=16, n_heads=1, window=W, fading_window=F, eidetic_capacity=M,
                          eidetic_per_chunk=4, ssm_head_dim=16, ssm_chunk_size=32, attn_block_size=64)
        mixer = BMojoMixer(cfg).eval()
        x = torch.randn(1, T, 16)

        def run(n=T):
            return mixer(x[:, :n])

    elif mode == "dense":
        def run(n=T):
            return torch.ones(n, n)  # what a dense mask or score matrix costs

    else:
        raise SystemExit("unknown mode " + mode)

    with torch.no_grad():
        run(256)  # warm-up: lazy imports and op registration are not the op's memory
        before, peak_before = rss_now(), peak()
        # A peak from before the call that exceeds the current RSS would hide growth below it.
        if peak_before - before > 16 * 2**20:
            raise SystemExit(f"earlier peak {{peak_before}} B masks the measurement (RSS {{before}} B)")
        out = run()
        after = peak()
    del out
    print(json.dumps({{"growth": after - before}}))
    """
).format(W=W, F=F, M=M)


@functools.cache
def peak_growth(mode: str, length: int = T) -> int:
    # Linux carries a process's peak RSS across fork/exec into ru_maxrss of the new program, so a
    # child started directly from this (large) pytest process would report our peak. A shell in
    # between that forks (``; exit`` stops it from exec-ing python in place) starts it clean.
    script = " ".join(shlex.quote(a) for a in (sys.executable, "-c", HARNESS, mode, str(length)))
    proc = subprocess.run(["sh", "-c", script + "; exit $?"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["growth"]


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the harness reads /proc and Linux ru_maxrss units (KiB)"
)


@linux_only
def test_measurement_catches_a_dense_matrix():
    growth = peak_growth("dense")
    assert growth >= 0.9 * DENSE_BYTES, f"dense T×T float32 raised peak RSS by only {growth / 1e6:.0f} MB"


@linux_only
@pytest.mark.parametrize("mode", ["attention", "attention:unfused", "layer"])
def test_peak_memory_far_below_dense(mode):
    growth = peak_growth(mode)
    assert growth < LIMIT, (
        f"{mode} at T={T}, w={W}, f={F}, M={M}: peak RSS grew {growth / 1e6:.1f} MB, "
        f"limit {LIMIT / 1e6:.0f} MB (a dense T×T float32 matrix is {DENSE_BYTES / 1e6:.0f} MB)"
    )


@linux_only
def test_layer_memory_grows_linearly():
    """Doubling T doubles the layer's peak memory (a T² term would quadruple it)."""
    half, full = peak_growth("layer", T // 2), peak_growth("layer", T)
    assert full < 3 * half, f"T={T // 2}: {half / 1e6:.1f} MB, T={T}: {full / 1e6:.1f} MB"
