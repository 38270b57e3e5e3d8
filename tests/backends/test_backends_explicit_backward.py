"""An explicit backward replaces the custom op's recompute of the forward: with
``OpImpl.backward_outputs`` it also receives the forward's outputs, kept by autograd, and with
``OpImpl.eager_autograd`` eager training records ``fn``'s own graph instead (docs/backends.md)."""

from __future__ import annotations

import pytest
import torch
from bmojo.backends import Backend, OpImpl, Registry, dispatch, get_registry, hookimpl, set_registry, use_backend
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

calls: list[str] = []
got_outputs: list[torch.Tensor] = []


def counted_rmsnorm(x, weight, eps=1e-6):
    """The reference, differentiable by torch, counting forwards."""
    calls.append("forward")
    return rmsnorm_ref(x, weight, eps)


def _true_grads(grads, x, weight, eps):
    with dispatch._autograd_on():  # autograd is excluded inside a custom op's kernel
        xs, ws = x.detach().requires_grad_(), weight.detach().requires_grad_()
        return torch.autograd.grad(rmsnorm_ref(xs, ws, eps), (xs, ws), grads[0])


def backward_with_outputs(grads, needs, outputs, x, weight, eps=1e-6):
    calls.append("backward")
    got_outputs.extend(outputs)
    return list(_true_grads(grads, x, weight, eps))


def backward_plain(grads, needs, x, weight, eps=1e-6):
    calls.append("backward")
    return list(_true_grads(grads, x, weight, eps))


IMPLS = {
    "outputs": OpImpl(counted_rmsnorm, backward=backward_with_outputs, backward_outputs=True),
    "plain": OpImpl(counted_rmsnorm, backward=backward_plain),
    "eager": OpImpl(counted_rmsnorm, backward=backward_with_outputs, backward_outputs=True, eager_autograd=True),
}


class Plugin:
    @hookimpl
    def bmojo_backends(self):
        return [Backend(name=n, version="0", ops={"rmsnorm": impl}, priority=-1) for n, impl in IMPLS.items()]


class EP:
    name, value, dist = "explicit_backward", "x", None

    def load(self):
        return Plugin()


@pytest.fixture(autouse=True)
def plugins(monkeypatch):
    monkeypatch.delenv("BMOJO_BACKEND", raising=False)
    old = get_registry()
    set_registry(Registry(entry_points=[EP()]))
    calls.clear()
    got_outputs.clear()
    torch._dynamo.reset()  # a compiled graph keeps what its trace decided (which backend, what to keep)
    yield
    set_registry(old)
    torch._dynamo.reset()


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = (1 + 0.1 * torch.randn(8, generator=g, dtype=torch.float64)).requires_grad_()
    return x, w


def _expected(x, w, gy):
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    return torch.autograd.grad(rmsnorm_ref(xr, wr), (xr, wr), gy)


@pytest.mark.parametrize("mode", ["custom_op", "compiled"])
@pytest.mark.parametrize("backend", ["outputs", "plain"])
def test_explicit_backward_runs_no_second_forward(backend, mode):
    x, w = _inputs()
    gy = torch.randn(2, 5, 8, dtype=torch.float64)
    f = dispatch.rmsnorm
    if mode == "compiled":
        f = torch.compile(f, backend="aot_eager", fullgraph=True)
    with use_backend(backend), dispatch.custom_ops_always():
        y = f(x, w)
        assert calls == ["forward"]
        y.backward(gy)
    assert calls == ["forward", "backward"]
    for got, want in zip((x.grad, w.grad), _expected(x, w, gy)):
        torch.testing.assert_close(got, want)
    if backend == "outputs":
        assert len(got_outputs) == 1
        torch.testing.assert_close(got_outputs[0], y.detach(), rtol=0, atol=0)


def test_outputs_not_kept_are_recomputed():
    """A compiled graph traced with a backend that keeps no outputs may run its backward on one
    that wants them: core then runs the forward once more and passes its outputs."""
    x, w = _inputs()
    gy = torch.randn(2, 5, 8, dtype=torch.float64)
    with use_backend("outputs"):
        res = torch.ops.bmojo.rmsnorm_backward([gy], [True, True], [], x.detach(), w.detach(), 1e-6)
    assert calls == ["forward", "backward"]
    torch.testing.assert_close(got_outputs[0], rmsnorm_ref(x.detach(), w.detach()))
    for got, want in zip(res, _expected(x, w, gy)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend,eager_calls", [("eager", ["forward"]), ("outputs", ["forward", "backward"])])
def test_eager_autograd_records_fn_own_graph(backend, eager_calls):
    """``eager_autograd``: eager training calls fn directly and autograd differentiates its graph
    (the explicit backward is not called); without it, eager training goes through the custom op."""
    x, w = _inputs()
    gy = torch.randn(2, 5, 8, dtype=torch.float64)
    with use_backend(backend):
        dispatch.rmsnorm(x, w).backward(gy)
    assert calls == eager_calls
    for got, want in zip((x.grad, w.grad), _expected(x, w, gy)):
        torch.testing.assert_close(got, want)


def test_eager_autograd_backend_compiles_to_its_explicit_backward():
    x, w = _inputs()
    f = torch.compile(dispatch.rmsnorm, backend="aot_eager", fullgraph=True)
    with use_backend("eager"):
        f(x, w).sum().backward()
    assert calls == ["forward", "backward"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(backward_outputs=True), "OpImpl.backward_outputs=True needs an explicit backward"),
        (dict(eager_autograd=True), "OpImpl.eager_autograd=True needs an explicit backward"),
        (dict(backward=backward_plain, eager_autograd=True, differentiable=False), "expected differentiable=True"),
        (dict(backward=backward_plain, backward_outputs=1), "OpImpl.backward_outputs: expected a bool, got 1"),
    ],
)
def test_flags_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OpImpl(counted_rmsnorm, **kwargs)
