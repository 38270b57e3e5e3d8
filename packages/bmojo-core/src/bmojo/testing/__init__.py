"""Testing utilities shipped with bmojo-core; :mod:`bmojo.testing.conformance` is the backend suite."""
