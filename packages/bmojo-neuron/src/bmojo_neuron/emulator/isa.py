"""Emulated ``nki.isa``: the instructions the bmojo-neuron kernels use, destination-passing style
(``dst`` first), with the operand rules of the NKI documentation that the kernels depend on.

Engines compute in float32 (float64 under the emulator-only widening) and cast to ``dst``'s
dtype. Anything not listed raises ``NotImplementedError`` naming the call.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from bmojo_neuron.emulator import language as nl
from bmojo_neuron.emulator._core import (
    MOVING_FMAX,
    PMAX,
    PSUM,
    SBUF,
    STATIONARY_FMAX,
    EmulatorError,
    EmulatorLimitError,
    Tensor,
    compute_dtype,
    require,
    write,
)


class reduce_cmd(Enum):
    idle = "idle"
    reset = "reset"
    reduce = "reduce"
    reset_reduce = "reset_reduce"


def _op(name, op, arity, allowed=None):
    if not isinstance(op, nl.Op) or op.arity != arity:
        kind = "binary operator" if arity == 2 else "activation function"
        raise EmulatorError(f"{name}: expected an nl.* {kind}, got {op!r}")
    if allowed is not None and op not in allowed:
        raise NotImplementedError(f"{name}={op!r} is not emulated (emulated: {list(allowed)})")
    return op


def _onchip(name, t):
    return require(name, t, SBUF, PSUM)


def _val(t: Tensor, cd) -> np.ndarray:
    return t.data.astype(cd, copy=False)


def _operand(name, value, data: Tensor, cd):
    """A compile-time scalar, or a (partitions, 1) tile broadcast along the free axes."""
    if isinstance(value, Tensor):
        _onchip(name, value)
        if value.shape != (data.shape[0], 1):
            raise EmulatorError(f"{name}: a vector operand must have shape {(data.shape[0], 1)}, got {value.shape}")
        return _val(value, cd).reshape((data.shape[0],) + (1,) * (data.ndim - 1))
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return cd.type(value)
    raise EmulatorError(f"{name}: expected a scalar or a (partitions, 1) tile, got {type(value).__name__}")


def _same_partitions(name, a: Tensor, b: Tensor):
    if a.shape[0] != b.shape[0]:
        raise EmulatorError(f"{name}: partition sizes differ ({a.shape[0]} vs {b.shape[0]})")


def nc_matmul(dst: Tensor, stationary: Tensor, moving: Tensor, **kwargs) -> None:
    """``dst = stationary.T @ moving`` on the tensor engine: inputs in SBUF with the contraction on
    the partition axis (<= 128), stationary free size <= 128, moving free size <= 512; dst in PSUM."""
    if kwargs:
        raise NotImplementedError(f"nki.isa.nc_matmul arguments {sorted(kwargs)} are not emulated")
    require("nc_matmul stationary", stationary, SBUF)
    require("nc_matmul moving", moving, SBUF)
    require("nc_matmul dst", dst, PSUM)
    if stationary.ndim != 2 or moving.ndim != 2:
        raise EmulatorError(f"nc_matmul: 2-d tiles expected, got {stationary.shape} and {moving.shape}")
    _same_partitions("nc_matmul contraction", stationary, moving)
    if stationary.shape[1] > STATIONARY_FMAX:
        raise EmulatorLimitError(f"nc_matmul stationary free size {stationary.shape[1]} > {STATIONARY_FMAX}")
    if moving.shape[1] > MOVING_FMAX:
        raise EmulatorLimitError(f"nc_matmul moving free size {moving.shape[1]} > {MOVING_FMAX}")
    cd = compute_dtype(stationary, moving)
    if dst.dtype != cd:
        raise EmulatorError(f"nc_matmul dst: accumulates in {cd}, got a {dst.dtype} tile")
    write("nc_matmul", dst, _val(stationary, cd).T @ _val(moving, cd))


def nc_transpose(dst: Tensor, data: Tensor) -> None:
    """2-d transpose between the partition and free axes on the tensor engine (data in SBUF,
    both sizes <= 128, dst in PSUM)."""
    require("nc_transpose data", data, SBUF)
    require("nc_transpose dst", dst, PSUM)
    if data.ndim != 2 or max(data.shape) > PMAX:
        raise EmulatorLimitError(f"nc_transpose: a 2-d tile with both sizes <= {PMAX} expected, got {data.shape}")
    cd = compute_dtype(data)
    if dst.dtype != cd:
        raise EmulatorError(f"nc_transpose dst: a {cd} PSUM tile expected, got {dst.dtype}")
    write("nc_transpose", dst, _val(data, cd).T)


def activation(
    dst: Tensor,
    op,
    data: Tensor,
    bias=None,
    scale=1.0,
    reduce_op=None,
    reduce_res: Tensor | None = None,
    reduce_cmd=reduce_cmd.idle,
) -> None:
    """``dst = op(data * scale + bias)`` on the scalar engine; scale a scalar or (P, 1) tile, bias a
    (P, 1) tile. With ``reduce_res`` (and ``reduce_cmd=reset_reduce``, ``reduce_op=nl.add``), the
    per-partition sum of the result is written there too."""
    _op("activation op", op, 1, nl.ACTIVATIONS)
    _onchip("activation data", data)
    _onchip("activation dst", dst)
    cd = compute_dtype(data, dst)
    x = _val(data, cd) * _operand("activation scale", scale, data, cd)
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise EmulatorError("activation bias: expected a (partitions, 1) tile")
        x = x + _operand("activation bias", bias, data, cd)
    y = op.fn(x).astype(cd, copy=False)
    write("activation", dst, y)
    if reduce_res is not None or reduce_op is not None:
        if reduce_op is not nl.add or reduce_res is None:
            raise EmulatorError("activation: the fused reduction needs reduce_op=nl.add and a reduce_res tile")
        if reduce_cmd is not globals()["reduce_cmd"].reset_reduce:
            raise NotImplementedError(f"activation reduce_cmd={reduce_cmd} is not emulated (only reset_reduce)")
        _onchip("activation reduce_res", reduce_res)
        write("activation reduce_res", reduce_res, y.reshape(y.shape[0], -1).sum(axis=1, keepdims=True))


def tensor_tensor(dst: Tensor, data1: Tensor, data2: Tensor, op) -> None:
    """Element-wise ``dst = op(data1, data2)`` (same shapes, no broadcasting)."""
    _op("tensor_tensor op", op, 2, nl.BINARY)
    for name, t in (("data1", data1), ("data2", data2), ("dst", dst)):
        _onchip(f"tensor_tensor {name}", t)
    if data1.shape != data2.shape:
        raise EmulatorError(f"tensor_tensor: shapes differ ({data1.shape} vs {data2.shape})")
    if data1.buffer is PSUM and data2.buffer is PSUM:
        raise EmulatorError("tensor_tensor: data1 and data2 cannot both be in PSUM")
    cd = compute_dtype(data1, data2, dst)
    write("tensor_tensor", dst, op.fn(_val(data1, cd), _val(data2, cd)))


def tensor_scalar(
    dst: Tensor, data: Tensor, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False
) -> None:
    """``dst = (data op0 operand0) op1 operand1``; operands are scalars or (P, 1) tiles."""
    _op("tensor_scalar op0", op0, 2, nl.BINARY)
    _onchip("tensor_scalar data", data)
    _onchip("tensor_scalar dst", dst)
    cd = compute_dtype(data, dst, operand0, operand1)
    x = _val(data, cd)
    a = _operand("tensor_scalar operand0", operand0, data, cd)
    x = op0.fn(a, x) if reverse0 else op0.fn(x, a)
    if (op1 is None) != (operand1 is None):
        raise EmulatorError("tensor_scalar: op1 and operand1 go together")
    if op1 is not None:
        _op("tensor_scalar op1", op1, 2, nl.BINARY)
        b = _operand("tensor_scalar operand1", operand1, data, cd)
        x = op1.fn(b, x) if reverse1 else op1.fn(x, b)
    write("tensor_scalar", dst, np.asarray(x, dtype=cd))


_REDUCE = {nl.add: np.sum, nl.maximum: np.max, nl.minimum: np.min, nl.multiply: np.prod}


def tensor_reduce(dst: Tensor, op, data: Tensor, axis, negate=False, keepdims=False) -> None:
    """Reduce the free axes ``axis`` (must include the last, consecutive) with ``op``."""
    _op("tensor_reduce op", op, 2, tuple(_REDUCE))
    _onchip("tensor_reduce data", data)
    _onchip("tensor_reduce dst", dst)
    axes = tuple(sorted([axis] if isinstance(axis, int) else axis))
    last = data.ndim - 1
    if not axes or 0 in axes or axes[-1] != last or axes != tuple(range(axes[0], last + 1)):
        raise EmulatorError(f"tensor_reduce axis: consecutive free axes ending at {last} expected, got {axis}")
    cd = compute_dtype(data, dst)
    r = _REDUCE[op](_val(data, cd), axis=axes, keepdims=keepdims)
    write("tensor_reduce", dst, -r if negate else r)


def tensor_tensor_scan(
    dst: Tensor, data0: Tensor, data1: Tensor, initial, op0, op1, reverse0=False, reverse1=False
) -> None:
    """Per partition, along the free axis: ``r[:, 0] = op1(op0(data0[:, 0], initial), data1[:, 0])``,
    ``r[:, i] = op1(op0(data0[:, i], r[:, i-1]), data1[:, i])``. ``initial`` is a scalar or a
    (P, 1) tile; data0 and data1 cannot both be in PSUM."""
    if reverse0 or reverse1:
        raise NotImplementedError("tensor_tensor_scan reverse0/reverse1 are not emulated")
    _op("tensor_tensor_scan op0", op0, 2, nl.BINARY)
    _op("tensor_tensor_scan op1", op1, 2, nl.BINARY)
    for name, t in (("data0", data0), ("data1", data1), ("dst", dst)):
        _onchip(f"tensor_tensor_scan {name}", t)
    if data0.ndim != 2 or data0.shape != data1.shape:
        raise EmulatorError(f"tensor_tensor_scan: equal 2-d tiles expected, got {data0.shape} and {data1.shape}")
    if data0.buffer is PSUM and data1.buffer is PSUM:
        raise EmulatorError("tensor_tensor_scan: data0 and data1 cannot both be in PSUM")
    cd = compute_dtype(data0, data1, dst, initial)
    a, b = _val(data0, cd), _val(data1, cd)
    prev = np.broadcast_to(_operand("tensor_tensor_scan initial", initial, data0, cd), (a.shape[0], 1))[:, 0]
    out = np.empty_like(a)
    for i in range(a.shape[1]):
        prev = op1.fn(op0.fn(a[:, i], prev), b[:, i])
        out[:, i] = prev
    write("tensor_tensor_scan", dst, out)


def tensor_copy(dst: Tensor, src: Tensor) -> None:
    """Copy (and cast) an on-chip tile, e.g. PSUM -> SBUF."""
    _onchip("tensor_copy src", src)
    _onchip("tensor_copy dst", dst)
    write("tensor_copy", dst, src.data)


def memset(dst: Tensor, value) -> None:
    """Fill an on-chip tile with a constant."""
    _onchip("memset dst", dst)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EmulatorError(f"memset value: expected a number, got {value!r}")
    dst.data[...] = value


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotImplementedError(f"nki.isa.{name} is not emulated (bmojo_neuron.emulator covers the kernels' subset)")
