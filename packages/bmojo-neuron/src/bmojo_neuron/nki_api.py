"""The one indirection between the kernels and NKI.

Kernels write ``from bmojo_neuron.nki_api import nki, nl, nisa`` and use only those names, so
the same kernel source runs on:

* the real SDK — ``nki`` (``@nki.jit``), ``nki.language``, ``nki.isa`` — on a Neuron device or
  through ``nki.simulate`` (chosen by :func:`bmojo_neuron.plugin.runtime`);
* the test emulator, :mod:`bmojo_neuron.emulator`, when ``BMOJO_NEURON_EMULATE=1``.

The choice is made once, when this module is first imported (the runtime is read once per
process). With the SDK missing and no emulation the names resolve to the emulator too, so the
kernel modules stay importable (e.g. for documentation); the backend is unavailable then and never
launches them.
"""

from __future__ import annotations

from bmojo_neuron.plugin import DEVICE, SIMULATOR, runtime

RUNTIME = runtime()

if RUNTIME.mode in (DEVICE, SIMULATOR):
    import nki
    import nki.isa as nisa
    import nki.language as nl

    IS_EMULATOR = False
else:
    from bmojo_neuron import emulator as nki
    from bmojo_neuron.emulator import isa as nisa
    from bmojo_neuron.emulator import language as nl

    IS_EMULATOR = True

__all__ = ["IS_EMULATOR", "RUNTIME", "nisa", "nki", "nl"]
