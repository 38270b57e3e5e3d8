"""The ``neuron`` backend record and its runtime states.

Four states, told apart cheaply (no compilation; ``nki`` is imported only by the probe):

* **SDK missing** — no ``nki`` module: unavailable, and the reason gives the install commands
  (the SDK is on the Neuron package repository, not PyPI; PyPI's ``nki``/``neuronx-cc`` are
  empty placeholders, which the probe detects too);
* **simulator only** — the SDK is installed but this host has no Neuron device: the kernels run
  through ``nki.simulate`` on CPU tensors; available but never chosen implicitly (slow, for
  checking kernels);
* **device** — SDK and ``/dev/neuron*``: the kernels run on the NeuronCore on ``xla`` tensors;
  chosen implicitly for them;
* **emulated (tests only)** — ``BMOJO_NEURON_EMULATE=1`` (``0`` or unset: not emulated; any other
  value makes the backend unavailable with a reason naming it): the kernels run in
  :mod:`bmojo_neuron.emulator` on CPU tensors; never chosen implicitly (``implicit=False``),
  serves only when asked for by name (``BMOJO_BACKEND=neuron``/``use_backend("neuron")``).

Gradients: no NKI backward kernels yet; every op is ``differentiable=False``, so core's dispatch
recomputes the *reference* op under autograd for the backward (docs/backends/neuron.md).
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
from dataclasses import dataclass

from bmojo.backends import Backend, OpImpl, Probe, hookimpl

from bmojo_neuron import __version__

ENV_EMULATE = "BMOJO_NEURON_EMULATE"
NEURON_REPO = "https://pip.repos.neuron.amazonaws.com"
INSTALL = (
    f"python -m pip install --extra-index-url {NEURON_REPO} neuronx-cc==2.* torch-neuronx nki "
    "(the Neuron SDK is not on PyPI; its packages there are empty placeholders)"
)

EMULATED, SIMULATOR, DEVICE, MISSING = "emulated (tests only)", "simulator only", "device", "sdk missing"

#: op → "module:function" of its host wrapper.
TARGETS = {
    "ssm_scan": "bmojo_neuron.ops.ssm_scan:ssm_scan",
    "ssm_step": "bmojo_neuron.ops.ssm_scan:ssm_step",
    "bmojo_attention": "bmojo_neuron.ops.bmojo_attention:bmojo_attention",
    "rmsnorm": "bmojo_neuron.ops.rmsnorm:rmsnorm",
    "gated_rmsnorm": "bmojo_neuron.ops.rmsnorm:gated_rmsnorm",
}


@dataclass(frozen=True)
class Runtime:
    """Where the kernels run in this process (decided once, from the environment)."""

    mode: str  # EMULATED, SIMULATOR, DEVICE or MISSING
    #: a value of BMOJO_NEURON_EMULATE other than "1", "0" or unset: the backend is unavailable
    #: with that reason (a typo such as "true" must not silently mean "not emulated")
    bad_env: str | None = None

    @property
    def uses_emulator(self) -> bool:
        return self.mode == EMULATED

    @property
    def devices(self) -> tuple[str, ...]:
        return ("xla",) if self.mode in (DEVICE, MISSING) else ("cpu",)

    @property
    def implicit(self) -> bool:
        return self.mode in (DEVICE, MISSING)


def detect(environ=None) -> Runtime:
    """Cheap detection: an environment variable, a module lookup, a device-file glob."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_EMULATE, "").strip()
    if value == "1":
        return Runtime(EMULATED)
    bad = None if value in ("", "0") else env[ENV_EMULATE]
    if importlib.util.find_spec("nki") is None:
        return Runtime(MISSING, bad)
    return Runtime(DEVICE if glob.glob("/dev/neuron[0-9]*") else SIMULATOR, bad)


@functools.lru_cache(maxsize=1)
def runtime() -> Runtime:
    """The process-wide runtime (read once; tests build their own with :func:`detect`)."""
    return detect()


def probe_runtime(rt: Runtime) -> Probe:
    if rt.bad_env is not None:
        return Probe(
            False,
            f"{ENV_EMULATE}: expected '1' (kernels in the CPU emulator, tests only) or '0'/unset "
            f"(the Neuron SDK), got {rt.bad_env!r}",
        )
    if rt.mode == EMULATED:
        return Probe(True, f"{EMULATED}: {ENV_EMULATE}=1, kernels run in bmojo_neuron.emulator on CPU tensors")
    if rt.mode == MISSING:
        return Probe(
            False,
            f"Neuron SDK not found (no 'nki' module); install it: {INSTALL}; or set {ENV_EMULATE}=1 "
            "to run the kernels in the CPU emulator (tests only)",
        )
    try:
        import nki
        import nki.isa
        import nki.language
    except Exception as err:  # a broken SDK install is a reason, not a crash
        return Probe(False, f"importing the Neuron SDK failed ({type(err).__name__}: {err}); reinstall: {INSTALL}")
    needed = [("nki", nki, "jit"), ("nki", nki, "simulate"), ("nki.isa", nki.isa, "tensor_tensor_scan")]
    missing = [f"{m}.{a}" for m, mod, a in needed if not hasattr(mod, a)]
    if missing:
        return Probe(
            False,
            f"the installed 'nki' lacks {missing} (the PyPI placeholder, or an SDK older than "
            f"the NKI API these kernels use); install: {INSTALL}",
        )
    if rt.mode == DEVICE and importlib.util.find_spec("torch_xla") is None:
        return Probe(False, f"a Neuron device is present but torch-neuronx (torch_xla) is not installed: {INSTALL}")
    if rt.mode == SIMULATOR:
        return Probe(True, f"{SIMULATOR}: no Neuron device; kernels run through nki.simulate on CPU tensors")
    return Probe(True)


def _probe() -> Probe:
    return probe_runtime(runtime())


def make_backend(rt: Runtime) -> Backend:
    diff = dict(differentiable=False)  # backward: core recomputes the reference (no NKI backward yet)
    return Backend(
        name="neuron",
        version=__version__,
        ops={op: OpImpl(target, devices=rt.devices, **diff) for op, target in TARGETS.items()},
        priority=50,
        probe=lambda: probe_runtime(rt),
        description=f"NKI kernels for Trainium/Inferentia [{rt.mode}]",
        implicit=rt.implicit,
    )


@hookimpl
def bmojo_backends():
    return [make_backend(runtime())]
