"""bmojo-neuron: B'MOJO's ops as NKI kernels for AWS Trainium/Inferentia.

``plugin`` registers the backend (entry point ``bmojo: neuron``) and tells the runtime states
apart; ``nki_api`` is the one place kernels import NKI from (the real ``nki`` or the test
emulator ``emulator``); ``ops/<op>/kernel.py`` are the ``@nki.jit`` kernels and
``ops/<op>/__init__.py`` their host wrappers (layouts, padding, launch). docs/backends/neuron.md
has the tiling plans and what was verified where.
"""

__version__ = "0.1.0"
