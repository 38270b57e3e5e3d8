"""``@nki.jit`` selective-scan kernel (ssm_scan and, with one time column, ssm_step).

Layouts (HBM, prepared by ``ops/ssm_scan/__init__.py``), C = batch·H·P channels padded to a
multiple of 128, T time steps, N state size, K = (batch, group) rows one channel tile touches:

* ``X``, ``DT``: (C, T) — one channel per partition, time on the free axis;
* ``A``, ``D``, ``DTB``: (C, 1) per-channel decay rate, skip weight, dt bias;
* ``H0``: (C, N) initial state; ``BT``, ``CT``: (C/128, N, K, T) — per channel tile, the B/C rows
  of the (batch, group) pairs it touches; ``SEL``: (C/128, K, 128) one-hot, row k → the channels of
  that pair.

Plan, per 128-channel tile (``affine_range``: tiles are independent), per sequence tile of
L <= 512 steps (``sequential_range``: the state is carried), per state index n (``sequential_range``:
y accumulates over n):

1. ``dt`` (optionally ``softplus(dt + bias)``), ``decay = exp(A·dt)`` (scalar engine, per-partition
   scale), ``u0 = dt·x``, ``y = D·x``;
2. B_n and C_n broadcast from their (batch, group) rows to the channels by one tensor-engine matmul
   each, ``SEL.T @ BT`` → a (128, L) PSUM tile (exactly one 2 KiB bank);
3. ``h = tensor_tensor_scan(decay, u0·B_n, initial=state[:, n])`` — the recurrence
   ``h_t = decay_t·h_{t-1} + dt_t·x_t·B_t[n]`` along the free axis on the vector engine;
   ``state[:, n] = h[:, -1]``; ``y += h·C_n``.

SBUF per partition: eight (L,) rows of 4 bytes (16 KiB at L = 512) plus the (N,) state; PSUM: two
banks. Compile-time constants: ``dt_softplus``.
"""

from __future__ import annotations

from bmojo_neuron.nki_api import nisa, nki, nl
from bmojo_neuron.ops._tiles import acc_dtype


def _scan_tile(Y, X, DT, BT, CT, i, rows, cols, size, a, d, dtb, sel, state, dt_softplus, acc):
    P = nl.tile_size.pmax
    N = BT.shape[1]
    x = nl.load(X[rows, cols], dtype=acc)
    dt = nl.load(DT[rows, cols], dtype=acc)
    if dt_softplus:  # dt = softplus(dt + bias), fused into one scalar-engine pass
        nisa.activation(dst=dt, op=nl.softplus, data=dt, bias=dtb)
    decay = nl.ndarray((P, size), dtype=acc, buffer=nl.sbuf)
    nisa.activation(dst=decay, op=nl.exp, data=dt, scale=a)  # exp(A·dt), A per partition
    u0 = nl.ndarray((P, size), dtype=acc, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=u0, data1=dt, data2=x, op=nl.multiply)
    y = nl.ndarray((P, size), dtype=acc, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=y, data=x, op0=nl.multiply, operand0=d)  # D skip (zeros when absent)
    u = nl.ndarray((P, size), dtype=acc, buffer=nl.sbuf)
    h = nl.ndarray((P, size), dtype=acc, buffer=nl.sbuf)
    hc = nl.ndarray((P, size), dtype=acc, buffer=nl.sbuf)
    bb = nl.ndarray((P, size), dtype=acc, buffer=nl.psum)
    cb = nl.ndarray((P, size), dtype=acc, buffer=nl.psum)
    for n in nl.sequential_range(N):
        bt = nl.load(BT[i, n, :, cols], dtype=acc)  # (K, size): B_n of each (batch, group) row
        ct = nl.load(CT[i, n, :, cols], dtype=acc)
        nisa.nc_matmul(dst=bb, stationary=sel, moving=bt)  # broadcast to the 128 channels
        nisa.nc_matmul(dst=cb, stationary=sel, moving=ct)
        nisa.tensor_tensor(dst=u, data1=u0, data2=bb, op=nl.multiply)
        col = state[:, nl.ds(n, 1)]
        nisa.tensor_tensor_scan(dst=h, data0=decay, data1=u, initial=col, op0=nl.multiply, op1=nl.add)
        nisa.tensor_copy(dst=col, src=h[:, nl.ds(size - 1, 1)])  # carry the state to the next tile
        nisa.tensor_tensor(dst=hc, data1=h, data2=cb, op=nl.multiply)
        nisa.tensor_tensor(dst=y, data1=y, data2=hc, op=nl.add)
    nl.store(Y[rows, cols], value=y)


@nki.jit
def ssm_scan_kernel(X, DT, A, D, DTB, H0, BT, CT, SEL, dt_softplus):
    """Returns Y (C, T) in X's dtype and the final state (C, N) in the accumulation dtype."""
    C, T = X.shape
    N = BT.shape[1]
    P = nl.tile_size.pmax
    acc = acc_dtype(X.dtype)
    L = min(T, nl.tile_size.psum_fmax)  # B/C broadcasts fill one PSUM bank per sequence tile
    n_full, tail = T // L, T % L
    Y = nl.ndarray((C, T), dtype=X.dtype, buffer=nl.shared_hbm)
    HT = nl.ndarray((C, N), dtype=acc, buffer=nl.shared_hbm)
    for i in nl.affine_range(C // P):
        rows = nl.ds(i * P, P)
        a = nl.load(A[rows, :], dtype=acc)
        d = nl.load(D[rows, :], dtype=acc)
        dtb = nl.load(DTB[rows, :], dtype=acc)
        sel = nl.load(SEL[i], dtype=acc)
        state = nl.load(H0[rows, :], dtype=acc)
        for j in nl.sequential_range(n_full):
            _scan_tile(Y, X, DT, BT, CT, i, rows, nl.ds(j * L, L), L, a, d, dtb, sel, state, dt_softplus, acc)
        if tail:  # the ragged last sequence tile, unrolled at trace time
            _scan_tile(
                Y, X, DT, BT, CT, i, rows, nl.ds(n_full * L, tail), tail, a, d, dtb, sel, state, dt_softplus, acc
            )
        nl.store(HT[rows, :], value=state)
    return Y, HT
