"""The ``mlx`` backend record (entry point ``bmojo: mlx = "bmojo_mlx.plugin"``).

Its ops take and return ``mx.array`` (``framework="mlx"``): torch dispatch never picks them, and
``bmojo.backends.arrays`` (what ``bmojo_mlx.ops`` calls) resolves them for MLX arrays. Listing
backends imports no MLX: targets are lazy strings and the probe only looks for the package.
"""

from __future__ import annotations

import importlib.util

from bmojo.backends import Backend, Converters, OpImpl, Probe, hookimpl

NAME = "mlx"
#: MLX device types: "cpu" (any platform with mlx / mlx[cpu]) and "gpu" (Metal on Apple silicon).
DEVICES = ("cpu", "gpu")

TARGETS = {
    "ssm_scan": "bmojo_mlx.ops.ssm_scan.array:ssm_scan",
    "ssm_step": "bmojo_mlx.ops.ssm_scan:ssm_step",  # picks the Metal kernel when available
    "causal_conv1d": "bmojo_mlx.ops.causal_conv1d.array:causal_conv1d",
    "causal_conv1d_step": "bmojo_mlx.ops.causal_conv1d.array:causal_conv1d_step",
    "bmojo_attention": "bmojo_mlx.ops.bmojo_attention.array:bmojo_attention",
    "innovation_scores": "bmojo_mlx.ops.eidetic.array:innovation_scores",
    "eidetic_select": "bmojo_mlx.ops.eidetic.array:eidetic_select",
    "rmsnorm": "bmojo_mlx.ops.rmsnorm.array:rmsnorm",
    "gated_rmsnorm": "bmojo_mlx.ops.rmsnorm.array:gated_rmsnorm",
}

CONVERTERS = Converters(
    to_numpy="bmojo_mlx.bridge:to_numpy",
    from_numpy="bmojo_mlx.bridge:from_numpy",
    vjp="bmojo_mlx.bridge:vjp",
    device_type="bmojo_mlx.bridge:device_type",
)


def _probe() -> Probe:
    """Cheap: finds ``mlx.core`` without importing it (``mlx`` is a namespace package)."""
    if importlib.util.find_spec("mlx") is None or importlib.util.find_spec("mlx.core") is None:
        return Probe(False, "mlx is not installed (pip install 'mlx' on macOS, 'mlx[cpu]' on Linux)")
    return Probe(True)


@hookimpl
def bmojo_backends():
    from bmojo_mlx import __version__

    return [
        Backend(
            name=NAME,
            version=__version__,
            ops={op: OpImpl(target, devices=DEVICES) for op, target in TARGETS.items()},
            priority=10,
            probe=_probe,
            description="B'MOJO ops on mx.array (pure MLX; a Metal kernel for the decode step on Apple GPUs)",
            framework=NAME,
            converters=CONVERTERS,
        )
    ]
