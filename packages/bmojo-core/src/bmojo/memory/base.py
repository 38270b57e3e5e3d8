"""Abstract interfaces for the three memories.

Every memory keeps its decode state as a flat ``dict[str, Tensor]`` of fixed shapes (made by
``init_state``), so the layer state's size never depends on how many tokens were processed and
it serialises to safetensors without custom code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

State = dict[str, torch.Tensor]


class FadingMemory(nn.Module, ABC):
    """Maps inputs (batch, T, D) to fading tokens (batch, T, D) through a fixed-size state."""

    @abstractmethod
    def init_state(self, batch: int, *, device=None, dtype=None) -> State:
        """The state before any token (zeros)."""

    @abstractmethod
    def forward(
        self, x: torch.Tensor, state: State | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Process a sequence, continuing from ``state`` (a fresh start when None). ``mask``
        (batch, T) marks leading pads (0) of rows that have not started: they must leave the
        state as it was (zero)."""

    @abstractmethod
    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Process one token x (batch, D); must equal ``forward`` on a length-1 sequence."""


class EideticMemory(ABC):
    """Chooses past tokens to keep verbatim and serves them to attention.

    ``capacity`` slots of keys/values with positions (-1 = empty) and scores.
    """

    capacity: int

    @abstractmethod
    def init_state(self, batch: int, kv_heads: int, head_dim: int, *, device=None, dtype=None) -> State:
        """An empty memory."""

    @abstractmethod
    def score(self, k: torch.Tensor, k_pred: torch.Tensor) -> torch.Tensor:
        """Score tokens (batch, T) from their keys and the fading memory's prediction of them."""

    @abstractmethod
    def update(
        self,
        k: torch.Tensor,
        k_fading: torch.Tensor,
        k_seq: torch.Tensor,
        v_seq: torch.Tensor,
        start: int,
        state: State | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State | None]:
        """Score and select among the new tokens (positions start … start+T-1).

        ``k``/``k_fading`` are the new tokens' pre-RoPE raw and fading keys (batch, T, Hkv, Dh);
        ``k_seq``/``v_seq`` hold the raw keys/values (RoPE applied) ending at the last new token.
        Returns the snapshots seen by the new queries — keys, values (batch, S, M, Hkv, Dh) and
        positions (batch, S, M) — and the updated state (None when ``state`` was None).
        """


class ContextWindow(ABC):
    """Keeps the keys and values of the last ``size`` tokens."""

    size: int

    @abstractmethod
    def init_state(self, batch: int, kv_heads: int, head_dim: int, *, device=None, dtype=None) -> State:
        """An empty window (its slots sit at negative positions, which attention never sees)."""

    @abstractmethod
    def extend(
        self, k: torch.Tensor, v: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor, torch.Tensor, State | None]:
        """Append new keys/values; return the full sequences attention reads (ending at the last
        new token) and the new state (None when ``state`` was None)."""
