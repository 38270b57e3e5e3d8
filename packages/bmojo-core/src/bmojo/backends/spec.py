"""The plugin contract: pluggy hook specifications and the typed records a backend returns.

A backend is a plugin (a module or object) with a ``bmojo_backends()`` hook implementation that
returns one or more :class:`Backend` records. Out-of-tree packages expose the plugin through the
``bmojo`` entry-point group; the reference backend is registered the same way, as a built-in.

Nothing here imports torch: ``bmojo backends`` and the pytest plugin read these records cheaply.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pluggy

#: Entry-point group and pluggy project name.
PROJECT = "bmojo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The op set of spec §7, in the order tools list them.
OPS = (
    "ssm_scan",
    "ssm_step",
    "causal_conv1d",
    "causal_conv1d_step",
    "bmojo_attention",
    "innovation_scores",
    "eidetic_select",
    "rmsnorm",
    "gated_rmsnorm",
)

#: Device (or array) types an op can declare; ``"*"`` means any torch device.
ANY_DEVICE = "*"

_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")


@dataclass(frozen=True)
class Probe:
    """What a backend's ``probe()`` returns: whether it can run here and, if not, why."""

    available: bool
    reason: str = ""


def _resolve(target: Callable | str) -> Callable:
    """A callable, or ``"package.module:attr"`` imported on first use (keeps listing cheap)."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class OpImpl:
    """One op's implementation in a backend.

    Args:
        fn: the implementation (same signature and semantics as ``bmojo.ops.<op>.reference``), or
            ``"module:attr"`` to import it lazily.
        devices: torch device types it runs on (``"cpu"``, ``"cuda"``, ``"mps"``, ...), or ``"*"``.
        differentiable: True when torch autograd can differentiate ``fn`` itself; the backward then
            recomputes ``fn`` under autograd. False: the backward recomputes the reference instead.
        backward: optional explicit backward ``(grads, needs, *args, **kwargs) -> list`` returning
            one gradient (or None) per tensor argument, in signature order.
    """

    fn: Callable | str
    devices: tuple[str, ...] = (ANY_DEVICE,)
    differentiable: bool = True
    backward: Callable | str | None = None

    def load(self) -> Callable:
        return _resolve(self.fn)

    def load_backward(self) -> Callable | None:
        return None if self.backward is None else _resolve(self.backward)

    def runs_on(self, device_type: str) -> bool:
        return ANY_DEVICE in self.devices or device_type in self.devices


def _always_available() -> Probe:
    return Probe(True)


@dataclass(frozen=True)
class Backend:
    """A backend's typed record.

    Args:
        name: lower-case identifier users select with ``BMOJO_BACKEND=<name>``; by convention the
            entry-point name too (so an import failure is reported under the right name).
        version: the distribution's version string.
        ops: op name (one of :data:`OPS`) → :class:`OpImpl`, a callable or a ``"module:attr"``
            string (both mean "any device, differentiable by autograd").
        priority: implicit selection prefers higher values; the reference is 0.
        probe: cheap check (no kernel compilation) returning :class:`Probe`, a bool or
            ``(bool, reason)``; absent means always available.
        description: one line for ``bmojo backends``.
        known_deviations: conformance test-name glob → reason; those tests run as xfail and the
            summary lists them. The only way to excuse a failing conformance test.
        implicit: False keeps the backend out of implicit selection: it serves only when asked
            for by name (``use_backend``/``BMOJO_BACKEND``), e.g. an emulator or a simulator
            that is correct but slow. Default True.
    """

    name: str
    version: str
    ops: Mapping[str, OpImpl | Callable | str]
    priority: int = 0
    probe: Callable[[], Probe | bool | tuple[bool, str]] | None = None
    description: str = ""
    known_deviations: Mapping[str, str] = field(default_factory=dict)
    implicit: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"backend name: expected a lower-case identifier, got {self.name!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"backend {self.name!r}: priority must be an int, got {self.priority!r}")
        if not isinstance(self.implicit, bool):
            raise ValueError(f"backend {self.name!r}: implicit must be a bool, got {self.implicit!r}")
        unknown = sorted(set(self.ops) - set(OPS))
        if unknown:
            raise ValueError(f"backend {self.name!r}: unknown ops {unknown}; the op set is {list(OPS)}")
        ops = {op: v if isinstance(v, OpImpl) else OpImpl(v) for op, v in self.ops.items()}
        object.__setattr__(self, "ops", MappingProxyType({op: ops[op] for op in OPS if op in ops}))
        object.__setattr__(self, "known_deviations", MappingProxyType(dict(self.known_deviations)))

    def run_probe(self) -> Probe:
        result = (self.probe or _always_available)()
        if isinstance(result, Probe):
            return result
        if isinstance(result, bool):
            return Probe(result, "" if result else "probe() returned False")
        available, reason = result
        return Probe(bool(available), str(reason))


class BackendSpecs:
    """Hook specifications of the ``bmojo`` plugin project."""

    @hookspec
    def bmojo_backends(self) -> Iterable[Backend]:  # type: ignore[empty-body]
        """Return the :class:`Backend` records this plugin provides (usually one)."""
