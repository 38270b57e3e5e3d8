"""The ``triton`` backend record (entry point ``bmojo: triton = "bmojo_triton.plugin"``).

Where it runs:

* a CUDA GPU with compute capability >= 8.0 (Ampere, Hopper and later): ``available`` on device
  type ``cuda``, priority 100, so every op it provides runs on it without being asked;
* a CPU with ``TRITON_INTERPRET=1`` set before Python starts: ``available`` on device type
  ``cpu`` through Triton's interpreter (slow; for tests), but with priority -1, below the
  reference's 0, so implicit selection never picks it: it runs only when asked for explicitly
  (``BMOJO_BACKEND=triton`` or ``use_backend("triton")``);
* otherwise ``unavailable`` with the reason (triton missing, no CUDA device, GPU too old).

``TRITON_INTERPRET`` is read once, here, when the registry loads the plugin: Triton reads it at
import too, so changing it later in the same process has no effect on either.
"""

from __future__ import annotations

import importlib.util
import os

from bmojo.backends import Backend, OpImpl, Probe, hookimpl

from bmojo_triton import __version__

#: The values of ``TRITON_INTERPRET`` that Triton reads as "on" (its ``getenv_bool``: these, in any
#: case; anything else, "2", "false", " 1" included, is off).
_TRUE = ("1", "true", "on", "yes", "y")


def interpreting(env=None) -> bool:
    """Whether Triton runs its interpreter under ``env`` (default ``os.environ``), read as Triton
    reads ``TRITON_INTERPRET`` — without importing triton."""
    return (os.environ if env is None else env).get("TRITON_INTERPRET", "").lower() in _TRUE


#: True when Triton's interpreter is on (kernels run on CPU tensors, in numpy).
INTERPRET = interpreting()
#: The torch device type the kernels run on in this process.
DEVICES = ("cpu",) if INTERPRET else ("cuda",)
#: Implicit selection prefers higher priorities; the reference is 0. Under the interpreter the
#: backend sits below the reference, which provides every op, so it is never chosen implicitly.
PRIORITY = -1 if INTERPRET else 100
#: Oldest GPU the kernels target (bf16 tensor cores, tl.dot on every dtype used).
MIN_CAPABILITY = (8, 0)

_OPS = "bmojo_triton.ops"


def _probe() -> Probe:
    """Cheap: imports no triton and compiles nothing."""
    if importlib.util.find_spec("triton") is None:
        return Probe(False, "triton is not installed (pip install triton)")
    if INTERPRET:
        return Probe(True, "TRITON_INTERPRET=1: CPU interpreter, explicit selection only")
    import torch

    if not torch.cuda.is_available():
        return Probe(False, "no CUDA device (set TRITON_INTERPRET=1 to run on CPU, explicitly)")
    cap = torch.cuda.get_device_capability()
    if tuple(cap) < MIN_CAPABILITY:
        name = torch.cuda.get_device_name()
        return Probe(False, f"GPU too old: {name} is sm_{cap[0]}{cap[1]}, needs >= sm_80")
    return Probe(True)


def _op(target: str, differentiable: bool = True) -> OpImpl:
    return OpImpl(f"{_OPS}.{target}", devices=DEVICES, differentiable=differentiable)


def _trained(target: str, outputs: bool = False) -> OpImpl:
    """An ``autograd.Function`` over Triton kernels (eager autograd records it: ``eager_autograd``)
    and the same backward kernels as the custom op's explicit backward, so torch.compile does not
    run the forward again in the backward (``<op>_backward`` beside ``<op>``; ``outputs``: it takes
    the forward's outputs, which autograd then keeps)."""
    return OpImpl(
        f"{_OPS}.{target}",
        devices=DEVICES,
        backward=f"{_OPS}.{target}_backward",
        backward_outputs=outputs,
        eager_autograd=True,
    )


@hookimpl
def bmojo_backends():
    return [
        Backend(
            name="triton",
            version=__version__,
            ops={
                # Forward kernels only: the backward recomputes the reference under autograd
                # (differentiable=False) where no Triton backward exists yet (see the docs).
                "ssm_step": _op("ssm_scan:ssm_step", differentiable=False),
                "causal_conv1d_step": _op("causal_conv1d:causal_conv1d_step", differentiable=False),
                # Triton backward kernels, reached from eager autograd and from core's custom op
                "ssm_scan": _trained("ssm_scan:ssm_scan"),
                "causal_conv1d": _trained("causal_conv1d:causal_conv1d"),
                "bmojo_attention": _trained("bmojo_attention:bmojo_attention", outputs=True),
                "innovation_scores": _op("eidetic:innovation_scores", differentiable=False),
                "rmsnorm": _trained("rmsnorm:rmsnorm"),
                "gated_rmsnorm": _trained("rmsnorm:gated_rmsnorm"),
            },
            priority=PRIORITY,
            probe=_probe,
            description="Triton kernels (CUDA; CPU interpreter on explicit request only)",
        )
    ]
