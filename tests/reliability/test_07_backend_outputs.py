"""Issue 10, item 7: a backend's outputs are checked against the op's declared shapes and dtypes,
and its failures are attributed: errors name the backend and the op, never blame the user's
argument, on the eager fast path and through the custom op alike."""

from __future__ import annotations

import contextlib

import pytest
import torch
from bmojo.backends import Backend, BackendOpError, dispatch, use_backend
from bmojo.backends.dispatch import custom_ops_always
from bmojo.norm import RMSNorm
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

from .helpers import EP, Plugin


def wrong_shape(x, weight, eps=1e-6):
    return rmsnorm_ref(x, weight, eps)[..., :-1]


def wrong_dtype(x, weight, eps=1e-6):
    return rmsnorm_ref(x, weight, eps).double()


def two_outputs(x, weight, eps=1e-6):
    return rmsnorm_ref(x, weight, eps), x


def wrong_signature(x, weight):
    return rmsnorm_ref(x, weight)


def crashes(x, weight, eps=1e-6):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def exits(x, weight, eps=1e-6):
    raise SystemExit(3)


CASES = {
    "exits": (exits, r"failed in rmsnorm: SystemExit: 3"),
    "wrong_shape": (wrong_shape, r"output 0: expected shape \(2, 3, 8\) torch.float32, got shape \(2, 3, 7\)"),
    "wrong_dtype": (wrong_dtype, r"output 0: expected shape \(2, 3, 8\) torch.float32, got .*torch.float64"),
    "two_outputs": (two_outputs, r"expected 1 output tensor\(s\), got 2"),
    "wrong_signature": (wrong_signature, r"failed in rmsnorm: TypeError: .*positional argument"),
    "crashes": (crashes, r"failed in rmsnorm: RuntimeError: CUDA error"),
}


@pytest.mark.parametrize("always", [False, True], ids=["fast_path", "custom_op"])
@pytest.mark.parametrize("bug", list(CASES))
def test_bad_backend_outputs_name_the_backend_and_op(registry, bug, always):
    fn, match = CASES[bug]
    registry(EP("buggy", Plugin(Backend(name="buggy", version="1", ops={"rmsnorm": fn}, priority=5))))
    norm = RMSNorm(8)
    x = torch.randn(2, 3, 8)
    ctx = custom_ops_always() if always else contextlib.nullcontext()
    with use_backend("buggy"), ctx, pytest.raises(BackendOpError, match=r"bmojo backend 'buggy'") as err:
        norm(x)
    assert err.match(match)
    assert "rmsnorm" in str(err.value)
    # The reference still serves the same call unchanged.
    with use_backend("reference"):
        torch.testing.assert_close(norm(x), rmsnorm_ref(x, norm.weight, norm.eps))


def test_a_correct_backend_passes_the_check(registry):
    registry(EP("good", Plugin(Backend(name="good", version="1", ops={"rmsnorm": rmsnorm_ref}, priority=5))))
    x, w = torch.randn(2, 3, 8), torch.ones(8)
    with use_backend("good"):
        torch.testing.assert_close(dispatch.rmsnorm(x, w), rmsnorm_ref(x, w))
