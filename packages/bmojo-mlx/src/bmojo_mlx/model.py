"""The B'MOJO causal LM as a native MLX model (``mlx.nn``), the same network as ``bmojo.BMojoLM``.

Parameter names and shapes equal ``BMojoLM``'s state_dict keys, so a ``save_pretrained``
checkpoint loads as is (``bmojo_mlx.loading``). The array math is ``bmojo_mlx.ops`` (dispatched
through bmojo's registry for MLX arrays); this file only wires projections, RoPE and the decode
state, mirroring ``bmojo/layer.py``, ``bmojo/memory/`` and ``bmojo/model.py`` step for step.

Decode state: like core's ``DecodeState``, one flat dict of fixed-shape arrays per layer (same
keys: ``fading.conv``, ``window.k``, ``eidetic.pos``, ...) plus the stream position; its size
depends only on the config and the batch size (spec §5). Unlike core's (v2), one position serves
the whole batch: rows decode in lockstep (no per-row positions, no left-padded prompts).

Layer v2 (spec §2.1) is supported: the fading offset δ (``fading_offset``; the fading cache holds
δ+f rows) and the gated SSM bypass (``bypass_gate``). ``innovation_loss_weight`` only weights a
training loss, which inference does not compute.

No torch import anywhere on this path: the config comes from ``bmojo.config`` (torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from bmojo.argcheck import check_array, check_int, check_layer_states, fail
from bmojo.config import LayerConfig, ModelConfig

from bmojo_mlx import dispatch as ops
from bmojo_mlx.ops._checks import MLX
from bmojo_mlx.ops._math import exp, silu

State = dict[str, mx.array]


@dataclass
class MLXDecodeState:
    position: int  #: absolute position of the next token
    layers: list[State]

    @property
    def batch_size(self) -> int:
        for layer in self.layers:
            for t in layer.values():
                return t.shape[0]
        raise ValueError("state: expected at least one array, got an empty state")

    def nbytes(self) -> int:
        """Total bytes of all arrays: constant for a given config and batch size."""
        return sum(t.nbytes for layer in self.layers for t in layer.values())


# ----- small modules -----
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dim,))

    def __call__(self, x):
        return ops.rmsnorm(x, self.weight, self.eps)


class Conv1dWeights(nn.Module):
    """Holds ``conv1d.weight`` (channels, 1, K) and ``conv1d.bias`` in torch's layout."""

    def __init__(self, channels: int, K: int):
        super().__init__()
        self.weight = mx.zeros((channels, 1, K))
        self.bias = mx.zeros((channels,))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def __call__(self, x):
        return self.down_proj(silu(self.gate_proj(x)) * self.up_proj(x))


def softplus(x):
    """log(1 + e^x), linear above 20 (torch's threshold)."""
    return mx.where(x > 20, x, mx.log1p(exp(mx.minimum(x, 20))))


def rope_cos_sin(start: int, T: int, dim: int, theta: float, dtype):
    """cos, sin (T, dim) at positions start … start+T-1: angles in float64 (numpy, as core's
    ``bmojo.rope``), then cast to ``dtype``."""
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    angles = np.arange(start, start + T, dtype=np.float64)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    src = mx.float64 if dtype == mx.float64 else mx.float32
    return mx.array(np.cos(angles), dtype=src).astype(dtype), mx.array(np.sin(angles), dtype=src).astype(dtype)


def apply_rope(x, cos, sin):
    """x (batch, T, heads, dim); rotate-half layout, as core's ``bmojo.rope``."""
    half = x.shape[-1] // 2
    rotated = mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


