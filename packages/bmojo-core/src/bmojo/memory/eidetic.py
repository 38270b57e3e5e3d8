"""Innovation-selected eidetic memory (spec §3).

A token's score is how badly the fading memory after t-1 predicted its key; per completed chunk
of ``c`` tokens the ``k`` highest scores are offered to a memory of ``M`` slots. Keys and values
are stored with RoPE already applied at the token's own absolute position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bmojo.backends.dispatch import eidetic_select, innovation_scores
from bmojo.config import LayerConfig
from bmojo.memory.base import EideticMemory, State


def _gather(pos, mem, k_seq, v_seq, seq_start):
    """Keys/values at absolute positions ``pos`` (batch, ...): from ``k_seq``/``v_seq`` (row 0 at
    ``seq_start``) when the position is there, else from the memory slot holding that position.
    Empty slots (-1) get whatever row 0 holds; attention never sees them."""
    mem_pos, mem_k, mem_v = mem
    b = pos.shape[0]
    Tk, Hkv, Dh = k_seq.shape[1:]
    flat = pos.reshape(b, -1)
    in_seq = (flat >= seq_start)[..., None, None]
    idx = (flat - seq_start).clamp(0, Tk - 1)[..., None, None].expand(-1, -1, Hkv, Dh)
    match = (flat[:, :, None] == mem_pos[:, None, :]) & (mem_pos[:, None, :] >= 0)
    slot = match.to(torch.int8).argmax(-1)[..., None, None].expand(-1, -1, Hkv, Dh)
    k = torch.where(in_seq, k_seq.gather(1, idx), mem_k.gather(1, slot))
    v = torch.where(in_seq, v_seq.gather(1, idx), mem_v.gather(1, slot))
    shape = (*pos.shape, Hkv, Dh)
    return k.reshape(shape), v.reshape(shape)


class InnovationMemory(EideticMemory):
    def __init__(self, cfg: LayerConfig):
        self.capacity = cfg.eidetic_capacity
        self.chunk = cfg.chunk
        self.per_chunk = cfg.eidetic_per_chunk
        self.eviction = cfg.eviction

    def init_state(self, batch, kv_heads, head_dim, *, device=None, dtype=None) -> State:
        M = self.capacity
        score_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return {
            "k": torch.zeros(batch, M, kv_heads, head_dim, device=device, dtype=dtype),
            "v": torch.zeros(batch, M, kv_heads, head_dim, device=device, dtype=dtype),
            "pos": torch.full((batch, M), -1, device=device, dtype=torch.int64),
            "score": torch.full((batch, M), float("-inf"), device=device, dtype=score_dtype),
            # scores of the current incomplete chunk: the first (position % chunk) are valid
            "pending": torch.zeros(batch, self.chunk, device=device, dtype=score_dtype),
            # pre-RoPE fading key of the last token, i.e. the prediction of the next token's key
            "k_pred": torch.zeros(batch, kv_heads, head_dim, device=device, dtype=dtype),
        }

    def score(self, k, k_pred):
        return innovation_scores(k, k_pred)

    def update(self, k, k_fading, k_seq, v_seq, start, state):
        """k, k_fading: (batch, T, Hkv, Dh) pre-RoPE keys of the new tokens and of their fading
        tokens; k_seq/v_seq: raw keys/values (RoPE applied) ending at the last new token."""
        b, T, Hkv, Dh = k.shape
        keep_state = state is not None
        if state is None:
            state = self.init_state(b, Hkv, Dh, device=k.device, dtype=k.dtype)
        # Token t is predicted by the fading token of t-1; the first token by zero.
        k_pred = torch.cat([state["k_pred"][:, None], k_fading[:, :-1]], dim=1)
        scores = self.score(k, k_pred)
        snaps, mem_pos, mem_score, pending = eidetic_select(
            scores,
            state["pos"],
            state["score"],
            state["pending"][:, : start % self.chunk],
            start=start,
            chunk=self.chunk,
            per_chunk=self.per_chunk,
            eviction=self.eviction,
        )
        seq_start = start + T - k_seq.shape[1]
        old = (state["pos"], state["k"], state["v"])
        ek, ev = _gather(snaps, old, k_seq, v_seq, seq_start)
        if not keep_state:
            return ek, ev, snaps, None
        mem_k, mem_v = _gather(mem_pos, old, k_seq, v_seq, seq_start)
        new_state = {
            "k": mem_k,
            "v": mem_v,
            "pos": mem_pos,
            "score": mem_score,
            "pending": F.pad(pending, (0, self.chunk - pending.shape[1])),
            "k_pred": k_fading[:, -1].clone(),  # not a view pinning every new token's fading key
        }
        return ek, ev, snaps, new_state
