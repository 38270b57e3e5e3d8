"""``eidetic`` section: does ``innovation_scores`` / ``eidetic_select`` pay for a kernel?

One B'MOJO mixer (``bmojo.layer.BMojoMixer``, preset ``bmojo``: window + fading + eidetic memory;
16 heads of 64, w = 512, M = 64, SSM P = 64, N = 128) runs forward once on the triton backend
while the two eidetic ops are wrapped to record the exact arguments the layer passes them. Then
it times the layer's forward and forward+backward, and each recorded call alone (summed over the
calls of one forward): ``innovation_scores`` as the backend serves it (Triton) and as the
reference (torch), ``eidetic_select`` as served (core's torch reference: the triton backend does
not provide it). The ratio rows give each op's share of the layer's time — the evidence for
issue 11's "a kernel where it pays".
"""

from __future__ import annotations

import contextlib

import torch

from benchmarks.triton.common import ROWS, attempt, bench, fwd_bwd


@contextlib.contextmanager
def _recording(calls: dict):
    """Wrap the eidetic ops where the memory module looks them up; record (args, kwargs)."""
    import bmojo.memory.eidetic as mem

    orig = {name: getattr(mem, name) for name in ("innovation_scores", "eidetic_select")}

    def wrap(name):
        def fn(*args, **kwargs):
            calls[name].append((args, kwargs))
            return orig[name](*args, **kwargs)

        return fn

    for name in orig:
        setattr(mem, name, wrap(name))
    try:
        yield
    finally:
        for name, fn in orig.items():
            setattr(mem, name, fn)


def eidetic(s, gpu, dev, dtype) -> None:
    from bmojo.backends.dispatch import eidetic_select, innovation_scores
    from bmojo.config import LayerConfig
    from bmojo.layer import BMojoMixer
    from bmojo.ops.eidetic.reference import innovation_scores as ref_scores

    cfg = LayerConfig.preset(
        "bmojo",
        d_model=s["H"] * s["Dh"],
        n_heads=s["H"],
        window=s["w"],
        eidetic_capacity=s["M"],
        ssm_head_dim=s["P"],
        ssm_state_size=s["N"],
    )
    torch.manual_seed(0)
    layer = BMojoMixer(cfg).to(dev, dtype)
    params = [p for p in layer.parameters() if p.requires_grad]
    for T in s["T"]:
        _eidetic_case(s, T, gpu, dev, dtype, layer, cfg, params, eidetic_select, innovation_scores, ref_scores)


def _eidetic_case(s, T, gpu, dev, dtype, layer, cfg, params, eidetic_select, innovation_scores, ref_scores):
    from bmojo.backends import use_backend

    case = f"T={T} {str(dtype).replace('torch.', '')}"
    x = torch.randn(s["b"], T, cfg.d_model, generator=torch.Generator().manual_seed(T)).to(dev, dtype)
    x.requires_grad_(True)
    with use_backend("triton"):
        calls = {"innovation_scores": [], "eidetic_select": []}
        with _recording(calls), torch.no_grad():
            layer(x)

        def fwd():
            return layer(x)[0]

        t_f = attempt("eidetic", case, "B'MOJO mixer (triton)", "fwd", lambda: bench(fwd, gpu=gpu))
        t_fb = attempt(
            "eidetic", case, "B'MOJO mixer (triton)", "fwd+bwd", lambda: bench(fwd_bwd(fwd, [x, *params]), gpu=gpu)
        )

        def all_calls(fn, name):
            recorded = calls[name]
            return lambda: [fn(*a, **kw) for a, kw in recorded]

        n_i, n_s = len(calls["innovation_scores"]), len(calls["eidetic_select"])
        t_i = attempt(
            "eidetic",
            case,
            f"innovation_scores (triton) x{n_i}",
            "fwd",
            lambda: bench(all_calls(innovation_scores, "innovation_scores"), gpu=gpu),
        )
        t_ir = attempt(
            "eidetic",
            case,
            f"innovation_scores (torch ref) x{n_i}",
            "fwd",
            lambda: bench(all_calls(ref_scores, "innovation_scores"), gpu=gpu),
        )
        t_s = attempt(
            "eidetic",
            case,
            f"eidetic_select (torch, as served) x{n_s}",
            "fwd",
            lambda: bench(all_calls(eidetic_select, "eidetic_select"), gpu=gpu),
        )
    for name, t in (
        ("innovation_scores (triton)", t_i),
        ("innovation_scores (torch ref)", t_ir),
        ("eidetic_select (torch)", t_s),
    ):
        for mode, t_layer in (("fwd", t_f), ("fwd+bwd", t_fb)):
            share = None if t is None or not t_layer else t / t_layer
            ROWS.append(dict(section="eidetic", case=case, impl=name, mode=f"share of layer {mode}", value=share))
            txt = "n/a" if share is None else f"{100 * share:5.1f} %"
            print(f"  eidetic   {case:26s} share of the layer's {mode:7s} time: {name:32s} {txt}", flush=True)
