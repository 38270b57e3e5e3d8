"""The plugin contract: pluggy hook specifications and the typed records a backend returns.

A backend is a plugin (a module or object) with a ``bmojo_backends()`` hook implementation that
returns one or more :class:`Backend` records. Out-of-tree packages expose the plugin through the
``bmojo`` entry-point group; the reference backend is registered the same way, as a built-in.

Nothing here imports torch: ``bmojo backends`` and the pytest plugin read these records cheaply.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import pluggy

#: Entry-point group and pluggy project name.
PROJECT = "bmojo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The op set (docs/backends.md; reference functions listed in ``bmojo.ops``), in the order tools list them.
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

#: Device (or array) types an op can declare; ``"*"`` means any device of the op's framework.
ANY_DEVICE = "*"

#: The array framework of core's dispatch (``bmojo.backends.dispatch``); every op and backend
#: declares one, torch unless it says otherwise (e.g. ``"mlx"`` for ``mx.array`` ops).
TORCH = "torch"

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
class Converters:
    """How arrays of a non-torch framework cross to numpy and back, declared on its :class:`Backend`.

    The conformance suite builds inputs as torch tensors, moves them through numpy into the
    framework with these, and back to compare; array dispatch (:mod:`bmojo.backends.arrays`) asks
    ``device_type`` which device computes now. Every entry is a callable or a lazy
    ``"module:attr"`` string, so declaring converters imports nothing.

    Args:
        to_numpy: ``array -> (numpy.ndarray, dtype name)``; a dtype numpy lacks (bfloat16) comes
            back widened exactly (to float32) with its own name, e.g. ``"bfloat16"``.
        from_numpy: ``(numpy.ndarray, dtype name) -> array`` of that dtype.
        vjp: ``(fn, primals, cotangents) -> (outputs, gradients)``, lists in and out (``mx.vjp``);
            None when the framework's ops are not differentiated (gradient tests are skipped,
            with that reason).
        device_type: ``() -> str``, the device type the framework computes on now (``"cpu"``,
            ``"gpu"``); None means ``"cpu"``.
    """

    to_numpy: Callable | str
    from_numpy: Callable | str
    vjp: Callable | str | None = None
    device_type: Callable | str | None = None

    def load(self, name: str) -> Callable | None:
        target = getattr(self, name)
        return None if target is None else _resolve(target)


@dataclass(frozen=True)
class OpImpl:
    """One op's implementation in a backend.

    Args:
        fn: the implementation (same signature and semantics as the reference op, listed in
            :data:`bmojo.backends.reference.REFERENCE_TARGETS`), or ``"module:attr"`` to import it
            lazily (at the op's first call; an import failure is the backend's failure for that op).
        devices: torch device types it runs on (``"cpu"``, ``"cuda"``, ``"mps"``, ...), or ``"*"``.
        differentiable: True when torch autograd can differentiate ``fn`` itself; the backward then
            recomputes ``fn`` under autograd. False: the backward recomputes the reference instead.
        backward: optional explicit backward ``(grads, needs, *args, **kwargs) -> list`` returning
            one gradient (or None) per tensor argument, in signature order. It replaces the
            custom op's recompute of the forward (torch.compile, export, opcheck, and eager
            training unless ``eager_autograd``).
        framework: the array type ``fn`` takes and returns (``"torch"``, ``"mlx"``); None means
            the backend's :attr:`Backend.framework`. Torch dispatch only ever picks torch ops.
        backward_outputs: the explicit backward also takes the forward's outputs, which autograd
            then keeps: ``backward(grads, needs, outputs, *args, **kwargs)`` (an attention backward
            needs its output and log-sum-exp). Where they were not kept (a compiled graph traced
            with another backend selected) core recomputes them with ``fn`` first.
        eager_autograd: ``fn`` records its own autograd graph (a ``torch.autograd.Function`` over
            your kernels), so eager training calls ``fn`` directly, without the custom op, and
            autograd uses that graph; the explicit backward serves the custom op. Needs
            ``backward`` and ``differentiable=True``.
    """

    fn: Callable | str
    devices: tuple[str, ...] = (ANY_DEVICE,)
    differentiable: bool = True
    backward: Callable | str | None = None
    framework: str | None = None
    backward_outputs: bool = False
    eager_autograd: bool = False

    def __post_init__(self):
        _check_target("fn", self.fn, optional=False)
        _check_target("backward", self.backward, optional=True)
        devices = self.devices
        # A bare str would match by substring ("cu" in "cuda"); a list is accepted as a tuple.
        if isinstance(devices, list):
            devices = tuple(devices)
        if not isinstance(devices, tuple) or not devices or not all(isinstance(d, str) and d for d in devices):
            raise ValueError(
                f"OpImpl.devices: expected a non-empty tuple of device types like ('cuda',), got {devices!r}"
            )
        object.__setattr__(self, "devices", devices)
        if not isinstance(self.differentiable, bool):
            raise ValueError(f"OpImpl.differentiable: expected a bool, got {self.differentiable!r}")
        for flag in ("backward_outputs", "eager_autograd"):
            value = getattr(self, flag)
            if not isinstance(value, bool):
                raise ValueError(f"OpImpl.{flag}: expected a bool, got {value!r}")
            if value and self.backward is None:
                raise ValueError(f"OpImpl.{flag}=True needs an explicit backward: OpImpl.backward is None")
        if self.eager_autograd and not self.differentiable:
            raise ValueError(
                "OpImpl.eager_autograd=True means torch differentiates fn itself: "
                "expected differentiable=True, got False"
            )
        if self.framework is not None and not (isinstance(self.framework, str) and _NAME.match(self.framework)):
            raise ValueError(f"OpImpl.framework: expected None or a lower-case name, got {self.framework!r}")

    def load(self) -> Callable:
        return _resolve(self.fn)

    def load_backward(self) -> Callable | None:
        return None if self.backward is None else _resolve(self.backward)

    def runs_on(self, device_type: str, framework: str = TORCH) -> bool:
        """True for arrays of ``framework`` on ``device_type`` (torch unless told otherwise)."""
        if (self.framework or TORCH) != framework:
            return False
        return ANY_DEVICE in self.devices or device_type in self.devices


def _check_target(what: str, target, *, optional: bool) -> None:
    if target is None and optional:
        return
    if callable(target):
        return
    if isinstance(target, str) and _TARGET.match(target):
        return
    raise ValueError(f"OpImpl.{what}: expected a callable or a 'package.module:attr' string, got {target!r}")


_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _always_available() -> Probe:
    return Probe(True)


@dataclass(frozen=True)
class Backend:
    """A backend's typed record.

    Args:
        name: lower-case identifier users select with ``BMOJO_BACKEND=<name>``; the entry point
            of a one-backend plugin is named the same (an import failure is reported under the
            entry-point name; ``bmojo backends`` flags a mismatch in the reason).
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
        framework: the array framework of its ops unless an :class:`OpImpl` says otherwise
            (default ``"torch"``; ``"mlx"`` for ``mx.array`` ops).
        converters: :class:`Converters` for that framework; required when it is not torch (the
            conformance suite and array dispatch need them).
    """

    name: str
    version: str
    ops: Mapping[str, OpImpl | Callable | str]
    priority: int = 0
    probe: Callable[[], Probe | bool | tuple[bool, str]] | None = None
    description: str = ""
    known_deviations: Mapping[str, str] = field(default_factory=dict)
    implicit: bool = True
    framework: str = TORCH
    converters: Converters | None = None

    def __post_init__(self):
        # Every field is checked here, so a malformed record fails in the plugin's hook (and is
        # reported as that plugin's failure) instead of later in ``bmojo backends`` or a forward.
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"backend name: expected a lower-case identifier, got {self.name!r}")
        if not isinstance(self.version, str):
            raise ValueError(f"backend {self.name!r}: version must be a str, got {self.version!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"backend {self.name!r}: priority must be an int, got {self.priority!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"backend {self.name!r}: description must be a str, got {self.description!r}")
        if self.probe is not None and not callable(self.probe):
            raise ValueError(f"backend {self.name!r}: probe must be callable or None, got {self.probe!r}")
        if not isinstance(self.ops, Mapping):
            raise ValueError(f"backend {self.name!r}: ops must be a mapping op → OpImpl, got {type(self.ops).__name__}")
        if not isinstance(self.implicit, bool):
            raise ValueError(f"backend {self.name!r}: implicit must be a bool, got {self.implicit!r}")
        unknown = sorted(set(self.ops) - set(OPS), key=repr)
        if unknown:
            close = [m for op in unknown if isinstance(op, str) for m in difflib.get_close_matches(op, OPS, n=1)]
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"backend {self.name!r}: unknown ops {unknown}{hint}; the op set is {list(OPS)}")
        if not isinstance(self.known_deviations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.known_deviations.items()
        ):
            raise ValueError(
                f"backend {self.name!r}: known_deviations must map test-name patterns (str) to reasons (str), "
                f"got {self.known_deviations!r}"
            )
        ops = {}
        for op, v in self.ops.items():
            try:
                ops[op] = v if isinstance(v, OpImpl) else OpImpl(v)
            except ValueError as err:
                raise ValueError(f"backend {self.name!r}: ops[{op!r}]: {err}") from None
        if not isinstance(self.framework, str) or not _NAME.match(self.framework):
            raise ValueError(f"backend {self.name!r}: framework must be a lower-case name, got {self.framework!r}")
        ops = {op: v if v.framework else replace(v, framework=self.framework) for op, v in ops.items()}
        for op, impl in ops.items():
            if impl.framework not in (TORCH, self.framework):
                raise ValueError(
                    f"backend {self.name!r}: {op} declares framework {impl.framework!r}; expected "
                    f"{TORCH!r} or the backend's framework {self.framework!r}"
                )
        if self.framework != TORCH and not isinstance(self.converters, Converters):
            raise ValueError(
                f"backend {self.name!r}: framework {self.framework!r} needs converters=Converters(...), "
                f"got {self.converters!r}"
            )
        object.__setattr__(self, "ops", MappingProxyType({op: ops[op] for op in OPS if op in ops}))
        object.__setattr__(self, "known_deviations", MappingProxyType(dict(self.known_deviations)))

    def run_probe(self) -> Probe:
        """The probe's answer as a :class:`Probe`; anything but a ``Probe``, a bool or a
        ``(bool, str)`` pair means unavailable (a truthy ``"no"`` is not a yes)."""
        result = (self.probe or _always_available)()
        if isinstance(result, Probe):
            if isinstance(result.available, bool) and isinstance(result.reason, str):
                return result
        elif isinstance(result, bool):
            return Probe(result, "" if result else "probe() returned False")
        elif isinstance(result, tuple) and len(result) == 2 and all(map(isinstance, result, (bool, str))):
            return Probe(result[0], result[1])
        return Probe(False, f"probe() returned {result!r}; expected a Probe, a bool or (bool, reason)")


class BackendSpecs:
    """Hook specifications of the ``bmojo`` plugin project."""

    @hookspec
    def bmojo_backends(self) -> Iterable[Backend]:  # type: ignore[empty-body]
        """Return the :class:`Backend` records this plugin provides (usually one)."""
