"""``--backend`` for the jobs: an explicit name is selected explicitly (the registry's error says
why it is unavailable; never a silent fallback), ``auto`` leaves the registry's implicit choice,
and the caller's selection is restored afterwards (jobs also run as functions: tests, notebooks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def selected_backend(name: str, flag: str = "--backend") -> Iterator[None]:
    from bmojo.backends import BackendUnavailableError, requested, set_backend

    if name == "auto":
        yield
        return
    current, source = requested()
    previous = current if source.startswith("use_backend") else None
    try:
        set_backend(name)
    except BackendUnavailableError as err:
        raise ValueError(f"{flag}: cannot select {name!r}: {err}") from err
    try:
        yield
    finally:
        set_backend(previous, check=False)
