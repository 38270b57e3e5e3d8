"""Model level: BMojoLM on the triton backend equals the reference (logits and every parameter
gradient) and compiles with torch.compile(fullgraph=True).

Tolerance (float32): max|Δ| <= 1e-4·max|ref| + 1e-5 for logits and 1e-3·max|ref| + 1e-4 for
gradients, i.e. the conformance suite's float32 column applied to a whole 2-layer model.
"""

from __future__ import annotations

import torch
from bmojo.backends import use_backend
from bmojo.config import ModelConfig
from bmojo.model import BMojoLM
from triton_helpers import assert_close


def _model(device):
    cfg = ModelConfig.preset(
        "bmojo",
        vocab_size=64,
        d_model=32,
        n_layers=2,
        window=6,
        eidetic_capacity=3,
        n_heads=2,
        ssm_head_dim=16,
        ssm_state_size=8,
        ssm_chunk_size=8,
        attn_block_size=4,
    )
    torch.manual_seed(0)
    return BMojoLM(cfg).to(device)


def _grads(net, ids, backend):
    net.zero_grad(set_to_none=True)
    with use_backend(backend):
        logits = net(ids)
        (logits.float().square().mean()).backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def test_logits_and_gradients_match_reference(device):
    net = _model(device)
    ids = torch.randint(0, 64, (2, 29), device=device)
    lo_t, g_t = _grads(net, ids, "triton")
    lo_r, g_r = _grads(net, ids, "reference")
    assert_close("logits", lo_t, lo_r, torch.float32)
    assert set(g_t) == set(g_r)
    for n in g_r:
        assert_close(f"grad {n}", g_t[n], g_r[n], torch.float32, grad=True)


def _count_forwards(monkeypatch) -> dict:
    """Counts each Triton op's forward launches (the scan's: those computing y; its backward's
    state pass computes none)."""
    from bmojo_triton.ops import bmojo_attention, causal_conv1d, rmsnorm, ssm_scan

    counts = dict.fromkeys(["bmojo_attention", "ssm_scan", "causal_conv1d", "rmsnorm"], 0)

    def counted(name, fn, when=lambda *a, **k: True):
        def wrapper(*args, **kwargs):
            counts[name] += bool(when(*args, **kwargs))
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(bmojo_attention, "_fwd", counted("bmojo_attention", bmojo_attention._fwd))
    monkeypatch.setattr(causal_conv1d, "_fwd", counted("causal_conv1d", causal_conv1d._fwd))
    monkeypatch.setattr(rmsnorm, "_launch_fwd", counted("rmsnorm", rmsnorm._launch_fwd))
    scan_y = lambda *a, output=True, **k: output  # noqa: E731
    monkeypatch.setattr(ssm_scan, "_fwd", counted("ssm_scan", ssm_scan._fwd, scan_y))
    return counts


def test_compiles_fullgraph(device, monkeypatch):
    """The compiled model's logits and gradients equal the reference's, and its backward runs no
    op's forward again (core's custom op calls the Triton backward kernels directly, with the
    attention's o and lse kept from the forward: ``OpImpl.backward_outputs``)."""
    net = _model(device)
    ids = torch.randint(0, 64, (1, 21), device=device)
    lo_r, g_r = _grads(net, ids, "reference")
    # inductor on a GPU; on CPU (interpreter) aot_eager checks the whole-graph capture without
    # waiting for C++ code generation
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    compiled = torch.compile(net, fullgraph=True, backend=backend)
    counts = _count_forwards(monkeypatch)
    net.zero_grad(set_to_none=True)
    with use_backend("triton"):
        out = compiled(ids)
        after_forward = dict(counts)
        out.float().square().mean().backward()
    assert all(n > 0 for n in after_forward.values()), after_forward
    assert counts == after_forward, f"forwards run again in the backward: {after_forward} -> {counts}"
    assert_close("compiled logits", out.detach(), lo_r, torch.float32)
    g_c = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert set(g_c) == set(g_r)
    for n in g_r:
        assert_close(f"compiled grad {n}", g_c[n], g_r[n], torch.float32, grad=True)
