"""The three memories a B'MOJO layer composes (see docs/architecture.md).

* ``FadingMemory`` — a state-space mixer summarising the whole past in a fixed-size state;
  ``Mamba2Fading`` is the default (spec §1).
* ``EideticMemory`` — scores tokens, selects some, and stores them verbatim with a capacity and an
  eviction rule; ``InnovationMemory`` is the default (spec §3).
* ``ContextWindow`` — the last ``size`` tokens' keys and values; ``SlidingWindow`` serves both the
  in-context raw window and the fading-token window.

A new SSM kind or selection rule is one new class implementing one interface.
"""

from bmojo.memory.base import ContextWindow, EideticMemory, FadingMemory, State
from bmojo.memory.eidetic import InnovationMemory
from bmojo.memory.fading import Mamba2Fading
from bmojo.memory.window import SlidingWindow

__all__ = [
    "ContextWindow",
    "EideticMemory",
    "FadingMemory",
    "InnovationMemory",
    "Mamba2Fading",
    "SlidingWindow",
    "State",
]
