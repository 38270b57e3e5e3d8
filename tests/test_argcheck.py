"""bmojo.argcheck: the per-op argument checks every backend shares are torch-free and
framework-agnostic (the same call fails with the same message whatever the array type)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from bmojo import argcheck
from bmojo.argcheck import TORCH, ArrayKind


class Arr:
    """The least an array framework offers the checks: ``.shape``, ``.ndim``, ``.dtype``."""

    def __init__(self, *shape, dtype="f32"):
        self.shape, self.ndim, self.dtype = tuple(shape), len(shape), dtype


#: A made-up framework: no device, dtypes are strings.
FAKE = ArrayKind(
    array_type=Arr,
    type_name="an Arr",
    noun="array",
    half=("f16", "bf16"),
    float32="f32",
    float64="f64",
    is_integer=lambda d: d.startswith("i"),
)


def _msg(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def _t(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def _a(*shape, dtype=torch.float32):
    return Arr(*shape, dtype={torch.float32: "f32", torch.float64: "f64", torch.int64: "i64"}[dtype])


def _dtypes_as_text(msg: str) -> str:
    return msg.replace("torch.float32", "f32").replace("torch.float64", "f64").replace("torch.int64", "i64")


# Bad calls of each per-op check, written once with a kind and an array factory so the same call
# can be made with torch tensors and with Arr.
BAD_CALLS = {
    "attention: keys shorter than queries": lambda kind, mk: argcheck.check_bmojo_attention_args(
        kind, mk(2, 5, 4, 8), mk(2, 3, 2, 8), mk(2, 3, 2, 8), None, None, None, None, None, 0, 4, 0, None
    ),
    "attention: float positions": lambda kind, mk: argcheck.check_bmojo_attention_args(
        kind,
        mk(1, 4, 2, 8),
        mk(1, 4, 2, 8),
        mk(1, 4, 2, 8),
        None,
        None,
        mk(1, 1, 3, 2, 8),
        mk(1, 1, 3, 2, 8),
        mk(1, 1, 3),
        0,
        4,
        0,
        8,
    ),
    "attention: mixed dtypes": lambda kind, mk: argcheck.check_bmojo_attention_args(
        kind,
        mk(1, 4, 2, 8),
        mk(1, 4, 2, 8, dtype=torch.float64),
        mk(1, 4, 2, 8, dtype=torch.float64),
        None,
        None,
        None,
        None,
        None,
        0,
        4,
        0,
        None,
    ),
    "conv: state of the wrong width": lambda kind, mk: argcheck.check_causal_conv1d_args(
        kind, mk(2, 6, 3), mk(3, 4), None, mk(2, 2, 3), "silu", step=False
    ),
    "scan: heads not a multiple of groups": lambda kind, mk: argcheck.check_ssm_scan_args(
        kind, mk(1, 5, 3, 2), mk(1, 5, 3), mk(3), mk(1, 5, 2, 4), mk(1, 5, 2, 4), None, None, step=False
    ),
    "scan: step state of the wrong size": lambda kind, mk: argcheck.check_ssm_scan_args(
        kind, mk(1, 4, 2), mk(1, 4), mk(4), mk(1, 2, 3), mk(1, 2, 3), None, mk(1, 4, 2, 5), step=True
    ),
    "conv: empty sequence": lambda kind, mk: argcheck.check_causal_conv1d_args(
        kind, mk(2, 0, 3), mk(3, 4), None, None, "silu", step=False
    ),
    "scan: empty sequence": lambda kind, mk: argcheck.check_ssm_scan_args(
        kind, mk(1, 0, 2, 4), mk(1, 0, 2), mk(2), mk(1, 0, 1, 3), mk(1, 0, 1, 3), None, None, step=False
    ),
    "rmsnorm: weight not 1-d": lambda kind, mk: argcheck.check_rmsnorm_args(kind, mk(2, 8), mk(8, 1), 1e-6),
    "gated rmsnorm: group not dividing": lambda kind, mk: argcheck.check_gated_rmsnorm_args(
        kind, mk(2, 8), mk(2, 8), mk(8), 3, eps=1e-6
    ),
    "gated rmsnorm: empty last axis": lambda kind, mk: argcheck.check_gated_rmsnorm_args(
        kind, mk(2, 0), mk(2, 0), mk(0), None, eps=1e-6
    ),
    "attention: head size 0": lambda kind, mk: argcheck.check_bmojo_attention_args(
        kind, mk(1, 4, 2, 0), mk(1, 4, 2, 0), mk(1, 4, 2, 0), None, None, None, None, None, 0, 4, 0, None
    ),
    "gated rmsnorm: eps not positive": lambda kind, mk: argcheck.check_gated_rmsnorm_args(
        kind, mk(2, 8), mk(2, 8), mk(8), None, eps=0.0
    ),
    "eidetic: float positions": lambda kind, mk: argcheck.check_eidetic_select_args(
        kind, mk(2, 4), mk(2, 3), mk(2, 3), mk(2, 0), start=0, chunk=4, per_chunk=1, eviction="lowest"
    ),
    "innovation: k_pred shape": lambda kind, mk: argcheck.check_innovation_scores_args(
        kind, mk(1, 3, 2, 4), mk(1, 3, 2, 5)
    ),
}

EXPECTED = {  # the start of each message: which argument, and what was wrong
    "attention: keys shorter than queries": "k: expected at least as many keys as queries (5)",
    "attention: float positions": "epos: expected an integer",
    "attention: mixed dtypes": "k: expected dtype",
    "conv: state of the wrong width": "state: expected shape (2, 3, 3)",
    "scan: heads not a multiple of groups": "B: expected a group count dividing the head count 3",
    "scan: step state of the wrong size": "state: expected shape (1, 4, 2, 3)",
    "conv: empty sequence": "x: expected at least one token (T >= 1), got shape (2, 0, 3)",
    "scan: empty sequence": "x: expected at least one token (T >= 1), got shape (1, 0, 2, 4)",
    "rmsnorm: weight not 1-d": "weight: expected a 1-d",
    "gated rmsnorm: group not dividing": "group_size: expected a divisor of the last axis (8), got 3",
    "gated rmsnorm: empty last axis": "x: expected a last axis >= 1 (gated_rmsnorm normalises groups of it)",
    "attention: head size 0": "q: expected a head size >= 1, got shape (1, 4, 2, 0)",
    "gated rmsnorm: eps not positive": "eps: expected a positive float, got 0.0",
    "eidetic: float positions": "mem_pos: expected an integer",
    "innovation: k_pred shape": "k_pred: expected shape (1, 3, 2, 4)",
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_same_message_for_torch_and_any_array(case):
    via_torch = _msg(BAD_CALLS[case], TORCH, _t)
    via_arr = _msg(BAD_CALLS[case], FAKE, _a)
    assert via_torch.startswith(EXPECTED[case]), via_torch
    assert _dtypes_as_text(via_torch.replace("tensor", "array")) == via_arr


def test_type_ndim_and_dtype_words_come_from_the_kind():
    assert _msg(argcheck.check_array, FAKE, "x", _t(2)) == "x: expected an Arr, got Tensor"
    assert _msg(argcheck.check_array, TORCH, "x", Arr(2)) == "x: expected a torch.Tensor, got Arr"
    assert _msg(argcheck.check_array, FAKE, "x", Arr(2, dtype="i64")) == "x: expected a floating-point array, got i64"
    assert _msg(argcheck.check_array, TORCH, "x", _t(2, 2), ndim=3).startswith("x: expected a 3-d tensor")
    assert _msg(argcheck.check_array, TORCH, "x", _t(2, dtype=torch.bool), floating=False) == (
        "x: expected an integer tensor, got torch.bool"
    )
    assert argcheck.check_array(TORCH, "x", _t(2, dtype=torch.int64), floating=False) is not None
    assert TORCH.compute_dtype(torch.bfloat16) == torch.float32 and FAKE.compute_dtype("f64") == "f64"
    assert TORCH.score_dtype(torch.float16) == torch.float32 and FAKE.score_dtype("f64") == "f64"


def test_gated_group_size_must_be_an_int():
    for bad in (2.0, True):
        msg = _msg(argcheck.check_gated_rmsnorm_args, TORCH, _t(2, 8), _t(2, 8), _t(8), bad, eps=1e-6)
        assert msg.startswith("group_size: expected a divisor of the last axis (8)")


def test_import_does_not_import_torch():
    """Backends on other frameworks (bmojo-mlx) validate through bmojo.argcheck without torch; the
    checks run there on any array type."""
    code = (
        "import sys, bmojo.argcheck as a\n"
        "class Arr:\n"
        "    def __init__(self, *s): self.shape, self.ndim, self.dtype = s, len(s), 'f32'\n"
        "kind = a.ArrayKind(Arr, 'an Arr', 'array', ('f16',), 'f32', 'f64', lambda d: d[0] == 'i')\n"
        "print(a.check_causal_conv1d_args(kind, Arr(1, 5, 3), Arr(3, 4), None, None, 'silu', step=False))\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["4", "False"]
