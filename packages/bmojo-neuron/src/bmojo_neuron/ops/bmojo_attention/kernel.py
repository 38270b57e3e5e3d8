"""``@nki.jit`` three-source attention forward (raw window, fading tokens, eidetic slots), one
online softmax over all visible keys, flash style.

Layouts (HBM, prepared by ``ops/bmojo_attention/__init__.py``; rows = key windows padded so that
query tile n reads rows ``n·Bq ...`` of every source):

* ``QT``: (batch·H, Dh, Tq) queries transposed (Dh on partitions: the contraction of q·kᵀ);
  ``QPOS``: (Tq, 1) absolute query positions (float32, exact below 2**24);
* ``KT``/``KFT``: (batch·Hkv, Dh, rows) keys transposed; ``V``/``VF``: (batch·Hkv, rows, Dh);
  ``KPOS``/``FPOS``: (1, rows) key positions, ``FAR`` (-1e9) where there is no key;
* ``EKT``: (batch·Hkv, nq, Dh, M), ``EV``: (batch·Hkv, nq, M, Dh), ``EPOS``: (batch, nq, 1, M):
  the eidetic snapshot each query tile sees (empty slots at ``FAR``).

Plan: per (batch, kv head, query head of its group, query tile of Bq <= 128 rows) — all
``affine_range``, independent — keep the running max ``m``, sum ``l`` and output ``acc`` (Bq, Dh)
in SBUF; for each source and each chunk of <= 512 keys (one PSUM bank):

1. ``s = scale · qᵀk`` (tensor engine into PSUM, scaled while copied out by the scalar engine);
2. visibility from positions: the key-position row is broadcast to the Bq partitions by a
   ones-matmul, ``rel = kpos - qpos`` (per-partition scalar), visible iff ``lo < rel <= hi`` —
   raw ``(-w, 0]``, fading ``(-δ-f, -δ]``, eidetic ``(FAR/2, -w]`` — and hidden scores get
   -1e30 (exactly 0 after the exp);
3. online softmax: ``m' = max(m, rowmax s)``, ``p = exp(s - m')`` with the row sum fused into the
   same scalar-engine pass, ``l = l·e^{m-m'} + Σp``, ``acc = acc·e^{m-m'} + p·v`` where p·v runs
   per 128 keys: ``p`` is transposed on the tensor engine (keys onto partitions) and multiplied
   with the (keys, Dh) value rows.

Finally ``o = acc / l`` and ``lse = m + log l``. Limits: Dh <= 128 (the contraction of q·kᵀ sits
on the partitions; larger heads need PSUM accumulation, a known gap). PSUM: four banks (scores,
positions, pᵀ, p·v). SBUF per partition: a few (512,) rows plus (Dh,) rows — far below budget.
"""

from __future__ import annotations

from bmojo_neuron.nki_api import nisa, nki, nl
from bmojo_neuron.ops._tiles import FAR, acc_dtype

#: Added to hidden scores; exp(s - m) of a hidden score is exactly 0 once any key is visible.
HIDDEN = 1.0e30


