"""Kernel-level tests of bmojo-triton; the default ``nox`` run has them in
``conformance(backend='triton')``, after the suite; ``nox -s triton`` runs them alone (CPU, Triton
interpreter), ``pytest tests/triton_backend --bmojo-device=cuda`` on a GPU.

They check what the conformance suite cannot see: tile edges of these kernels (T, w, f, M not
multiples of the tiles, δ = 0, empty eidetic slots, GQA, head sizes 32/64/128), registry
behaviour of the plugin, the model level, and the benchmark script. The device comes from
``--bmojo-device`` (core's pytest plugin; default cpu). On a CPU the kernels need
``TRITON_INTERPRET=1`` set before Python starts; without it, or without triton/bmojo-triton, the
directory is skipped once with the reason. (Named ``triton_backend``, not ``triton``: pytest puts
``tests/`` on ``sys.path``, where a ``triton`` folder becomes a namespace package that shadows a
missing real ``triton`` and breaks torch's import of it in every other test session; file names
are prefixed ``test_triton_`` to stay unique.)
"""

from __future__ import annotations

import importlib
import os

import pytest

try:  # Triton's own reading of TRITON_INTERPRET ("1", "true", "on", "yes", "y", any case)
    from bmojo_triton.plugin import INTERPRET
except ImportError:  # _missing() names what is missing first
    INTERPRET = False


def _missing(config) -> str | None:
    for name in ("triton", "bmojo_triton"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            return f"tests/triton_backend need {name} installed (run `nox -s triton`): {err}"
    if config.getoption("--bmojo-device") == "cpu" and not INTERPRET:
        return "tests/triton_backend on cpu need TRITON_INTERPRET=1 (run `nox -s triton`)"
    return None


class _Skipped(pytest.Item):
    reason = ""

    def runtest(self):
        pytest.skip(self.reason)

    def reportinfo(self):
        return self.path, None, "tests/triton_backend"


HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_ignore_collect(collection_path, config):
    """Without triton/bmojo-triton (or a device to run on) the test modules are not even imported
    (they import both at the top); one skipped item reports why instead."""
    p = str(collection_path)
    if p.startswith(HERE) and os.path.basename(p).startswith("test_") and _missing(config):
        return True
    return None


def pytest_collection_modifyitems(session, config, items):
    reason = _missing(config)
    if reason is None or not any(
        str(a).startswith(HERE) or HERE.startswith(os.path.abspath(str(a))) for a in config.args
    ):
        return
    item = _Skipped.from_parent(session, name="tests/triton_backend")
    item.reason = reason
    items.append(item)


@pytest.fixture
def device(request):
    import torch

    dev = request.config.getoption("--bmojo-device")
    if dev == "cuda" and not torch.cuda.is_available():
        pytest.fail("--bmojo-device=cuda but no CUDA device is visible")
    return torch.device(dev)


@pytest.fixture(autouse=True)
def deterministic_torch():
    """Seeded, without TF32, and without torch's deterministic-algorithms mode that the core suite
    turns on: on CUDA it rejects cuBLAS matmuls unless CUBLAS_WORKSPACE_CONFIG is set (overrides
    the core conftest's fixture of the same name)."""
    import torch

    torch.manual_seed(0)
    before = torch.get_num_threads()
    # the reference must be the precise side on a GPU: no TF32 in cuBLAS/cuDNN float32 (cuDNN
    # allows it by default)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
