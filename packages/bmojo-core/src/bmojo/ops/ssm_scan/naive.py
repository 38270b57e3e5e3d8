"""Per-token selective-scan recurrence, written straight from spec §1. Test oracle only: slow."""

from __future__ import annotations

import torch


def ssm_scan_naive(x, dt, A, B, C, D=None, initial_state=None):
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    h = x.new_zeros(b, H, P, N) if initial_state is None else initial_state.clone()
    ys = []
    for t in range(T):
        for head in range(H):
            g = head // (H // G)
            a = torch.exp(dt[:, t, head] * A[head])  # (b,)
            h_new = a[:, None, None] * h[:, head] + (
                dt[:, t, head, None, None] * x[:, t, head, :, None] * B[:, t, g, None, :]
            )
            h = torch.cat([h[:, :head], h_new[:, None], h[:, head + 1 :]], dim=1)
        y_t = []
        for head in range(H):
            g = head // (H // G)
            y = (h[:, head] * C[:, t, g, None, :]).sum(-1)
            if D is not None:
                y = y + D[head] * x[:, t, head]
            y_t.append(y)
        ys.append(torch.stack(y_t, dim=1))
    return torch.stack(ys, dim=1), h