def _chunk(state, qT, qpos, ones, kT, v, pos, lo, hi, scale, acc):
    """Fold one chunk of keys (kT: (Dh, Kc), v: (Kc, Dh) loaded on demand, pos: (1, Kc)) into
    the running softmax ``state = (m, l, o_acc)``."""
    m, l, o_acc = state
    Bq = qT.shape[1]
    Kc = kT.shape[1]
    Dh = qT.shape[0]
    P = nl.tile_size.pmax
    s_ps = nl.ndarray((Bq, Kc), dtype=acc, buffer=nl.psum)
    nisa.nc_matmul(dst=s_ps, stationary=qT, moving=kT)
    s = nl.ndarray((Bq, Kc), dtype=acc, buffer=nl.sbuf)
    nisa.activation(dst=s, op=nl.copy, data=s_ps, scale=scale)
    # visibility: lo < kpos - qpos <= hi, from positions broadcast over the query partitions
    pos_ps = nl.ndarray((Bq, Kc), dtype=acc, buffer=nl.psum)
    nisa.nc_matmul(dst=pos_ps, stationary=ones, moving=pos)
    rel = nl.ndarray((Bq, Kc), dtype=acc, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=rel, data=pos_ps, op0=nl.subtract, operand0=qpos)
    vis = nl.ndarray((Bq, Kc), dtype=acc, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=vis, data=rel, op0=nl.less_equal, operand0=float(hi))
    nisa.tensor_scalar(dst=rel, data=rel, op0=nl.greater, operand0=float(lo))
    nisa.tensor_tensor(dst=vis, data1=vis, data2=rel, op=nl.multiply)
    nisa.tensor_scalar(dst=vis, data=vis, op0=nl.multiply, operand0=HIDDEN, op1=nl.subtract, operand1=HIDDEN)
    nisa.tensor_tensor(dst=s, data1=s, data2=vis, op=nl.add)
    # online softmax update
    m_new = nl.ndarray((Bq, 1), dtype=acc, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=m_new, op=nl.maximum, data=s, axis=1, keepdims=True)
    nisa.tensor_tensor(dst=m_new, data1=m_new, data2=m, op=nl.maximum)
    corr = nl.ndarray((Bq, 1), dtype=acc, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=corr, data1=m, data2=m_new, op=nl.subtract)
    nisa.activation(dst=corr, op=nl.exp, data=corr)
    neg_m = nl.ndarray((Bq, 1), dtype=acc, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=neg_m, data=m_new, op0=nl.multiply, operand0=-1.0)
    rowsum = nl.ndarray((Bq, 1), dtype=acc, buffer=nl.sbuf)
    nisa.activation(
        dst=s,
        op=nl.exp,
        data=s,
        bias=neg_m,
        reduce_op=nl.add,
        reduce_res=rowsum,
        reduce_cmd=nisa.reduce_cmd.reset_reduce,
    )
    nisa.tensor_scalar(dst=l, data=l, op0=nl.multiply, operand0=corr)
    nisa.tensor_tensor(dst=l, data1=l, data2=rowsum, op=nl.add)
    nisa.tensor_scalar(dst=o_acc, data=o_acc, op0=nl.multiply, operand0=corr)
    nisa.tensor_copy(dst=m, src=m_new)
    pT_ps = nl.ndarray((P, Bq), dtype=acc, buffer=nl.psum)
    pv_ps = nl.ndarray((Bq, Dh), dtype=acc, buffer=nl.psum)
    for c in nl.static_range((Kc + P - 1) // P):
        kw = min(P, Kc - c * P)
        nisa.nc_transpose(dst=pT_ps[nl.ds(0, kw), :], data=s[:, nl.ds(c * P, kw)])  # keys onto partitions
        pT = nl.ndarray((kw, Bq), dtype=acc, buffer=nl.sbuf)
        nisa.tensor_copy(dst=pT, src=pT_ps[nl.ds(0, kw), :])
        vt = v(c * P, kw)
        nisa.nc_matmul(dst=pv_ps, stationary=pT, moving=vt)
        nisa.tensor_tensor(dst=o_acc, data1=o_acc, data2=pv_ps, op=nl.add)


def _source(state, qT, qpos, ones, KT, V, POS, kv, first, span, lo, hi, scale, acc):
    """All chunks of one source's window (rows ``first .. first+span-1``), 512 keys at a time."""
    fmax = nl.tile_size.psum_fmax
    for c in nl.static_range((span + fmax - 1) // fmax):
        size = min(fmax, span - c * fmax)
        row0 = first + c * fmax
        kT = nl.load(KT[kv, :, nl.ds(row0, size)], dtype=acc)
        pos = nl.load(POS[:, nl.ds(row0, size)], dtype=acc)

        def v(off, n, row0=row0):
            return nl.load(V[kv, nl.ds(row0 + off, n), :], dtype=acc)

        _chunk(state, qT, qpos, ones, kT, v, pos, lo, hi, scale, acc)


@nki.jit
def attention_kernel(
    QT, QPOS, KT, V, KPOS, KFT, VF, FPOS, EKT, EV, EPOS, scale, window, delta, fading, b, g, Bq, span_r, span_f
):
    """Returns O (batch·H, Tq, Dh) in QT's dtype and LSE (batch·H, Tq, 1) in the accumulation dtype."""
    BH, Dh, Tq = QT.shape
    Hkv = KT.shape[0] // b
    nq = Tq // Bq
    acc = acc_dtype(QT.dtype)
    O = nl.ndarray((BH, Tq, Dh), dtype=QT.dtype, buffer=nl.shared_hbm)
    LSE = nl.ndarray((BH, Tq, 1), dtype=acc, buffer=nl.shared_hbm)
    ones = nl.ndarray((1, Bq), dtype=acc, buffer=nl.sbuf)
    nisa.memset(dst=ones, value=1.0)
    for bb in nl.affine_range(b):
        for hk in nl.affine_range(Hkv):
            kv = bb * Hkv + hk
            for gi in nl.affine_range(g):
                head = kv * g + gi
                for n in nl.affine_range(nq):
                    rows = nl.ds(n * Bq, Bq)
                    qT = nl.load(QT[head, :, rows], dtype=acc)
                    qpos = nl.load(QPOS[rows, :], dtype=acc)
                    m = nl.ndarray((Bq, 1), dtype=acc, buffer=nl.sbuf)
                    nisa.memset(dst=m, value=-HIDDEN)
                    l = nl.zeros((Bq, 1), dtype=acc, buffer=nl.sbuf)
                    o_acc = nl.zeros((Bq, Dh), dtype=acc, buffer=nl.sbuf)
                    state = (m, l, o_acc)
                    _source(state, qT, qpos, ones, KT, V, KPOS, kv, n * Bq, span_r, -window, 0, scale, acc)
                    if KFT is not None:
                        _source(
                            state,
                            qT,
                            qpos,
                            ones,
                            KFT,
                            VF,
                            FPOS,
                            kv,
                            n * Bq,
                            span_f,
                            -delta - fading,
                            -delta,
                            scale,
                            acc,
                        )
                    if EKT is not None:
                        _source(
                            state,
                            qT,
                            qpos,
                            ones,
                            EKT[kv],
                            EV[kv],
                            EPOS[bb, n],
                            n,
                            0,
                            EKT.shape[-1],
                            FAR / 2,
                            -window,
                            scale,
                            acc,
                        )
                    inv = nl.ndarray((Bq, 1), dtype=acc, buffer=nl.sbuf)
                    nisa.activation(dst=inv, op=nl.reciprocal, data=l)
                    o = nl.ndarray((Bq, Dh), dtype=acc, buffer=nl.sbuf)
                    nisa.tensor_scalar(dst=o, data=o_acc, op0=nl.multiply, operand0=inv)
                    nl.store(O[head, rows, :], value=o)
                    lse = nl.ndarray((Bq, 1), dtype=acc, buffer=nl.sbuf)
                    nisa.activation(dst=lse, op=nl.log, data=l)
                    nisa.tensor_tensor(dst=lse, data1=lse, data2=m, op=nl.add)
                    nl.store(LSE[head, rows, :], value=lse)
    return O, LSE
