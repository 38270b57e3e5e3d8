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
import torch.nn.functional as F
from torch import nn

from bmojo._checks import check_int, check_tensor, fail
from bmojo.backends.dispatch import bmojo_attention, rmsnorm
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
    def forward(
        self,
        x: torch.Tensor,
        state: State | None = None,
        start: int | torch.Tensor = 0,
        pad: torch.Tensor | None = None,
        aux: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, State | None]:
        """Mix a sequence x (batch, T, D) whose first token sits at absolute position ``start``.

        With ``state`` (from ``init_state`` or a previous call) the layer continues a stream and
        returns the new state; without, it starts fresh (``start`` must be 0) and returns None.

        Rows may sit at different positions: ``start`` is then an int64 tensor (batch,). ``pad``
        (batch,) counts leading columns of x that are padding for a row that has not started
        (its ``start`` is 0): they never reach its SSM, conv, innovation scores or visible keys,
        so the row computes exactly what it computes alone without them. Outputs at pad
        columns are meaningless (zeros from attention, whatever the bypass adds).

        ``aux``: a list to which the layer appends its weighted innovation loss (see
        ``innovation_loss``) when ``innovation_loss_weight`` > 0; nothing is computed otherwise.
        """
        cfg = self.cfg
        check_tensor("x", x, ndim=3)
        b, T, D = x.shape
        if D != cfg.d_model:
            fail("x", f"last axis d_model={cfg.d_model}", f"shape {tuple(x.shape)}")
        if T == 0:
            fail("x", "a non-empty sequence (T >= 1)", f"shape {tuple(x.shape)}")
        starts, pads = row_positions(start, pad, b, T)
        if state is None and any(starts):
            fail("start", "0 when no state is given (a stream starts at position 0)", start)
        s = fstate = None
        if self.fading is not None:
            mask = None
            if any(pads):
                mask = torch.arange(T, device=x.device)[None, :] >= torch.tensor(pads, device=x.device)[:, None]
            s, fstate = self.fading(x, self._sub(state, "fading"), mask)
        y, new = self._mix(x, s, fstate, state, starts, pads)
        new = _state_dtypes(new, state)
        if aux is not None and cfg.innovation_loss_weight > 0:
            aux.append(cfg.innovation_loss_weight * self.innovation_loss(x, s, pads))
        return y, new

    def innovation_loss(self, x: torch.Tensor, s: torch.Tensor, pads: list[int] | None = None) -> torch.Tensor:
        """The auxiliary loss of spec §3 (unweighted): how badly the fading memory after t-1
        predicts token t's key, mean over tokens t >= 1 of the call (and over rows), with the
        innovation score's normalisation: mean over kv heads of ‖sg(Wk x_t) − Wk̃ s_{t−1}‖² / Dh,
        pre-RoPE (after ``k_norm`` when ``qk_norm``).

        The target is stop-gradient and the key map is held fixed in the prediction (``Wk`` and
        ``k_norm`` detached; an untied ``Wk̃`` does learn), so the loss trains the fading path
        (SSM and ``Wk̃``) to predict the keys, never the keys to become predictable (shrinking
        ``Wk`` would zero it). Leading ``pads`` of a row are left out."""
        cfg = self.cfg
        b, T, _ = x.shape
        Hkv, Dh = cfg.kv_heads, cfg.dh
        if T < 2:
            return x.new_zeros(())
        with torch.no_grad():
            target = self.k_proj(x[:, 1:]).view(b, T - 1, Hkv, Dh)
            if cfg.qk_norm:
                target = self.k_norm(target)
        w_pred = self.kf_proj.weight if hasattr(self, "kf_proj") else self.k_proj.weight.detach()
        pred = F.linear(s[:, :-1], w_pred).view(b, T - 1, Hkv, Dh)
        if cfg.qk_norm:
            pred = rmsnorm(pred, self.k_norm.weight.detach(), self.k_norm.eps)
        per_token = (target - pred).pow(2).mean(-1).mean(-1)  # (b, T-1): the score's normalisation
        if pads is None or not any(pads):
            return per_token.mean()
        keep = torch.arange(T - 1, device=x.device)[None, :] >= torch.tensor(pads, device=x.device)[:, None]
        return (per_token * keep).sum() / keep.sum().clamp(min=1)

    def _mix(self, x, s, fstate, state, starts, pads):
        """Everything after the SSM: attention over the three memories, and the new state.

        ``starts``/``pads`` are per-row lists of ints. When every row sits at one position with no
        pads (training, and decoding a batch of equal-length prompts) the attention op and the
        eidetic update run once for the batch; otherwise once per distinct (position, pads).
        """
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
        uniform = len(set(starts)) == 1 and not any(pads)
        if uniform:
            positions = torch.arange(starts[0], starts[0] + T, device=x.device)
        else:  # row r's column c sits at starts[r] - pads[r] + c (pads at negative positions)
            first = torch.tensor(starts, device=x.device) - torch.tensor(pads, device=x.device)
            positions = first[:, None] + torch.arange(T, device=x.device)
        cos, sin = rope_cos_sin(positions, Dh, cfg.rope_theta, q.dtype)
        q = apply_rope(q, cos, sin)
        k_seq, v_seq, sub = self.windows["window"].extend(apply_rope(k, cos, sin), v, self._sub(state, "window"))
        self._put(new, "window", sub)

        kf = kf_seq = vf_seq = None
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
        seqs = (k_seq, v_seq, kf_seq, vf_seq)
        estate = self._sub(state, "eidetic") if self.eidetic is not None else None

        if uniform:
            o, esub = self._attend(q, k, kf, seqs, starts[0], estate)
        else:
            o = q.new_zeros(b, T, H, Dh)
            esub = None if estate is None else dict(estate)
            groups: dict[tuple[int, int], list[int]] = {}
            for r, key in enumerate(zip(starts, pads)):
                if key[1] < T:  # a row of pads only has nothing to attend with
                    groups.setdefault(key, []).append(r)
            for (st, p), rows in groups.items():
                idx = torch.tensor(rows, device=x.device)
                part = None if estate is None else {n: t.index_select(0, idx) for n, t in estate.items()}
                rows_seqs = tuple(None if t is None else t.index_select(0, idx) for t in seqs)
                kf_rows = None if kf is None else kf.index_select(0, idx)[:, p:]
                o_g, part = self._attend(q.index_select(0, idx)[:, p:], k.index_select(0, idx)[:, p:], kf_rows,
                                         rows_seqs, st, part)  # fmt: skip
                o = o.index_put((idx[:, None], torch.arange(p, T, device=x.device)[None, :]), o_g)
                if esub is not None and part is not None:
                    esub = {n: t.index_copy(0, idx, part[n]) for n, t in esub.items()}
        self._put(new, "eidetic", esub)
        y = self.o_proj(o.reshape(b, T, H * Dh))
        if cfg.ssm_bypass == "gated":
            y = y + self.bypass_gate * s
        return y, new

    def _attend(self, q, k, kf, seqs, start, estate):
        """The eidetic update and the attention op for rows that all sit at ``start``: q (RoPE
        applied) and the pre-RoPE k, kf of the new tokens; seqs the window caches' sequences."""
        cfg = self.cfg
        k_seq, v_seq, kf_seq, vf_seq = seqs
        ek = ev = epos = esub = None
        if self.eidetic is not None:
            ek, ev, epos, esub = self.eidetic.update(k, kf, k_seq, v_seq, start, estate)
        o, _ = bmojo_attention(
            q,
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
        return o, esub

    @staticmethod
    def _put(new: State | None, prefix: str, sub: State | None) -> None:
        if new is not None and sub is not None:
            new.update({f"{prefix}.{k}": v for k, v in sub.items()})

    def step(self, x: torch.Tensor, state: State, position: int | torch.Tensor) -> tuple[torch.Tensor, State]:
        """One token x (batch, D) at absolute ``position`` (an int, or an int64 tensor (batch,)
        when rows sit at different positions).

        The SSM and conv use their dedicated step ops; attention over the caches is the same op
        at T = 1 (its blocks shrink to one query, so no work is wasted).
        """
        check_tensor("x", x, ndim=2)
        if state is None:
            fail("state", "a decode state (see init_state)", None)
        starts, pads = row_positions(position, None, x.shape[0], 1, name="position")
        s = fstate = None
        if self.fading is not None:
            s, fstate = self.fading.step(x, self._sub(state, "fading"))
            s = s[:, None]
        out, new = self._mix(x[:, None], s, fstate, state, starts, pads)
        return out[:, 0], _state_dtypes(new, state)


def _state_dtypes(new: State | None, state: State | None) -> State | None:
    """The new state in the dtypes of the state given (``init_state``'s): under autocast the ops
    return some parts in the autocast dtype (the conv's inputs, a projected fading key), and a
    state must keep one dtype per tensor for the next call. A no-op when the dtypes already match."""
    if new is None or state is None:
        return new
    return {k: v.to(state[k].dtype) if k in state else v for k, v in new.items()}


def row_positions(start, pad, batch: int, T: int, *, name: str = "start") -> tuple[list[int], list[int]]:
    """Per-row positions and leading-pad counts as lists of ints, after checking them: ``start`` an
    int >= 0 or an integer tensor (batch,) >= 0; ``pad`` None or an integer tensor (batch,) in
    [0, T], non-zero only for rows at position 0 (pads precede a stream's first token)."""
    if isinstance(start, torch.Tensor):
        check_tensor(name, start, shape=(batch,), floating=False)
        starts = [int(p) for p in start.tolist()]
        if min(starts) < 0:
            fail(name, "positions >= 0", f"{min(starts)}")
    else:
        check_int(name, start, minimum=0)
        starts = [start] * batch
    if pad is None:
        return starts, [0] * batch
    check_tensor("pad", pad, shape=(batch,), floating=False)
    pads = [int(p) for p in pad.tolist()]
    for r, (st, p) in enumerate(zip(starts, pads)):
        if not 0 <= p <= T:
            fail("pad", f"counts in [0, T={T}]", f"{p} for row {r}")
        if p and st:
            fail("pad", f"0 for row {r}, which already sits at position {st} (pads only precede a stream)", p)
    return starts, pads
