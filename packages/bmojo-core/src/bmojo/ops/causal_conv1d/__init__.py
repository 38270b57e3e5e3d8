"""Causal depthwise 1-d convolution (spec §1), with the optional SiLU that Mamba-2 applies after it.

``reference.py``: the sequence op and its one-token step; ``naive.py``: an explicit sum, oracle only.
"""

from bmojo.ops.causal_conv1d.reference import causal_conv1d, causal_conv1d_step

__all__ = ["causal_conv1d", "causal_conv1d_step"]
