"""The neuron backend's states and registration: SDK missing / simulator only / device / emulated,
never chosen implicitly under emulation, float64 refused outside the emulator, backward through
the reference recompute."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from bmojo.backends import Registry, State, dispatch, get_registry, set_registry, use_backend
from bmojo.ops.rmsnorm.reference import rmsnorm as ref_rmsnorm
from bmojo_neuron import plugin
from bmojo_neuron.ops import _tiles


def test_detect_states(monkeypatch):
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: None)
    assert plugin.detect({}).mode == plugin.MISSING
    assert plugin.detect({"BMOJO_NEURON_EMULATE": "1"}).mode == plugin.EMULATED
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(plugin.glob, "glob", lambda pattern: [])
    assert plugin.detect({}).mode == plugin.SIMULATOR
    monkeypatch.setattr(plugin.glob, "glob", lambda pattern: ["/dev/neuron0"])
    assert plugin.detect({}).mode == plugin.DEVICE


@pytest.mark.parametrize("value", ["true", "yes", "2", "on"])
def test_an_unknown_emulate_value_is_a_reason_not_a_silent_no(monkeypatch, value):
    """Only "1" emulates, "0"/unset does not; anything else (a typo, Triton's "true") makes the
    backend unavailable with a reason naming the variable and the value, whatever the SDK state."""
    for spec in (None, object()):
        monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name, spec=spec: spec)
        rt = plugin.detect({"BMOJO_NEURON_EMULATE": value})
        assert rt.mode != plugin.EMULATED
        p = plugin.probe_runtime(rt)
        assert not p.available
        assert p.reason.startswith("BMOJO_NEURON_EMULATE: expected '1'") and repr(value) in p.reason
    for ok in ("0", " 0 ", ""):
        assert plugin.detect({"BMOJO_NEURON_EMULATE": ok}).bad_env is None
    assert plugin.detect({"BMOJO_NEURON_EMULATE": " 1 "}).mode == plugin.EMULATED


def test_missing_sdk_reason_gives_the_repository_and_install_command():
    p = plugin.probe_runtime(plugin.Runtime(plugin.MISSING))
    assert not p.available
    assert "https://pip.repos.neuron.amazonaws.com" in p.reason
    assert (
        "pip install --extra-index-url https://pip.repos.neuron.amazonaws.com neuronx-cc==2.* torch-neuronx" in p.reason
    )
    assert "BMOJO_NEURON_EMULATE=1" in p.reason


def test_placeholder_nki_is_detected(monkeypatch):
    """PyPI's `nki` is an empty placeholder: importable, but with no jit/isa."""
    fake = types.ModuleType("nki")
    fake.isa, fake.language = types.ModuleType("nki.isa"), types.ModuleType("nki.language")
    monkeypatch.setitem(sys.modules, "nki", fake)
    monkeypatch.setitem(sys.modules, "nki.isa", fake.isa)
    monkeypatch.setitem(sys.modules, "nki.language", fake.language)
    p = plugin.probe_runtime(plugin.Runtime(plugin.SIMULATOR))
    assert not p.available and "placeholder" in p.reason and "nki.jit" in p.reason


def test_sdk_states_with_a_complete_nki(monkeypatch):
    fake = types.ModuleType("nki")
    fake.jit, fake.simulate = object(), object()
    fake.isa, fake.language = types.ModuleType("nki.isa"), types.ModuleType("nki.language")
    fake.isa.tensor_tensor_scan = object()
    for name, mod in (("nki", fake), ("nki.isa", fake.isa), ("nki.language", fake.language)):
        monkeypatch.setitem(sys.modules, name, mod)
    sim = plugin.probe_runtime(plugin.Runtime(plugin.SIMULATOR))
    assert sim.available and plugin.SIMULATOR in sim.reason
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: None)  # no torch_xla
    dev = plugin.probe_runtime(plugin.Runtime(plugin.DEVICE))
    assert not dev.available and "torch-neuronx" in dev.reason


@pytest.mark.parametrize(
    "mode,devices,implicit",
    [(plugin.EMULATED, ("cpu",), False), (plugin.SIMULATOR, ("cpu",), False), (plugin.DEVICE, ("xla",), True)],
)
def test_record_per_state(mode, devices, implicit):
    rec = plugin.make_backend(plugin.Runtime(mode))
    assert rec.implicit is implicit
    assert set(rec.ops) == set(plugin.TARGETS)
    assert all(i.devices == devices and i.differentiable is False for i in rec.ops.values())


class _EP:
    name, value, dist = "neuron", "bmojo_neuron.plugin", None

    def load(self):
        return plugin


@pytest.fixture
def emulated_registry(monkeypatch):
    monkeypatch.delenv("BMOJO_BACKEND", raising=False)
    old = get_registry()
    reg = Registry(entry_points=[_EP()])
    set_registry(reg)
    yield reg
    set_registry(old)


def test_emulated_backend_serves_only_when_requested(emulated_registry):
    st = emulated_registry.status("neuron")
    assert st.state is State.AVAILABLE and "emulated (tests only)" in st.reason
    assert emulated_registry.selection("cpu")["rmsnorm"] == "reference"  # never implicit
    x, w = torch.randn(3, 16), torch.randn(16)
    with use_backend("neuron"):
        assert dispatch.resolve("rmsnorm", "cpu")[0] == "neuron"
        torch.testing.assert_close(dispatch.rmsnorm(x, w), ref_rmsnorm(x, w))


def test_backward_recomputes_the_reference(emulated_registry):
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    with use_backend("neuron"):
        gx, gw = torch.autograd.grad(dispatch.rmsnorm(x, w, 1e-6).square().sum(), (x, w))
    rx, rw = torch.autograd.grad(ref_rmsnorm(x, w, 1e-6).square().sum(), (x, w))
    torch.testing.assert_close((gx, gw), (rx, rw))


def test_float64_is_refused_outside_the_emulator(monkeypatch):
    monkeypatch.setattr(_tiles, "runtime", lambda: plugin.Runtime(plugin.SIMULATOR))
    with pytest.raises(ValueError, match=r"^x: expected float32, bfloat16 or float16 on Neuron"):
        _tiles.kernel_dtype("x", torch.zeros(2, dtype=torch.float64))
    assert _tiles.kernel_dtype("x", torch.zeros(2, dtype=torch.bfloat16)) == torch.float32


def test_helpers():
    assert [_tiles.round_up(n) for n in (1, 128, 129)] == [128, 128, 256]
    t = _tiles.pad_axis(torch.ones(2, 3), 0, 1, 2)
    assert t.shape == (5, 3) and t[0].sum() == 0 and t[1:3].sum() == 6
    pos = _tiles.positions(-2, 6, 0, 2, "cpu")
    assert pos.tolist() == [[_tiles.FAR, _tiles.FAR, 0, 1, 2, _tiles.FAR]]
