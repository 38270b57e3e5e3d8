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


def test_compiles_fullgraph(device):
    net = _model(device)
    ids = torch.randint(0, 64, (1, 21), device=device)
    with use_backend("reference"):
        ref = net(ids).detach()
    # inductor on a GPU; on CPU (interpreter) aot_eager checks the whole-graph capture without
    # waiting for C++ code generation
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    compiled = torch.compile(net, fullgraph=True, backend=backend)
    with use_backend("triton"):
        out = compiled(ids)
        out.float().square().mean().backward()
    assert_close("compiled logits", out.detach(), ref, torch.float32)
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
