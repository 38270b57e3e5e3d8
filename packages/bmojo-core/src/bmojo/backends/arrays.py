"""Dispatch for arrays of frameworks other than torch (``mx.array``, ...), through the registry.

Torch tensors go through :mod:`bmojo.backends.dispatch` (custom ops, autograd, torch.compile).
Another framework's arrays have none of that machinery in core: its backend's ops are plain
functions on its arrays, differentiated by the framework itself (``mx.grad``). What core does for
them is *selection*, with the same rules as for torch (``use_backend``/``BMOJO_BACKEND``, then
priority, states and reasons, ``BMOJO_DISABLE``): :func:`call` asks the registry which backend
serves ``op`` for ``framework`` on the device the framework computes on now, and runs it.

Nothing here imports torch or any framework; the device is asked from the backend's declared
:class:`~bmojo.backends.spec.Converters` (``device_type``), which imports the framework only
when an op is actually called on its arrays.
"""

from __future__ import annotations

from collections.abc import Callable

from bmojo.backends.registry import get_registry
from bmojo.backends.spec import TORCH


def device_type(framework: str) -> str:
    """The device type ``framework`` computes on now, from its backend's converters."""
    conv = get_registry().converters(framework)
    fn = conv.load("device_type")
    return "cpu" if fn is None else str(fn())


def resolve(op: str, framework: str, device: str | None = None) -> tuple[str, Callable]:
    """(backend name, implementation) that runs ``op`` on ``framework`` arrays now; ``device``
    defaults to the framework's current device type. A backend whose target fails to import is
    handled as in torch dispatch (:meth:`~bmojo.backends.registry.Registry.implementation`)."""
    if framework == TORCH:
        raise ValueError(
            f"framework: expected a non-torch framework (torch ops go through dispatch), got {framework!r}"
        )
    device = device_type(framework) if device is None else device
    backend, _, fn = get_registry().implementation(op, device, framework)
    return backend, fn


def call(op: str, framework: str, *args, **kwargs):
    """Run ``op`` (same arguments as its reference function in ``bmojo.ops``) on ``framework`` arrays with the
    backend the registry selects."""
    return resolve(op, framework)[1](*args, **kwargs)
