"""Tiles, buffers and the hardware limits the emulator enforces (one NeuronCore-v2, Trn1).

A :class:`Tensor` is a NumPy view plus the memory it lives in (HBM, SBUF or PSUM). On-chip
tensors (SBUF/PSUM) are *tiles*: axis 0 is the partition axis (at most 128 lanes), the other
axes are the free axes. Limits, each raising :class:`EmulatorLimitError` as the compiler or the
device would refuse the kernel:

* partition axis of any on-chip tile <= ``PMAX`` (128);
* a PSUM tile fits one bank: free size <= ``PSUM_FMAX`` (512) elements of 4 bytes (2 KiB per
  partition);
* live PSUM tiles <= ``PSUM_BANKS`` (8) banks; live SBUF bytes per partition <= ``SBUF_BYTES``
  (192 KiB, Trn1: 24 MiB / 128 partitions). "Live" is what the kernel still references: a
  tile's space is released when its last Python reference goes (CPython frees it at once), an
  approximation of the compiler's allocator that is strict for kernels which keep tiles alive.

Fresh ``ndarray`` memory is filled with NaN (floats), as stale hardware memory would be garbage,
so a read of never-written data shows up in the results.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

PMAX = 128
PSUM_FMAX = 512
PSUM_BANK_BYTES = 2048
PSUM_BANKS = 8
SBUF_BYTES = 192 * 1024
#: The tensor engine: stationary free size <= 128, moving free size <= 512.
STATIONARY_FMAX = 128
MOVING_FMAX = 512


class EmulatorError(ValueError):
    """A kernel used an API in a way the hardware/compiler rejects (wrong buffer, shape, dtype)."""


class EmulatorLimitError(EmulatorError):
    """A tile exceeds a hardware limit (partitions, PSUM bank, SBUF/PSUM capacity)."""


class Buffer:
    """A memory kind: ``hbm`` (device memory, any shape) or an on-chip ``sbuf``/``psum``."""

    def __init__(self, name: str, on_chip: bool):
        self.name, self.on_chip = name, on_chip

    def __repr__(self) -> str:
        return f"nl.{self.name}"


SHARED_HBM = Buffer("shared_hbm", False)
PRIVATE_HBM = Buffer("private_hbm", False)
HBM = Buffer("hbm", False)
SBUF = Buffer("sbuf", True)
PSUM = Buffer("psum", True)

#: Data types the emulator accepts. float64 is an emulator-only widening (the hardware has none):
#: it lets the conformance suite's float64 column check the algorithm at 1e-10; the host wrappers
#: refuse float64 when the real SDK runs the kernels.
DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64), np.dtype(np.int32))


class _Usage(threading.local):
    def __init__(self):
        self.sbuf = 0  # bytes per partition held by live SBUF tiles
        self.psum = 0  # banks held by live PSUM tiles
        self.launch = 0  # kernel launch counter: tiles of an earlier launch no longer count


usage = _Usage()


def new_launch() -> None:
    """Start a kernel launch with empty on-chip memory (tiles a failed earlier launch left alive,
    e.g. in a traceback, do not count against this one)."""
    usage.sbuf, usage.psum = 0, 0
    usage.launch += 1


def _release(kind: str, amount: int, launch: int) -> None:
    if launch == usage.launch:
        setattr(usage, kind, getattr(usage, kind) - amount)


class Tensor:
    """A NumPy view in a buffer. Indexing with slices/ints (or ``nl.ds``) gives a view in the same
    buffer; on-chip views must keep the partition axis first."""

    __slots__ = ("__weakref__", "_owner", "buffer", "data")

    def __init__(self, data: np.ndarray, buffer: Buffer, owner=None):
        self.data, self.buffer = data, buffer
        self._owner = owner  # keeps the allocation (and its budget) alive while a view exists

    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)

    def __getitem__(self, index) -> Tensor:
        index = index if isinstance(index, tuple) else (index,)
        norm = []
        for i in index:
            if isinstance(i, (slice, int, np.integer)):
                norm.append(i)
            else:
                raise NotImplementedError(f"tensor indexing with {type(i).__name__} is not emulated")
        if self.buffer.on_chip and norm and not isinstance(norm[0], slice):
            raise EmulatorError("a tile index must keep the partition axis (axis 0) as a slice")
        for axis, i in enumerate(norm):
            if isinstance(i, slice):
                if i.step not in (None, 1):
                    raise NotImplementedError("strided tensor slices are not emulated")
                n = self.data.shape[axis]
                lo, hi = i.start or 0, n if i.stop is None else i.stop
                if lo < 0 or hi > n or lo > hi:
                    raise EmulatorError(f"slice {lo}:{hi} out of bounds for axis {axis} of size {n}")
            elif not 0 <= i < self.data.shape[axis]:
                raise EmulatorError(f"index {i} out of bounds for axis {axis} of size {self.data.shape[axis]}")
        return Tensor(self.data[tuple(norm)], self.buffer, self._owner if self._owner is not None else self)

    def __setitem__(self, index, value):
        raise NotImplementedError("tensor item assignment is not emulated; write tiles with nisa.* dst= or nl.store")

    def __array__(self, *args, **kwargs):  # let tests read results: np.asarray(tensor)
        return np.asarray(self.data, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, buffer={self.buffer!r})"


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise NotImplementedError(f"dtype {dtype!r} is not emulated") from err
    if dt not in DTYPES:
        raise NotImplementedError(f"dtype {dt} is not emulated (emulated: {[str(d) for d in DTYPES]})")
    return dt


def free_size(shape) -> int:
    return int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1


def allocate(shape, dtype, buffer: Buffer, fill=np.nan) -> Tensor:
    """A new tensor in ``buffer``; on-chip tiles are checked against the limits and budgets."""
    if not isinstance(buffer, Buffer):
        raise EmulatorError(f"buffer: expected nl.sbuf, nl.psum or an HBM buffer, got {buffer!r}")
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape) or not shape:
        raise EmulatorError(f"shape: expected positive sizes, got {shape}")
    dt = check_dtype(dtype)
    value = fill if dt.kind == "f" else 0
    data = np.full(shape, value, dtype=dt)
    t = Tensor(data, buffer)
    if not buffer.on_chip:
        return t
    if shape[0] > PMAX:
        raise EmulatorLimitError(f"tile partition axis {shape[0]} > {PMAX} (nl.tile_size.pmax)")
    f = free_size(shape)
    if buffer is PSUM:
        if dt.itemsize > 4 and dt != np.float64:
            raise EmulatorError(f"PSUM holds 32-bit values, got {dt}")
        if f > PSUM_FMAX:
            raise EmulatorLimitError(
                f"PSUM tile free size {f} > {PSUM_FMAX} (one 2 KiB bank per partition, nl.tile_size.psum_fmax)"
            )
        if usage.psum + 1 > PSUM_BANKS:
            raise EmulatorLimitError(f"PSUM overflow: all {PSUM_BANKS} banks hold live tiles")
        usage.psum += 1
        weakref.finalize(t, _release, "psum", 1, usage.launch)
    else:
        nbytes = f * dt.itemsize
        if usage.sbuf + nbytes > SBUF_BYTES:
            raise EmulatorLimitError(
                f"SBUF overflow: a tile of {nbytes} bytes per partition on top of {usage.sbuf} live bytes "
                f"exceeds {SBUF_BYTES} bytes per partition"
            )
        usage.sbuf += nbytes
        weakref.finalize(t, _release, "sbuf", nbytes, usage.launch)
    return t


def require(name: str, t, *buffers: Buffer) -> Tensor:
    if not isinstance(t, Tensor):
        raise EmulatorError(f"{name}: expected an NKI tensor, got {type(t).__name__}")
    if buffers and t.buffer not in buffers:
        want = " or ".join(repr(b) for b in buffers)
        raise EmulatorError(f"{name}: expected a tensor in {want}, got one in {t.buffer!r}")
    if t.buffer.on_chip and t.shape and t.shape[0] > PMAX:
        raise EmulatorLimitError(f"{name}: partition axis {t.shape[0]} > {PMAX}")
    return t


def write(name: str, dst: Tensor, value: np.ndarray) -> None:
    """Store a computed value into ``dst`` (exact shape, cast to dst's dtype)."""
    if tuple(value.shape) != dst.shape:
        raise EmulatorError(f"{name}: dst has shape {dst.shape}, the result has shape {tuple(value.shape)}")
    dst.data[...] = value.astype(dst.dtype, copy=False)


def compute_dtype(*tensors) -> np.dtype:
    """Engines compute in float32; float64 tensors (emulator-only widening) compute in float64."""
    for t in tensors:
        if isinstance(t, Tensor) and t.dtype == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)
