"""Registry behaviour of the triton backend: explicit-only under the interpreter, implicit on a GPU."""

from __future__ import annotations

import pytest
from bmojo.backends import Registry, State, use_backend
from bmojo.backends.registry import set_registry
from bmojo_triton import plugin


@pytest.fixture
def registry():
    reg = Registry()
    previous = set_registry(reg)
    yield reg
    set_registry(previous)


def test_registered_through_the_entry_point(registry):
    st = registry.status("triton")
    assert st.state is State.AVAILABLE, st.reason
    assert st.origin != "" or st.backend is not None
    assert set(st.ops) == set(plugin.bmojo_backends()[0].ops)
    assert "eidetic_select" not in st.ops  # served by the reference (documented)


@pytest.mark.skipif(not plugin.INTERPRET, reason="interpreter behaviour (TRITON_INTERPRET=1)")
def test_interpreter_is_explicit_only(registry):
    st = registry.status("triton")
    assert st.priority == -1 and all(devs == ("cpu",) for devs in st.ops.values())
    # implicit selection on cpu never picks it: the reference (priority 0) outranks -1
    assert registry.resolve("bmojo_attention", "cpu")[0] == "reference"
    with use_backend("triton"):
        assert registry.resolve("bmojo_attention", "cpu")[0] == "triton"
        assert registry.resolve("eidetic_select", "cpu")[0] == "reference"  # not provided


@pytest.mark.skipif(plugin.INTERPRET, reason="GPU behaviour (no TRITON_INTERPRET)")
def test_gpu_is_chosen_implicitly(registry):
    assert registry.resolve("bmojo_attention", "cuda")[0] == "triton"
    assert registry.resolve("rmsnorm", "cpu")[0] == "reference"  # cuda kernels only


def test_probe_reasons(monkeypatch):
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: None)
    p = plugin._probe()
    assert not p.available and "triton is not installed" in p.reason


def test_interpreter_switch_is_read_as_triton_reads_it(monkeypatch):
    """The plugin decides "interpreter or GPU" without importing triton; it must agree with Triton
    on every value, or it would report an interpreter Triton is not running (or the reverse)."""
    import triton

    for value in ("1", "true", "TRUE", "On", "yes", "y", "0", "", "2", "false", "off", "no", " 1", "1 ", "abc"):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert plugin.interpreting() is triton.knobs.runtime.interpret, value
    monkeypatch.delenv("TRITON_INTERPRET")
    assert plugin.interpreting() is False is triton.knobs.runtime.interpret
