"""The conformance suite as collected by ``pytest --pyargs bmojo.testing.conformance``."""

from bmojo.testing.conformance.suite import ConformanceSuite


class TestConformance(ConformanceSuite):
    """Every standard test, unchanged, against ``--bmojo-backend``."""
