"""Dense three-source attention: an explicit key set per query, built with Python loops straight
from spec §2. Test oracle only (O(T²) time)."""

from __future__ import annotations

import math

import torch


def bmojo_attention_naive(
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
    fading_offset=None,
):
    b, T, H, Dh = q.shape
    Hkv = k.shape[2]
    g = H // Hkv
    scale = 1.0 / math.sqrt(Dh) if scale is None else scale
    delta = window if fading_offset is None else fading_offset
    last = q_start + T - 1
    k_start = last + 1 - k.shape[1]
    f_start = last + 1 - kf.shape[1] if kf is not None else None
    out = torch.zeros_like(q)
    lse = torch.zeros(b, H, T, dtype=q.dtype)
    for bi in range(b):
        for row in range(T):
            i = q_start + row
            keys, vals = [], []
            for j in range(k.shape[1]):
                p = k_start + j
                if p >= 0 and i - window < p <= i:
                    keys.append(k[bi, j])
                    vals.append(v[bi, j])
            if kf is not None:
                for j in range(kf.shape[1]):
                    p = f_start + j
                    if p >= 0 and i - delta - fading_window < p <= i - delta:
                        keys.append(kf[bi, j])
                        vals.append(vf[bi, j])
            if ek is not None:
                s = i // eidetic_chunk - q_start // eidetic_chunk
                for m in range(ek.shape[2]):
                    p = int(epos[bi, s, m])
                    if p >= 0 and p <= i - window:
                        keys.append(ek[bi, s, m])
                        vals.append(ev[bi, s, m])
            K = torch.stack(keys).repeat_interleave(g, dim=1)  # (n, H, Dh)
            V = torch.stack(vals).repeat_interleave(g, dim=1)
            scores = torch.einsum("hd,nhd->hn", q[bi, row], K) * scale
            lse[bi, :, row] = torch.logsumexp(scores, dim=-1)
            out[bi, row] = torch.einsum("hn,nhd->hd", torch.softmax(scores, dim=-1), V)
    return out, lse
