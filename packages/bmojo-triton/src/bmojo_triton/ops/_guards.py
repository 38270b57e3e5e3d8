"""Refusals the ops share: a second derivative through a Triton backward, and a block wider than
Triton allows.

Second derivatives. The backwards write gradients with kernels, which record no autograd graph.
``torch.autograd.function.once_differentiable`` is not enough to refuse a second derivative: its
error node hangs off detached stand-ins of the inputs, so ``.backward()`` reaches it but
``torch.autograd.grad(loss, inputs)`` prunes it and returns gradients missing the op's terms,
silently. :func:`first_order_only` instead computes the gradients inside one autograd Function
whose inputs are the op's real inputs and upstream gradients: any second derivative through the
op (by ``.backward()`` or ``autograd.grad``, whichever inputs require grad) reaches it, and its
backward raises, naming the op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import triton.language as tl
from bmojo.argcheck import fail

from bmojo_triton.ops._triton_utils import pow2

#: Triton's largest block (elements of one tensor in one program): a kernel that holds a whole
#: row in one block (the norms, ``innovation_scores``) takes rows of at most this many elements.
MAX_BLOCK = tl.TRITON_MAX_TENSOR_NUMEL


def check_block(arg: str, what: str, n: int) -> None:
    """Refuse, naming the argument, a row one program holds whole in a block of ``pow2(n)``
    elements beyond Triton's largest (the launch would fail inside Triton naming no argument).
    Checked on every device: the interpreter refuses what a GPU would."""
    if pow2(n, 1) > MAX_BLOCK:
        fail(arg, f"{what} <= {MAX_BLOCK} (Triton's largest block: one program holds it whole)", n)


class _FirstOrderOnly(torch.autograd.Function):
    """Identity on the gradients ``compute()`` returns, with the op's inputs as its own inputs, so
    autograd cannot prune it from a second-order graph; its backward raises."""

    @staticmethod
    def forward(ctx, op: str, compute: Callable[[], Sequence], *inputs):
        ctx.op = op
        return tuple(compute())  # forward runs without grad mode: the kernels' plain gradients

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            f"bmojo_triton {ctx.op}: second derivatives are not implemented (the Triton backward's "
            "gradients carry no autograd graph); use the reference backend for double backward"
        )


def first_order_only(op: str, compute: Callable[[], Sequence], *inputs: torch.Tensor | None) -> tuple:
    """``compute()`` (the backward's kernels) without recording a graph. In a backward that builds
    one (``create_graph=True``) the gradients come out of :class:`_FirstOrderOnly` over
    ``inputs`` — the op's saved inputs and the upstream gradients, every tensor the true gradients
    depend on — so their values are unchanged and a second derivative raises instead of missing
    the op's terms."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in inputs):
        with torch.no_grad():
            return tuple(compute())
    return _FirstOrderOnly.apply(op, compute, *[t for t in inputs if t is not None])
