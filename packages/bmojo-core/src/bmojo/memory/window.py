"""The sliding window of the last ``size`` tokens' keys and values."""

from __future__ import annotations

import torch

from bmojo.memory.base import ContextWindow, State


class SlidingWindow(ContextWindow):
    def __init__(self, size: int):
        self.size = size

    def init_state(self, batch, kv_heads, head_dim, *, device=None, dtype=None) -> State:
        shape = (batch, self.size, kv_heads, head_dim)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),
            "v": torch.zeros(shape, device=device, dtype=dtype),
        }

    def extend(self, k, v, state):
        if state is None:
            return k, v, None
        k_seq = torch.cat([state["k"], k], dim=1)
        v_seq = torch.cat([state["v"], v], dim=1)
        keep = k_seq.shape[1] - self.size
        # Cloned: a slice would keep the whole (size + T)-row buffer alive with the state.
        return k_seq, v_seq, {"k": k_seq[:, keep:].clone(), "v": v_seq[:, keep:].clone()}
