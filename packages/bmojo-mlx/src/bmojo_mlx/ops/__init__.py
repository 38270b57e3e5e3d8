"""This backend's implementations of the op set on ``mx.array``, one folder per op as in core's
``bmojo/ops/``: ``array.py`` is pure MLX (always available, what runs and is tested on CPU);
``metal.py``, where present, a fused ``mx.fast.metal_kernel`` used when Metal is available.
``plugin.py`` registers them; callers use ``bmojo_mlx.dispatch``, which goes through the registry.
"""
