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

An op given as a lazy ``"module:attr"`` string is imported at its first dispatch (:meth:`Registry.implementation`).
If that import fails (a missing compiled extension, a renamed module or function), the backend
is *failed for that op*: the error is kept (shown by ``bmojo backends`` in the backend's reason,
its traceback with ``-v``) and logged as a warning, implicit selection skips the backend for
that op (the next provider, else the reference, serves it), and an explicit request raises
:class:`BackendOpError` naming the backend, the op and the target, chained to the import error.
Its other ops are unaffected.

Frameworks: torch dispatch (``resolve``) only ever picks ops whose framework is torch. Ops on
another framework's arrays (``OpImpl.framework``, e.g. ``"mlx"``) are resolved by
``resolve_array`` with the same rules, except that the reference (torch only) is never a fallback
for them; :mod:`bmojo.backends.arrays` calls them.

Selection: an explicit request (``use_backend(name)``, else ``BMOJO_BACKEND=name``) uses that
backend for the ops it provides and raises :class:`BackendUnavailableError` carrying the reason
when it is not available — never a silent fallback. Ops it does not implement at all run the
reference (logged once). Without a request, each op goes to the highest-priority available
backend providing it for the tensor's device (skipping backends declared ``implicit=False``),
falling back to the reference; each choice is logged once at INFO on the ``bmojo.backends`` logger.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import logging
import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import pluggy

from bmojo.backends.spec import OPS, PROJECT, TORCH, Backend, BackendSpecs, Converters, OpImpl, _resolve

log = logging.getLogger("bmojo.backends")

ENV_BACKEND = "BMOJO_BACKEND"
ENV_DISABLE = "BMOJO_DISABLE"
REFERENCE = "reference"

#: Backends this project publishes: listed as "not installed" when absent, with the install hint
#: (the packages are not on PyPI: the hint is run at the root of a checkout of the repository).
KNOWN_BACKENDS = {"triton": "bmojo-triton", "mlx": "bmojo-mlx", "neuron": "bmojo-neuron"}


def install_hint(package: str) -> str:
    return f"pip install -e packages/{package}"


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


class BackendOpError(BackendError):
    """A backend's implementation of an op raised, could not be imported (its ``"module:attr"``
    target), or returned outputs that break the op's contract (count, shape, dtype, device); the
    message names the backend and the op."""


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
    op_errors: dict[str, str] = field(default_factory=dict)  # op → why its target failed to import

    @property
    def ops(self) -> dict[str, tuple[str, ...]]:
        if self.backend is None:
            return {}
        return {op: impl.devices for op, impl in self.backend.ops.items()}

    @property
    def frameworks(self) -> dict[str, str]:
        """op → the array framework its implementation takes (``"torch"``, ``"mlx"``, ...)."""
        if self.backend is None:
            return {}
        return {op: impl.framework or TORCH for op, impl in self.backend.ops.items()}

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "state": str(self.state),
            "reason": self.reason,
            "version": self.version,
            "priority": self.priority,
            "origin": self.origin,
            "ops": {op: list(devs) for op, devs in self.ops.items()},
            "frameworks": self.frameworks,
            "known_deviations": dict(self.backend.known_deviations) if self.backend else {},
            "error": self.error,
            "op_errors": dict(self.op_errors),
        }


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip()}


def _what(framework: str) -> str:
    return "torch tensors" if framework == TORCH else f"{framework} arrays"


