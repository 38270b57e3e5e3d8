"""Discovering backends, telling their states apart, and choosing one per op.

Loading is lazy (first dispatch or ``bmojo backends``) and guarded: a plugin whose import, hook
or probe raises is recorded with its error and never breaks ``import bmojo`` or the CLI.

States, in the order a backend can fail:

* ``not installed`` — a known backend (``triton``, ``mlx``, ``neuron``) with no package here;
* ``import failed`` — its entry point (or its hook) raised; the error is kept;
* ``invalid`` — it returned a malformed record or a name another plugin already took;
* ``unavailable`` — installed, but ``probe()`` says no device/runtime, with its reason;
* ``disabled`` — named in ``BMOJO_DISABLE`` (comma-separated);
* ``available``.

Selection: an explicit request (``use_backend(name)``, else ``BMOJO_BACKEND=name``) uses that
backend for the ops it provides and raises :class:`BackendUnavailableError` carrying the reason
when it is not available — never a silent fallback. Ops it does not implement at all run the
reference (logged once). Without a request, each op goes to the highest-priority available
backend providing it for the tensor's device (skipping backends declared ``implicit=False``),
falling back to the reference; each choice is logged once at INFO on the ``bmojo.backends`` logger.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import logging
import os
import threading
import traceback
from dataclasses import dataclass, field
from enum import Enum

import pluggy

from bmojo.backends.spec import OPS, PROJECT, Backend, BackendSpecs, OpImpl

log = logging.getLogger("bmojo.backends")

ENV_BACKEND = "BMOJO_BACKEND"
ENV_DISABLE = "BMOJO_DISABLE"
REFERENCE = "reference"

#: Backends this project publishes: listed as "not installed" when absent, with the install hint.
KNOWN_BACKENDS = {"triton": "bmojo-triton", "mlx": "bmojo-mlx", "neuron": "bmojo-neuron"}


class State(str, Enum):
    AVAILABLE = "available"
    DISABLED = "disabled"
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"
    IMPORT_FAILED = "import failed"
    NOT_INSTALLED = "not installed"

    def __str__(self) -> str:
        return self.value


class BackendError(RuntimeError):
    """A backend cannot serve a request; the message says why."""


class BackendUnavailableError(BackendError):
    """An explicitly requested backend is not available (its state and reason are attached)."""

    def __init__(self, name: str, state: State, reason: str, source: str):
        self.name, self.state, self.reason, self.source = name, state, reason, source
        super().__init__(f"bmojo backend {name!r} was requested by {source} but is {state}: {reason}")


@dataclass
class BackendStatus:
    """One row of ``bmojo backends``."""

    name: str
    state: State
    reason: str = ""
    version: str = ""
    priority: int | None = None
    origin: str = ""
    backend: Backend | None = field(default=None, repr=False)
    error: str = field(default="", repr=False)  # full traceback for import/hook failures

    @property
    def ops(self) -> dict[str, tuple[str, ...]]:
        if self.backend is None:
            return {}
        return {op: impl.devices for op, impl in self.backend.ops.items()}

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "state": str(self.state),
            "reason": self.reason,
            "version": self.version,
            "priority": self.priority,
            "origin": self.origin,
            "ops": {op: list(devs) for op, devs in self.ops.items()},
            "known_deviations": dict(self.backend.known_deviations) if self.backend else {},
            "error": self.error,
        }


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip()}


def _short(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class Registry:
    """Every backend found in this environment. ``entry_points`` (for tests) replaces the
    ``bmojo`` entry-point group; ``builtins`` the built-in plugins."""

    def __init__(self, entry_points=None, builtins=None):
        self._entry_points = entry_points
        self._builtins = builtins
        self._loaded = False
        self._lock = threading.RLock()
        self._found: dict[str, BackendStatus] = {}  # name → status before env-dependent states
        self._probes: dict[str, tuple[bool, str]] = {}
        self._cache: dict[tuple, tuple[str, OpImpl]] = {}
        self._logged: set[tuple] = set()
        self.plugin_manager = pluggy.PluginManager(PROJECT)
        self.plugin_manager.add_hookspecs(BackendSpecs)

    # ----- loading -----
    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            pm = self.plugin_manager
            origins: dict[str, str] = {}
            builtins = self._builtins
            if builtins is None:
                from bmojo.backends import reference

                builtins = [reference]
            for plugin in builtins:
                name = pm.register(plugin, name=f"builtin:{getattr(plugin, '__name__', plugin)}")
                origins[name] = "built-in"
            eps = self._entry_points
            if eps is None:
                eps = importlib.metadata.entry_points(group=PROJECT)
            for ep in eps:
                dist = getattr(ep, "dist", None)
                origin = f"{dist.name} {dist.version}" if dist is not None else f"entry point {ep.value}"
                try:
                    plugin = ep.load()
                    pname = pm.register(plugin, name=f"ep:{ep.name}")
                except Exception as err:  # guard every entry point: one broken plugin breaks nothing
                    self._record(
                        BackendStatus(
                            ep.name,
                            State.IMPORT_FAILED,
                            _short(err),
                            origin=origin,
                            version=dist.version if dist is not None else "",
                            error=traceback.format_exc(),
                        )
                    )
                    log.warning("bmojo: backend plugin %r failed to import: %s", ep.name, _short(err))
                    continue
                origins[pname] = origin
            for impl in pm.hook.bmojo_backends.get_hookimpls():
                origin = origins.get(impl.plugin_name, impl.plugin_name)
                fallback_name = impl.plugin_name.split(":", 1)[-1]
                try:
                    records = list(impl.function() or [])
                except Exception as err:
                    self._record(
                        BackendStatus(
                            fallback_name,
                            State.IMPORT_FAILED,
                            f"bmojo_backends() raised {_short(err)}",
                            origin=origin,
                            error=traceback.format_exc(),
                        )
                    )
                    continue
                for rec in records:
                    if not isinstance(rec, Backend):
                        self._record(
                            BackendStatus(
                                fallback_name,
                                State.INVALID,
                                f"bmojo_backends() returned {type(rec).__name__}, not a Backend",
                                origin=origin,
                            )
                        )
                        continue
                    if rec.name in self._found and self._found[rec.name].backend is not None:
                        other = self._found[rec.name].origin
                        self._record(
                            BackendStatus(
                                rec.name + "@" + origin,
                                State.INVALID,
                                f"duplicate backend name {rec.name!r} (already registered by {other})",
                                version=rec.version,
                                origin=origin,
                            )
                        )
                        continue
                    self._found[rec.name] = BackendStatus(
                        rec.name,
                        State.AVAILABLE,
                        version=rec.version,
                        priority=rec.priority,
                        origin=origin,
                        backend=rec,
                    )
            for name, package in KNOWN_BACKENDS.items():
                if name not in self._found:
                    self._found[name] = BackendStatus(name, State.NOT_INSTALLED, f"pip install {package}")
            self._loaded = True

    def _record(self, status: BackendStatus) -> None:
        if status.name not in self._found or self._found[status.name].backend is None:
            self._found[status.name] = status

    def _probe(self, status: BackendStatus) -> tuple[bool, str]:
        if status.name not in self._probes:
            try:
                p = status.backend.run_probe()
                self._probes[status.name] = (p.available, p.reason or ("" if p.available else "probe() said no"))
            except Exception as err:
                self._probes[status.name] = (False, f"probe() raised {_short(err)}")
        return self._probes[status.name]

    # ----- states -----
    def statuses(self) -> list[BackendStatus]:
        """Every backend with its current state (``BMOJO_DISABLE`` is read now)."""
        self._load()
        disabled = _disabled()
        out = []
        for name in sorted(self._found, key=lambda n: (n != REFERENCE, n)):
            base = self._found[name]
            st = BackendStatus(**{k: getattr(base, k) for k in base.__dataclass_fields__})
            if base.backend is not None:
                ok, reason = self._probe(base)
                if not ok:
                    st.state, st.reason = State.UNAVAILABLE, reason
                elif name in disabled and name != REFERENCE:
                    st.state, st.reason = State.DISABLED, f"listed in {ENV_DISABLE}"
                else:
                    st.reason = reason  # an available backend's note, e.g. "emulated (tests only)"
            out.append(st)
        return out

    def status(self, name: str) -> BackendStatus:
        for st in self.statuses():
            if st.name == name:
                return st
        known = ", ".join(s.name for s in self.statuses())
        return BackendStatus(name, State.NOT_INSTALLED, f"no backend named {name!r} is installed (known: {known})")

    # ----- selection -----
    def resolve(self, op: str, device_type: str) -> tuple[str, OpImpl]:
        """The backend name and implementation that run ``op`` on ``device_type`` now."""
        explicit, source = requested()
        key = (op, device_type, explicit, os.environ.get(ENV_DISABLE, ""))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            choice = self._choose(op, device_type, explicit, source)
            self._cache[key] = choice
            return choice

    def _choose(self, op, device_type, explicit, source):
        if op not in OPS:
            raise BackendError(f"unknown op {op!r}; the op set is {list(OPS)}")
        statuses = {s.name: s for s in self.statuses()}
        if explicit is not None:
            st = statuses.get(explicit) or self.status(explicit)
            if st.state is not State.AVAILABLE:
                raise BackendUnavailableError(explicit, st.state, st.reason, source)
            impl = st.backend.ops.get(op)
            if impl is None:
                self._log_once(
                    (op, explicit, "missing"),
                    logging.INFO,
                    "bmojo: backend %r (%s) does not implement %s; the reference runs it",
                    explicit,
                    source,
                    op,
                )
                return REFERENCE, statuses[REFERENCE].backend.ops[op]
            if not impl.runs_on(device_type):
                raise BackendError(
                    f"bmojo backend {explicit!r} (requested by {source}) provides {op} for devices "
                    f"{list(impl.devices)}, not {device_type!r}"
                )
            return explicit, impl
        candidates = [
            s
            for s in statuses.values()
            if s.state is State.AVAILABLE
            and s.backend.implicit  # implicit=False: served only when requested by name
            and op in s.backend.ops
            and s.backend.ops[op].runs_on(device_type)
        ]
        candidates.sort(key=lambda s: (-s.backend.priority, s.name == REFERENCE, s.name))
        if not candidates:
            raise BackendError(f"no available backend provides {op} on {device_type!r}")
        best = candidates[0]
        self._log_once(
            (op, device_type, best.name),
            logging.INFO,
            "bmojo: %s on %s -> backend %r %s (priority %d)",
            op,
            device_type,
            best.name,
            best.version,
            best.backend.priority,
        )
        return best.name, best.backend.ops[op]

    def _log_once(self, key, level, msg, *args):
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args)

    def selection(self, device_type: str = "cpu") -> dict[str, str]:
        """op → backend name that would run it now on ``device_type`` (raises like dispatch)."""
        return {op: self.resolve(op, device_type)[0] for op in OPS}


_registry: Registry | None = None
_registry_lock = threading.Lock()
_requested: contextvars.ContextVar[str | None] = contextvars.ContextVar("bmojo_backend", default=None)


def get_registry() -> Registry:
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry()
    return _registry


def set_registry(registry: Registry | None) -> Registry | None:
    """Replace the process-wide registry (tests); None forgets it so the next use rescans."""
    global _registry
    old, _registry = _registry, registry
    return old


def requested() -> tuple[str | None, str]:
    """The explicitly requested backend and who asked: the innermost ``use_backend`` context,
    else ``BMOJO_BACKEND``; ``(None, "implicit")`` when nobody asked."""
    name = _requested.get()
    if name is not None:
        return name, f"use_backend({name!r})"
    env = os.environ.get(ENV_BACKEND, "").strip()
    if env:
        return env, f"{ENV_BACKEND}={env}"
    return None, "implicit"


def set_backend(name: str | None, *, check: bool = True) -> str | None:
    """Select backend ``name`` explicitly for the rest of this thread/context (None: back to
    ``BMOJO_BACKEND`` or implicit selection). Returns the previous explicit choice.

    With ``check`` (default) an unavailable backend raises :class:`BackendUnavailableError` now,
    with its reason; dispatch would raise it at the first op anyway.
    """
    if name is not None:
        st = get_registry().status(name)
        if check and st.state is not State.AVAILABLE:
            raise BackendUnavailableError(name, st.state, st.reason, f"use_backend({name!r})")
    previous = _requested.get()
    _requested.set(name)
    return previous


class use_backend:  # lower-case: used like a function, as torch.set_grad_enabled is
    """Select backend ``name`` explicitly: ``with use_backend("triton"): ...`` restores the previous
    choice on exit; a plain call ``use_backend("triton")`` selects it until changed."""

    def __init__(self, name: str, *, check: bool = True):
        self.name = name
        self._previous = set_backend(name, check=check)

    def __enter__(self) -> BackendStatus:
        return get_registry().status(self.name)

    def __exit__(self, *exc) -> None:
        _requested.set(self._previous)
