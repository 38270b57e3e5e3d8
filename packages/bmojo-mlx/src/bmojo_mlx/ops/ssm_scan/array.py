"""Chunked selective scan (Mamba-2 "SSD" form) and its decode step in pure MLX; same contract as
``bmojo.ops.ssm_scan.reference`` (read its docstrings for shapes).

Same algorithm as the reference: within a chunk of L tokens the recurrence is a masked (L×L)
product, across chunks only the (H, P, N) state is carried, so memory is O(T·L). B and C are
contracted per group (never repeated per head). Differentiable by ``mx.grad``.
"""

from __future__ import annotations

import mlx.core as mx
from bmojo.argcheck import check_int, check_ssm_scan_args

from bmojo_mlx.ops._checks import MLX
from bmojo_mlx.ops._math import exp


def ssm_scan(
    x: mx.array,
    dt: mx.array,
    A: mx.array,
    B: mx.array,
    C: mx.array,
    D: mx.array | None = None,
    initial_state: mx.array | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[mx.array, mx.array]:
    """y (batch, T, H, P) and the final state (batch, H, P, N); see the reference."""
    b, H, P, G, N = check_ssm_scan_args(MLX, x, dt, A, B, C, D, initial_state, step=False)
    check_int("chunk_size", chunk_size, minimum=1)
    T = x.shape[1]
    out_dtype = x.dtype
    cd = MLX.compute_dtype(x.dtype)
    x, dt, A, B, C = (t.astype(cd) for t in (x, dt, A, B, C))
    L = min(chunk_size, max(T, 1))
    pad = (-T) % L
    if pad:  # dt = 0 on the padding leaves the state unchanged, so padding is exact
        x = mx.pad(x, [(0, 0), (0, pad), (0, 0), (0, 0)])
        dt = mx.pad(dt, [(0, 0), (0, pad), (0, 0)])
        B = mx.pad(B, [(0, 0), (0, pad), (0, 0), (0, 0)])
        C = mx.pad(C, [(0, 0), (0, pad), (0, 0), (0, 0)])
    nc = (T + pad) // L
    rep = H // G
    xc = x.reshape(b, nc, L, G, rep, P)
    Bc = B.reshape(b, nc, L, G, N)
    Cc = C.reshape(b, nc, L, G, N)
    dtc = dt.reshape(b, nc, L, G, rep)

    cum = mx.cumsum((dt * A).reshape(b, nc, L, H).transpose(0, 3, 1, 2), axis=-1)  # (b, H, nc, L)
    causal = mx.tril(mx.ones((L, L), dtype=mx.bool_))
    seg = cum[..., :, None] - cum[..., None, :]  # log decay from token j to token i
    decay = exp(mx.where(causal, seg, -mx.inf)).reshape(b, G, rep, nc, L, L)
    xdt = xc * dtc[..., None]  # (b, nc, L, G, rep, P)

    # 1. within-chunk outputs
    cb = mx.einsum("bclgn,bcsgn->bgcls", Cc, Bc)
    y = mx.einsum("bgrcls,bcsgrp->bclgrp", decay * cb[:, :, None], xdt)

    # 2. each chunk's own contribution to the state at its end
    to_end = exp(cum[..., -1:] - cum).transpose(0, 2, 3, 1).reshape(b, nc, L, G, rep)
    chunk_states = mx.einsum("bclgn,bclgrp->bcgrpn", Bc, xdt * to_end[..., None]).reshape(b, nc, H, P, N)

    # 3. short scan across chunks
    chunk_decay = exp(cum[..., -1]).transpose(0, 2, 1)[..., None, None]  # (b, nc, H, 1, 1)
    h = mx.zeros((b, H, P, N), dtype=cd) if initial_state is None else initial_state.astype(cd)
    entering = []
    for c in range(nc):
        entering.append(h)
        h = chunk_decay[:, c] * h + chunk_states[:, c]
    prev = mx.stack(entering, axis=1).reshape(b, nc, G, rep, P, N)

    # 4. contribution of the entering state
    from_start = exp(cum).transpose(0, 2, 3, 1).reshape(b, nc, L, G, rep)
    y = y + mx.einsum("bclgn,bcgrpn->bclgrp", Cc, prev) * from_start[..., None]
    if D is not None:
        y = y + xc * D.astype(cd).reshape(G, rep, 1)
    y = y.reshape(b, nc * L, H, P)[:, :T]
    return y.astype(out_dtype), h.astype(out_dtype)


def ssm_step(
    state: mx.array,
    x: mx.array,
    dt: mx.array,
    A: mx.array,
    B: mx.array,
    C: mx.array,
    D: mx.array | None = None,
) -> tuple[mx.array, mx.array]:
    """One decode step: state (batch, H, P, N); x (batch, H, P); dt (batch, H); B, C (batch, G, N)."""
    _, H, _, G, _ = check_ssm_scan_args(MLX, x, dt, A, B, C, D, state, step=True)
    rep = H // G
    Bh = mx.repeat(B, rep, axis=1)  # (b, H, N)
    Ch = mx.repeat(C, rep, axis=1)
    decay = exp(dt * A)[..., None, None]
    new_state = decay * state + (dt[..., None] * x)[..., None] * Bh[:, :, None, :]
    y = mx.sum(new_state * Ch[:, :, None, :], axis=-1)
    if D is not None:
        y = y + x * D[:, None]
    return y, new_state
