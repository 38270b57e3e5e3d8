"""Tests of bmojo-neuron (NKI kernels through the CPU emulator); the default ``nox`` run has them in
``conformance(backend='neuron')``, after the suite; ``nox -s neuron`` runs them alone.

Without bmojo-neuron installed the directory is skipped and reported once with the reason, so the
core ``tests`` session stays green. The kernels run in :mod:`bmojo_neuron.emulator`
(``BMOJO_NEURON_EMULATE=1``, set here before bmojo_neuron reads it). ``tests/neuron`` is a
package so this conftest does not shadow the core ``tests/conftest.py``.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

os.environ["BMOJO_NEURON_EMULATE"] = "1"


def _missing() -> str | None:
    try:
        importlib.import_module("bmojo_neuron")
    except ImportError as err:
        return f"tests/neuron need bmojo-neuron installed (run `nox -s neuron`): {err}"
    return None


REASON = _missing()

if REASON is not None:
    collect_ignore_glob = ["test_*.py", "helpers.py"]

    class _MissingDependency(pytest.Item):
        def runtest(self):
            pytest.skip(REASON)

        def reportinfo(self):
            return self.path, None, "tests/neuron"

    def pytest_collection_modifyitems(session, config, items):
        items.append(_MissingDependency.from_parent(session, name="tests/neuron"))

else:
    # The runtime and the registry are read once per process: forget any earlier reading (e.g.
    # from core tests run in the same process) so both see the emulation set above.
    if "bmojo_neuron.plugin" in sys.modules:
        sys.modules["bmojo_neuron.plugin"].runtime.cache_clear()
    from bmojo.backends import set_registry

    set_registry(None)
