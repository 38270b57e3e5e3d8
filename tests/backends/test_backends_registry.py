"""The backend registry: plugin contract, guarded loading, the states, explicit and implicit
selection (issue: backend registry, points 1-2). Plugins here are in-memory stand-ins for entry
points, so nothing installed in the environment leaks in."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from bmojo.backends import (
    OPS,
    Backend,
    BackendError,
    BackendUnavailableError,
    OpImpl,
    Probe,
    State,
    dispatch,
    hookimpl,
    requested,
    use_backend,
)
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref


class Plugin:
    def __init__(self, *records, error: Exception | None = None):
        self.records, self.error = records, error

    @hookimpl
    def bmojo_backends(self):
        if self.error is not None:
            raise self.error
        return list(self.records)


class EP:
    """Stands in for an importlib.metadata.EntryPoint."""

    def __init__(self, name, plugin=None, error=None):
        self.name, self.value, self.dist = name, f"fake_{name}", None
        self._plugin, self._error = plugin, error

    def load(self):
        if self._error is not None:
            raise self._error
        return self._plugin


calls: list[str] = []


def counting_rmsnorm(x, weight, eps=1e-6):
    calls.append("fast")
    return rmsnorm_ref(x, weight, eps)


@pytest.fixture
def registry(registry):
    """tests/conftest.py's fake-registry installer, with this file's call log cleared."""
    calls.clear()
    return registry


def fast(**kw):
    return Backend(
        name=kw.pop("name", "fast"),
        version="1.2",
        ops=kw.pop("ops", {"rmsnorm": counting_rmsnorm}),
        priority=kw.pop("priority", 5),
        **kw,
    )


def states(reg):
    return {s.name: s for s in reg.statuses()}


def test_reference_is_a_builtin_plugin_with_every_op(registry):
    reg = registry()
    st = states(reg)["reference"]
    assert st.state is State.AVAILABLE and st.origin == "built-in"
    assert tuple(st.ops) == OPS and all(d == ("*",) for d in st.ops.values())
    assert any(getattr(p, "__name__", "") == "bmojo.backends.reference" for p in reg.plugin_manager.get_plugins())


def test_known_backends_are_listed_as_not_installed(registry):
    st = states(registry())
    for name in ("triton", "mlx", "neuron"):
        assert st[name].state is State.NOT_INSTALLED
        assert f"bmojo-{name}" in st[name].reason


def test_broken_import_is_recorded_and_breaks_nothing(registry):
    reg = registry(EP("broken", error=ImportError("no module named 'cuda_magic'")), EP("fast", Plugin(fast())))
    st = states(reg)
    assert st["broken"].state is State.IMPORT_FAILED
    assert "cuda_magic" in st["broken"].reason and "Traceback" in st["broken"].error
    assert st["fast"].state is State.AVAILABLE
    x, w = torch.randn(2, 8), torch.ones(8)
    torch.testing.assert_close(dispatch.rmsnorm(x, w), rmsnorm_ref(x, w))  # dispatch still works
    with pytest.raises(BackendUnavailableError, match=r"import failed.*cuda_magic"):
        use_backend("broken")


def test_failing_hook_invalid_record_and_duplicate_name(registry):
    reg = registry(
        EP("hookfail", Plugin(error=RuntimeError("boom"))),
        EP("notarecord", Plugin({"name": "x"})),
        EP("fast", Plugin(fast())),
        EP("fast2", Plugin(fast())),
    )
    st = states(reg)
    assert st["hookfail"].state is State.IMPORT_FAILED and "boom" in st["hookfail"].reason
    assert st["notarecord"].state is State.INVALID
    dup = [s for s in st.values() if s.state is State.INVALID and "duplicate" in s.reason]
    assert len(dup) == 1 and st["fast"].state is State.AVAILABLE


def test_record_validation():
    with pytest.raises(ValueError, match="unknown ops"):
        Backend(name="x", version="1", ops={"flash_attention": lambda: None})
    with pytest.raises(ValueError, match="lower-case"):
        Backend(name="Bad Name", version="1", ops={})


def test_probe_reason_and_probe_errors(registry):
    def raising():
        raise OSError("driver missing")

    reg = registry(
        EP("nodev", Plugin(fast(name="nodev", probe=lambda: Probe(False, "no CUDA device")))),
        EP("tuple", Plugin(fast(name="tuple", probe=lambda: (False, "needs macOS")))),
        EP("raises", Plugin(fast(name="raises", probe=raising))),
    )
    st = states(reg)
    assert (st["nodev"].state, st["nodev"].reason) == (State.UNAVAILABLE, "no CUDA device")
    assert (st["tuple"].state, st["tuple"].reason) == (State.UNAVAILABLE, "needs macOS")
    assert st["raises"].state is State.UNAVAILABLE and "driver missing" in st["raises"].reason
    with pytest.raises(BackendUnavailableError, match="unavailable: no CUDA device"):
        use_backend("nodev")
    assert reg.selection()["rmsnorm"] == "reference"  # implicit skips it


def test_disabled_by_env(registry, monkeypatch):
    reg = registry(EP("fast", Plugin(fast())))
    assert reg.selection()["rmsnorm"] == "fast"
    monkeypatch.setenv("BMOJO_DISABLE", "fast, other")
    assert states(reg)["fast"].state is State.DISABLED
    assert reg.selection()["rmsnorm"] == "reference"
    monkeypatch.setenv("BMOJO_BACKEND", "fast")
    with pytest.raises(BackendUnavailableError, match="BMOJO_BACKEND=fast but is disabled"):
        dispatch.rmsnorm(torch.ones(2, 4), torch.ones(4))


def test_explicit_env_selection_and_errors(registry, monkeypatch):
    registry(EP("fast", Plugin(fast(ops={"rmsnorm": counting_rmsnorm, "ssm_step": OpImpl(lambda: 0, ("cuda",))}))))
    monkeypatch.setenv("BMOJO_BACKEND", "fast")
    assert requested() == ("fast", "BMOJO_BACKEND=fast")
    dispatch.rmsnorm(torch.ones(2, 4), torch.ones(4))
    assert calls == ["fast"]
    # an op the backend does not implement at all runs on the reference (logged, listed by `bmojo backends`)
    assert dispatch.resolve("gated_rmsnorm", "cpu")[0] == "reference"
    # an op it implements, but not for this device: error, never a silent fallback
    with pytest.raises(BackendError, match="provides ssm_step for devices \\['cuda'\\], not 'cpu'"):
        dispatch.resolve("ssm_step", "cpu")
    monkeypatch.setenv("BMOJO_BACKEND", "triton")
    with pytest.raises(BackendUnavailableError, match="not installed: pip install -e packages/bmojo-triton"):
        dispatch.rmsnorm(torch.ones(2, 4), torch.ones(4))
    monkeypatch.setenv("BMOJO_BACKEND", "nosuch")
    with pytest.raises(BackendUnavailableError, match="no backend named 'nosuch'"):
        dispatch.resolve("rmsnorm", "cpu")


def test_context_manager_overrides_env_and_restores(registry, monkeypatch):
    registry(EP("fast", Plugin(fast())))
    monkeypatch.setenv("BMOJO_BACKEND", "reference")
    with use_backend("fast") as st:
        assert st.name == "fast" and requested()[0] == "fast"
        assert dispatch.resolve("rmsnorm", "cpu")[0] == "fast"
        with use_backend("reference"):
            assert dispatch.resolve("rmsnorm", "cpu")[0] == "reference"
        assert dispatch.resolve("rmsnorm", "cpu")[0] == "fast"
    assert requested() == ("reference", "BMOJO_BACKEND=reference")


def test_implicit_picks_highest_priority_per_op_and_logs_once(registry, caplog):
    low = fast(name="low", priority=1, ops={"rmsnorm": counting_rmsnorm, "gated_rmsnorm": "x:y"})
    high = fast(name="high", priority=9, ops={"rmsnorm": counting_rmsnorm})
    cuda_only = fast(name="gpu", priority=50, ops={"rmsnorm": OpImpl(counting_rmsnorm, ("cuda",))})
    reg = registry(EP("low", Plugin(low)), EP("high", Plugin(high)), EP("gpu", Plugin(cuda_only)))
    with caplog.at_level(logging.INFO, logger="bmojo.backends"):
        sel = reg.selection("cpu")
        reg.selection("cpu")
    assert sel["rmsnorm"] == "high" and sel["gated_rmsnorm"] == "low" and sel["ssm_scan"] == "reference"
    assert reg.selection("cuda")["rmsnorm"] == "gpu"
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bmojo: rmsnorm on cpu")]
    assert msgs == ["bmojo: rmsnorm on cpu -> backend 'high' 1.2 (priority 9)"]


def test_layer_routes_through_the_selected_backend(registry):
    from bmojo.norm import RMSNorm

    registry(EP("fast", Plugin(fast())))
    norm = RMSNorm(8)
    x = torch.randn(3, 8)
    with use_backend("reference"):
        norm(x)
    assert calls == []
    with use_backend("fast"):
        norm(x)
    assert calls == ["fast"]


def test_import_bmojo_is_cheap_and_loads_no_plugin():
    code = "import sys, bmojo, bmojo.backends; print('torch' in sys.modules, bmojo.backends.registry._registry is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_conformance_pytest_plugin_imports_nothing_heavy():
    code = (
        "import sys, importlib.metadata as m; "
        "ep = [e for e in m.entry_points(group='pytest11') if e.value == 'bmojo.testing.conformance.plugin']; "
        "ep[0].load(); import bmojo.testing.conformance.tolerances; "
        "print(len(ep), 'torch' in sys.modules, 'bmojo.backends.registry' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "False", "False"]


def test_implicit_false_serves_only_when_requested_by_name(registry):
    reg = registry(EP("explicit", Plugin(fast(name="explicit", priority=99, implicit=False))))
    assert states(reg)["explicit"].state is State.AVAILABLE
    assert reg.selection()["rmsnorm"] == "reference"  # never chosen implicitly, whatever its priority
    with use_backend("explicit"):
        assert reg.resolve("rmsnorm", "cpu")[0] == "explicit"
    with pytest.raises(ValueError, match="implicit must be a bool"):
        fast(name="bad", implicit="no")
