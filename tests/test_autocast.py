"""Autocast: each op runs in the dtype bmojo.backends.ops.AUTOCAST_POLICY declares, a model
trains under CPU bfloat16 autocast close to float32, and outside autocast nothing is cast."""

import contextlib

import pytest
import torch
from bmojo.backends import dispatch as ops  # the dispatched ops the layers call
from bmojo.config import ModelConfig
from bmojo.model import BMojoLM

PATHS = {"eager": contextlib.nullcontext, "custom op": ops.custom_ops_always}


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("path", PATHS)
def test_each_op_runs_in_its_declared_dtype(path):
    g = torch.Generator().manual_seed(0)
    r = lambda *s, dt=torch.float32: torch.randn(*s, generator=g, dtype=dt)  # noqa: E731
    x16 = r(2, 9, 8, dt=torch.bfloat16)  # what a Linear returns under autocast
    w32 = torch.ones(8)  # a float32 parameter
    calls = {
        "rmsnorm": lambda: ops.rmsnorm(x16, w32),
        "gated_rmsnorm": lambda: ops.gated_rmsnorm(x16, r(2, 9, 8, dt=torch.bfloat16), w32),
        "causal_conv1d": lambda: ops.causal_conv1d(x16, r(8, 4), r(8))[0],
        "bmojo_attention": lambda: ops.bmojo_attention(
            r(1, 2, 9, 16, dt=torch.bfloat16), r(1, 2, 9, 16), r(1, 2, 9, 16, dt=torch.bfloat16), window=4
        )[0],
        "ssm_scan": lambda: ops.ssm_scan(
            r(1, 9, 2, 4, dt=torch.bfloat16),
            r(1, 9, 2).abs(),
            -r(2).abs(),
            r(1, 9, 1, 3, dt=torch.bfloat16),
            r(1, 9, 1, 3, dt=torch.bfloat16),
        )[0],
    }
    with PATHS[path](), _bf16():
        for name, call in calls.items():
            want = torch.float32 if ops.AUTOCAST_POLICY[name] == "float32" else torch.bfloat16
            assert call().dtype == want, name


def test_outside_autocast_mixed_dtypes_are_still_refused():
    with pytest.raises(ValueError, match="weight"):
        ops.rmsnorm(torch.randn(2, 8, dtype=torch.bfloat16), torch.ones(8))


@pytest.mark.parametrize("preset", ["bmojo", "bmojo_f", "mamba2", "transformer"])
def test_model_under_bf16_autocast_matches_float32(preset):
    torch.manual_seed(0)
    # window 8 < T so every memory (window, fading tokens, eidetic slots) carries gradient
    extra = {} if preset == "mamba2" else {"window": 8}
    cfg = ModelConfig.preset(preset, vocab_size=64, d_model=32, n_layers=2, n_heads=2, **extra)
    model = BMojoLM(cfg)
    x = torch.randint(0, 64, (2, 40))
    ref = model(x)
    ref.logsumexp(-1).mean().backward()
    ref_g = {n: p.grad.clone() for n, p in model.named_parameters()}
    for path, ctx in PATHS.items():
        model.zero_grad(set_to_none=True)
        with ctx(), _bf16():
            out = model(x)
            loss = out.float().logsumexp(-1).mean()
        loss.backward()
        assert out.dtype == torch.bfloat16, path  # the head is a Linear: autocast's dtype
        scale = ref.abs().max().item()
        assert (out.float() - ref).abs().max().item() < 2e-2 * scale, path
        for n, p in model.named_parameters():
            a, b = p.grad.flatten(), ref_g[n].flatten()
            assert torch.isfinite(a).all(), (path, n)
            if b.norm() > 1e-6:
                cos = torch.dot(a, b) / (a.norm() * b.norm())
                assert cos > 0.99, (path, n, cos.item())
