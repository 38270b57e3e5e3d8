"""Reference ops (the op set ``bmojo.backends.OPS``): the semantics every backend must match.

Each op family has a folder, ``bmojo/ops/<family>/``: ``reference.py`` is the efficient
pure-PyTorch version used by the layer; ``naive.py`` is a slow, obviously-correct oracle used only
by tests and benchmarks. Where each op's reference function lives:

* ``ssm_scan``, ``ssm_step``: ``bmojo.ops.ssm_scan.reference``;
* ``causal_conv1d``, ``causal_conv1d_step``: ``bmojo.ops.causal_conv1d.reference``;
* ``bmojo_attention``: ``bmojo.ops.bmojo_attention.reference``;
* ``innovation_scores``, ``eidetic_select``: ``bmojo.ops.eidetic.reference``;
* ``rmsnorm``, ``gated_rmsnorm``: ``bmojo.ops.rmsnorm.reference``

(``bmojo.backends.reference.REFERENCE_TARGETS`` maps each op to its ``"module:attr"``.)
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
