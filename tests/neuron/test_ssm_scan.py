"""ssm_scan / ssm_step kernels (through the emulator) against core's reference and naive oracle,
at tile boundaries: several 128-channel tiles with different (batch, group) rows, sequence tiles
of 512 with and without a ragged tail, T = 1, the fused softplus(dt + bias)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bmojo.ops.ssm_scan.naive import ssm_scan_naive
from bmojo.ops.ssm_scan.reference import ssm_scan as ref_scan
from bmojo.ops.ssm_scan.reference import ssm_step as ref_step
from bmojo_neuron.ops.ssm_scan import scan_layout, ssm_scan, ssm_scan_fused, ssm_step

from .helpers import assert_close


def inputs(b, T, H, P, G, N, dtype, D=True, state=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)

    return (
        r(b, T, H, P),
        (torch.rand(b, T, H, generator=g, dtype=torch.float64) * 0.3 + 0.01).to(dtype),
        -(torch.rand(H, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype),
        r(b, T, G, N, scale=0.5),
        r(b, T, G, N, scale=0.5),
        r(H) if D else None,
        r(b, H, P, N, scale=0.5) if state else None,
    )


SHAPES = [
    (2, 32, 4, 8, 2, 8),  # one channel tile (64 channels, padded to 128)
    (3, 37, 6, 16, 3, 4),  # 288 channels: three tiles, a tile spanning two batches
    (1, 512, 2, 64, 1, 4),  # exactly one full sequence tile
    (1, 1100, 2, 64, 2, 2),  # two full sequence tiles + a ragged tail of 76
    (2, 1, 3, 5, 3, 4),  # T = 1, P not dividing 128, one head per group
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}-T{}-H{}-P{}-G{}-N{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scan_matches_reference(shape, dtype):
    args = inputs(*shape, dtype)
    y, h = ssm_scan(*args)
    y_ref, h_ref = ref_scan(*args)
    assert_close(y, y_ref, dtype, "y")
    assert_close(h, h_ref, dtype, "final state")


def test_scan_matches_naive_oracle_without_D_and_state():
    args = inputs(2, 40, 4, 8, 2, 8, torch.float64, D=False, state=False)
    y, h = ssm_scan(*args)
    y_n, h_n = ssm_scan_naive(*args)
    assert_close(y, y_n, torch.float64, "y")
    assert_close(h, h_n, torch.float64, "state")


def test_bfloat16_is_widened_like_the_reference():
    args = inputs(2, 20, 4, 8, 2, 8, torch.bfloat16)
    y, h = ssm_scan(*args)
    y_ref, _h_ref = ref_scan(*args)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.bfloat16
    assert_close(y, y_ref, torch.bfloat16, "y")


def test_fused_softplus_dt_bias():
    x, dt, A, B, C, D, h0 = inputs(2, 600, 4, 8, 2, 8, torch.float64)
    raw = torch.randn_like(dt)
    bias = torch.randn(4, dtype=torch.float64)
    y, h = ssm_scan_fused(x, raw, A, B, C, D, h0, dt_bias=bias)
    y_ref, h_ref = ref_scan(x, F.softplus(raw + bias), A, B, C, D, h0)
    assert_close(y, y_ref, torch.float64, "y")
    assert_close(h, h_ref, torch.float64, "state")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_step_matches_reference(dtype):
    x, dt, A, B, C, D, h0 = inputs(3, 1, 6, 16, 3, 8, dtype)
    y, h = ssm_step(h0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    y_ref, h_ref = ref_step(h0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    assert_close(y, y_ref, dtype, "y")
    assert_close(h, h_ref, dtype, "state")


def test_layout_selector_rebuilds_each_channels_B():
    """Host side: SEL.T @ BT must give every (real) channel the B row of its (batch, group)."""
    b, T, H, P, G, N = 3, 5, 6, 16, 3, 4
    x, dt, A, B, C, D, h0 = inputs(b, T, H, P, G, N, torch.float64)
    X, _DT, A_, _D, _DTB, _H0, BT, _CT, SEL = scan_layout(x, dt, A, B, C, D, h0)
    assert X.shape[0] % 128 == 0 and SEL.shape[2] == 128
    per_channel = torch.einsum("ikc,inkt->icnt", SEL, BT).reshape(-1, N, T)[: b * H * P]
    want = B.permute(0, 2, 3, 1)[:, :, None].repeat_interleave(H // G, 1).expand(b, G * (H // G), P, N, T)
    assert torch.equal(per_channel, want.reshape(b * H * P, N, T))
    assert torch.equal(X[b * H * P :], torch.zeros_like(X[b * H * P :]))  # zero padding channels
    assert torch.equal(A_[: H * P, 0], A.repeat_interleave(P))


def test_bad_input_is_refused_with_the_argument_name():
    x, dt, A, B, C, D, h0 = inputs(2, 8, 4, 8, 2, 8, torch.float32)
    with pytest.raises(ValueError, match=r"^dt: expected shape"):
        ssm_scan(x, dt[:, :-1], A, B, C, D, h0)
    for chunk in (0, 2.5, True):  # unused by the kernel, but refused as the reference refuses it
        with pytest.raises(ValueError, match=r"^chunk_size: expected an int"):
            ssm_scan(x, dt, A, B, C, D, h0, chunk_size=chunk)


@pytest.mark.parametrize(
    "bias, message",
    [
        (torch.tensor([0.3]), r"^dt_bias: expected shape \(4,\) \(axis 0 = 4\), got shape \(1,\)$"),
        (torch.tensor(0.3), r"^dt_bias: expected a 1-d tensor, got shape \(\) \(0-d\)$"),
        (torch.zeros(4, 1), r"^dt_bias: expected a 1-d tensor, got shape \(4, 1\) \(2-d\)$"),
        (torch.zeros(8), r"^dt_bias: expected shape \(4,\) \(axis 0 = 4\), got shape \(8,\)$"),
        (
            torch.zeros(4, dtype=torch.float64),
            r"^dt_bias: expected dtype torch.float32 \(same as x\), got torch.float64$",
        ),
        (torch.zeros(4, dtype=torch.int64), r"^dt_bias: expected a floating-point tensor, got torch.int64$"),
    ],
    ids=["shape1", "scalar", "H_by_1", "2H", "float64", "int64"],
)
def test_fused_dt_bias_is_checked_like_D(bias, message):
    """dt_bias is (H,) in x's dtype, as core checks D: never broadcast or cast silently."""
    x, dt, A, B, C, D, h0 = inputs(1, 4, 4, 2, 2, 2, torch.float32)
    with pytest.raises(ValueError, match=message):
        ssm_scan_fused(x, dt, A, B, C, D, h0, dt_bias=bias)
