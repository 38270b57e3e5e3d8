"""Backend registry: which implementation of each op (:data:`OPS`) runs.

Backends are pluggy plugins in the ``bmojo`` entry-point group (see ``docs/backends.md``). The
public API: :func:`use_backend` / ``BMOJO_BACKEND`` to choose explicitly, ``BMOJO_DISABLE`` to
rule some out, :func:`get_registry` to inspect states, and the records of :mod:`.spec`.
Ops on another framework's arrays (MLX) are selected by the same registry: :mod:`.arrays`.
Importing this package never imports a plugin, torch or another array framework.
"""

from bmojo.backends.registry import (
    ENV_BACKEND,
    ENV_DISABLE,
    KNOWN_BACKENDS,
    REFERENCE,
    BackendError,
    BackendOpError,
    BackendStatus,
    BackendUnavailableError,
    Registry,
    State,
    get_registry,
    requested,
    set_backend,
    set_registry,
    use_backend,
)
from bmojo.backends.spec import OPS, TORCH, Backend, Converters, OpImpl, Probe, hookimpl, hookspec

__all__ = [
    "ENV_BACKEND",
    "ENV_DISABLE",
    "KNOWN_BACKENDS",
    "OPS",
    "REFERENCE",
    "TORCH",
    "Backend",
    "BackendError",
    "BackendOpError",
    "BackendStatus",
    "BackendUnavailableError",
    "Converters",
    "OpImpl",
    "Probe",
    "Registry",
    "State",
    "get_registry",
    "hookimpl",
    "hookspec",
    "requested",
    "set_backend",
    "set_registry",
    "use_backend",
]
