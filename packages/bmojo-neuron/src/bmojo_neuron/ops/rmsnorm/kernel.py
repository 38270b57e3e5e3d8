"""``@nki.jit`` RMSNorm kernel (plain, and gated: ``rmsnorm(x · silu(z))`` with optional groups).

Layouts (HBM, prepared by ``ops/rmsnorm/__init__.py``): ``X``, ``Z``: (R, D) rows padded to a
multiple of 128 (zero rows normalise to zero and are dropped); ``W``: (1, D).

Plan: the weight is broadcast to all 128 partitions once, by tensor-engine matmuls of a ones
column with the weight row (``ones(1, 128).T @ W``, 512 columns per PSUM bank). Then per
128-row tile (``affine_range``): load, gate (``silu`` on the scalar engine, multiply on the vector
engine), and per group of columns: ``square`` with the fused per-partition sum (scalar engine
reduce), ``rstd = rsqrt(sum/group + eps)``, scale; finally multiply by the broadcast weight.

SBUF per partition, at the peak (the second row tile allocates its ``y`` while the previous
tile's is still live): the broadcast weight, ``x``, two ``y``, ``sq`` (<= D) and, gated, ``z`` —
five (six gated) (D,) rows in the compute dtype plus about 650 elements (ones, the last weight
chunk, ``ss``). :func:`max_width` gives the widest row that fits the 192 KiB, checked on the host;
wider rows would need column tiling of the row loop (a known gap).
"""

from __future__ import annotations

from bmojo_neuron.nki_api import nisa, nki, nl
from bmojo_neuron.ops._tiles import acc_dtype

#: Widest row the one-pass plan keeps in SBUF (192 KiB per partition), float32 compute (half
#: precision is widened to float32 on the host): 6 rows of 4 bytes per column fit up to ~8000.
MAX_WIDTH = 6144
#: The same in float64 (emulator only: 8 bytes per column): 5 rows fit up to 4787, 6 up to 3989.
MAX_WIDTH_FLOAT64 = 4608
MAX_WIDTH_FLOAT64_GATED = 3840


def max_width(itemsize: int, gated: bool) -> int:
    """Widest row (last axis) the kernel takes for a compute dtype of ``itemsize`` bytes."""
    if itemsize <= 4:
        return MAX_WIDTH
    return MAX_WIDTH_FLOAT64_GATED if gated else MAX_WIDTH_FLOAT64


@nki.jit
def rmsnorm_kernel(X, W, Z, eps, group, gated):
    R, Dm = X.shape
    P = nl.tile_size.pmax
    acc = acc_dtype(X.dtype)
    OUT = nl.ndarray((R, Dm), dtype=X.dtype, buffer=nl.shared_hbm)
    ones = nl.ndarray((1, P), dtype=acc, buffer=nl.sbuf)
    nisa.memset(dst=ones, value=1.0)
    w_all = nl.ndarray((P, Dm), dtype=acc, buffer=nl.sbuf)
    fmax = nl.tile_size.psum_fmax
    for c in nl.static_range((Dm + fmax - 1) // fmax):
        cw = min(fmax, Dm - c * fmax)
        cols = nl.ds(c * fmax, cw)
        w_row = nl.load(W[:, cols], dtype=acc)
        wb = nl.ndarray((P, cw), dtype=acc, buffer=nl.psum)
        nisa.nc_matmul(dst=wb, stationary=ones, moving=w_row)  # weight row on every partition
        nisa.tensor_copy(dst=w_all[:, cols], src=wb)
    for i in nl.affine_range(R // P):
        rows = nl.ds(i * P, P)
        x = nl.load(X[rows, :], dtype=acc)
        if gated:
            z = nl.load(Z[rows, :], dtype=acc)
            nisa.activation(dst=z, op=nl.silu, data=z)
            nisa.tensor_tensor(dst=x, data1=x, data2=z, op=nl.multiply)
        sq = nl.ndarray((P, group), dtype=acc, buffer=nl.sbuf)
        ss = nl.ndarray((P, 1), dtype=acc, buffer=nl.sbuf)
        y = nl.ndarray((P, Dm), dtype=acc, buffer=nl.sbuf)
        for g in nl.static_range(Dm // group):
            cols = nl.ds(g * group, group)
            nisa.activation(
                dst=sq,
                op=nl.square,
                data=x[:, cols],
                reduce_op=nl.add,
                reduce_res=ss,
                reduce_cmd=nisa.reduce_cmd.reset_reduce,
            )
            # rstd = (sum / group + eps) ** -0.5
            nisa.tensor_scalar(dst=ss, data=ss, op0=nl.multiply, operand0=1.0 / group, op1=nl.add, operand1=eps)
            nisa.activation(dst=ss, op=nl.rsqrt, data=ss)
            nisa.tensor_scalar(dst=y[:, cols], data=x[:, cols], op0=nl.multiply, operand0=ss)
        nisa.tensor_tensor(dst=y, data1=y, data2=w_all, op=nl.multiply)
        nl.store(OUT[rows, :], value=y)
    return OUT
