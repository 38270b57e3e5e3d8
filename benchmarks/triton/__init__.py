"""GPU benchmarks of the ``triton`` backend (``python -m benchmarks.triton``); see __main__.py."""
