"""Shared by the tests/neuron files: tolerances from core's one table."""

from __future__ import annotations

import torch
from bmojo.testing.conformance.tolerances import TOLERANCES


def assert_close(actual, expected, dtype: torch.dtype, what: str = ""):
    """max|a - r| <= atol + rtol·max|r| with the conformance suite's forward tolerances."""
    tol = TOLERANCES[str(dtype).removeprefix("torch.")]
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (actual.shape, expected.shape)
    a, e = actual.double(), expected.double()
    err = (a - e).abs().max().item()
    bound = tol.atol + tol.rtol * e.abs().max().item()
    assert err <= bound, f"{what}: max abs error {err:.3e} > {bound:.3e}"
