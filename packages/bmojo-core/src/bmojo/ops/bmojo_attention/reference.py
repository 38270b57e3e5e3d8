"""Blocked three-source attention in pure PyTorch.

Queries are cut into blocks of ``Bq`` tokens aligned to absolute positions. Block n only needs the
raw keys in (start-w, end], the fading keys in (start-δ-f, end-δ] (δ = ``fading_offset``, default w)
and one eidetic snapshot, so
each block's scores have ``(w+Bq-1) + (f+Bq-1) + M`` columns: memory is O(T·(w+f+M)), never
O(T²). Blocks are gathered with ``unfold`` (a view) and scored in batched matmuls; groups of
blocks are processed in turn so the score tensor stays under a fixed element budget.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bmojo._checks import compute_dtype
from bmojo.argcheck import TORCH, check_bmojo_attention_args, check_int
from bmojo.arith import attention_block_size, resolve_fading_offset
from bmojo.arith import eidetic_snapshot_count as eidetic_snapshot_count  # re-exported (its old home)

#: Upper bound on score-tensor elements materialised at once (per group of blocks, unfused path).
SCORE_BUDGET = 1 << 24
#: Upper bound on gathered key/value/mask elements per group of blocks (fused CPU path).
GATHER_BUDGET = 1 << 24
#: Use ATen's fused CPU attention kernel (online softmax, returns the log-sum-exp, has a
#: backward) per block when available; False forces the pure-einsum path (same results).
USE_FUSED_CPU_KERNEL = True


def _windows(seq, seq_start, first_pos, nb, Bq, span, q_end):
    """Per-block windows of `seq` (whose row 0 is at absolute position `seq_start`).

    Block n covers positions first_pos + n*Bq + [0, span). Rows outside `seq` are zero padding
    and marked invalid. Returns (b, nb, span, Hkv, Dh) windows, their positions and validity.
    """
    first = first_pos - seq_start
    length = (nb - 1) * Bq + span
    lo, hi = max(0, first), min(seq.shape[1], first + length)
    if hi > lo:  # slice the rows in range, then zero-pad (the slice's backward is seq-sized, not window-sized)
        padded = F.pad(seq[:, lo:hi], (0, 0, 0, 0, lo - first, first + length - hi))
    else:
        padded = seq.new_zeros(seq.shape[0], length, *seq.shape[2:])
    win = padded.unfold(1, span, Bq).permute(0, 1, 4, 2, 3)
    pos = first_pos + torch.arange(nb, device=seq.device)[:, None] * Bq + torch.arange(span, device=seq.device)
    valid = (pos >= max(seq_start, 0)) & (pos <= q_end)
    return win, pos, valid


def bmojo_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kf: torch.Tensor | None = None,
    vf: torch.Tensor | None = None,
    ek: torch.Tensor | None = None,
    ev: torch.Tensor | None = None,
    epos: torch.Tensor | None = None,
    *,
    q_start: int = 0,
    window: int,
    fading_window: int = 0,
    eidetic_chunk: int | None = None,
    scale: float | None = None,
    block_size: int = 64,
    fading_offset: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Three-source attention, one softmax over the union of visible keys.

    Query i (absolute position ``q_start + row``) sees
      * raw keys at positions j with i-w < j <= i,
      * fading keys at positions j with i-δ-f < j <= i-δ (δ = ``fading_offset``),
      * eidetic keys of its chunk's snapshot at positions j <= i-w.

    Args:
        q: (batch, T, H, Dh) queries (RoPE applied) at positions q_start … q_start+T-1.
        k, v: (batch, Tk, Hkv, Dh) raw keys/values at the Tk positions ending at the last query
            (a decode cache followed by the new tokens). Negative positions are never visible.
        kf, vf: (batch, Tf, Hkv, Dh) fading keys/values, also ending at the last query.
        ek, ev: (batch, S, M, Hkv, Dh) eidetic snapshots; epos (batch, S, M) their positions,
            -1 for an empty slot. Snapshot s serves queries i with
            i // eidetic_chunk == q_start // eidetic_chunk + s.
        window: w >= 1 (the query's own token is always visible).
        fading_window: f >= 0. scale: defaults to 1/sqrt(Dh). block_size: query block target.
        fading_offset: δ with 0 <= δ <= w; ``None`` (default) means δ = w, the published B'MOJO-F
            convention (spec §2.1). δ = 0 lets query i see its own fading token s_i.

    Returns:
        o: (batch, T, H, Dh) in q's dtype; lse: (batch, H, T) log-sum-exp of the scaled scores,
        in float32 (float64 for float64 inputs).
    """
    b, T, H, Dh, Hkv = check_bmojo_attention_args(
        TORCH, q, k, v, kf, vf, ek, ev, epos, q_start, window, fading_window, eidetic_chunk
    )
    check_int("block_size", block_size, minimum=1)
    g = H // Hkv
    w, f = window, fading_window
    d = resolve_fading_offset(fading_offset, w)
    use_fading = kf is not None and f > 0
    use_eidetic = ek is not None and ek.shape[2] > 0
    scale = 1.0 / math.sqrt(Dh) if scale is None else float(scale)
    cd = compute_dtype(q.dtype)
    out_dtype = q.dtype
    q, k, v = q.to(cd), k.to(cd), v.to(cd)

    if T == 1:
        kernel = _fused_kernel(q)
        if kernel is not None:
            kf_, vf_ = (kf.to(cd), vf.to(cd)) if use_fading else (None, None)
            ek_, ev_ = (ek.to(cd), ev.to(cd)) if use_eidetic else (None, None)
            o, lse = _decode_one(kernel, q, k, v, kf_, vf_, ek_, ev_, epos, q_start, w, f, d, scale)
            return o.to(out_dtype), lse

    Bq = attention_block_size(block_size, T, eidetic_chunk if use_eidetic else None)
    lead = q_start % Bq
    qs0 = q_start - lead  # absolute position of the first (padded) query row
    nb = -(-(lead + T) // Bq)
    q_end = q_start + T - 1
    qp = F.pad(q * scale, (0, 0, 0, 0, lead, nb * Bq - lead - T)).view(b, nb, Bq, Hkv, g, Dh)
    k_start = q_end + 1 - k.shape[1]  # absolute position of k's first row
    if use_fading:
        kf, vf = kf.to(cd), vf.to(cd)
        f_start = q_end + 1 - kf.shape[1]
    if use_eidetic:
        ek, ev = ek.to(cd), ev.to(cd)
        snap = ((qs0 + torch.arange(nb, device=q.device) * Bq) // eidetic_chunk - q_start // eidetic_chunk).clamp(
            0, ek.shape[1] - 1
        )

    def group_sources(n0, n1):
        """(keys, values, mask) of every source for blocks n0 … n1-1, gathered from the sequences
        directly (slicing precomputed windows per group would make autograd zero-fill a tensor
        of all windows for every group)."""
        n, first = n1 - n0, qs0 + n0 * Bq
        qpos = first + torch.arange(n * Bq, device=q.device).view(n, Bq)
        kr, kpos, kvalid = _windows(k, k_start, first - w + 1, n, Bq, w + Bq - 1, q_end)
        vr = _windows(v, k_start, first - w + 1, n, Bq, w + Bq - 1, q_end)[0]
        rel = kpos[:, None, :] - qpos[:, :, None]  # (n, Bq, span): key minus query position
        srcs = [(kr, vr, kvalid[:, None, :] & (rel <= 0) & (rel > -w))]
        if use_fading:
            kw, fpos, fvalid = _windows(kf, f_start, first - d - f + 1, n, Bq, f + Bq - 1, q_end)
            vw = _windows(vf, f_start, first - d - f + 1, n, Bq, f + Bq - 1, q_end)[0]
            rel = fpos[:, None, :] - qpos[:, :, None]
            srcs.append((kw, vw, fvalid[:, None, :] & (rel <= -d) & (rel > -d - f)))
        if use_eidetic:
            sn = snap[n0:n1]
            ep = epos[:, sn]  # (b, n, M)
            mask_e = (ep[:, :, None, :] >= 0) & (ep[:, :, None, :] <= qpos[None, :, :, None] - w)
            srcs.append((ek[:, sn], ev[:, sn], mask_e))
        return srcs

    width = (w + Bq - 1) + (f + Bq - 1 if use_fading else 0) + (ek.shape[2] if use_eidetic else 0)
    fused = _fused_kernel(qp)
    if fused is not None:
        # Per block: the gathered keys/values of every source and the additive mask (g·Bq rows).
        per_block = b * width * (2 * Hkv * Dh + H * Bq)
        group = max(1, GATHER_BUDGET // max(1, per_block))
    else:
        group = max(1, SCORE_BUDGET // max(1, b * H * Bq * width))
    outs, lses = [], []
    for n0 in range(0, nb, group):
        n1 = min(nb, n0 + group)
        srcs = group_sources(n0, n1)
        o, lse = _attend_fused(fused, qp[:, n0:n1], srcs) if fused is not None else _attend(qp[:, n0:n1], srcs)
        outs.append(o)
        lses.append(lse)
    o = torch.cat(outs, dim=1).reshape(b, nb * Bq, H, Dh)[:, lead : lead + T]
    lse = torch.cat(lses, dim=2).reshape(b, H, nb * Bq)[:, :, lead : lead + T]
    return o.to(out_dtype), lse


def _attend(qp, sources):
    """Softmax over the concatenated sources for a group of blocks.

    qp: (b, n, Bq, Hkv, g, Dh). Each source: keys/values (b, n, K, Hkv, Dh) and a mask
    (n, Bq, K) or (b, n, Bq, K). Rows with no visible key (only padding rows) give zeros.
    """
    scores = []
    for kk, _, mask in sources:
        s = torch.einsum("bnqhgd,bnkhd->bhgnqk", qp, kk)
        m = mask[None, None, None] if mask.ndim == 3 else mask[:, None, None]
        scores.append(s.masked_fill(~m, float("-inf")))
    s = torch.cat(scores, dim=-1)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    p = p / denom
    lse = (m + torch.log(denom)).squeeze(-1)  # (b, Hkv, g, n, Bq)
    o = 0
    col = 0
    for _, vv, _ in sources:
        width = vv.shape[2]
        o = o + torch.einsum("bhgnqk,bnkhd->bnqhgd", p[..., col : col + width], vv)
        col += width
    return o, lse.flatten(1, 2)  # (b, H, n, Bq), also when b or H is 0


def _fused_kernel(qp):
    """ATen's flash-style CPU attention (``_scaled_dot_product_flash_attention_for_cpu``) with a
    backward that also carries gradients through the log-sum-exp, when it applies: CPU tensors,
    float32/float64, and the ops present in this torch build."""
    if not USE_FUSED_CPU_KERNEL or qp.device.type != "cpu" or qp.dtype not in (torch.float32, torch.float64):
        return None
    if qp.numel() == 0:  # no rows (batch or H = 0): at H = 0 the kernel divides by zero (SIGFPE, torch 2.13)
        return None
    aten = torch.ops.aten
    if not hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        return None
    return _FusedAttention.apply


class _FusedAttention(torch.autograd.Function):
    """o, lse = softmax(q·kᵀ + bias)·v and its log-sum-exp (scale already folded into q).

    ATen's CPU flash kernel returns lse without a gradient; the lse term is added here:
    d lse_i / d s_ij = p_ij, so dq_i += g_i · Σ_j p_ij k_j (attention with values k) and
    dk_j += Σ_i p_ij g_i q_i (the value-gradient of a backward with grad_out = g·q).
    """

    @staticmethod
    def forward(ctx, q, k, v, attn_mask=None, scale=1.0):
        # ATen's CPU flash kernel reads the head axis as if it were contiguous (torch 2.13: a
        # stride-2 last axis gives a wrong o and lse); the T = 1 decode path passes views of the
        # caller's tensors, so any other layout is copied first.
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=attn_mask, scale=scale)
        ctx.save_for_backward(q, k, v, attn_mask, o, lse)
        ctx.scale = scale
        return o, lse

    @staticmethod
    def backward(ctx, g_o, g_lse):
        q, k, v, mask, o, lse = ctx.saved_tensors
        bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        kw = dict(attn_mask=mask, scale=ctx.scale)
        if g_o is None:
            g_o = torch.zeros_like(o)
        dq, dk, dv = bwd(g_o.contiguous(), q, k, v, o, lse, 0.0, False, **kw)
        if g_lse is not None and bool(g_lse.any()):
            g = g_lse[..., None].to(q.dtype)
            o_k, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, k, **kw)
            _, _, dk_lse = bwd((g * q).contiguous(), q, k, k, o_k, lse, 0.0, False, **kw)
            dq = dq + ctx.scale * g * o_k
            dk = dk + ctx.scale * dk_lse
        return dq, dk, dv, None, None


def _attend_fused(kernel, qp, sources):
    """Same contract as ``_attend``, computed by a fused kernel over each block.

    Every block is one batch entry of the kernel: its g·Bq query rows (all query heads sharing a
    kv head are stacked along the rows, so keys are never repeated for GQA) against the
    concatenated keys of all sources, with an additive mask (0 visible, -inf hidden). Softmax,
    log-sum-exp and the backward are the kernel's; rows with no visible key give zeros, lse 0.
    """
    b, n, Bq, Hkv, g, Dh = qp.shape
    cd = qp.dtype
    q = qp.permute(0, 1, 3, 4, 2, 5).reshape(b * n, Hkv, g * Bq, Dh)
    k = torch.cat([kk.permute(0, 1, 3, 2, 4) for kk, _, _ in sources], dim=3)
    v = torch.cat([vv.permute(0, 1, 3, 2, 4) for _, vv, _ in sources], dim=3)
    W = k.shape[3]
    k = k.reshape(b * n, Hkv, W, Dh)
    v = v.reshape(b * n, Hkv, W, Dh)
    masks = [(m if m.ndim == 4 else m[None]).expand(b, -1, -1, -1) for _, _, m in sources]
    visible = torch.cat(masks, dim=-1)  # (b, n, Bq, W)
    bias = torch.zeros(visible.shape, dtype=cd, device=qp.device).masked_fill_(~visible, float("-inf"))
    bias = bias[:, :, None].expand(b, n, g, Bq, W).reshape(b * n, 1, g * Bq, W)
    o, lse = kernel(q, k, v, bias, 1.0)
    o = o.view(b, n, Hkv, g, Bq, Dh).permute(0, 1, 4, 2, 3, 5)
    lse = lse.view(b, n, Hkv, g, Bq).permute(0, 2, 3, 1, 4).reshape(b, Hkv * g, n, Bq)
    return o, lse


def _decode_one(kernel, q, k, v, kf, vf, ek, ev, epos, i, w, f, d, scale):
    """One query at position i (decode): slice the visible rows instead of building blocks.

    Raw rows (i-w, i] and fading rows (i-d-f, i-d] are contiguous slices (positions < 0 cut
    off); only the eidetic slots need a mask. Same kernel, so the same numerics as blocks.
    """
    b, _, H, Dh = q.shape
    Hkv = k.shape[2]
    g = H // Hkv
    Tk = k.shape[1]
    lo = Tk - min(w, i + 1, Tk)  # raw rows at positions max(0, i-w+1) … i
    keys, vals = [k[:, lo:]], [v[:, lo:]]
    if kf is not None:
        Tf = kf.shape[1]
        end = Tf - d  # row of position i-d+1 (exclusive end of the fading rows)
        first = max(Tf - d - f, Tf - 1 - i, 0)  # positions > i-d-f, >= 0, inside kf
        if end > first:
            keys.append(kf[:, first:end])
            vals.append(vf[:, first:end])
    n_ctx = sum(t.shape[1] for t in keys)
    bias = None
    if ek is not None:
        keys.append(ek[:, 0])
        vals.append(ev[:, 0])
        pos = epos[:, 0]
        visible = torch.cat([pos.new_ones(b, n_ctx, dtype=torch.bool), (pos >= 0) & (pos <= i - w)], dim=1)
        bias = torch.zeros(visible.shape, dtype=q.dtype, device=q.device).masked_fill_(~visible, float("-inf"))
        bias = bias[:, None, None, :]
    kk = torch.cat(keys, dim=1).transpose(1, 2) if len(keys) > 1 else keys[0].transpose(1, 2)
    vv = torch.cat(vals, dim=1).transpose(1, 2) if len(vals) > 1 else vals[0].transpose(1, 2)
    qq = q.view(b, Hkv, g, Dh)  # the g query heads of a kv head become its g query rows
    o, lse = kernel(qq, kk, vv, bias, scale)
    return o.reshape(b, 1, H, Dh), lse.reshape(b, H, 1)
