"""Conversions for comparing MLX ops with core's torch reference: through the backend's own
declared converters (``bmojo_mlx.bridge``), numpy in between."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from bmojo_mlx import bridge
from bmojo_mlx.ops._kernels import metal_available

needs_metal = pytest.mark.skipif(
    not metal_available(), reason="Metal is not available here (mx.metal); pure-MLX path only"
)


def mxa(value):
    """torch tensor → mx.array of the same dtype (None and non-tensors pass through)."""
    if not isinstance(value, torch.Tensor):
        return value
    name = str(value.dtype).removeprefix("torch.")
    t = value.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return bridge.from_numpy(t.numpy().copy(), name)


def tt(value):
    """mx.array (or tuple of them) → torch tensor(s) of the same dtype."""
    if isinstance(value, (tuple, list)):
        return tuple(tt(v) for v in value)
    arr, name = bridge.to_numpy(value)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(getattr(torch, name))


def rel(actual, expected) -> float:
    """max |a - e| / max |e| in float64."""
    a, e = actual.double(), expected.double()
    finite = torch.isfinite(e)
    if not torch.equal(torch.isfinite(a), finite) or not torch.equal(a[~finite], e[~finite]):
        return float("inf")  # non-finite values (-inf for empty eidetic slots) must match exactly
    a, e = a[finite], e[finite]
    if e.numel() == 0:
        return 0.0
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-300))


def grads_mx(fn, args, leaves, cotangents):
    """Gradients of Σ cotangent·fn(*args) w.r.t. ``args[i]`` for i in ``leaves`` (mx.vjp)."""

    def f(*vals):
        full = list(args)
        for i, v in zip(leaves, vals):
            full[i] = v
        out = fn(*full)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    _, g = mx.vjp(f, [args[i] for i in leaves], cotangents)
    return g


def grads_torch(fn, args, leaves, cotangents):
    xs = [a.detach().clone().requires_grad_(True) if i in leaves else a for i, a in enumerate(args)]
    out = fn(*xs)
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    return torch.autograd.grad(out, [xs[i] for i in leaves], cotangents, allow_unused=True)


def check_against_reference(mx_fn, ref_fn, args, kwargs, *, tol, grad_tol=None, seed=0):
    """Forward (every output) and, with ``grad_tol``, gradients of every floating input for random
    cotangents on every floating output: ``mx_fn`` on converted inputs vs ``ref_fn`` in torch."""
    expected = ref_fn(*args, **kwargs)
    expected = tuple(expected) if isinstance(expected, (tuple, list)) else (expected,)
    actual = mx_fn(*[mxa(a) for a in args], **kwargs)
    actual = tt(tuple(actual) if isinstance(actual, (tuple, list)) else (actual,))
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"output {i}: {a.shape} {a.dtype} vs {e.shape} {e.dtype}"
        if e.is_floating_point():
            assert rel(a, e) <= tol, f"output {i}: relative error {rel(a, e):.2e} > {tol}"
        else:
            assert torch.equal(a, e), f"output {i}: integer output differs"
    if grad_tol is None:
        return
    leaves = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
    gen = torch.Generator().manual_seed(seed)
    ups = [torch.randn(e.shape, generator=gen, dtype=torch.float64).to(e.dtype) for e in expected]
    want = grads_torch(lambda *a: ref_fn(*a, **kwargs), list(args), leaves, ups)
    got = grads_mx(lambda *a: mx_fn(*a, **kwargs), [mxa(a) for a in args], leaves, [mxa(u) for u in ups])
    for i, g, w in zip(leaves, tt(got), want):
        w = torch.zeros_like(args[i]) if w is None else w
        assert rel(g, w) <= grad_tol, f"grad of argument {i}: relative error {rel(g, w):.2e} > {grad_tol}"
