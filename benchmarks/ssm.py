"""Section a: ``ssm_scan`` forward and forward+backward against the transformers Mamba-2 mixer's
pure-torch scan (``mamba2_chunk_scan``) at the same shapes, and against the naive recurrence."""

from __future__ import annotations

import torch
from bmojo.config import LayerConfig
from bmojo.ops.ssm_scan import ssm_scan
from bmojo.ops.ssm_scan.naive import ssm_scan_naive

from benchmarks.common import Row, Settings, fwd_bwd, timeit_many
from benchmarks.peers import hf_mamba2_chunk_scan

SECTION = "a. ssm_scan"
OURS_CHUNK = LayerConfig().ssm_chunk_size  # what the layer uses
HF_CHUNK = 256  # Mamba2Config's default chunk_size
#: timed rounds of the naive-recurrence comparison at most (a Python loop over tokens and heads)
NAIVE_MAX_REPEATS = 3


def shapes(settings: Settings) -> dict:
    if settings.tiny:
        return dict(b=1, Ts=(64,), H=4, P=16, G=1, N=16, T_naive=32)
    if settings.quick:
        return dict(b=1, Ts=(2048,), H=8, P=64, G=1, N=64, T_naive=128)
    return dict(b=1, Ts=(4096, 16384), H=16, P=64, G=1, N=64, T_naive=256)


def inputs(b, T, H, P, G, N, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(b, T, H, generator=g) - 3.0)
    A = -torch.exp(torch.rand(H, generator=g) * 2.0)
    B = torch.randn(b, T, G, N, generator=g)
    C = torch.randn(b, T, G, N, generator=g)
    D = torch.ones(H)
    return x, dt, A, B, C, D


def run(settings: Settings) -> list[Row]:
    s = shapes(settings)
    rows = []
    for T in s["Ts"]:
        rows += _case(settings, s, T)
    # The naive recurrence is a Python loop over tokens and heads: compare at a short length.
    T = s["T_naive"]
    x, dt, A, B, C, D = inputs(s["b"], T, s["H"], s["P"], s["G"], s["N"])
    case = f"T={T} H={s['H']} P={s['P']} N={s['N']} fwd"
    with torch.no_grad():
        fns = {
            "ours": lambda: ssm_scan(x, dt, A, B, C, D, chunk_size=OURS_CHUNK),
            "naive": lambda: ssm_scan_naive(x, dt, A, B, C, D),
        }
        t, outs = timeit_many(fns, settings, repeats=min(settings.repeats, NAIVE_MAX_REPEATS))
    # the slow loop runs at most NAIVE_MAX_REPEATS timed rounds, whatever --repeats says: the row
    # says how many ran (its "repeats")
    n = outs["repeats"]
    note = f"{n} timed run{'s' if n != 1 else ''}, at most {NAIVE_MAX_REPEATS} here"
    rows.append(
        Row(SECTION, case, "time_s", "ssm_scan", t["ours"], "naive recurrence", t["naive"], note, extra={"repeats": n})
    )
    return rows


def _case(settings: Settings, s: dict, T: int) -> list[Row]:
    hf_scan = hf_mamba2_chunk_scan()
    x, dt, A, B, C, D = inputs(s["b"], T, s["H"], s["P"], s["G"], s["N"])
    case = f"T={T} H={s['H']} P={s['P']} N={s['N']}"
    leaves = [x, dt, B, C]

    def ours():
        return ssm_scan(x, dt, A, B, C, D, chunk_size=OURS_CHUNK)

    def peer():
        return hf_scan(x, dt, A, B, C, chunk_size=HF_CHUNK, D=D)

    with torch.no_grad():
        t, _ = timeit_many({"ours": ours, "peer": peer}, settings)
    note = f"chunk {HF_CHUNK}; ours chunk {OURS_CHUNK}"
    peer_name = "HF mamba2_chunk_scan"
    rows = [Row(SECTION, case + " fwd", "time_s", "ssm_scan", t["ours"], peer_name, t["peer"], note)]
    for x_ in leaves:
        x_.requires_grad_(True)
    t, _ = timeit_many({"ours": fwd_bwd(ours, leaves), "peer": fwd_bwd(peer, leaves)}, settings)
    rows.append(Row(SECTION, case + " fwd+bwd", "time_s", "ssm_scan", t["ours"], peer_name, t["peer"], note))
    return rows
