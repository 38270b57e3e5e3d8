"""Reference ops (spec §7): the semantics every backend must match.

Each op lives in ``bmojo.ops.<op>/``: ``reference.py`` is the efficient pure-PyTorch version used
by the layer; ``naive.py`` is a slow, obviously-correct oracle used only by tests and benchmarks.
"""

from bmojo.ops.bmojo_attention import bmojo_attention
from bmojo.ops.causal_conv1d import causal_conv1d, causal_conv1d_step
from bmojo.ops.eidetic import eidetic_select, innovation_scores
from bmojo.ops.rmsnorm import gated_rmsnorm, rmsnorm
from bmojo.ops.ssm_scan import ssm_scan, ssm_step

__all__ = [
    "bmojo_attention",
    "causal_conv1d",
    "causal_conv1d_step",
    "eidetic_select",
    "gated_rmsnorm",
    "innovation_scores",
    "rmsnorm",
    "ssm_scan",
    "ssm_step",
]
