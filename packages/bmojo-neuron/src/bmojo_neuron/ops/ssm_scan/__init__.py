"""ssm_scan / ssm_step on the NKI scan kernel: same contract as ``bmojo.ops.ssm_scan.reference``.

The host side (this module) is the only place that changes layouts: (batch, T, H, P) → one
channel per partition, channels padded to a multiple of 128 with zeros (A = 0, x = 0: the padded
channels stay zero and are dropped), B/C gathered per channel tile with a one-hot selector (see
``kernel.py``). ``chunk_size`` is accepted for the contract and not used: the kernel scans token by
token along the free axis (exact, no chunking). ``ssm_step`` is the same kernel with one time
column. Extra, beyond the contract: :func:`ssm_scan_fused` applies ``softplus(dt + dt_bias)``
inside the kernel (Mamba-2's dt path).
"""

from __future__ import annotations

import torch
from bmojo.argcheck import TORCH, check_array, check_int, check_same, check_ssm_scan_args

from bmojo_neuron.ops._tiles import PMAX, kernel_dtype, launch, pad_axis, round_up


def scan_layout(x, dt, A, B, C, D, initial_state, dt_bias=None):
    """(batch, T, H, P) inputs → the kernel's HBM arrays (see ``kernel.py``), in compute dtype."""
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    rep = H // G
    cd = kernel_dtype("x", x)
    n_ch = b * H * P
    Cp = round_up(n_ch)
    pad = Cp - n_ch
    X = pad_axis(x.to(cd).permute(0, 2, 3, 1).reshape(n_ch, T), 0, 0, pad)
    DT = pad_axis(dt.to(cd).permute(0, 2, 1)[:, :, None, :].expand(b, H, P, T).reshape(n_ch, T), 0, 0, pad)

    def per_channel(v):  # (H,) → (Cp, 1)
        return pad_axis(v.to(cd)[None, :, None].expand(b, H, P).reshape(n_ch, 1), 0, 0, pad)

    A_ = per_channel(A)
    D_ = per_channel(D if D is not None else torch.zeros_like(A))
    DTB = per_channel(dt_bias if dt_bias is not None else torch.zeros_like(A))
    h0 = initial_state if initial_state is not None else x.new_zeros(b, H, P, N)
    H0 = pad_axis(h0.to(cd).reshape(n_ch, N), 0, 0, pad)
    # (batch, group) row of each channel, and the rows each 128-channel tile touches.
    ch = torch.arange(Cp, device=x.device)
    bg = torch.where(ch < n_ch, (ch // (H * P)) * G + (ch % (H * P)) // (P * rep), -1)
    n_ct = Cp // PMAX
    tiles = bg.view(n_ct, PMAX)
    first = tiles[:, 0]  # every tile starts with a real channel
    K = int((tiles.max(dim=1).values - first).max()) + 1
    rows = (first[:, None] + torch.arange(K, device=x.device)).clamp(max=b * G - 1)  # (n_ct, K)
    SEL = (tiles[:, None, :] == (first[:, None] + torch.arange(K, device=x.device))[:, :, None]).to(cd)
    Bf = B.to(cd).permute(3, 0, 2, 1).reshape(N, b * G, T)  # (N, batch·group, T)
    Cf = C.to(cd).permute(3, 0, 2, 1).reshape(N, b * G, T)
    BT = Bf[:, rows].permute(1, 0, 2, 3).contiguous()  # (n_ct, N, K, T)
    CT = Cf[:, rows].permute(1, 0, 2, 3).contiguous()
    return X, DT, A_, D_, DTB, H0, BT, CT, SEL


def _run(x, dt, A, B, C, D, initial_state, dt_bias, dt_softplus):
    from bmojo_neuron.ops.ssm_scan.kernel import ssm_scan_kernel

    b, T, H, P = x.shape
    N = B.shape[-1]
    if b * H * P == 0 or N == 0:
        # Nothing to scan (no channels, or no state: y = D·x alone); NKI has no empty tiles, so the
        # host answers without a launch, in the kernel's compute dtype as the kernel would.
        cd = kernel_dtype("x", x)
        y = x.to(cd) * D.to(cd)[:, None] if D is not None else x.new_zeros(x.shape, dtype=cd)
        return y.to(x.dtype), x.new_zeros(b, H, P, N)
    arrays = scan_layout(x, dt, A, B, C, D, initial_state, dt_bias)
    Y, HT = launch(ssm_scan_kernel, *arrays, bool(dt_softplus))
    n_ch = b * H * P
    y = Y[:n_ch].reshape(b, H, P, T).permute(0, 3, 1, 2)
    h = HT[:n_ch].reshape(b, H, P, N)
    return y.to(x.dtype).contiguous(), h.to(x.dtype).contiguous()


def ssm_scan(x, dt, A, B, C, D=None, initial_state=None, *, chunk_size: int = 64):
    """Same contract as ``bmojo.ops.ssm_scan.reference.ssm_scan`` (``chunk_size`` checked, otherwise
    unused, see above)."""
    check_ssm_scan_args(TORCH, x, dt, A, B, C, D, initial_state, step=False)
    check_int("chunk_size", chunk_size, minimum=1)
    return _run(x, dt, A, B, C, D, initial_state, None, False)


def ssm_scan_fused(x, dt, A, B, C, D=None, initial_state=None, *, dt_bias=None):
    """``ssm_scan`` with ``dt = softplus(dt + dt_bias)`` computed inside the kernel; dt_bias (H,),
    checked as core checks ``D`` (shape (H,), x's dtype and device: never broadcast or cast)."""
    H = check_ssm_scan_args(TORCH, x, dt, A, B, C, D, initial_state, step=False).H
    if dt_bias is not None:
        check_array(TORCH, "dt_bias", dt_bias, shape=(H,))
        check_same(TORCH, "dt_bias", dt_bias, "x", x)
    return _run(x, dt, A, B, C, D, initial_state, dt_bias, True)


def ssm_step(state, x, dt, A, B, C, D=None):
    """Same contract as ``bmojo.ops.ssm_scan.reference.ssm_step``: the scan kernel over one step."""
    check_ssm_scan_args(TORCH, x, dt, A, B, C, D, state, step=True)
    y, h = _run(x[:, None], dt[:, None], A, B[:, None], C[:, None], D, state, None, False)
    return y[:, 0].contiguous(), h


__all__ = ["scan_layout", "ssm_scan", "ssm_scan_fused", "ssm_step"]
