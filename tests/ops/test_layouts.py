"""Every reference op gives the same values, and the same gradients, for any memory layout of its
inputs: the conformance suite's non-contiguous views (``LAYOUTS``: every other element, so the last
axis has stride 2; and row-sliced, the last axis of stride 1 with rows further apart) against
contiguous copies of the same values.

The conformance suite cannot see a layout bug of the reference itself (it compares each backend
with the reference on the same strided inputs); this test can. (It caught the reference's T = 1
decode path handing ATen's fused CPU attention a last axis of stride 2, which that kernel reads as
if contiguous: a wrong log-sum-exp and output.)
"""

from __future__ import annotations

import bmojo.ops
import pytest
import torch
from bmojo.testing.conformance.cases import CASES, DIFFERENTIABLE, LAYOUTS
from conftest import assert_close


def _changes_layout(case, layout) -> bool:
    """Whether ``layout`` makes any of the case's inputs non-contiguous (not for the empty-size
    cases, nor row-sliced views of single rows, which are contiguous)."""
    args, _ = case.build(torch.float64, "cpu", 0)
    return any(isinstance(a, torch.Tensor) and not LAYOUTS[layout](a).is_contiguous() for a in args)


#: Every op's cases, small and large, built contiguous (their own non-contiguous cases included),
#: with each layout that changes them.
LAYOUT_CASES = [
    pytest.param(c, layout, id=f"{c.id}-{layout}")
    for c in (type(c)(c.op, c.name, c.make, c.params, large=c.large) for c in CASES)
    for layout in sorted(LAYOUTS)
    if _changes_layout(c, layout)
]


def _outputs(out):
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _run(op, args, kwargs, ups=None):
    """Outputs of the reference op, and the gradients of every floating input when ``ups`` (one
    upstream gradient per floating output) is given."""
    args = [a.detach().requires_grad_(ups is not None) if _floating(a) else a for a in args]
    outs = _outputs(getattr(bmojo.ops, op)(*args, **kwargs))
    if ups is None:
        return outs, ()
    picked = [o for o in outs if o.is_floating_point() and o.requires_grad]
    leaves = [a for a in args if _floating(a)]
    grads = torch.autograd.grad(picked, leaves, ups, allow_unused=True)
    return outs, tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))


def _floating(a):
    return isinstance(a, torch.Tensor) and a.is_floating_point()


@pytest.mark.parametrize("case, layout", LAYOUT_CASES)
def test_strided_inputs_give_the_contiguous_result(case, layout):
    args, kwargs = case.build(torch.float64, "cpu", 1234)
    strided = tuple(LAYOUTS[layout](a) for a in args)
    assert any(isinstance(a, torch.Tensor) and a.numel() > 1 and not a.is_contiguous() for a in strided), case.id
    ups = None
    if case.op in DIFFERENTIABLE:
        outs, _ = _run(case.op, args, kwargs)
        gen = torch.Generator().manual_seed(7)
        ups = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs if o.is_floating_point()]
    outs, grads = _run(case.op, args, kwargs, ups)
    s_outs, s_grads = _run(case.op, strided, kwargs, ups)
    for i, (a, e) in enumerate(zip(s_outs + s_grads, outs + grads)):
        what = f"output {i}" if i < len(outs) else f"gradient {i - len(outs)}"
        assert a.shape == e.shape and a.dtype == e.dtype, what
        if e.numel() == 0:
            continue
        if e.is_floating_point():
            assert_close(a, e, 1e-12, what)
        else:
            assert torch.equal(a, e), what
