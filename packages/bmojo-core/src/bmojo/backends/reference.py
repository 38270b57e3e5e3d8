"""The reference backend: core's pure-PyTorch ops, registered as a built-in plugin through the same
``bmojo_backends`` hook as any installed backend. Priority 0, any device; always available."""

from __future__ import annotations

from bmojo.backends.spec import OPS, Backend, OpImpl, Probe, hookimpl

#: Where each reference op lives (imported lazily so listing backends stays cheap).
REFERENCE_TARGETS = {
    "ssm_scan": "bmojo.ops.ssm_scan.reference:ssm_scan",
    "ssm_step": "bmojo.ops.ssm_scan.reference:ssm_step",
    "causal_conv1d": "bmojo.ops.causal_conv1d.reference:causal_conv1d",
    "causal_conv1d_step": "bmojo.ops.causal_conv1d.reference:causal_conv1d_step",
    "bmojo_attention": "bmojo.ops.bmojo_attention.reference:bmojo_attention",
    "innovation_scores": "bmojo.ops.eidetic.reference:innovation_scores",
    "eidetic_select": "bmojo.ops.eidetic.reference:eidetic_select",
    "rmsnorm": "bmojo.ops.rmsnorm.reference:rmsnorm",
    "gated_rmsnorm": "bmojo.ops.rmsnorm.reference:gated_rmsnorm",
}
assert tuple(REFERENCE_TARGETS) == OPS

NAME = "reference"


@hookimpl
def bmojo_backends():
    from bmojo import __version__

    return [
        Backend(
            name=NAME,
            version=__version__,
            ops={op: OpImpl(target) for op, target in REFERENCE_TARGETS.items()},
            priority=0,
            probe=lambda: Probe(True),
            description="pure-PyTorch reference ops (the semantics every backend matches)",
        )
    ]
