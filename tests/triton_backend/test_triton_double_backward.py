"""Second derivatives through the Triton ops raise; first derivatives are unchanged.

The backwards write gradients with kernels, which carry no autograd graph. A second derivative
(``create_graph=True``, e.g. a gradient penalty) must raise, not silently miss the op's terms —
through ``.backward()`` and through ``torch.autograd.grad(loss, inputs)``, which prunes nodes that
lead to no input (``once_differentiable``'s error node, which hangs off detached stand-ins, was
pruned there: the gradients came back wrong with no error). Also with only some inputs needing
gradients, and through core's dispatch, by both doors."""

from __future__ import annotations

import contextlib

import pytest
import torch
from bmojo.backends import dispatch, use_backend
from bmojo_triton.ops import bmojo_attention as attn
from bmojo_triton.ops import causal_conv1d as conv
from bmojo_triton.ops import rmsnorm, ssm_scan
from test_triton_attention import make
from test_triton_ops import rn, scan_args

F64 = torch.float64


def _cases(device):
    """name -> (fn, names of the floating inputs (first), inputs, kwargs)."""
    g = torch.Generator().manual_seed(7)
    x, z, w = rn(device, F64, 2, 5, 8, g=g), rn(device, F64, 2, 5, 8, g=g), rn(device, F64, 8, g=g)
    xc, wc, bc, sc = (rn(device, F64, *s, g=g) for s in ((1, 9, 6), (6, 4), (6,), (1, 3, 6)))
    a_args, a_kw = make(device, F64, T=9, H=2, Hkv=1, Dh=8, w=4, f=3, M=2, chunk=3)
    return {
        "rmsnorm": (rmsnorm.rmsnorm, ("x", "weight"), (x, w), {}),
        "gated_rmsnorm": (rmsnorm.gated_rmsnorm, ("x", "z", "weight"), (x, z, w), {"group_size": 4}),
        "causal_conv1d": (conv.causal_conv1d, ("x", "weight", "bias", "initial_state"), (xc, wc, bc, sc), {}),
        "ssm_scan": (
            ssm_scan.ssm_scan,
            ("x", "dt", "A", "B", "C", "D", "initial_state"),
            scan_args(device, F64, 1, 9, 2, 4, 1, 4),
            {},
        ),
        "bmojo_attention": (attn.bmojo_attention, ("q", "k", "v", "kf", "vf", "ek", "ev"), a_args, a_kw),
    }


CASES = ("rmsnorm", "gated_rmsnorm", "causal_conv1d", "ssm_scan", "bmojo_attention")


def _loss(out):
    """Every output counts (the scan's and the conv's final state, attention's lse): each upstream
    gradient reaches the backward."""
    outs = (out,) if isinstance(out, torch.Tensor) else out
    return sum((o.double() ** 2).sum() for o in outs)


def _run(name, device, wanted, custom_op=False, via=None):
    fn, names, inputs, kw = _cases(device)[name]
    xs = [t.detach().clone() for t in inputs]
    leaves = [xs[names.index(n)].requires_grad_() for n in wanted]
    if via is not None:  # through core's dispatch
        fn = getattr(dispatch, name)
    with dispatch.custom_ops_always() if custom_op else contextlib.nullcontext():
        first = torch.autograd.grad(_loss(fn(*xs, **kw)), leaves)
        loss = _loss(fn(*xs, **kw))
        graphed = torch.autograd.grad(loss, leaves, create_graph=True)
        return leaves, first, graphed, loss


def _subsets(name):
    names = _cases("cpu")[name][1]
    return [names] + [(n,) for n in names]


SUBSETS = [(name, s) for name in CASES for s in _subsets(name)]


@pytest.mark.parametrize(("name", "wanted"), SUBSETS, ids=[f"{n}-{'+'.join(s)}" for n, s in SUBSETS])
def test_second_derivative_raises_through_autograd_grad(name, wanted, device):
    """A gradient penalty on the first input's gradient, differentiated by autograd.grad over the
    inputs needing gradients (all, or one alone), raises naming the op; .backward() too. The
    first derivatives taken with create_graph=True equal those taken without."""
    leaves, first, graphed, loss = _run(name, device, wanted)
    for n, a, b in zip(wanted, first, graphed):
        assert torch.equal(a, b.detach()), f"{name}: d{n} with create_graph=True"
        assert b.requires_grad, f"{name}: d{n}"
    penalty = loss + (graphed[0] ** 2).sum()
    match = f"^bmojo_triton {name}: second derivatives are not implemented"
    with pytest.raises(RuntimeError, match=match):
        torch.autograd.grad(penalty, leaves, retain_graph=True)
    with pytest.raises(RuntimeError, match=match):
        penalty.backward()


@pytest.mark.parametrize("custom_op", [False, True], ids=["eager", "custom_op"])
@pytest.mark.parametrize("name", ["rmsnorm", "causal_conv1d"])
def test_second_derivative_raises_through_dispatch(name, custom_op, device):
    """The same through ``use_backend('triton')``: core's eager door runs the autograd Function
    (the op's message); its custom op's explicit backward has no autograd formula of its own, so
    torch refuses there. First derivatives with create_graph=True stay exact on both."""
    names = _cases("cpu")[name][1]
    with use_backend("triton"):
        leaves, first, graphed, loss = _run(name, device, names, custom_op=custom_op, via="dispatch")
        for n, a, b in zip(names, first, graphed):
            assert torch.equal(a, b.detach()), f"{name}: d{n} with create_graph=True"
        penalty = loss + (graphed[0] ** 2).sum()
        match = "no autograd formula was registered" if custom_op else f"^bmojo_triton {name}: second derivatives"
        with dispatch.custom_ops_always() if custom_op else contextlib.nullcontext():
            with pytest.raises(RuntimeError, match=match):
                torch.autograd.grad(penalty, leaves)


def test_first_derivatives_need_no_graph_of_the_kernels(device):
    """create_graph=True with no second derivative taken: the gradients accumulate into .grad as
    without it, and can be changed in place (they are not views)."""
    _, _, (x, _, w), _ = _cases(device)["gated_rmsnorm"]
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    z = torch.ones_like(x)
    _loss(rmsnorm.gated_rmsnorm(x, z, w)).backward(create_graph=True)
    gx, gw = x.grad.detach().clone(), w.grad.detach().clone()
    x.grad = w.grad = None
    _loss(rmsnorm.gated_rmsnorm(x, z, w)).backward()
    assert torch.equal(x.grad, gx) and torch.equal(w.grad, gw)
    (g,) = torch.autograd.grad(_loss(rmsnorm.gated_rmsnorm(x, z, w)), x, create_graph=True)
    g.mul_(2)
    assert torch.equal(g.detach(), 2 * gx)
