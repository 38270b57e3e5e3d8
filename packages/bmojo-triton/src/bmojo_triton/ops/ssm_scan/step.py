"""Decode step of the SSM: state ← exp(dt·A)·state + dt·x ⊗ B, y = state·C + D·x, per head.

Grid (batch × heads, head-dim tiles). ``NEW_STATE`` may be the input state itself (the update
is elementwise per program), which is how a caller updates a preallocated cache in place; the
registered op writes a new tensor (custom ops may not mutate their inputs).
"""

from __future__ import annotations

import triton
import triton.language as tl

from bmojo_triton.ops._triton_utils import index


@triton.jit
def _ssm_step_kernel(
    STATE,
    X,
    DT,
    A,
    B,
    C,
    D,
    Y,
    NEW_STATE,
    H,
    P,
    N,
    HEADS_PER_GROUP,
    G,
    HAS_D: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    IDX64: tl.constexpr = False,
):
    pid_bh = index(tl.program_id(0), IDX64)
    pid_p = index(tl.program_id(1), IDX64)
    b = pid_bh // H
    h = pid_bh % H
    g = h // HEADS_PER_GROUP
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    p_ok = offs_p < P
    n_ok = offs_n < N
    mask = p_ok[:, None] & n_ok[None, :]
    ptrs = pid_bh * P * N + offs_p[:, None] * N + offs_n[None, :]
    s = tl.load(STATE + ptrs, mask=mask, other=0.0).to(ACC)
    x = tl.load(X + pid_bh * P + offs_p, mask=p_ok, other=0.0).to(ACC)
    dt = tl.load(DT + pid_bh).to(ACC)
    a = tl.load(A + h).to(ACC)
    bv = tl.load(B + (b * G + g) * N + offs_n, mask=n_ok, other=0.0).to(ACC)
    cv = tl.load(C + (b * G + g) * N + offs_n, mask=n_ok, other=0.0).to(ACC)
    s = tl.exp(dt * a) * s + (dt * x)[:, None] * bv[None, :]
    y = tl.sum(s * cv[None, :], axis=1)
    if HAS_D:
        y += x * tl.load(D + h).to(ACC)
    tl.store(NEW_STATE + ptrs, s.to(NEW_STATE.dtype.element_ty), mask=mask)
    tl.store(Y + pid_bh * P + offs_p, y.to(Y.dtype.element_ty), mask=p_ok)
