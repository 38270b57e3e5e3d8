"""The B'MOJO mixer: one layer composing fading, in-context and eidetic memory (spec §1-§3).

Data flow for a sequence x (batch, T, D) starting at absolute position ``start``:

1. fading memory (SSM) → fading tokens s (batch, T, D)        [if the config has an SSM]
2. q, k, v = Wq x, Wk x, Wv x; fading keys/values k̃, ṽ = Wk̃ s, Wṽ s; RoPE at own positions
3. windows append k, v (last w) and k̃, ṽ (last δ+f) to their decode caches
4. eidetic memory scores each token by innovation ‖k_t − k̃_{t−1}‖² and selects per chunk
5. one softmax over raw window ∪ fading window (offset δ) ∪ eidetic snapshot → Wo
6. with ``ssm_bypass="gated"``: y = Wo·o + g ⊙ s (g per channel, initialised to 0)

With w = 0 the layer is the SSM alone (output s); with no SSM it is (sliding-window) attention.
"""

from __future__ import annotations

import torch
from torch import nn

from bmojo._checks import check_int, check_tensor, fail
from bmojo.backends.dispatch import bmojo_attention
from bmojo.config import LayerConfig
from bmojo.memory import InnovationMemory, Mamba2Fading, SlidingWindow, State
from bmojo.norm import RMSNorm
from bmojo.rope import apply_rope, rope_cos_sin


