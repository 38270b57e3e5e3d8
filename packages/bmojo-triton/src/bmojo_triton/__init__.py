"""bmojo-triton: Triton kernels for every bmojo op, registered as the ``triton`` backend.

Importing this package is cheap: it imports neither torch nor triton. The registration lives in
:mod:`bmojo_triton.plugin`; kernels are imported when an op first runs.
"""

__version__ = "0.1.0"
