"""A minimal third-party bmojo backend: ``rmsnorm`` through ``torch.nn.functional.rms_norm``.

Everything a backend needs: a ``bmojo_backends`` hook implementation returning a ``Backend``
record, and an entry point in the ``bmojo`` group (see this package's ``pyproject.toml``).
Importing this module must stay cheap and must not fail on machines without your runtime: put
device checks in ``probe()``, and import kernels lazily (``OpImpl("module:attr")``). A
``"module:attr"`` string is imported at the op's first call: when renaming the package, rename it
here too (``bmojo backends -v`` imports every op and shows a stale one).
"""

from __future__ import annotations

import os

from bmojo.backends import Backend, OpImpl, Probe, hookimpl

__version__ = "0.1.0"

#: Set to make the probe report this backend as unavailable (shows the "unavailable" state).
UNAVAILABLE_ENV = "BMOJO_EXAMPLE_UNAVAILABLE"


def _probe() -> Probe:
    """Cheap: no kernel compilation, no device allocation."""
    if os.environ.get(UNAVAILABLE_ENV):
        return Probe(False, f"{UNAVAILABLE_ENV} is set")
    try:
        import torch.nn.functional as F
    except ImportError as err:  # pragma: no cover - torch is a dependency of bmojo-core
        return Probe(False, f"torch is not importable: {err}")
    if not hasattr(F, "rms_norm"):
        return Probe(False, "needs torch >= 2.4 (torch.nn.functional.rms_norm)")
    return Probe(True)


@hookimpl
def bmojo_backends():
    return [
        Backend(
            name="example",  # = the entry-point key in pyproject.toml
            version=__version__,
            # One op, CPU only; torch autograd differentiates it (the default backward).
            ops={"rmsnorm": OpImpl("bmojo_example_backend.kernels:rmsnorm", devices=("cpu",))},
            priority=10,  # above the reference (0): implicit selection prefers it for rmsnorm on CPU
            probe=_probe,
            description="example out-of-tree backend (rmsnorm via torch.nn.functional.rms_norm)",
            known_deviations={},  # e.g. {"test_forward[float16-rmsnorm-*]": "accumulates in fp16"}
        )
    ]
