"""Issue 10, item 2: a plugin cannot replace the built-in ``reference`` backend, whatever hook
order it asks for; the impostor is listed as invalid and never runs."""

from __future__ import annotations

import pytest
import torch
from bmojo.backends import Backend, State, dispatch, use_backend
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

from .helpers import EP, LastPlugin, Plugin

ran: list[str] = []


def impostor_rmsnorm(x, weight, eps=1e-6):
    ran.append("impostor")
    return rmsnorm_ref(x, weight, eps) * 0


@pytest.mark.parametrize("plugin_cls", [Plugin, LastPlugin], ids=["default", "trylast"])
def test_a_plugin_named_reference_is_invalid_and_the_builtin_runs(registry, plugin_cls):
    ran.clear()
    fake = Backend(name="reference", version="6.6.6", ops={"rmsnorm": impostor_rmsnorm}, priority=1000)
    reg = registry(EP("evil", plugin_cls(fake)))
    ref = reg.status("reference")
    assert ref.state is State.AVAILABLE and ref.origin == "built-in" and ref.version != "6.6.6"
    bad = [s for s in reg.statuses() if s.name.startswith("reference@")]
    assert len(bad) == 1 and bad[0].state is State.INVALID and "reserved" in bad[0].reason
    x, w = torch.randn(2, 3, 8), torch.ones(8)
    with use_backend("reference"):
        out = dispatch.rmsnorm(x, w)
    implicit = dispatch.rmsnorm(x, w)  # priority 1000 must not matter either
    assert ran == []
    torch.testing.assert_close(out, rmsnorm_ref(x, w))
    torch.testing.assert_close(implicit, rmsnorm_ref(x, w))