# ----- memories -----
class Mamba2Fading(nn.Module):
    """Mamba-2 fading memory; parameter names as ``bmojo.memory.Mamba2Fading``."""

    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.cfg = cfg
        D, d_in, H = cfg.d_model, cfg.d_inner, cfg.ssm_heads
        self.conv_dim = d_in + 2 * cfg.ssm_groups * cfg.ssm_state_size
        self.in_proj = nn.Linear(D, d_in + self.conv_dim + H, bias=False)
        self.conv1d = Conv1dWeights(self.conv_dim, cfg.d_conv)
        self.dt_bias = mx.zeros((H,))
        self.A_log = mx.zeros((H,))
        self.D = mx.ones((H,))
        self.norm_weight = mx.ones((d_in,))
        self.out_proj = nn.Linear(d_in, D, bias=False)

    def init_state(self, batch: int, dtype) -> State:
        c = self.cfg
        return {
            "conv": mx.zeros((batch, c.d_conv - 1, self.conv_dim), dtype=dtype),
            "ssm": mx.zeros((batch, c.ssm_heads, c.ssm_head_dim, c.ssm_state_size), dtype=dtype),
        }

    def _split(self, zxbcdt):
        c = self.cfg
        return mx.split(zxbcdt, [c.d_inner, c.d_inner + self.conv_dim], axis=-1)

    def _finish(self, y, z):
        c = self.cfg
        y = ops.gated_rmsnorm(y, z, self.norm_weight, c.norm_eps, c.d_inner // c.ssm_groups)
        return self.out_proj(y)

    def __call__(self, x, state: State | None):
        c = self.cfg
        b, T, _ = x.shape
        z, xBC, dt = self._split(self.in_proj(x))
        xBC, conv_state = ops.causal_conv1d(
            xBC, self.conv1d.weight[:, 0], self.conv1d.bias, None if state is None else state["conv"]
        )
        gn = c.ssm_groups * c.ssm_state_size
        xs, B, C = mx.split(xBC, [c.d_inner, c.d_inner + gn], axis=-1)
        y, ssm_state = ops.ssm_scan(
            xs.reshape(b, T, c.ssm_heads, c.ssm_head_dim),
            softplus(dt + self.dt_bias),
            -exp(self.A_log),
            B.reshape(b, T, c.ssm_groups, c.ssm_state_size),
            C.reshape(b, T, c.ssm_groups, c.ssm_state_size),
            self.D,
            None if state is None else state["ssm"],
            chunk_size=c.ssm_chunk_size,
        )
        return self._finish(y.reshape(b, T, c.d_inner), z), {"conv": conv_state, "ssm": ssm_state}

    def step(self, x, state: State):
        c = self.cfg
        b = x.shape[0]
        z, xBC, dt = self._split(self.in_proj(x))
        xBC, conv_state = ops.causal_conv1d_step(xBC, state["conv"], self.conv1d.weight[:, 0], self.conv1d.bias)
        gn = c.ssm_groups * c.ssm_state_size
        xs, B, C = mx.split(xBC, [c.d_inner, c.d_inner + gn], axis=-1)
        y, ssm_state = ops.ssm_step(
            state["ssm"],
            xs.reshape(b, c.ssm_heads, c.ssm_head_dim),
            softplus(dt + self.dt_bias),
            -exp(self.A_log),
            B.reshape(b, c.ssm_groups, c.ssm_state_size),
            C.reshape(b, c.ssm_groups, c.ssm_state_size),
            self.D,
        )
        return self._finish(y.reshape(b, c.d_inner), z), {"conv": conv_state, "ssm": ssm_state}


def _window_extend(size: int, k, v, state: State | None):
    """``bmojo.memory.SlidingWindow.extend``: the sequences attention reads, and the last ``size``."""
    if state is None:
        return k, v, None
    k_seq = mx.concatenate([state["k"], k], axis=1)
    v_seq = mx.concatenate([state["v"], v], axis=1)
    keep = k_seq.shape[1] - size
    # copied (mx.contiguous): a slice would keep the whole (size + T)-row buffer alive with the state
    return k_seq, v_seq, {"k": mx.contiguous(k_seq[:, keep:]), "v": mx.contiguous(v_seq[:, keep:])}


def _gather(pos, mem, k_seq, v_seq, seq_start):
    """Keys/values at absolute positions ``pos`` (batch, ...): from the sequences when there, else
    from the memory slot holding that position (``bmojo.memory.eidetic._gather``)."""
    mem_pos, mem_k, mem_v = mem
    b = pos.shape[0]
    Tk, Hkv, Dh = k_seq.shape[1:]
    flat = pos.reshape(b, -1)
    n = flat.shape[1]
    in_seq = (flat >= seq_start)[..., None, None]
    idx = mx.broadcast_to(mx.clip(flat - seq_start, 0, Tk - 1)[..., None, None], (b, n, Hkv, Dh))
    match = (flat[:, :, None] == mem_pos[:, None, :]) & (mem_pos[:, None, :] >= 0)
    slot = mx.broadcast_to(mx.argmax(match.astype(mx.int32), axis=-1)[..., None, None], (b, n, Hkv, Dh))
    k = mx.where(in_seq, mx.take_along_axis(k_seq, idx, axis=1), mx.take_along_axis(mem_k, slot, axis=1))
    v = mx.where(in_seq, mx.take_along_axis(v_seq, idx, axis=1), mx.take_along_axis(mem_v, slot, axis=1))
    shape = (*pos.shape, Hkv, Dh)
    return k.reshape(shape), v.reshape(shape)


class InnovationMemory:
    """``bmojo.memory.InnovationMemory`` (no parameters)."""

    def __init__(self, cfg: LayerConfig):
        self.capacity = cfg.eidetic_capacity
        self.chunk = cfg.chunk
        self.per_chunk = cfg.eidetic_per_chunk
        self.eviction = cfg.eviction

    def init_state(self, batch, kv_heads, head_dim, dtype) -> State:
        M = self.capacity
        sd = mx.float64 if dtype == mx.float64 else mx.float32
        return {
            "k": mx.zeros((batch, M, kv_heads, head_dim), dtype=dtype),
            "v": mx.zeros((batch, M, kv_heads, head_dim), dtype=dtype),
            "pos": mx.full((batch, M), -1, dtype=mx.int64),
            "score": mx.full((batch, M), -mx.inf, dtype=sd),
            "pending": mx.zeros((batch, self.chunk), dtype=sd),
            "k_pred": mx.zeros((batch, kv_heads, head_dim), dtype=dtype),
        }

    def update(self, k, k_fading, k_seq, v_seq, start, state):
        b, T, Hkv, Dh = k.shape
        keep_state = state is not None
        if state is None:
            state = self.init_state(b, Hkv, Dh, k.dtype)
        k_pred = mx.concatenate([state["k_pred"][:, None], k_fading[:, :-1]], axis=1)
        scores = ops.innovation_scores(k, k_pred)
        snaps, mem_pos, mem_score, pending = ops.eidetic_select(
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
            "pending": mx.pad(pending, [(0, 0), (0, self.chunk - pending.shape[1])]),
            "k_pred": mx.contiguous(k_fading[:, -1]),  # not a view pinning every token's fading key
        }
        return ek, ev, snaps, new_state


# ----- layer, block, model -----
class BMojoMixer(nn.Module):
    """``bmojo.layer.BMojoMixer``: fading memory, then one softmax over the three memories."""

    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.cfg = cfg
        self.has_fading = cfg.has_ssm
        if cfg.has_ssm:
            self.fading = Mamba2Fading(cfg)
        self.window_sizes: tuple = ()
        self.eidetic = None
        if not cfg.has_attention:
            return
        D, H, Hkv, Dh = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.dh
        self.q_proj = nn.Linear(D, H * Dh, bias=False)
        self.k_proj = nn.Linear(D, Hkv * Dh, bias=False)
        self.v_proj = nn.Linear(D, Hkv * Dh, bias=False)
        self.o_proj = nn.Linear(H * Dh, D, bias=False)
        self.uses_fading_keys = cfg.uses_fading_keys
        self.own_fading_proj = self.uses_fading_keys and not cfg.tie_fading_projections
        if self.own_fading_proj:
            self.kf_proj = nn.Linear(D, Hkv * Dh, bias=False)
            self.vf_proj = nn.Linear(D, Hkv * Dh, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(Dh, cfg.norm_eps)
            self.k_norm = RMSNorm(Dh, cfg.norm_eps)
        sizes = [("window", cfg.window)]
        if cfg.fading_window > 0:
            # Query i reads fading rows (i-δ-f, i-δ]: the last δ+f rows cover every later query's.
            sizes.append(("fading_window", cfg.delta + cfg.fading_window))
        self.window_sizes = tuple(sizes)
        if cfg.eidetic_capacity > 0:
            self.eidetic = InnovationMemory(cfg)
        if cfg.ssm_bypass == "gated":
            self.bypass_gate = mx.zeros((D,))  # y = Wo·o + g ⊙ s (spec §2.1); loaded from the checkpoint

    def init_state(self, batch: int, dtype) -> State:
        state: State = {}
        parts = []
        if self.has_fading:
            parts.append(("fading", self.fading.init_state(batch, dtype)))
        kv = (batch, self.cfg.kv_heads, self.cfg.dh)
        for name, size in self.window_sizes:
            shape = (kv[0], size, kv[1], kv[2])
            parts.append((name, {"k": mx.zeros(shape, dtype=dtype), "v": mx.zeros(shape, dtype=dtype)}))
        if self.eidetic is not None:
            parts.append(("eidetic", self.eidetic.init_state(*kv, dtype)))
        for prefix, sub in parts:
            state.update({f"{prefix}.{k}": v for k, v in sub.items()})
        return state

    @staticmethod
    def _sub(state, prefix):
        if state is None:
            return None
        n = len(prefix) + 1
        return {k[n:]: v for k, v in state.items() if k.startswith(prefix + ".")}

    @staticmethod
    def _put(new, prefix, sub):
        if new is not None and sub is not None:
            new.update({f"{prefix}.{k}": v for k, v in sub.items()})

    def __call__(self, x, state: State | None = None, start: int = 0):
        s = fstate = None
        if self.has_fading:
            s, fstate = self.fading(x, self._sub(state, "fading"))
        return self._mix(x, s, fstate, state, start)

    def step(self, x, state: State, position: int):
        s = fstate = None
        if self.has_fading:
            s, fstate = self.fading.step(x, self._sub(state, "fading"))
            s = s[:, None]
        out, new = self._mix(x[:, None], s, fstate, state, position)
        return out[:, 0], new

    def _mix(self, x, s, fstate, state, start):
        cfg = self.cfg
        new = None if state is None else {}
        self._put(new, "fading", fstate)
        if not cfg.has_attention:
            return s, new
        b, T, _ = x.shape
        H, Hkv, Dh = cfg.n_heads, cfg.kv_heads, cfg.dh
        q = self.q_proj(x).reshape(b, T, H, Dh)
        k = self.k_proj(x).reshape(b, T, Hkv, Dh)
        v = self.v_proj(x).reshape(b, T, Hkv, Dh)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope_cos_sin(start, T, Dh, cfg.rope_theta, q.dtype)
        k_seq, v_seq, sub = _window_extend(cfg.window, apply_rope(k, cos, sin), v, self._sub(state, "window"))
        self._put(new, "window", sub)

        kf_seq = vf_seq = ek = ev = epos = None
        if self.uses_fading_keys:
            kf = (self.kf_proj if self.own_fading_proj else self.k_proj)(s).reshape(b, T, Hkv, Dh)
            vf = (self.vf_proj if self.own_fading_proj else self.v_proj)(s).reshape(b, T, Hkv, Dh)
            if cfg.qk_norm:
                kf = self.k_norm(kf)
            if cfg.fading_window > 0:
                kf_seq, vf_seq, sub = _window_extend(
                    cfg.delta + cfg.fading_window, apply_rope(kf, cos, sin), vf, self._sub(state, "fading_window")
                )
                self._put(new, "fading_window", sub)
            if self.eidetic is not None:
                ek, ev, epos, sub = self.eidetic.update(k, kf, k_seq, v_seq, start, self._sub(state, "eidetic"))
                self._put(new, "eidetic", sub)

        o, _ = ops.bmojo_attention(
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


class Block(nn.Module):
    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = BMojoMixer(cfg)
        self.has_mlp = cfg.mlp
        if cfg.mlp:
            self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.mlp = SwiGLU(cfg.d_model, cfg.ffn_dim)

    def _ffn(self, h):
        return h + self.mlp(self.mlp_norm(h)) if self.has_mlp else h

    def __call__(self, x, state=None, start=0):
        y, new = self.mixer(self.norm(x), state, start)
        return self._ffn(x + y), new

    def step(self, x, state, position):
        y, new = self.mixer.step(self.norm(x), state, position)
        return self._ffn(x + y), new


class BMojoMLX(nn.Module):
    """A causal LM of B'MOJO blocks in MLX: ``model(ids)`` for a whole sequence, ``prefill`` /
    ``step`` to continue a stream through a fixed-size :class:`MLXDecodeState`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            fail("config", "a ModelConfig", type(config).__name__)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = [Block(layer) for layer in config.layers]
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    # ----- inputs -----
    def _check_ids(self, ids, name="input_ids", ndim=2):
        check_array(MLX, name, ids, ndim=ndim, floating=False)
        if ids.size == 0:
            fail(name, "a non-empty batch and sequence", f"shape {tuple(ids.shape)}")
        lo, hi = int(mx.min(ids)), int(mx.max(ids))
        if lo < 0 or hi >= self.config.vocab_size:
            fail(name, f"ids in [0, vocab_size={self.config.vocab_size})", f"id {lo if lo < 0 else hi}")

    def _check_state(self, state, batch):
        if not isinstance(state, MLXDecodeState):
            fail("state", "an MLXDecodeState (see init_state)", type(state).__name__)
        if len(state.layers) != self.config.n_layers:
            fail("state", f"{self.config.n_layers} layer states", len(state.layers))
        if state.batch_size != batch:
            fail("state", f"batch size {batch} (same as input_ids)", state.batch_size)
        pos = state.position
        if not isinstance(pos, int) or isinstance(pos, bool) or pos < 0:
            fail("state.position", "an int >= 0", repr(pos))
        # Every key, shape and dtype as init_state makes them for this model, by core's checker
        # (the one DecodeState.check_like uses); mx.zeros is lazy, so nothing is allocated here.
        check_layer_states(MLX, "state", state.layers, self.init_state(batch).layers)

    @property
    def dtype(self):
        return self.embed.weight.dtype

    def _head(self, h):
        h = self.norm_f(h)
        return h @ self.embed.weight.T if self.config.tie_embeddings else self.lm_head(h)

    # ----- compute -----
    def __call__(self, input_ids: mx.array) -> mx.array:
        """Logits (batch, T, vocab) for a whole sequence from position 0."""
        self._check_ids(input_ids)
        h = self.embed(input_ids)
        for block in self.blocks:
            h, _ = block(h)
        return self._head(h)

    def init_state(self, batch_size: int, dtype=None) -> MLXDecodeState:
        check_int("batch_size", batch_size, minimum=1)
        dtype = self.dtype if dtype is None else dtype
        return MLXDecodeState(0, [b.mixer.init_state(batch_size, dtype) for b in self.blocks])

    def prefill(self, input_ids: mx.array, state: MLXDecodeState | None = None):
        """Process a piece of any length, continuing ``state`` (fresh when None)."""
        self._check_ids(input_ids)
        if state is None:
            state = self.init_state(input_ids.shape[0])
        self._check_state(state, input_ids.shape[0])
        h = self.embed(input_ids)
        layers = []
        for block, layer_state in zip(self.blocks, state.layers):
            h, new = block(h, layer_state, state.position)
            layers.append(new)
        return self._head(h), MLXDecodeState(state.position + input_ids.shape[1], layers)

    def step(self, token_ids: mx.array, state: MLXDecodeState):
        """One token per sequence: token_ids (batch,) → logits (batch, vocab)."""
        self._check_ids(token_ids, "token_ids", ndim=1)
        self._check_state(state, token_ids.shape[0])
        h = self.embed(token_ids)
        layers = []
        for block, layer_state in zip(self.blocks, state.layers):
            h, new = block.step(h, layer_state, state.position)
            layers.append(new)
        return self._head(h), MLXDecodeState(state.position + 1, layers)
