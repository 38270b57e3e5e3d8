"""Issue 10, item 3: a hanging probe never hangs a forward. Dispatch probes only the backends the
choice needs (never a disabled one, never any when the reference is requested), and every probe
runs under a timeout (``BMOJO_PROBE_TIMEOUT``)."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from bmojo.backends import Backend, BackendError, State, dispatch, use_backend
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

from .helpers import EP, Plugin

release = threading.Event()
probed: list[str] = []


def _hang():
    probed.append("hang")
    release.wait(30)  # "forever", but lets the thread end once the test is over
    return True


def _hanging_backend(priority=10):
    return Backend(name="hang", version="1", ops={"rmsnorm": rmsnorm_ref}, priority=priority, probe=_hang)


@pytest.fixture(autouse=True)
def _release():
    release.clear()
    probed.clear()
    yield
    release.set()


def _forward_within(seconds: float):
    x, w = torch.randn(2, 3, 8), torch.ones(8)
    t0 = time.perf_counter()
    out = dispatch.rmsnorm(x, w)
    assert time.perf_counter() - t0 < seconds
    torch.testing.assert_close(out, rmsnorm_ref(x, w))


def test_disabled_backend_is_never_probed(registry, monkeypatch):
    monkeypatch.setenv("BMOJO_PROBE_TIMEOUT", "20")
    monkeypatch.setenv("BMOJO_DISABLE", "hang")
    reg = registry(EP("hang", Plugin(_hanging_backend())))
    _forward_within(5)
    assert reg.status("hang").state is State.DISABLED
    assert probed == []


def test_explicit_reference_probes_nothing_else(registry, monkeypatch):
    monkeypatch.setenv("BMOJO_PROBE_TIMEOUT", "20")
    monkeypatch.setenv("BMOJO_BACKEND", "reference")
    registry(EP("hang", Plugin(_hanging_backend())))
    _forward_within(5)
    with use_backend("reference"):
        _forward_within(5)
    assert probed == []


def test_implicit_choice_does_not_probe_backends_it_does_not_need(registry, monkeypatch):
    monkeypatch.setenv("BMOJO_PROBE_TIMEOUT", "20")
    registry(EP("hang", Plugin(_hanging_backend(priority=-5))))  # below the reference: never needed
    _forward_within(5)
    assert probed == []


def test_a_hanging_probe_times_out_as_unavailable(registry, monkeypatch):
    monkeypatch.setenv("BMOJO_PROBE_TIMEOUT", "0.5")
    reg = registry(EP("hang", Plugin(_hanging_backend(priority=10))))
    _forward_within(5)  # the probe is abandoned after 0.5 s and the reference runs
    st = reg.status("hang")
    assert st.state is State.UNAVAILABLE and "did not return within 0.5 s" in st.reason
    assert probed == ["hang"]


def test_probe_timeout_must_be_positive(registry, monkeypatch):
    monkeypatch.setenv("BMOJO_PROBE_TIMEOUT", "-1")
    reg = registry(EP("hang", Plugin(_hanging_backend())))
    with pytest.raises(BackendError, match="BMOJO_PROBE_TIMEOUT: expected a positive number"):
        reg.statuses()
