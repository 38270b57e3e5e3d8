"""Section c: a whole B'MOJO mixer forward+backward against a transformers MistralAttention
(sliding window) layer and a transformers Mamba-2 mixer of the same width, and their sum.

The B'MOJO layer runs the SSM *and* attention over three sources (w raw + f fading + M eidetic
keys per query), so it does strictly more work than either peer; the target asks it to cost at
most 0.9x the two peers together. Our own special cases (``swa``, ``mamba2`` presets) are timed
against the same peers so the sum can be read component by component.
"""

from __future__ import annotations

import torch
from bmojo.config import LayerConfig
from bmojo.layer import BMojoMixer

from benchmarks.common import Row, Settings, fwd_bwd, timeit_many
from benchmarks.peers import hf_mamba2_mixer, hf_mistral_attention

SECTION = "c. layer fwd+bwd"
TARGET = 0.9


def shapes(settings: Settings) -> dict:
    if settings.tiny:
        return dict(b=1, T=64, D=32, H=2, w=16, M=4, P=16, N=8, expand=2)
    if settings.quick:
        return dict(b=1, T=2048, D=256, H=4, w=256, M=64, P=64, N=64, expand=2)
    return dict(b=1, T=4096, D=512, H=8, w=256, M=64, P=64, N=64, expand=2)


def ours(preset: str, s: dict) -> BMojoMixer:
    kw = dict(n_heads=s["H"], ssm_head_dim=s["P"], ssm_state_size=s["N"], ssm_expand=s["expand"], mlp=False)
    if preset != "mamba2":
        kw["window"] = s["w"]
    if preset == "bmojo":
        kw["eidetic_capacity"] = s["M"]
    return BMojoMixer(LayerConfig.preset(preset, d_model=s["D"], **kw))


def _run(module_run, params, x):
    return fwd_bwd(lambda: module_run(x), [*params, x])


def run(settings: Settings) -> list[Row]:
    s = shapes(settings)
    b, T, D = s["b"], s["T"], s["D"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, T, D, generator=g).requires_grad_(True)
    torch.manual_seed(0)
    hf_mamba, hf_cfg = hf_mamba2_mixer(
        D, head_dim=s["P"], state_size=s["N"], n_groups=1, expand=s["expand"], chunk_size=256
    )
    attn, attn_run = hf_mistral_attention(
        D, n_heads=s["H"], n_kv_heads=s["H"], head_dim=D // s["H"], window=s["w"], T=T
    )
    mixers = {name: ours(name, s) for name in ("bmojo", "bmojo_f", "swa", "mamba2")}
    fns = {"hf_mamba": _run(hf_mamba, hf_mamba.parameters(), x), "hf_attn": _run(attn_run, attn.parameters(), x)}
    fns.update({name: _run(lambda v, m=m: m(v)[0], m.parameters(), x) for name, m in mixers.items()})
    times, _ = timeit_many(fns, settings)
    t_mamba, t_attn = times["hf_mamba"], times["hf_attn"]
    t_sum = t_mamba + t_attn
    case = f"T={T} D={D} w={s['w']}"
    hf_m = f"HF Mamba2Mixer (torch path, chunk {hf_cfg.chunk_size})"
    hf_a = "HF MistralAttention (SDPA, dense window mask)"
    peer_sum = "HF MistralAttention + HF Mamba2Mixer"
    bm = f"B'MOJO (f={s['w']}, M={s['M']})"
    return [
        Row(SECTION, case, "time_s", bm, times["bmojo"], peer_sum, t_sum, "sum of the two", TARGET),
        Row(SECTION, case, "time_s", "B'MOJO-F (M=0)", times["bmojo_f"], peer_sum, t_sum, "sum of the two"),
        Row(SECTION, case, "time_s", bm, times["bmojo"], hf_a, t_attn),
        Row(SECTION, case, "time_s", bm, times["bmojo"], hf_m, t_mamba),
        Row(SECTION, case, "time_s", "ours, swa preset", times["swa"], hf_a, t_attn),
        Row(SECTION, case, "time_s", "ours, mamba2 preset", times["mamba2"], hf_m, t_mamba),
    ]


def profile(settings: Settings, top: int = 15) -> str:
    """The torch profiler's table for one B'MOJO layer fwd+bwd (what explains its time)."""
    s = shapes(settings)
    x = torch.randn(s["b"], s["T"], s["D"]).requires_grad_(True)
    m = ours("bmojo", s)
    run = fwd_bwd(lambda: m(x)[0], [*m.parameters(), x])
    run()
    with torch.profiler.profile() as prof:
        run()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
