"""The mlx backend in bmojo's registry: it serves MLX arrays (implicitly and explicitly), torch
dispatch never touches it (nor imports MLX), a third-party MLX kernel registered with a higher
priority takes over, and ``bmojo backends`` lists it under its framework."""

from __future__ import annotations

import subprocess
import sys

import mlx.core as mx
import pytest
import torch
from bmojo.backends import (
    Backend,
    BackendError,
    OpImpl,
    arrays,
    dispatch,
    get_registry,
    hookimpl,
    use_backend,
)
from bmojo_mlx import dispatch as mlx_ops
from bmojo_mlx import plugin
from bmojo_mlx.ops.rmsnorm.array import rmsnorm as rmsnorm_array

calls: list[str] = []


def custom_metal_rmsnorm(x, weight, eps=1e-6):
    """Stands in for a third party's Metal kernel."""
    calls.append("custom")
    return rmsnorm_array(x, weight, eps)


class ThirdParty:
    @hookimpl
    def bmojo_backends(self):
        return [
            Backend(
                name="my-metal",
                version="1",
                ops={"rmsnorm": OpImpl(custom_metal_rmsnorm, devices=("cpu", "gpu"))},
                priority=20,
                framework="mlx",
                converters=plugin.CONVERTERS,
            )
        ]


class EP:
    def __init__(self, name, plugin_obj):
        self.name, self.value, self.dist, self._plugin = name, f"fake_{name}", None, plugin_obj

    def load(self):
        return self._plugin


@pytest.fixture
def registry(registry):
    """tests/conftest.py's fake-registry installer, with this file's call log cleared."""
    calls.clear()
    return registry


def test_mlx_serves_mlx_arrays_and_never_torch(registry):
    registry(EP("mlx", plugin))
    assert arrays.resolve("ssm_scan", "mlx")[0] == "mlx"
    assert get_registry().selection("cpu") == {op: "reference" for op in get_registry().selection("cpu")}
    x, w = mx.ones((2, 4)), mx.ones((4,))
    assert mx.allclose(mlx_ops.rmsnorm(x, w), x)
    with use_backend("mlx"):
        assert mx.allclose(mlx_ops.rmsnorm(x, w), x)
        with pytest.raises(BackendError, match="provides rmsnorm for mlx arrays, not torch tensors"):
            dispatch.rmsnorm(torch.ones(2, 4), torch.ones(4))
    with use_backend("reference"), pytest.raises(BackendError, match="for torch tensors, not mlx arrays"):
        mlx_ops.rmsnorm(x, w)


def test_a_third_party_mlx_kernel_takes_over_by_priority(registry, monkeypatch):
    registry(EP("mlx", plugin), EP("my-metal", ThirdParty()))
    x, w = mx.ones((2, 4)), mx.ones((4,))
    mlx_ops.rmsnorm(x, w)
    assert calls == ["custom"]
    assert arrays.resolve("ssm_scan", "mlx")[0] == "mlx", "ops it does not provide stay with mlx"
    with use_backend("mlx"):
        mlx_ops.rmsnorm(x, w)
    assert calls == ["custom"], "an explicit choice wins over priority"
    monkeypatch.setenv("BMOJO_DISABLE", "my-metal")
    mlx_ops.rmsnorm(x, w)
    assert calls == ["custom"]


def test_probe_reports_missing_mlx(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("mlx") else real(name))
    p = plugin._probe()
    assert not p.available and "pip install 'mlx'" in p.reason


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_torch_dispatch_and_listing_do_not_import_mlx():
    code = (
        "import sys, torch\n"
        "from bmojo.backends import dispatch, get_registry\n"
        "dispatch.rmsnorm(torch.ones(2, 4), torch.ones(4))\n"
        "names = [s.name for s in get_registry().statuses()]\n"
        "print('mlx' in names, 'mlx.core' in sys.modules)\n"
    )
    assert _run(code).split() == ["True", "False"]


def test_bmojo_backends_lists_mlx_under_its_framework():
    out = subprocess.run(
        [sys.executable, "-m", "bmojo.cli", "backends"], capture_output=True, text=True, check=True
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("mlx "))
    assert "available" in row and "all ops [mlx: cpu,gpu]" in row
    assert "selection for mlx arrays on cpu" in out


def test_bridge_never_rounds_silently():
    """numpy has no bfloat16, so torch's bfloat16 crosses as float32 holding bfloat16 values;
    other float32 values would be rounded, and are refused like every other dtype mismatch."""
    import numpy as np
    from bmojo_mlx import bridge

    exact = np.array([1.0, -2.5, np.inf, np.nan, 3.140625], dtype=np.float32)
    out = bridge.from_numpy(exact, "bfloat16")
    assert out.dtype == mx.bfloat16
    assert np.array_equal(np.array(out.astype(mx.float32)), exact, equal_nan=True)
    with pytest.raises(ValueError, match="a: expected float32 values exactly representable in bfloat16"):
        bridge.from_numpy(np.array([1.001, 3.14159], dtype=np.float32), "bfloat16")
    with pytest.raises(ValueError, match="a: expected numpy dtype float16"):
        bridge.from_numpy(exact, "float16")
