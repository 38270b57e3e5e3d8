"""Chunked selective scan (Mamba-2 "SSD" form) in pure PyTorch.

Why chunked: a per-token loop costs T Python iterations of tiny kernels. Within a chunk of L
tokens the recurrence unrolls into a masked (L×L) matmul; across chunks only the (H, P, N) state
is carried, so the Python loop runs T/L times and memory grows as O(T·L), never O(T²).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bmojo._checks import compute_dtype
from bmojo.argcheck import TORCH, check_int, check_ssm_scan_args


def ssm_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan a selective SSM over a sequence.

    Args:
        x: (batch, T, H, P) inputs per head.
        dt: (batch, T, H) positive step sizes (softplus already applied).
        A: (H,) negative decay rates.
        B, C: (batch, T, G, N) input/output projections, G groups shared by H/G heads each.
        D: optional (H,) skip connection.
        initial_state: optional (batch, H, P, N) state before the first token.
        chunk_size: tokens per SSD chunk; any T works (the tail is padded with dt = 0,
            which leaves the state unchanged, so padding is exact).

    Returns:
        y: (batch, T, H, P) and the final state (batch, H, P, N).
    """
    b, H, P, G, N = check_ssm_scan_args(TORCH, x, dt, A, B, C, D, initial_state, step=False)
    check_int("chunk_size", chunk_size, minimum=1)
    T = x.shape[1]
    out_dtype = x.dtype
    cd = compute_dtype(x.dtype)
    x, dt, A, B, C = (t.to(cd) for t in (x, dt, A, B, C))
    L = min(chunk_size, max(T, 1))
    pad = (-T) % L
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    nc = (T + pad) // L
    rep = H // G
    # Chunked views with the heads split as (group, head in group): B and C are shared by the
    # heads of a group, so they are contracted per group and never repeated per head.
    xc = x.reshape(b, nc, L, G, rep, P)
    Bc = B.reshape(b, nc, L, G, N)
    Cc = C.reshape(b, nc, L, G, N)
    dtc = dt.reshape(b, nc, L, G, rep)

    cum = torch.cumsum((dt * A).reshape(b, nc, L, H).permute(0, 3, 1, 2), dim=-1)  # (b, H, nc, L) log-decay
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    seg = cum[..., :, None] - cum[..., None, :]  # log decay from token j to token i
    decay = torch.exp(seg.masked_fill(~causal, float("-inf"))).view(b, G, rep, nc, L, L)
    xdt = xc * dtc[..., None]  # (b, nc, L, G, rep, P)

    # 1. Within-chunk outputs: y_i = sum_{j<=i} (C_i·B_j) exp(cum_i - cum_j) dt_j x_j.
    cb = torch.einsum("bclgn,bcsgn->bgcls", Cc, Bc)  # one (L x L) product per group, not per head
    y = torch.einsum("bgrcls,bcsgrp->bclgrp", decay * cb[:, :, None], xdt)

    # 2. State contributed by each chunk alone (from a zero state), at the chunk's end.
    to_end = torch.exp(cum[..., -1:] - cum).permute(0, 2, 3, 1).reshape(b, nc, L, G, rep)
    chunk_states = torch.einsum("bclgn,bclgrp->bcgrpn", Bc, xdt * to_end[..., None]).reshape(b, nc, H, P, N)

    # 3. Short scan across chunks: the state entering each chunk.
    # unbind (one view per chunk) rather than indexing inside the loop: the backward of an index
    # materialises a zero tensor of the full size per chunk (quadratic in the chunk count).
    chunk_decay = torch.exp(cum[..., -1]).permute(0, 2, 1)[..., None, None].unbind(1)  # nc x (b, H, 1, 1)
    h = x.new_zeros(b, H, P, N) if initial_state is None else initial_state.to(cd)
    entering = []
    for decay_c, state_c in zip(chunk_decay, chunk_states.unbind(1)):
        entering.append(h)
        h = decay_c * h + state_c
    prev = torch.stack(entering, dim=1).view(b, nc, G, rep, P, N)

    # 4. Contribution of the entering state: y_i += exp(cum_i) C_i·h_prev.
    from_start = torch.exp(cum).permute(0, 2, 3, 1).reshape(b, nc, L, G, rep)
    y = y + torch.einsum("bclgn,bcgrpn->bclgrp", Cc, prev) * from_start[..., None]
    if D is not None:
        y = y + xc * D.to(cd).view(G, rep, 1)
    y = y.reshape(b, nc * L, H, P)[:, :T]
    return y.to(out_dtype), h.to(out_dtype)


def ssm_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step of the scan.

    Args: state (batch, H, P, N); x (batch, H, P); dt (batch, H); A (H,); B, C (batch, G, N);
    D optional (H,). Returns y (batch, H, P) and the new state.
    """
    _, H, _, G, _ = check_ssm_scan_args(TORCH, x, dt, A, B, C, D, state, step=True)
    rep = H // G
    Bh = B.repeat_interleave(rep, dim=1)  # (b, H, N)
    Ch = C.repeat_interleave(rep, dim=1)
    decay = torch.exp(dt * A)[..., None, None]
    new_state = decay * state + (dt[..., None] * x)[..., None] * Bh[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", new_state, Ch)
    if D is not None:
        y = y + x * D[:, None]
    return y, new_state
