"""Emulated ``nki.language``: exactly the names the bmojo-neuron kernels use.

Anything else raises ``NotImplementedError`` naming the call (module ``__getattr__``). Math
operators (``nl.add``, ``nl.exp``, ...) are :class:`Op` objects: the emulated ``nki.isa`` calls
take them as their ``op``/``op0``/``op1`` arguments; calling one on a tile directly (the
high-level ``nl.exp(tile)`` style) is not emulated and raises.
"""

from __future__ import annotations

import numpy as np

from bmojo_neuron.emulator._core import (
    HBM,
    MOVING_FMAX,
    PMAX,
    PRIVATE_HBM,
    PSUM,
    PSUM_FMAX,
    SBUF,
    SHARED_HBM,
    STATIONARY_FMAX,
    EmulatorError,
    Tensor,
    allocate,
    require,
)

# ----- memory -----
shared_hbm, private_hbm, hbm, sbuf, psum = SHARED_HBM, PRIVATE_HBM, HBM, SBUF, PSUM

# ----- data types -----
float32 = np.dtype(np.float32)
float16 = np.dtype(np.float16)
int32 = np.dtype(np.int32)


class tile_size:
    pmax = PMAX
    psum_fmax = PSUM_FMAX
    gemm_stationary_fmax = STATIONARY_FMAX
    gemm_moving_fmax = MOVING_FMAX


# ----- operators -----
class Op:
    """A named math operator (binary, unary activation, or comparison giving 1.0/0.0)."""

    def __init__(self, name: str, fn, arity: int):
        self.name, self.fn, self.arity = name, fn, arity

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(
            f"nki.language.{self.name}(...) as a tile function is not emulated; pass nl.{self.name} as the op of "
            "an nki.isa call"
        )

    def __repr__(self) -> str:
        return f"nl.{self.name}"


def _cmp(f):
    return lambda a, b: f(a, b).astype(np.result_type(a, b, np.float32))


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0.0, x).astype(x.dtype)


add = Op("add", np.add, 2)
subtract = Op("subtract", np.subtract, 2)
multiply = Op("multiply", np.multiply, 2)
maximum = Op("maximum", np.maximum, 2)
minimum = Op("minimum", np.minimum, 2)
greater = Op("greater", _cmp(np.greater), 2)
greater_equal = Op("greater_equal", _cmp(np.greater_equal), 2)
less = Op("less", _cmp(np.less), 2)
less_equal = Op("less_equal", _cmp(np.less_equal), 2)
exp = Op("exp", np.exp, 1)
log = Op("log", np.log, 1)
rsqrt = Op("rsqrt", lambda x: 1.0 / np.sqrt(x), 1)
reciprocal = Op("reciprocal", lambda x: 1.0 / x, 1)
square = Op("square", np.square, 1)
silu = Op("silu", _silu, 1)
softplus = Op("softplus", _softplus, 1)
copy = Op("copy", lambda x: x, 1)

BINARY = (add, subtract, multiply, maximum, minimum, greater, greater_equal, less, less_equal)
ACTIVATIONS = (exp, log, rsqrt, reciprocal, square, silu, softplus, copy)


# ----- creation, movement, iteration -----
def ndarray(shape, dtype, buffer=sbuf, name: str = "") -> Tensor:
    """A new tensor; on-chip memory starts as NaN (as garbage would), HBM outputs too."""
    return allocate(shape, dtype, buffer)


def zeros(shape, dtype, buffer=sbuf, name: str = "") -> Tensor:
    return allocate(shape, dtype, buffer, fill=0.0)


def load(src: Tensor, dtype=None) -> Tensor:
    """HBM -> a new SBUF tile (axis 0 of the view becomes the partition axis)."""
    require("nl.load src", src, SHARED_HBM, PRIVATE_HBM, HBM)
    tile = allocate(src.shape if src.ndim > 1 else (src.shape[0], 1), dtype or src.dtype, SBUF)
    tile.data[...] = src.data.reshape(tile.shape).astype(tile.dtype, copy=False)
    return tile


def store(dst: Tensor, value: Tensor) -> None:
    """SBUF (or PSUM, through a copy) tile -> HBM, same shape."""
    require("nl.store dst", dst, SHARED_HBM, PRIVATE_HBM, HBM)
    require("nl.store value", value, SBUF, PSUM)
    if dst.shape != value.shape:
        raise EmulatorError(f"nl.store: dst shape {dst.shape} != value shape {value.shape}")
    dst.data[...] = value.data.astype(dst.dtype, copy=False)


def ds(start: int, size: int) -> slice:
    """A dynamic slice ``start : start + size`` (loop indices are plain ints here)."""
    return slice(int(start), int(start) + int(size))


def affine_range(*args) -> range:
    """Iterations without loop-carried dependencies (the compiler may pipeline them)."""
    return range(*args)


def sequential_range(*args) -> range:
    """Iterations that depend on earlier ones (a carried state)."""
    return range(*args)


def static_range(*args) -> range:
    """Fully unrolled at trace time."""
    return range(*args)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotImplementedError(f"nki.language.{name} is not emulated (bmojo_neuron.emulator covers the kernels' subset)")
