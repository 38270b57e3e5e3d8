"""The backend conformance suite (spec §7), shipped in the wheel and run by any backend author::

    pytest --pyargs bmojo.testing.conformance --bmojo-backend=NAME

Its pytest plugin (:mod:`.plugin`, registered through the ``pytest11`` entry point) adds the
``--bmojo-*`` options and the ``backend`` fixture and imports nothing heavy. The tests live in
:mod:`.suite` (class :class:`~bmojo.testing.conformance.suite.ConformanceSuite`, which a third
party may also subclass in its own test tree); inputs in :mod:`.cases`; tolerances in
:mod:`.tolerances`. See ``docs/backends.md``.
"""
