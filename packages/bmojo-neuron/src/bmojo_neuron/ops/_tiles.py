"""Host-side helpers shared by the neuron ops: tile sizes, padding, dtype rules and the launch.

Everything here runs on the host with torch (so it works on ``xla`` tensors on a device and on
CPU tensors under ``nki.simulate`` or the emulator) and is unit-tested against core's reference
ops in tests/neuron/test_plugin.py (``test_helpers``, ``test_float64_is_refused_outside_the_emulator``)
and through every op test. Kernel modules never read the environment; :func:`launch`
asks :func:`bmojo_neuron.plugin.runtime` once how to run a kernel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from bmojo.argcheck import fail

from bmojo_neuron.plugin import DEVICE, EMULATED, SIMULATOR, runtime

#: Partitions per tile (nl.tile_size.pmax) and fp32 elements per PSUM bank (nl.tile_size.psum_fmax).
PMAX = 128
PSUM_FMAX = 512
#: Positions are carried as float32 in the kernels (exact below 2**24); "never visible" marker.
FAR = -1.0e9
MAX_POSITION = 1 << 24


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(n: int, multiple: int = PMAX) -> int:
    """``n`` rounded up to a multiple (channels/rows are padded to whole 128-partition tiles)."""
    return ceil_div(n, multiple) * multiple


def pad_axis(t: torch.Tensor, axis: int, before: int, after: int, value: float = 0.0) -> torch.Tensor:
    """Pad one axis with a constant (zeros by default)."""
    if before == 0 and after == 0:
        return t
    pads = [0, 0] * (t.ndim - 1 - (axis % t.ndim)) + [before, after]
    return F.pad(t, pads, value=value)


def kernel_dtype(name: str, t: torch.Tensor) -> torch.dtype:
    """The dtype a kernel computes in: float32 for float32/half inputs (half is widened on the host),
    float64 only under the emulator (the hardware has no float64)."""
    if t.dtype == torch.float64:
        if runtime().mode != EMULATED:
            fail(name, "float32, bfloat16 or float16 on Neuron (the hardware has no float64)", t.dtype)
        return torch.float64
    return torch.float32


def acc_dtype(dtype):
    """Accumulation dtype inside a kernel for HBM inputs of ``dtype`` (trace time): float32, or
    float64 under the emulator's float64 widening."""
    from bmojo_neuron.nki_api import nl

    return dtype if str(dtype) == "float64" else nl.float32


def launch(kernel, *args):
    """Run an ``@nki.jit`` kernel on host-prepared torch tensors; returns torch tensors.

    Emulator and ``nki.simulate`` take NumPy arrays (CPU); on a device the kernel is called with
    the ``xla`` tensors themselves. Non-tensor arguments are compile-time constants.
    """
    mode = runtime().mode
    if mode == DEVICE:
        out = kernel(*args)
        return out if isinstance(out, tuple) else (out,)
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    arrays = [a.detach().cpu().contiguous().numpy() if isinstance(a, torch.Tensor) else a for a in args]
    if mode == EMULATED:
        out = kernel(*arrays)
    elif mode == SIMULATOR:
        from bmojo_neuron.nki_api import nki

        out = nki.simulate(kernel)(*arrays)
    else:  # pragma: no cover - the registry never selects an unavailable backend
        raise RuntimeError(f"bmojo-neuron: cannot launch kernels ({mode})")
    out = out if isinstance(out, tuple) else (out,)
    return tuple(torch.from_numpy(np.ascontiguousarray(o)).to(device) for o in out)


def positions(start: int, length: int, valid_from: int, valid_to: int, device) -> torch.Tensor:
    """Absolute positions ``start .. start+length-1`` as a (1, length) float row; positions outside
    ``[max(valid_from, 0), valid_to]`` (padding, negative positions) become :data:`FAR`."""
    p = torch.arange(start, start + length, device=device, dtype=torch.float64)
    ok = (p >= max(valid_from, 0)) & (p <= valid_to)
    return torch.where(ok, p, torch.full_like(p, FAR))[None]
