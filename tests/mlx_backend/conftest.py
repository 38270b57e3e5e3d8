"""Tests of bmojo-mlx (ops on ``mx.array``, the native model); the default ``nox`` run has them in
``conformance(backend='mlx')``, after the suite; ``nox -s mlx`` runs them alone.

Without mlx or bmojo-mlx installed the whole directory is skipped and reported once with the
reason, so the core ``tests`` session stays green without them. On Linux, ``mlx[cpu]`` runs the
pure-MLX path; the Metal kernels are tested only where Metal is available (else skipped, with that
reason). (``tests/mlx_backend`` is a package so this conftest does not shadow ``tests/conftest.py``; it is not
named ``tests/mlx`` because with ``tests/`` on sys.path that name would shadow the mlx package.)
"""

from __future__ import annotations

import importlib

import pytest


def _missing() -> str | None:
    for name in ("mlx.core", "bmojo_mlx"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            return f"tests/mlx_backend need {name} installed (run `nox -s mlx`): {err}"
    return None


REASON = _missing()

if REASON is not None:
    collect_ignore_glob = ["test_*.py", "helpers.py"]

    class _MissingDependency(pytest.Item):
        def runtest(self):
            pytest.skip(REASON)

        def reportinfo(self):
            return self.path, None, "tests/mlx_backend"

    def pytest_collection_modifyitems(session, config, items):
        items.append(_MissingDependency.from_parent(session, name="tests/mlx_backend"))
