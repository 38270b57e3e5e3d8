"""The explicit backwards core's custom op calls (``<op>_backward`` beside each op; the path
``torch.compile`` takes): gradients for every subset of inputs needing them equal the reference's,
and the attention backward gives the same gradients from the kept o and lse as from o and lse that
core recomputes when a compiled graph kept none. The conformance suite checks the same door with
every floating input needing a gradient; these are the cases it does not vary."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
from bmojo.backends import dispatch, use_backend
from test_triton_attention import NAMES, make
from triton_helpers import assert_close

DTYPE = torch.float32
FLOAT_INPUTS = ("q", "k", "v", "kf", "vf", "ek", "ev")
SUBSETS = [s for n in (1, 2) for s in itertools.combinations(FLOAT_INPUTS, n)]


def _grads(args, kw, wanted, backend, custom_op):
    xs = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
    leaves = [xs[NAMES.index(n)].requires_grad_() for n in wanted]
    g = torch.Generator().manual_seed(1)
    with use_backend(backend), dispatch.custom_ops_always() if custom_op else contextlib.nullcontext():
        o, lse = dispatch.bmojo_attention(*xs, **kw)
        ups = [torch.randn(t.shape, generator=g, dtype=torch.float64).to(t) for t in (o, lse)]
        return torch.autograd.grad((o, lse), leaves, ups)


@pytest.mark.parametrize("wanted", SUBSETS, ids="+".join)
def test_attention_explicit_backward_for_each_subset(device, wanted):
    args, kw = make(device, DTYPE, T=21, w=9, f=7, M=3, chunk=6)
    ours = _grads(args, kw, wanted, "triton", custom_op=True)
    ref = _grads(args, kw, wanted, "reference", custom_op=False)
    for name, a, r in zip(wanted, ours, ref):
        assert_close(f"d{name}", a, r, DTYPE, grad=True)


def test_attention_outputs_recomputed_when_not_kept(device):
    """``outs=[]``: core runs the Triton forward to supply o and lse; the gradients are the same
    as from the kept outputs (same kernels, same inputs: equal)."""
    args, kw = make(device, DTYPE, T=21, w=9, f=7, M=3, chunk=6)
    g = torch.Generator().manual_seed(2)
    with use_backend("triton"), torch.no_grad():
        kept = list(dispatch.bmojo_attention(*args, **kw))
        grads = [torch.randn(t.shape, generator=g).to(t) for t in kept]
        needs = [a is not None and a.is_floating_point() for a in args]
        from_kept = torch.ops.bmojo.bmojo_attention_backward(grads, needs, kept, *args, **kw)
        recomputed = torch.ops.bmojo.bmojo_attention_backward(grads, needs, [], *args, **kw)
    for name, a, b in zip(NAMES, from_kept, recomputed):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"d{name}")
