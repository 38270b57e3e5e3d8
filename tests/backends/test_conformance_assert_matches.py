"""The conformance suite's comparison (``assert_matches``) can fail on every part of an output."""

from __future__ import annotations

import pytest
import torch
from bmojo.testing.conformance.suite import assert_matches

inf, nan = float("inf"), float("nan")


@pytest.mark.parametrize(
    "actual, expected, message",
    [
        ([1.0, inf, 2.0], [1.0, -inf, 2.0], "an infinity of the other sign"),
        ([1.0, nan, 2.0], [1.0, -inf, 2.0], "NaN where the reference has ±inf"),
        ([1.0, -inf, 2.0], [1.0, nan, 2.0], "NaN where the reference has ±inf"),
        ([1.0, nan, 2.0], [1.0, 3.0, 2.0], "non-finite values"),
        ([1.0, 2.5, 2.0], [1.0, 2.0, 2.0], "max abs error"),
    ],
)
def test_values_that_differ_fail(actual, expected, message):
    a, e = torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    with pytest.raises(AssertionError, match=message):
        assert_matches(a, e, 1e-10, 1e-10, "out")


def test_the_same_non_finite_values_pass():
    e = torch.tensor([1.0, -inf, nan, inf], dtype=torch.float64)
    assert_matches(e.clone(), e, 1e-10, 1e-10, "out")


def test_an_output_where_the_reference_gives_none_fails():
    ones = torch.ones(3, dtype=torch.float64)
    assert_matches((ones, None), (ones, None), 1e-10, 1e-10, "out")
    with pytest.raises(AssertionError, match=r"out\[1\]: a Tensor, reference gives None"):
        assert_matches((ones, ones), (ones, None), 1e-10, 1e-10, "out")
    with pytest.raises(AssertionError, match=r"out\[1\]: missing"):
        assert_matches((ones, None), (ones, ones), 1e-10, 1e-10, "out")
