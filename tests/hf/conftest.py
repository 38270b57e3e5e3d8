"""Tests of bmojo-hf (the transformers integration); run them with ``nox -s hf``.

Without transformers or bmojo-hf installed the whole directory is skipped and reported once with
the reason (one skipped item), so the core ``tests`` session stays green without them. No hub
access: everything (configs, weights, tokenizers) is built locally and the hub is switched off
before transformers is imported. (``tests/hf`` is a package so this conftest does not shadow the
core ``tests/conftest.py`` module.)
"""

from __future__ import annotations

import importlib
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _missing() -> str | None:
    for name in ("transformers", "bmojo_hf"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            return f"tests/hf need {name} installed (run `nox -s hf`): {err}"
    return None


REASON = _missing()

if REASON is not None:
    collect_ignore_glob = ["test_*.py", "hf_helpers.py"]

    class _MissingDependency(pytest.Item):
        def runtest(self):
            pytest.skip(REASON)

        def reportinfo(self):
            return self.path, None, "tests/hf"

    def pytest_collection_modifyitems(session, config, items):
        items.append(_MissingDependency.from_parent(session, name="tests/hf"))


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one thread avoids thread hand-off costs that dominate tiny
    matmuls (and oversubscription on shared CI machines)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
