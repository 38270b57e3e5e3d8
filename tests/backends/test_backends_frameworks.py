"""Array frameworks in the registry (issue 12, point 1): ops and backends declare a framework
(torch by default); torch dispatch only ever picks torch ops; another framework's ops resolve
through ``resolve_array`` / ``bmojo.backends.arrays`` with the same explicit/implicit rules, and
the reference is never their fallback. A toy framework ("toy", numpy arrays) stands in for MLX, so
these run without MLX installed."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from bmojo.backends import (
    OPS,
    TORCH,
    Backend,
    BackendError,
    BackendUnavailableError,
    Converters,
    OpImpl,
    Registry,
    arrays,
    cli,
    dispatch,
    get_registry,
    hookimpl,
    set_registry,
    use_backend,
)

TOY_CONVERTERS = Converters(
    to_numpy=lambda a: (np.asarray(a), str(np.asarray(a).dtype)),
    from_numpy=lambda a, name: a.astype(name),
    device_type=lambda: "cpu",
)


def toy_rmsnorm(x, weight, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def better_toy_rmsnorm(x, weight, eps=1e-6):
    return toy_rmsnorm(x, weight, eps)


class Plugin:
    def __init__(self, *records):
        self.records = records

    @hookimpl
    def bmojo_backends(self):
        return list(self.records)


class EP:
    def __init__(self, name, plugin):
        self.name, self.value, self.dist, self._plugin = name, f"fake_{name}", None, plugin

    def load(self):
        return self._plugin


def toy(name="toy", priority=10, ops=None, **kw):
    ops = ops if ops is not None else {"rmsnorm": OpImpl(toy_rmsnorm, devices=("cpu",))}
    return Backend(name=name, version="1", ops=ops, priority=priority, framework="toy", converters=TOY_CONVERTERS, **kw)


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.delenv("BMOJO_BACKEND", raising=False)
    monkeypatch.delenv("BMOJO_DISABLE", raising=False)
    old = get_registry()

    def make(*records):
        reg = Registry(entry_points=[EP(r.name, Plugin(r)) for r in records])
        set_registry(reg)
        return reg

    yield make
    set_registry(old)


# ----- the records -----
def test_framework_defaults_to_torch_and_ops_inherit_the_backends():
    plain = Backend(name="plain", version="1", ops={"rmsnorm": toy_rmsnorm})
    assert plain.framework == TORCH and plain.ops["rmsnorm"].framework == TORCH
    b = toy()
    assert b.ops["rmsnorm"].framework == "toy"
    assert b.ops["rmsnorm"].runs_on("cpu", "toy") and not b.ops["rmsnorm"].runs_on("cpu")
    assert OpImpl(toy_rmsnorm).runs_on("cpu"), "a bare OpImpl is a torch op"


def test_non_torch_framework_needs_converters():
    with pytest.raises(ValueError, match=r"framework 'toy' needs converters=Converters"):
        Backend(name="toy", version="1", ops={"rmsnorm": toy_rmsnorm}, framework="toy")


def test_op_framework_must_be_torch_or_the_backends():
    with pytest.raises(ValueError, match=r"rmsnorm declares framework 'jax'; expected 'torch' or .* 'toy'"):
        toy(ops={"rmsnorm": OpImpl(toy_rmsnorm, framework="jax")})
    with pytest.raises(ValueError, match="framework must be a lower-case name"):
        Backend(name="x", version="1", ops={}, framework="MLX!", converters=TOY_CONVERTERS)


# ----- selection -----
def test_torch_dispatch_never_picks_a_framework_op(registry):
    registry(toy(priority=100))
    assert get_registry().resolve("rmsnorm", "cpu")[0] == "reference"
    x, w = torch.randn(3, 8), torch.ones(8)
    torch.testing.assert_close(dispatch.rmsnorm(x, w), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


def test_arrays_resolve_implicitly_by_priority(registry):
    better = toy("better", priority=20, ops={"rmsnorm": OpImpl(better_toy_rmsnorm, devices=("cpu",))})
    registry(toy(), better)
    assert arrays.resolve("rmsnorm", "toy") == ("better", better_toy_rmsnorm)
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_allclose(arrays.call("rmsnorm", "toy", x, np.ones(4)), toy_rmsnorm(x, np.ones(4)))
    with pytest.raises(BackendError, match=r"no available backend provides rmsnorm on 'gpu' for toy arrays"):
        get_registry().resolve_array("rmsnorm", "toy", "gpu")


def test_arrays_never_fall_back_to_the_reference(registry):
    registry(toy())
    with pytest.raises(BackendError, match=r"no available backend provides ssm_scan on 'cpu' for toy arrays"):
        arrays.resolve("ssm_scan", "toy")
    with use_backend("toy"), pytest.raises(BackendError, match="does not implement ssm_scan, and the reference"):
        arrays.resolve("ssm_scan", "toy")
    with (
        use_backend("reference"),
        pytest.raises(BackendError, match="provides rmsnorm for torch tensors, not toy arrays"),
    ):
        arrays.resolve("rmsnorm", "toy")


def test_explicit_framework_backend_with_torch_tensors_is_an_error(registry):
    registry(toy())
    with use_backend("toy"):
        assert arrays.resolve("rmsnorm", "toy")[0] == "toy"
        with pytest.raises(BackendError, match=r"provides rmsnorm for toy arrays, not torch tensors"):
            dispatch.rmsnorm(torch.randn(2, 4), torch.ones(4))


def test_disabled_and_unavailable_framework_backends(registry, monkeypatch):
    registry(toy(), toy("down", priority=50, probe=lambda: (False, "no toy device")))
    assert arrays.resolve("rmsnorm", "toy")[0] == "toy", "the unavailable one is skipped"
    with pytest.raises(BackendUnavailableError, match="no toy device"):
        use_backend("down")
    monkeypatch.setenv("BMOJO_DISABLE", "toy")
    with pytest.raises(BackendError, match="no available backend provides rmsnorm on 'cpu' for toy arrays"):
        get_registry().resolve_array("rmsnorm", "toy", "cpu")
    with pytest.raises(BackendError, match="no available backend declares converters for framework 'toy'"):
        arrays.device_type("toy")


def test_arrays_refuse_torch():
    with pytest.raises(ValueError, match="framework: expected a non-torch framework"):
        arrays.resolve("rmsnorm", "torch")


# ----- bmojo backends -----
def _cli(capsys, json_out=False):
    rc = cli.run(argparse.Namespace(json=json_out, device="cpu", verbose=False))
    return rc, capsys.readouterr().out


def test_cli_lists_ops_under_their_framework(registry, capsys):
    registry(toy())
    rc, out = _cli(capsys)
    assert rc == 0
    assert "rmsnorm [toy: cpu]" in out
    assert "selection for toy arrays on cpu: implicit" in out
    assert "  toy: rmsnorm" in out
    rc, out = _cli(capsys, json_out=True)
    data = json.loads(out)
    row = next(b for b in data["backends"] if b["name"] == "toy")
    assert row["frameworks"] == {"rmsnorm": "toy"}
    assert data["array_selection"] == {"toy": {"rmsnorm": "toy"}}
    assert set(data["selection"]) == set(OPS) and set(data["selection"].values()) == {"reference"}


def test_config_and_array_dispatch_import_no_torch():
    """A non-torch model (bmojo-mlx) reads configs and dispatches ops without importing torch."""
    import subprocess
    import sys

    code = (
        "import sys, bmojo.config, bmojo.arith, bmojo.backends.arrays\n"
        "bmojo.config.ModelConfig.from_json(bmojo.config.ModelConfig().to_json())\n"
        "print('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False"
    ]