def _short(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _cannot_load(op: str, target: str, err: BaseException) -> str:
    return f"cannot load {op} from {target!r}: {_short(err)}"


def _traceback(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


#: Seconds a backend's ``probe()`` may take before it counts as unavailable (``BMOJO_PROBE_TIMEOUT``).
ENV_PROBE_TIMEOUT = "BMOJO_PROBE_TIMEOUT"
DEFAULT_PROBE_TIMEOUT = 10.0


def probe_timeout() -> float:
    raw = os.environ.get(ENV_PROBE_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_PROBE_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise BackendError(f"{ENV_PROBE_TIMEOUT}: expected a positive number of seconds, got {raw!r}")
    return value


def _guarded(fn):
    """Run plugin code: any exception a plugin can raise — including ``SystemExit`` and other
    ``BaseException`` subclasses — is returned as ``(None, err)``; only ``KeyboardInterrupt``
    (the user) passes through."""
    try:
        return fn(), None
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # a plugin's sys.exit() must not end the process
        return None, err


def _call_with_timeout(fn, timeout: float):
    """``_guarded(fn)`` in a daemon thread; ``TimeoutError`` when it has not returned in time (the
    thread is abandoned: a hung probe costs one thread, never the caller)."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(_guarded(fn)), name="bmojo-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        return None, TimeoutError(f"probe() did not return within {timeout:g} s ({ENV_PROBE_TIMEOUT})")
    return box[0]


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
        self._builtin_names: set[str] = set()
        self._fns: dict = {}  # "module:attr" target (or callable) → the imported callable
        self._op_errors: dict[tuple[str, str], tuple[str, BaseException]] = {}  # (backend, op) → (target, error)
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
                # Guard every entry point: one broken plugin breaks nothing, whatever it raises.
                pname, err = _guarded(lambda ep=ep: pm.register(ep.load(), name=f"ep:{ep.name}"))
                if err is not None:
                    self._record(
                        BackendStatus(
                            ep.name,
                            State.IMPORT_FAILED,
                            _short(err),
                            origin=origin,
                            version=dist.version if dist is not None else "",
                            error=_traceback(err),
                        )
                    )
                    log.warning("bmojo: backend plugin %r failed to import: %s", ep.name, _short(err))
                    continue
                origins[pname] = origin
            # Built-ins first, whatever order pluggy calls hooks in (tryfirst/trylast): a plugin
            # can never take a built-in's name, so ``reference`` is always the real one.
            impls = sorted(
                pm.hook.bmojo_backends.get_hookimpls(), key=lambda i: not i.plugin_name.startswith("builtin:")
            )
            for impl in impls:
                origin = origins.get(impl.plugin_name, impl.plugin_name)
                builtin = impl.plugin_name.startswith("builtin:")
                fallback_name = impl.plugin_name.split(":", 1)[-1]
                records, err = _guarded(lambda impl=impl: list(impl.function() or []))
                names = [r.name for r in records or [] if isinstance(r, Backend)]
                # A one-backend plugin's entry point is named like its backend (an import failure is
                # reported under the entry-point name, before any record exists): a mismatch is flagged.
                mismatch = impl.plugin_name.startswith("ep:") and len(names) == 1 and fallback_name not in names
                if err is not None:
                    self._record(
                        BackendStatus(
                            fallback_name,
                            State.IMPORT_FAILED,
                            f"bmojo_backends() raised {_short(err)}",
                            origin=origin,
                            error=_traceback(err),
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
                    if rec.name in self._builtin_names or (not builtin and rec.name == REFERENCE):
                        self._record(
                            BackendStatus(
                                rec.name + "@" + origin,
                                State.INVALID,
                                f"backend name {rec.name!r} is reserved for the built-in backend",
                                version=rec.version,
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
                    if builtin:
                        self._builtin_names.add(rec.name)
                    note = ""
                    if mismatch:
                        note = f"entry point {fallback_name!r} is not named like the backend {rec.name!r}"
                        log.warning("bmojo: %s (%s); name them the same", note, origin)
                    self._found[rec.name] = BackendStatus(
                        rec.name,
                        State.AVAILABLE,
                        note,
                        version=rec.version,
                        priority=rec.priority,
                        origin=origin,
                        backend=rec,
                    )
            for name, package in KNOWN_BACKENDS.items():
                if name not in self._found:
                    self._found[name] = BackendStatus(name, State.NOT_INSTALLED, install_hint(package))
            self._loaded = True

    def _record(self, status: BackendStatus) -> None:
        """Keep a failure under its name; several failures under one name are all kept (joined)."""
        old = self._found.get(status.name)
        if old is None:
            self._found[status.name] = status
        elif old.backend is None and old.state is not State.NOT_INSTALLED:
            old.reason = f"{old.reason}; {status.reason}"
            old.error = "\n".join(e for e in (old.error, status.error) if e)

    def _probe(self, status: BackendStatus) -> tuple[bool, str]:
        """Probe one backend, once per process, with a timeout (see :func:`probe_timeout`)."""
        with self._lock:
            if status.name not in self._probes:
                probe, err = _call_with_timeout(status.backend.run_probe, probe_timeout())
                if err is not None:
                    result = (False, str(err) if isinstance(err, TimeoutError) else f"probe() raised {_short(err)}")
                else:
                    result = (probe.available, probe.reason or ("" if probe.available else "probe() said no"))
                self._probes[status.name] = result
            return self._probes[status.name]

    # ----- states -----
    def _state(self, name: str, disabled: set[str]) -> BackendStatus:
        """The current status of a loaded name. Disabled backends are never probed; others are
        probed here (once per process)."""
        base = self._found[name]
        st = BackendStatus(**{k: getattr(base, k) for k in base.__dataclass_fields__})
        if base.backend is not None:
            if name in disabled and name != REFERENCE:
                st.state, reason = State.DISABLED, f"listed in {ENV_DISABLE}"
            else:
                ok, reason = self._probe(base)  # available: a note, e.g. "emulated (tests only)"
                if not ok:
                    st.state = State.UNAVAILABLE
            failed = {op: (target, err) for (n, op), (target, err) in self._op_errors.items() if n == name}
            st.op_errors = {op: _cannot_load(op, target, err) for op, (target, err) in failed.items()}
            st.reason = "; ".join(r for r in (reason, base.reason, *st.op_errors.values()) if r)
            st.error = "\n".join(_traceback(err) for _, err in failed.values())
        return st

    def _check_disabled(self, disabled: set[str]) -> None:
        unknown = sorted(disabled - set(self._found))
        if unknown:
            self._log_once(
                ("disable-unknown", tuple(unknown)),
                logging.WARNING,
                "bmojo: %s=%s names no installed backend: %s (known: %s)",
                ENV_DISABLE,
                os.environ.get(ENV_DISABLE, ""),
                ", ".join(unknown),
                ", ".join(sorted(self._found)),
            )

    def unknown_disabled(self) -> list[str]:
        """Names in ``BMOJO_DISABLE`` that match no backend (a typo disables nothing)."""
        self._load()
        return sorted(_disabled() - set(self._found))

    def statuses(self) -> list[BackendStatus]:
        """Every backend with its current state (``BMOJO_DISABLE`` is read now). Probes every
        backend that is not disabled (what ``bmojo backends`` shows); dispatch never calls this."""
        self._load()
        disabled = _disabled()
        self._check_disabled(disabled)
        return [self._state(name, disabled) for name in sorted(self._found, key=lambda n: (n != REFERENCE, n))]

    def status(self, name: str) -> BackendStatus:
        """The status of one backend; probes only that one."""
        self._load()
        if name in self._found:
            return self._state(name, _disabled())
        known = ", ".join(sorted(self._found, key=lambda n: (n != REFERENCE, n)))
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

    def resolve_array(self, op: str, framework: str, device_type: str) -> tuple[str, OpImpl]:
        """Like :meth:`resolve`, for arrays of ``framework`` (``"mlx"``, ...) computed on
        ``device_type``: only ops declaring that framework are candidates, and the reference
        (torch only) is never a fallback."""
        explicit, source = requested()
        key = (op, device_type, explicit, os.environ.get(ENV_DISABLE, ""), framework)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            choice = self._choose(op, device_type, explicit, source, framework)
            self._cache[key] = choice
            return choice

    def converters(self, framework: str) -> Converters:
        """The converters an available backend declares for ``framework`` (the explicit backend's
        when one is requested)."""
        explicit, _ = requested()
        key = ("converters", framework, explicit, os.environ.get(ENV_DISABLE, ""))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self._load()
        disabled = _disabled()
        # Probe only the backends of this framework that declare converters (never every backend).
        found = []
        for name, st in self._found.items():
            if st.backend is not None and st.backend.framework == framework and st.backend.converters is not None:
                current = self._state(name, disabled)
                if current.state is State.AVAILABLE:
                    found.append(current.backend)
        found.sort(key=lambda b: (b.name != explicit, -b.priority, b.name))
        if not found:
            raise BackendError(f"no available backend declares converters for framework {framework!r}")
        self._cache[key] = found[0].converters
        return found[0].converters

    def _choose(self, op, device_type, explicit, source, framework=TORCH):
        """Probe only what this choice needs: the requested backend, or — implicitly — the
        candidates for this op, device and array framework in priority order until one is
        available."""
        if op not in OPS:
            raise BackendError(f"unknown op {op!r}; the op set is {list(OPS)}")
        self._load()
        disabled = _disabled()
        self._check_disabled(disabled)
        reference = self._found[REFERENCE].backend
        what = _what(framework)
        if explicit is not None:
            st = self.status(explicit)
            if st.state is not State.AVAILABLE:
                raise BackendUnavailableError(explicit, st.state, st.reason, source)
            impl = st.backend.ops.get(op)
            if impl is not None and (impl.framework or TORCH) != framework:
                raise BackendError(
                    f"bmojo backend {explicit!r} (requested by {source}) provides {op} for "
                    f"{_what(impl.framework or TORCH)}, not {what}"
                )
            if impl is None and framework != TORCH:
                raise BackendError(
                    f"bmojo backend {explicit!r} (requested by {source}) does not implement {op}, and the "
                    f"reference serves torch tensors only, not {what}"
                )
            if impl is None:
                self._log_once(
                    (op, explicit, "missing"),
                    logging.INFO,
                    "bmojo: backend %r (%s) does not implement %s; the reference runs it",
                    explicit,
                    source,
                    op,
                )
                return REFERENCE, reference.ops[op]
            if not impl.runs_on(device_type, framework):
                raise BackendError(
                    f"bmojo backend {explicit!r} (requested by {source}) provides {op} for devices "
                    f"{list(impl.devices)}, not {device_type!r}"
                )
            failed = self._op_errors.get((explicit, op))
            if failed is not None:  # never a silent fallback: the requested backend's failure, with its cause
                target, err = failed
                raise BackendOpError(
                    f"bmojo backend {explicit!r} (requested by {source}) {_cannot_load(op, target, err)}"
                ) from err
            return explicit, impl
        candidates = [
            s
            for name, s in self._found.items()
            if s.backend is not None
            and not (name in disabled and name != REFERENCE)
            and s.backend.implicit  # implicit=False: served only when requested by name
            and op in s.backend.ops
            and (name, op) not in self._op_errors  # its target failed to import
            and s.backend.ops[op].runs_on(device_type, framework)
        ]
        candidates.sort(key=lambda s: (-s.backend.priority, s.name == REFERENCE, s.name))
        best = next((s for s in candidates if self._probe(s)[0]), None)
        if best is None:
            where = repr(device_type) if framework == TORCH else f"{device_type!r} for {what}"
            failed = [(n, *e) for (n, o), e in self._op_errors.items() if o == op]
            why = "".join(f"; backend {n!r} {_cannot_load(op, target, err)}" for n, target, err in failed)
            error = BackendError(f"no available backend provides {op} on {where}{why}")
            if failed:
                raise error from failed[-1][2]
            raise error
        self._log_once(
            (op, device_type, best.name, framework),
            logging.INFO,
            "bmojo: %s on %s -> backend %r %s (priority %d)",
            op,
            device_type if framework == TORCH else f"{device_type} ({framework})",
            best.name,
            best.version,
            best.backend.priority,
        )
        return best.name, best.backend.ops[op]

    # ----- importing implementations -----
    def implementation(self, op: str, device_type: str, framework: str = TORCH) -> tuple[str, OpImpl, Callable]:
        """:meth:`resolve` (:meth:`resolve_array` for another ``framework``) plus the imported
        implementation: ``(backend name, OpImpl, callable)``. A ``"module:attr"`` target (``fn``,
        or an explicit ``backward``) that fails to import makes its backend failed for ``op`` (see
        the module docstring): then an explicit request raises :class:`BackendOpError` naming the
        backend, the op and the target, and implicit selection moves on to the next provider."""
        while True:
            if framework == TORCH:
                name, impl = self.resolve(op, device_type)
            else:
                name, impl = self.resolve_array(op, framework, device_type)
            fn = self._fns.get(impl.fn)
            if fn is not None:
                return name, impl, fn
            fn = self._import(name, op, impl)
            if fn is not None:
                return name, impl, fn

    def _import(self, name: str, op: str, impl: OpImpl) -> Callable | None:
        """Import ``impl``'s targets (guarded like a plugin's import); None when one fails (then
        recorded as backend ``name``'s failure for ``op``). The reference's are core's own: trusted."""
        for target in (impl.fn, impl.backward):
            if target is None or target in self._fns:
                continue
            if name == REFERENCE:
                self._fns[target] = _resolve(target)
                continue
            fn, err = _guarded(lambda target=target: _resolve(target))
            if err is not None:
                with self._lock:
                    self._op_errors[(name, op)] = (target if isinstance(target, str) else repr(target), err)
                    self._cache.clear()
                log.warning(
                    "bmojo: backend %r cannot load %s from %r: %s; implicit selection skips it for %s",
                    name,
                    op,
                    target,
                    _short(err),
                    op,
                )
                return None
            self._fns[target] = fn
        return self._fns[impl.fn]

    def loaded(self, target) -> Callable:
        """The callable a target resolved to, once :meth:`implementation` has imported it (its
        ``fn`` and its explicit ``backward``): one import cache for dispatch and arrays."""
        return self._fns[target]

    def check_targets(self) -> None:
        """Import the targets of every op of every available backend now, as their first calls
        would, recording the failures (``bmojo backends -v``)."""
        for st in self.statuses():
            if st.state is State.AVAILABLE and st.name != REFERENCE:
                for op, impl in st.backend.ops.items():
                    if (st.name, op) not in self._op_errors:
                        self._import(st.name, op, impl)

    def _log_once(self, key, level, msg, *args):
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args)

    def selection(self, device_type: str = "cpu") -> dict[str, str]:
        """op → backend name that would run it now on ``device_type`` (raises like dispatch)."""
        return {op: self.resolve(op, device_type)[0] for op in OPS}

    def array_frameworks(self) -> list[str]:
        """Non-torch frameworks some available backend serves (from the records; imports nothing)."""
        found = {
            fw for s in self.statuses() if s.state is State.AVAILABLE for fw in s.frameworks.values() if fw != TORCH
        }
        return sorted(found)

    def array_selection(self, framework: str, device_type: str = "cpu") -> dict[str, str]:
        """op → backend name that would run it now for ``framework`` arrays. Ops nobody provides
        (the requested backend, when one is requested) are left out; a requested backend that is
        unavailable, or has an op only for other arrays or devices, raises what dispatch would."""
        explicit, _ = requested()
        out = {}
        for op in OPS:
            try:
                out[op] = self.resolve_array(op, framework, device_type)[0]
            except BackendError:
                if explicit is None:
                    continue
                st = self.status(explicit)
                if st.state is State.AVAILABLE and op not in st.backend.ops:
                    continue
                raise
        return out


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


@contextlib.contextmanager
def pinned_backend(name: str | None):
    """Select ``name`` explicitly inside the block without checking it (dispatch uses it to run a
    backward on the backend that ran the forward); None leaves the selection as it is."""
    if name is None:
        yield
        return
    token = _requested.set(name)
    try:
        yield
    finally:
        _requested.reset(token)


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
