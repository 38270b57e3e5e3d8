"""Eidetic memory ops (spec §3): the innovation score of each token and the chunked top-k selection
with capacity and eviction that decides which past tokens are kept verbatim."""

from bmojo.config import EVICTIONS
from bmojo.ops.eidetic.reference import eidetic_select, innovation_scores

__all__ = ["EVICTIONS", "eidetic_select", "innovation_scores"]
