"""A NumPy emulator of the NKI subset the bmojo-neuron kernels use. **A test double, not a product.**

It exists so the kernels can be executed and checked on any CPU machine: the Neuron SDK is not
on PyPI, so CI cannot compile or simulate NKI. It covers exactly what the kernels call, enforces
the hardware limits they must respect (partition axis <= 128, one 2 KiB PSUM bank per tile =
512 fp32, 8 PSUM banks, 192 KiB of SBUF per partition; see ``_core``), and raises
``NotImplementedError`` naming any other call. It says nothing about speed, and agreement with it
is not agreement with ``nki.simulate`` or a device: those are checked on a Neuron host
(docs/backends/neuron.md has the commands).

This module stands in for the ``nki`` module: ``jit``, ``language`` (``nl``) and ``isa``
(``nisa``). ``bmojo_neuron.nki_api`` picks it or the real ``nki``.

Emulator-only liberties, each documented where it applies: float64 tensors are accepted (the
hardware has none; the host wrappers refuse float64 outside emulation), loop indices are plain
Python ints, and tile lifetimes follow Python references.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from bmojo_neuron.emulator import isa, language
from bmojo_neuron.emulator._core import (
    PSUM_BANKS,
    SBUF_BYTES,
    EmulatorError,
    EmulatorLimitError,
    Tensor,
    check_dtype,
    new_launch,
)

__all__ = ["IS_EMULATOR", "EmulatorError", "EmulatorLimitError", "Tensor", "isa", "jit", "language"]

#: Lets code (and tests) tell the emulator from the real ``nki`` module.
IS_EMULATOR = True


def jit(fn=None, **kwargs):
    """``@nki.jit``: the decorated kernel takes NumPy arrays (its HBM inputs) and returns NumPy
    arrays (the HBM tensors it returns). Options are not emulated. Inputs follow the rules of
    ``nl.ndarray``: an emulated dtype (else ``NotImplementedError`` naming it) and no empty axis
    (NKI has no empty tensors; ``EmulatorError`` naming the argument)."""
    if kwargs:
        raise NotImplementedError(f"nki.jit options {sorted(kwargs)} are not emulated")
    if fn is None:
        return jit

    params = [p.name for p in inspect.signature(fn).parameters.values()]

    @functools.wraps(fn)
    def kernel(*args):
        hbm = []
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                name = f"kernel argument {i}" + (f" ({params[i]})" if i < len(params) else "")
                try:
                    check_dtype(a.dtype)
                except NotImplementedError as err:
                    raise NotImplementedError(f"{name}: {err}") from None
                if a.size == 0:
                    raise EmulatorError(f"{name}: expected positive sizes, got shape {a.shape}")
                hbm.append(Tensor(np.ascontiguousarray(a), language.shared_hbm))
            elif isinstance(a, Tensor):
                raise EmulatorError(f"kernel argument {i}: pass NumPy arrays, not emulator tensors")
            else:
                hbm.append(a)  # compile-time constants (ints, floats, bools, tuples)
        new_launch()  # on-chip budgets start empty for each kernel launch
        out = fn(*hbm)
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if not isinstance(o, Tensor) or o.buffer.on_chip:
                raise EmulatorError(f"a kernel returns HBM tensors, got {o!r}")
        arrays = tuple(np.array(o.data) for o in outs)
        return arrays if isinstance(out, tuple) else arrays[0]

    kernel.__wrapped_kernel__ = fn
    return kernel


def limits() -> dict:
    """The enforced limits (for docs and tests)."""
    from bmojo_neuron.emulator import _core

    return {
        "pmax": _core.PMAX,
        "psum_fmax": _core.PSUM_FMAX,
        "psum_banks": PSUM_BANKS,
        "sbuf_bytes_per_partition": SBUF_BYTES,
        "stationary_fmax": _core.STATIONARY_FMAX,
        "moving_fmax": _core.MOVING_FMAX,
    }
