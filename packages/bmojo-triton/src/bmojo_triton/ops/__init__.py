"""Triton kernels, one folder per op as in ``bmojo.ops`` (imported only when an op first runs)."""
