"""bmojo_attention on the NKI flash-style kernel: same contract as
``bmojo.ops.bmojo_attention.reference.bmojo_attention`` (including ``fading_offset`` δ).

The host side plans the tiles (:func:`plan`) and builds the kernel's HBM layouts (see
``kernel.py``): queries transposed per head in tiles of Bq <= 128 rows aligned to absolute
positions (Bq divides the eidetic chunk, so a tile sees one snapshot — core's block-size rule);
for each source, the key rows every tile needs, padded so tile n's window starts at row n·Bq; the
eidetic snapshot of each tile gathered per tile. ``block_size`` is accepted for the contract and
not used (the kernel picks Bq from the hardware limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from bmojo.argcheck import TORCH, check_bmojo_attention_args, check_int, fail
from bmojo.arith import attention_block_size, resolve_fading_offset

from bmojo_neuron.ops._tiles import FAR, MAX_POSITION, PMAX, ceil_div, kernel_dtype, launch, pad_axis, positions


@dataclass(frozen=True)
class Plan:
    """Query tiling and, per source, the padded key-row window (all positions absolute)."""

    Bq: int  # query rows per tile
    lead: int  # padding rows before the first query (tiles are aligned to multiples of Bq)
    nq: int  # query tiles
    span_r: int  # raw-key rows one tile reads
    start_r: int  # position of raw row 0
    span_f: int  # fading-key rows one tile reads (0: no fading source)
    start_f: int

    @property
    def rows_r(self) -> int:
        return (self.nq - 1) * self.Bq + self.span_r

    @property
    def rows_f(self) -> int:
        return (self.nq - 1) * self.Bq + self.span_f


def plan(T: int, q_start: int, Tk: int, Tf: int, w: int, f: int, d: int, chunk: int | None) -> Plan:
    """Tile n covers query positions ``qs0 + n·Bq ...``; it needs raw keys in
    ``(qs_n - w, qs_n + Bq - 1]`` and fading keys in ``(qs_n - d - f, qs_n + Bq - 1 - d]``. Keys
    exist only in the last Tk (Tf) positions up to the last query, so a window never needs more
    than min(w, Tk) (min(f, Tf)) rows before the tile."""
    Bq = attention_block_size(PMAX, T, chunk)
    lead = q_start % Bq
    qs0 = q_start - lead
    nq = ceil_div(lead + T, Bq)
    wr = min(w, Tk)
    span_f, start_f = 0, 0
    if f > 0 and Tf > 0:
        wf = min(f, Tf)
        span_f, start_f = wf + Bq - 1, qs0 - d - wf + 1
    return Plan(Bq, lead, nq, wr + Bq - 1, qs0 - wr + 1, span_f, start_f)


def window_rows(seq: torch.Tensor, seq_start: int, start: int, length: int) -> torch.Tensor:
    """Rows of ``seq`` (axis 1; row 0 at position ``seq_start``) for positions
    ``start .. start+length-1``, zeros where ``seq`` has no row."""
    first = start - seq_start
    lo, hi = max(0, first), min(seq.shape[1], first + length)
    if hi <= lo:
        return seq.new_zeros(seq.shape[0], length, *seq.shape[2:])
    return pad_axis(seq[:, lo:hi], 1, lo - first, first + length - hi)


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
    q_start: int = 0,
    window: int,
    fading_window: int = 0,
    eidetic_chunk: int | None = None,
    scale: float | None = None,
    block_size: int = 64,
    fading_offset: int | None = None,
):
    """Same contract as ``bmojo.ops.bmojo_attention.reference.bmojo_attention``."""
    from bmojo_neuron.ops.bmojo_attention.kernel import attention_kernel

    b, T, H, Dh, Hkv = check_bmojo_attention_args(
        TORCH, q, k, v, kf, vf, ek, ev, epos, q_start, window, fading_window, eidetic_chunk
    )
    check_int("block_size", block_size, minimum=1)
    d = resolve_fading_offset(fading_offset, window)
    if Dh > PMAX:
        fail("q", f"a head dim of at most {PMAX} on Neuron (q·kᵀ contracts over the partitions)", Dh)
    if q_start + T >= MAX_POSITION:
        fail("q_start", f"positions below {MAX_POSITION} (carried exactly as float32 in the kernel)", q_start)
    # No query sees before position 0, so any bound reaching past the first position is the same
    # bound: clamp w, f and δ to q_end + 1 (< 2**24). Unclamped, a huge window (core accepts any
    # w >= 1) would reach the FAR (-1e9) positions of the padding rows in the kernel's tests
    # ``rel > -w`` and ``rel > -δ-f``. Unchanged visibility: for every query i <= q_end,
    # i - min(w, q_end+1) < 0 exactly when i - w < 0 (raw keys from 0, eidetic slots none); the same
    # for i - δ - f; and δ >= q_end + 1 hides every fading key whether clamped or not.
    reach = q_start + T
    w, f, d = min(window, reach), min(fading_window, reach), min(d, reach)
    # a fading source with no rows, or whose keys no query reaches (δ > q_end), is not launched
    use_fading = kf is not None and f > 0 and kf.shape[1] > 0 and d < reach
    use_eidetic = ek is not None and ek.shape[2] > 0
    scale = 1.0 / math.sqrt(Dh) if scale is None else float(scale)
    cd = kernel_dtype("q", q)
    if b * H == 0:  # no rows to tile (NKI has no empty tiles): empty outputs, no launch
        return q.new_zeros(q.shape), q.new_zeros(b, H, T, dtype=cd)
    g = H // Hkv
    q_end = q_start + T - 1
    Tk, Tf = k.shape[1], kf.shape[1] if use_fading else 0
    pl = plan(T, q_start, Tk, Tf, w, f if use_fading else 0, d, eidetic_chunk if use_eidetic else None)
    Bq, nq = pl.Bq, pl.nq
    Tq = nq * Bq
    qs0 = q_start - pl.lead
    dev = q.device

    def kv_layout(kk, vv, start, rows, seq_start):
        kw = window_rows(kk.to(cd), seq_start, start, rows)  # (b, rows, Hkv, Dh)
        vw = window_rows(vv.to(cd), seq_start, start, rows)
        KT = kw.permute(0, 2, 3, 1).reshape(b * Hkv, Dh, rows).contiguous()
        V_ = vw.permute(0, 2, 1, 3).reshape(b * Hkv, rows, Dh).contiguous()
        return KT, V_, positions(start, rows, seq_start, q_end, dev).to(cd)

    QT = pad_axis(q.to(cd), 1, pl.lead, Tq - pl.lead - T).permute(0, 2, 3, 1).reshape(b * H, Dh, Tq).contiguous()
    QPOS = torch.arange(qs0, qs0 + Tq, device=dev, dtype=cd)[:, None]
    KT, V_, KPOS = kv_layout(k, v, pl.start_r, pl.rows_r, q_end + 1 - Tk)
    KFT = VF = FPOS = None
    if use_fading:
        KFT, VF, FPOS = kv_layout(kf, vf, pl.start_f, pl.rows_f, q_end + 1 - Tf)
    EKT = EV = EPOS = None
    if use_eidetic:
        snap = ((qs0 + torch.arange(nq, device=dev) * Bq) // eidetic_chunk - q_start // eidetic_chunk).clamp(
            0, ek.shape[1] - 1
        )
        M = ek.shape[2]
        EKT = ek.to(cd)[:, snap].permute(0, 3, 1, 4, 2).reshape(b * Hkv, nq, Dh, M).contiguous()
        EV = ev.to(cd)[:, snap].permute(0, 3, 1, 2, 4).reshape(b * Hkv, nq, M, Dh).contiguous()
        ep = epos[:, snap].to(torch.float64)
        EPOS = torch.where(ep >= 0, ep, torch.full_like(ep, FAR)).to(cd)[:, :, None, :].contiguous()
    O, LSE = launch(
        attention_kernel,
        QT,
        QPOS,
        KT,
        V_,
        KPOS,
        KFT,
        VF,
        FPOS,
        EKT,
        EV,
        EPOS,
        scale,
        w,
        d,
        f if use_fading else 0,
        b,
        g,
        Bq,
        pl.span_r,
        pl.span_f,
    )
    o = O.reshape(b, H, Tq, Dh)[:, :, pl.lead : pl.lead + T].permute(0, 2, 1, 3).to(q.dtype).contiguous()
    lse = LSE.reshape(b, H, Tq)[:, :, pl.lead : pl.lead + T].contiguous()
    return o, lse


__all__ = ["Plan", "bmojo_attention", "plan", "window_rows"]
