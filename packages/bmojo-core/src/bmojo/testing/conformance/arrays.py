"""The suite's path for backends whose ops take another framework's arrays (``Backend.framework``
other than torch, e.g. MLX).

Inputs are still built as torch tensors from the seeded cases (one source of truth for the grid)
and the reference still runs in torch; the backend's declared
:class:`~bmojo.backends.spec.Converters` move the inputs into its framework through numpy and the
outputs back, and :func:`bmojo.backends.arrays.call` runs the op with the backend selected
explicitly, exactly as framework code calls it. Gradients use the converters' ``vjp``.
"""

from __future__ import annotations

import numpy as np
import torch

from bmojo.backends import arrays, get_registry


class Bridge:
    """torch ⇄ framework conversion for one backend's converters (numpy in between)."""

    def __init__(self, framework: str):
        self.framework = framework
        conv = get_registry().converters(framework)
        self._to_numpy = conv.load("to_numpy")
        self._from_numpy = conv.load("from_numpy")
        self.vjp = conv.load("vjp")

    def to_array(self, value):
        """A torch tensor becomes a framework array of the same dtype; anything else is kept."""
        if not isinstance(value, torch.Tensor):
            return value
        name = str(value.dtype).removeprefix("torch.")
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: widen exactly, the converter narrows back
            t = t.float()
        return self._from_numpy(t.numpy().copy(), name)

    def args(self, args) -> tuple:
        return tuple(self.to_array(a) for a in args)

    def to_torch(self, value):
        """A framework array (or a tuple/list of them) back as torch tensor(s) of its dtype."""
        if isinstance(value, (tuple, list)):
            return tuple(self.to_torch(v) for v in value)
        arr, name = self._to_numpy(value)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(getattr(torch, name))


def served_by(op: str, framework: str, device: str) -> str:
    """The backend that serves ``op`` for ``framework`` arrays on ``device`` now."""
    return arrays.resolve(op, framework, device)[0]


def call(op: str, framework: str, *args, **kwargs):
    return arrays.call(op, framework, *args, **kwargs)
