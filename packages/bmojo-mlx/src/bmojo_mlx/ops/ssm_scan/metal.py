"""A fused Metal kernel for the decode step of the scan (``ssm_step``), via ``mx.fast.metal_kernel``.

One thread per (batch, head, channel p): it reads the head's dt, A, D and the group's B, C rows,
updates the N state entries in registers (accumulating in float32) and writes y. The pure-MLX step
is a handful of broadcasted element-wise ops and a reduction, each a separate kernel launch per
token; here it is one launch. Only used when Metal is available (``ops/_kernels.py``);
gradients go through ``mx.custom_function`` to the pure path's VJP, so ``mx.grad`` works on it.

Layouts (row-contiguous, as MLX passes them): state (b, H, P, N), x (b, H, P), dt (b, H), A (H,),
B/C (b, G, N), D (H,) (zeros when absent). Dtypes float32, float16, bfloat16; no float64.
"""

from __future__ import annotations

import functools

import mlx.core as mx
from bmojo.argcheck import check_ssm_scan_args

from bmojo_mlx.ops._checks import MLX
from bmojo_mlx.ops.ssm_scan.array import ssm_step as ssm_step_array

_SOURCE = """
    uint idx = thread_position_in_grid.x;
    uint H = x_shape[1];
    uint P = x_shape[2];
    uint N = state_shape[3];
    uint G = B_shape[1];
    if (idx >= x_shape[0] * H * P) {
        return;
    }
    uint h = (idx / P) % H;
    uint bi = idx / (P * H);
    uint row = (bi * G + h / (H / G)) * N;
    float dtv = static_cast<float>(dt[bi * H + h]);
    float decay = metal::exp(dtv * static_cast<float>(A[h]));
    float xdt = dtv * static_cast<float>(x[idx]);
    float acc = 0.0f;
    for (uint n = 0; n < N; ++n) {
        float s = decay * static_cast<float>(state[idx * N + n]) + xdt * static_cast<float>(B[row + n]);
        new_state[idx * N + n] = static_cast<T>(s);
        acc += s * static_cast<float>(C[row + n]);
    }
    y[idx] = static_cast<T>(acc + static_cast<float>(x[idx]) * static_cast<float>(D[h]));
"""


@functools.cache
def _kernel():
    return mx.fast.metal_kernel(
        name="bmojo_ssm_step",
        input_names=["state", "x", "dt", "A", "B", "C", "D"],
        output_names=["y", "new_state"],
        source=_SOURCE,
    )


def _launch(state, x, dt, A, B, C, D):
    n = x.size
    y, new_state = _kernel()(
        inputs=[state, x, dt, A, B, C, D],
        template=[("T", x.dtype)],
        grid=(n, 1, 1),
        threadgroup=(min(256, n), 1, 1),
        output_shapes=[x.shape, state.shape],
        output_dtypes=[x.dtype, x.dtype],
    )
    return y, new_state


@mx.custom_function
def _step(state, x, dt, A, B, C, D):
    return _launch(state, x, dt, A, B, C, D)


@_step.vjp
def _step_vjp(primals, cotangents, outputs):
    _, grads = mx.vjp(lambda *a: list(ssm_step_array(*a)), list(primals), list(cotangents))
    return tuple(grads)


def ssm_step(state, x, dt, A, B, C, D=None):
    """Same contract as ``bmojo_mlx.ops.ssm_scan.array.ssm_step`` (and core's reference)."""
    H = check_ssm_scan_args(MLX, x, dt, A, B, C, D, state, step=True).H
    if D is None:
        D = mx.zeros((H,), dtype=x.dtype)
    return _step(state, x, dt, A, B, C, D)
