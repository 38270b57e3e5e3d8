"""Issue 10, item 8: the backward of an op runs on the backend that ran its forward, not on the
one selected when ``backward()`` is called."""

from __future__ import annotations

import pytest
import torch
from bmojo.backends import Backend, OpImpl, dispatch, use_backend
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

from .helpers import EP, Plugin

seen: list[str] = []


def marked_backward(grads, needs, x, weight, eps):
    """The true gradient plus a marker (+1 on x) so the test can tell which backward ran."""
    seen.append("plugin")
    with dispatch._autograd_on():  # autograd is excluded inside a custom op's kernel
        xs, ws = x.detach().requires_grad_(), weight.detach().requires_grad_()
        gx, gw = torch.autograd.grad(rmsnorm_ref(xs, ws, eps), (xs, ws), grads[0])
    return [gx + 1 if needs[0] else None, gw if needs[1] else None]


@pytest.mark.parametrize("outside", ["implicit", "reference"])
def test_backward_runs_on_the_forward_backend(registry, outside):
    impl = OpImpl(rmsnorm_ref, backward=marked_backward)
    registry(EP("mark", Plugin(Backend(name="mark", version="1", ops={"rmsnorm": impl}, priority=-1))))
    x = torch.randn(2, 3, 8, requires_grad=True)
    w = torch.ones(8, requires_grad=True)
    with use_backend("mark"):
        y = dispatch.rmsnorm(x, w)
    # Implicitly the reference (priority 0 > -1) would be chosen now; explicitly even more so.
    seen.clear()
    if outside == "reference":
        with use_backend("reference"):
            y.sum().backward()
    else:
        y.sum().backward()
    assert seen == ["plugin"]
    xr = x.detach().requires_grad_()
    (gx,) = torch.autograd.grad(rmsnorm_ref(xr, w.detach()).sum(), xr)
    torch.testing.assert_close(x.grad, gx + 1)


def test_reference_forward_keeps_the_reference_backward(registry):
    impl = OpImpl(rmsnorm_ref, backward=marked_backward)
    registry(EP("mark", Plugin(Backend(name="mark", version="1", ops={"rmsnorm": impl}, priority=-1))))
    x = torch.randn(2, 3, 8, requires_grad=True)
    w = torch.ones(8, requires_grad=True)
    with use_backend("reference"), dispatch.custom_ops_always():
        y = dispatch.rmsnorm(x, w)
    seen.clear()
    with use_backend("mark"):
        y.sum().backward()
    assert seen == []