class BMojoMixer(nn.Module):
    def __init__(self, cfg: LayerConfig):
        super().__init__()
        if not isinstance(cfg, LayerConfig):
            fail("cfg", "a LayerConfig", type(cfg).__name__)
        self.cfg = cfg
        self.fading = Mamba2Fading(cfg) if cfg.has_ssm else None
        self.windows: dict[str, SlidingWindow] = {}
        self.eidetic = None
        if not cfg.has_attention:
            return
        D, H, Hkv, Dh = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.dh
        self.q_proj = nn.Linear(D, H * Dh, bias=False)
        self.k_proj = nn.Linear(D, Hkv * Dh, bias=False)
        self.v_proj = nn.Linear(D, Hkv * Dh, bias=False)
        self.o_proj = nn.Linear(H * Dh, D, bias=False)
        self.uses_fading_keys = cfg.uses_fading_keys
        if self.uses_fading_keys and not cfg.tie_fading_projections:
            self.kf_proj = nn.Linear(D, Hkv * Dh, bias=False)
            self.vf_proj = nn.Linear(D, Hkv * Dh, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(Dh, cfg.norm_eps)
            self.k_norm = RMSNorm(Dh, cfg.norm_eps)
        self.windows["window"] = SlidingWindow(cfg.window)
        if cfg.fading_window > 0:
            # Query i reads fading rows (i-δ-f, i-δ]: the last δ+f rows cover every later query's.
            self.windows["fading_window"] = SlidingWindow(cfg.delta + cfg.fading_window)
        if cfg.eidetic_capacity > 0:
            self.eidetic = InnovationMemory(cfg)
        if cfg.ssm_bypass == "gated":
            # g = 0: a fresh layer equals the plain one; Wo = 0, g = 1 gives the Mamba-2 mixer.
            self.bypass_gate = nn.Parameter(torch.zeros(D))

    # ----- decode state -----
    def init_state(self, batch: int, *, device=None, dtype=None) -> State:
        """Zeroed decode state; its shapes depend only on the config and the batch size."""
        check_int("batch", batch, minimum=1)
        p = next(self.parameters())
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        state: State = {}
        parts = []
        if self.fading is not None:
            parts.append(("fading", self.fading.init_state(batch, device=device, dtype=dtype)))
        kv = (batch, self.cfg.kv_heads, self.cfg.dh)
        for name, win in self.windows.items():
            parts.append((name, win.init_state(*kv, device=device, dtype=dtype)))
        if self.eidetic is not None:
            parts.append(("eidetic", self.eidetic.init_state(*kv, device=device, dtype=dtype)))
        for prefix, sub in parts:
            state.update({f"{prefix}.{k}": v for k, v in sub.items()})
        return state

    @staticmethod
    def _sub(state: State | None, prefix: str) -> State | None:
        if state is None:
            return None
        n = len(prefix) + 1
        return {k[n:]: v for k, v in state.items() if k.startswith(prefix + ".")}

    # ----- compute -----
    def forward(self, x: torch.Tensor, state: State | None = None, start: int = 0) -> tuple[torch.Tensor, State | None]:
        """Mix a sequence x (batch, T, D) whose first token sits at absolute position ``start``.

        With ``state`` (from ``init_state`` or a previous call) the layer continues a stream and
        returns the new state; without, it starts fresh (``start`` must be 0) and returns None.
        """
        cfg = self.cfg
        check_tensor("x", x, ndim=3)
        _, T, D = x.shape
        if D != cfg.d_model:
            fail("x", f"last axis d_model={cfg.d_model}", f"shape {tuple(x.shape)}")
        if T == 0:
            fail("x", "a non-empty sequence (T >= 1)", f"shape {tuple(x.shape)}")
        check_int("start", start, minimum=0)
        if state is None and start != 0:
            fail("start", "0 when no state is given (a stream starts at position 0)", start)
        s = fstate = None
        if self.fading is not None:
            s, fstate = self.fading(x, self._sub(state, "fading"))
        return self._mix(x, s, fstate, state, start)

    def _mix(self, x, s, fstate, state, start):
        """Everything after the SSM: attention over the three memories, and the new state."""
        cfg = self.cfg
        new: State | None = None if state is None else {}
        if fstate is not None and new is not None:
            new.update({f"fading.{k}": v for k, v in fstate.items()})
        if not cfg.has_attention:
            return s, new
        b, T, _ = x.shape
        H, Hkv, Dh = cfg.n_heads, cfg.kv_heads, cfg.dh
        q = self.q_proj(x).view(b, T, H, Dh)
        k = self.k_proj(x).view(b, T, Hkv, Dh)
        v = self.v_proj(x).view(b, T, Hkv, Dh)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope_cos_sin(torch.arange(start, start + T, device=x.device), Dh, cfg.rope_theta, q.dtype)
        k_seq, v_seq, sub = self.windows["window"].extend(apply_rope(k, cos, sin), v, self._sub(state, "window"))
        self._put(new, "window", sub)

        kf_seq = vf_seq = ek = ev = epos = None
        if self.uses_fading_keys:
            kf = getattr(self, "kf_proj", self.k_proj)(s).view(b, T, Hkv, Dh)
            vf = getattr(self, "vf_proj", self.v_proj)(s).view(b, T, Hkv, Dh)
            if cfg.qk_norm:
                kf = self.k_norm(kf)
            if "fading_window" in self.windows:
                kf_seq, vf_seq, sub = self.windows["fading_window"].extend(
                    apply_rope(kf, cos, sin), vf, self._sub(state, "fading_window")
                )
                self._put(new, "fading_window", sub)
            if self.eidetic is not None:
                ek, ev, epos, sub = self.eidetic.update(k, kf, k_seq, v_seq, start, self._sub(state, "eidetic"))
                self._put(new, "eidetic", sub)

        o, _ = bmojo_attention(
            apply_rope(q, cos, sin),
            k_seq,
            v_seq,
            kf_seq,
            vf_seq,
            ek,
            ev,
            epos,
            q_start=start,
            window=cfg.window,
            fading_window=cfg.fading_window,
            eidetic_chunk=cfg.chunk if self.eidetic is not None else None,
            block_size=cfg.attn_block_size,
            fading_offset=cfg.fading_offset,
        )
        y = self.o_proj(o.reshape(b, T, H * Dh))
        if cfg.ssm_bypass == "gated":
            y = y + self.bypass_gate * s
        return y, new

    @staticmethod
    def _put(new: State | None, prefix: str, sub: State | None) -> None:
        if new is not None and sub is not None:
            new.update({f"{prefix}.{k}": v for k, v in sub.items()})

    def step(self, x: torch.Tensor, state: State, position: int) -> tuple[torch.Tensor, State]:
        """One token x (batch, D) at absolute ``position``.

        The SSM and conv use their dedicated step ops; attention over the caches is the same op
        at T = 1 (its blocks shrink to one query, so no work is wasted).
        """
        check_tensor("x", x, ndim=2)
        if state is None:
            fail("state", "a decode state (see init_state)", None)
        check_int("position", position, minimum=0)
        s = fstate = None
        if self.fading is not None:
            s, fstate = self.fading.step(x, self._sub(state, "fading"))
            s = s[:, None]
        out, new = self._mix(x[:, None], s, fstate, state, position)
        return out[:, 0], new
