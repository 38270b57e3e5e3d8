"""The op set (spec §7) on ``mx.array``, dispatched through bmojo's backend registry (the MLX
counterpart of core's ``bmojo.backends.dispatch``).

Each function here takes core's arguments in core's order (``bmojo.ops.<op>.reference``) and asks
the registry which backend serves the op for MLX arrays now (``bmojo.backends.arrays``):
``use_backend``/``BMOJO_BACKEND`` first, else the highest-priority available backend with an MLX
implementation — this package's own (``mlx``, priority 10) unless a third party registers a
better one (say a custom Metal kernel, see docs/backends.md). The native model calls these.

The implementations themselves live in ``bmojo_mlx.ops.<op>/``: ``array.py`` (pure MLX, always)
and, where a fused kernel pays, ``metal.py``. (They are a separate package so that importing an op
module never shadows these entry points.)
"""

from __future__ import annotations

from bmojo.backends.arrays import call

FRAMEWORK = "mlx"


def ssm_scan(x, dt, A, B, C, D=None, initial_state=None, *, chunk_size=64):
    return call("ssm_scan", FRAMEWORK, x, dt, A, B, C, D, initial_state, chunk_size=chunk_size)


def ssm_step(state, x, dt, A, B, C, D=None):
    return call("ssm_step", FRAMEWORK, state, x, dt, A, B, C, D)


def causal_conv1d(x, weight, bias=None, initial_state=None, activation="silu"):
    return call("causal_conv1d", FRAMEWORK, x, weight, bias, initial_state, activation)


def causal_conv1d_step(x, state, weight, bias=None, activation="silu"):
    return call("causal_conv1d_step", FRAMEWORK, x, state, weight, bias, activation)


def bmojo_attention(
    q,
    k,
    v,
    kf=None,
    vf=None,
    ek=None,
    ev=None,
    epos=None,
    *,
    q_start=0,
    window,
    fading_window=0,
    eidetic_chunk=None,
    scale=None,
    block_size=64,
    fading_offset=None,
):
    return call(
        "bmojo_attention",
        FRAMEWORK,
        q,
        k,
        v,
        kf,
        vf,
        ek,
        ev,
        epos,
        q_start=q_start,
        window=window,
        fading_window=fading_window,
        eidetic_chunk=eidetic_chunk,
        scale=scale,
        block_size=block_size,
        fading_offset=fading_offset,
    )


def innovation_scores(k, k_pred):
    return call("innovation_scores", FRAMEWORK, k, k_pred)


def eidetic_select(scores, mem_pos, mem_score, pending, *, start, chunk, per_chunk, eviction="lowest"):
    kw = {"start": start, "chunk": chunk, "per_chunk": per_chunk, "eviction": eviction}
    return call("eidetic_select", FRAMEWORK, scores, mem_pos, mem_score, pending, **kw)


def rmsnorm(x, weight, eps=1e-6):
    return call("rmsnorm", FRAMEWORK, x, weight, eps)


def gated_rmsnorm(x, z, weight, eps=1e-6, group_size=None):
    return call("gated_rmsnorm", FRAMEWORK, x, z, weight, eps, group_size)


__all__ = [
    "bmojo_attention",
    "causal_conv1d",
    "causal_conv1d_step",
    "eidetic_select",
    "gated_rmsnorm",
    "innovation_scores",
    "rmsnorm",
    "ssm_scan",
    "ssm_step",
]
