"""Attention over three memories with one softmax (spec §2): in-context raw tokens, fading tokens
(SSM outputs just behind the window) and eidetic tokens (innovation-selected past tokens).

``reference.py`` is blocked (no T×T tensor); ``naive.py`` builds an explicit per-query key set and
is the test oracle.
"""

from bmojo.ops.bmojo_attention.reference import bmojo_attention, eidetic_snapshot_count

__all__ = ["bmojo_attention", "eidetic_snapshot_count"]
