"""Comparison helpers: core's conformance tolerance table, applied the way the suite applies it."""

from __future__ import annotations

import torch
from bmojo.testing.conformance.tolerances import TOLERANCES


def assert_close(name: str, actual, expected, dtype: torch.dtype, *, grad: bool = False) -> None:
    """max|a − r| <= atol + rtol·max|r| with the tolerances of the input dtype ``dtype``."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    tol = TOLERANCES[str(dtype).replace("torch.", "")]
    atol, rtol = (tol.grad_atol, tol.grad_rtol) if grad else (tol.atol, tol.rtol)
    if expected.numel() == 0:
        return
    a, r = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.isfinite(a).all(), f"{name}: non-finite values"
    scale = r.abs().max().item()
    err = (a - r).abs().max().item()
    assert err <= atol + rtol * scale, f"{name}: max error {err:.3g} > {atol} + {rtol}·{scale:.3g}"


def leaves(tensors):
    """Detached copies of tensors (floating ones requiring grad); None stays None."""
    out = []
    for t in tensors:
        if isinstance(t, torch.Tensor):
            t = t.detach().clone()
            if t.is_floating_point():
                t.requires_grad_(True)
        out.append(t)
    return out


def compare_fwd_bwd(name, ours, ref, args, kwargs, dtype, *, names, grads=True):
    """Run ``ours`` and ``ref`` on copies of args, compare outputs and the gradients of every
    floating input for the same random cotangents (unused inputs: ours must give zeros)."""
    a_o, a_r = leaves(args), leaves(args)
    out_o, out_r = ours(*a_o, **kwargs), ref(*a_r, **kwargs)
    out_o = (out_o,) if isinstance(out_o, torch.Tensor) else tuple(out_o)
    out_r = (out_r,) if isinstance(out_r, torch.Tensor) else tuple(out_r)
    for i, (o, r) in enumerate(zip(out_o, out_r)):
        assert_close(f"{name}: output {i}", o, r, dtype)
    if not grads:
        return
    cots = [torch.randn_like(r) for r in out_r]
    torch.autograd.backward([o for o in out_o], cots)
    torch.autograd.backward([r for r in out_r], cots)
    for n, t_o, t_r in zip(names, a_o, a_r):
        if not isinstance(t_o, torch.Tensor) or not t_o.is_floating_point():
            continue
        g_r = t_r.grad if t_r.grad is not None else torch.zeros_like(t_r)
        assert t_o.grad is not None, f"{name}: no gradient for {n}"
        assert_close(f"{name}: d{n}", t_o.grad, g_r, dtype, grad=True)
