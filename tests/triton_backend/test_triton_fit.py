"""The fit ladder (``TileTable.fitting``): where the GPU refuses a kernel's launch for lack of
shared memory (Triton's ``OutOfResources``, e.g. the scan's training backward at P = 64, N = 128
on a 99 KiB sm_86/sm_89 GPU), the launcher runs again with that kernel's config one rung smaller.

On a CPU the refusals are simulated: the GPU-table path of ``TileTable`` is switched on (the
kernels still run in the interpreter, with its math) and a kernel is wrapped so that its launch
raises ``OutOfResources`` above a size, as the driver does before a kernel runs. The real refusal
— a variant compiled for sm_86 that needs more than 99 KiB — is checked in
``test_triton_resources.py`` (``test_sm86_compile_steps_the_scan_backward_down``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from bmojo.ops.bmojo_attention import reference as att_ref
from bmojo.ops.ssm_scan import reference as ssm_ref
from bmojo_triton.ops import _triton_utils as U
from bmojo_triton.ops import bmojo_attention as att
from bmojo_triton.ops import ssm_scan as scan
from test_triton_ops import SCAN, SCAN_NAMES, scan_args
from triton.runtime.errors import OutOfResources
from triton_helpers import compare_fwd_bwd

CUDA = torch.device("cuda")  # a device object only: no GPU is touched


# ----- the ladder itself -----
def test_attention_ladder_rungs():
    """Stages to 2 first (no tile shape changes), then block_n and block_m halved to 16, then one
    stage, then the end; every rung keeps the other fields."""
    cfg = att.AttnTiles(64, 64, num_warps=8, num_stages=3, dq="atomic")
    rungs = []
    while cfg is not None:
        rungs.append((cfg.block_m, cfg.block_n, cfg.num_stages))
        assert (cfg.num_warps, cfg.dq) == (8, "atomic")
        cfg = cfg.smaller()
    assert rungs == [(64, 64, 3), (64, 64, 2), (64, 32, 2), (64, 16, 2), (32, 16, 2), (16, 16, 2), (16, 16, 1)]


def test_scan_ladder_rungs():
    """block_p, then block_l, then block_n (each where set), after the stages; the backward's
    block_l (None: the training forward's chunk) is left alone."""
    rungs = []
    cfg = scan.ScanTiles(block_l=None, block_p=64, num_warps=8, num_stages=2)
    while cfg is not None:
        rungs.append((cfg.block_p, cfg.block_l, cfg.num_stages))
        cfg = cfg.smaller()
    assert rungs == [(64, None, 2), (32, None, 2), (16, None, 2), (16, None, 1)]
    fwd = scan.ScanTiles(block_l=32, block_p=16, num_stages=3).smaller().smaller()
    assert (fwd.block_p, fwd.block_l, fwd.num_stages) == (16, 16, 2)


# ----- TileTable.fitting with a stand-in run -----
@dataclass(frozen=True)
class _Cfg:
    size: int
    num_stages: int = 1

    def smaller(self):
        return _Cfg(self.size // 2) if self.size > 16 else None


def _table():
    return U.TileTable(
        "toy", ("k",), gpu={"a": {(0,): _Cfg(64)}, "b": {(0,): _Cfg(64)}}, interpreter={"a": _Cfg(16), "b": _Cfg(16)},
        config_type=_Cfg,
    )  # fmt: skip


def _run(table, limit_a, calls):
    """A launcher of kernels a then b: a is refused above ``limit_a``; returns the sizes used."""

    def run():
        a, b = table.get("a", (0,), CUDA), table.get("b", (0,), CUDA)
        calls.append((a.size, b.size))
        with U.refused_as(table, "a", a):
            if a.size > limit_a:
                raise OutOfResources(a.size * 1024, limit_a * 1024, "shared memory")
        return a.size, b.size

    return run


def test_fitting_steps_the_refused_kernel_down_and_restarts_each_call():
    table, calls = _table(), []
    assert table.fitting(CUDA, _run(table, 16, calls)) == (16, 64)  # only a shrinks
    assert calls == [(64, 64), (32, 64), (16, 64)]
    calls.clear()
    assert table.fitting(CUDA, _run(table, 64, calls)) == (64, 64)  # a later call: the table again
    assert calls == [(64, 64)]
    assert table.get("a", (0,), CUDA) == _Cfg(64)  # nothing left behind


def test_fitting_errors_name_the_kernel():
    table = _table()
    with pytest.raises(U.TilesDoNotFit, match=r"toy tiles a: expected a launch config that fits this GPU") as err:
        table.fitting(CUDA, _run(table, 8, []))
    assert not err.value.overridden and "_Cfg(size=16" in str(err.value)
    with (
        table.override(a=_Cfg(32)),
        pytest.raises(U.TilesDoNotFit, match=r"toy tile override a: .*_Cfg\(size=32") as err,
    ):
        table.fitting(CUDA, _run(table, 16, []))  # an override is never changed
    assert err.value.overridden
    assert isinstance(err.value, ValueError)


def test_fitting_leaves_other_tables_and_the_interpreter_alone():
    table, other = _table(), _table()
    with pytest.raises(U.LaunchRefused):
        table.fitting(CUDA, _run(other, 16, []))  # other's refusal is other's fitting's business

    def deaf():  # a launcher that does not take the smaller config would loop forever
        with U.refused_as(table, "a", _Cfg(64)):
            raise OutOfResources(1, 0, "shared memory")

    with pytest.raises(RuntimeError, match=r"toy a: refused at _Cfg\(size=64, num_stages=1\) twice"):
        table.fitting(CUDA, deaf)
    calls: list = []
    cpu = torch.device("cpu")
    with pytest.raises(U.LaunchRefused):  # the interpreter never refuses; no ladder there
        table.fitting(cpu, _run(table, 8, calls))
    assert calls == [(64, 64)]


# ----- the real launchers, GPU tables on, refusals simulated -----
class _Refusing:
    """Stands in for a JIT kernel: a launch whose constexpr ``key`` exceeds ``limit`` (or whose
    num_stages exceeds ``stages``) raises OutOfResources before running, as the driver does;
    the others launch the real kernel. Records each launch's (key value, num_stages)."""

    def __init__(self, kernel, key, limit, stages=1):
        self.kernel, self.key, self.limit, self.stages, self.launches = kernel, key, limit, stages, []

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.launches.append((kw[self.key], kw["num_stages"]))
            if kw[self.key] > self.limit or kw["num_stages"] > self.stages:
                raise OutOfResources(kw[self.key] * 1024, self.limit * 1024, "shared memory")
            return self.kernel[grid](*args, **kw)

        return launch


@pytest.fixture
def gpu_tables(monkeypatch, device):
    """The GPU tables and the fit ladder, with the interpreter's math (CPU only)."""
    if device.type != "cpu":
        pytest.skip("simulated refusals: on a GPU the driver refuses for real")
    monkeypatch.setattr(U, "gpu_path", lambda d: True)


def test_attention_steps_down_where_the_gpu_refuses(gpu_tables, monkeypatch, device):
    """The forward refused above 32 key rows, the band dK/dV kernel above 16 and at more than one
    stage: both step down (stages first), the results still match the reference, and the dQ
    kernel keeps the table's tiles and runs once (each launch fits itself: a refusal re-runs
    nothing that already ran)."""
    fwd = _Refusing(att._attn_fwd_kernel, "BLOCK_N", 32, stages=3)
    band = _Refusing(att._attn_bwd_dkdv_band_kernel, "BLOCK_N", 16)
    dq = _Refusing(att._attn_bwd_dq_kernel, "BLOCK_N", 64, stages=3)
    monkeypatch.setattr(att, "_attn_fwd_kernel", fwd)
    monkeypatch.setattr(att, "_attn_bwd_dkdv_band_kernel", band)
    monkeypatch.setattr(att, "_attn_bwd_dq_kernel", dq)
    g = torch.Generator().manual_seed(3)
    q, k, v, kf, vf = (torch.randn(1, 21, 2, 16, generator=g, dtype=torch.float64) for _ in range(5))
    kw = dict(window=7, fading_window=5)
    names = ("q", "k", "v", "kf", "vf")
    compare_fwd_bwd("attention", att.bmojo_attention, att_ref.bmojo_attention, (q, k, v, kf, vf), kw,
                    torch.float64, names=names)  # fmt: skip
    assert fwd.launches == [(64, 3), (64, 2), (32, 2)]
    assert dq.launches == [(64, 3)]
    # stages, block_n 32, 16, block_m 32, 16 (still two stages), one stage: for the raw band,
    # then again for the fading band (every launch walks from the table)
    rungs = [(64, 3), (64, 2), (32, 2), (16, 2), (16, 2), (16, 2), (16, 1)]
    assert band.launches == rungs * 2


def test_attention_decode_steps_down_from_its_own_tile(gpu_tables, monkeypatch, device):
    """T <= 16 launches 16 query rows whatever the table says: the ladder starts from that tile
    (no rung halves a block_m that is not launched), and the override error names what ran."""
    fwd = _Refusing(att._attn_fwd_kernel, "BLOCK_M", 16, stages=1)
    monkeypatch.setattr(att, "_attn_fwd_kernel", fwd)
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 5, 2, 16, generator=g, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        o, lse = att.bmojo_attention(q, k, v, window=3)
        o_ref, lse_ref = att_ref.bmojo_attention(q, k, v, window=3)
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(lse, lse_ref)
    assert fwd.launches == [(16, 3), (16, 2), (16, 2), (16, 2), (16, 1)]  # stages, n 32, n 16, one stage
    with att.TILES.override(fwd=att.AttnTiles(64, 64)), torch.no_grad():
        with pytest.raises(U.TilesDoNotFit, match=r"tile override fwd: .*AttnTiles\(block_m=16, block_n=64"):
            att.bmojo_attention(q, k, v, window=3)


def test_scan_backward_steps_down_where_the_gpu_refuses(gpu_tables, monkeypatch, device):
    """The training backward (all of P per program on the GPU table) refused above 16 P rows: it
    splits P, and the gradients match the reference — through autograd and through the explicit
    backward of core's custom op."""
    bwd = _Refusing(scan._ssd_bwd_kernel, "BLOCK_P", 16, stages=3)
    monkeypatch.setattr(scan, "_ssd_bwd_kernel", bwd)
    args = scan_args(device, torch.float64, **SCAN["ragged_T37_P24_N20_G2"])
    compare_fwd_bwd("scan", scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float64, names=SCAN_NAMES)
    assert bwd.launches == [(32, 3), (32, 2), (16, 2)]  # P = 24: one 32-row tile, then two of 16
    bwd.launches.clear()
    leaves = [a.detach().requires_grad_(a.is_floating_point()) if a is not None else None for a in args]
    y, final = ssm_ref.ssm_scan(*leaves)
    cots = [torch.randn_like(y), torch.randn_like(final)]
    ref = torch.autograd.grad((y, final), [t for t in leaves if t is not None and t.requires_grad], cots)
    got = scan.ssm_scan_backward(cots, [True] * 7, *args)
    assert bwd.launches == [(32, 3), (32, 2), (16, 2)]
    for r, o in zip(ref, [t for t in got if t is not None]):
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9)


def test_scan_inference_and_kept_states_step_down(gpu_tables, monkeypatch, device):
    """The inference forward refused at 3 stages steps to 2. A training call that keeps its states
    (``recompute_states(False)``) whose forward is refused above 16-token chunks steps its chunk
    down, and the backward walks the chunk the forward took (not the table's 32): gradients match
    the reference."""
    fwd = _Refusing(scan._ssd_fwd_kernel, "BLOCK_L", 32, stages=2)
    monkeypatch.setattr(scan, "_ssd_fwd_kernel", fwd)
    args = scan_args(device, torch.float64, **SCAN["ragged_T37_P24_N20_G2"])
    with torch.no_grad():
        y, final = scan.ssm_scan(*args)
    y_ref, final_ref = ssm_ref.ssm_scan(*args)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(final, final_ref)
    assert fwd.launches == [(32, 3), (32, 2)]  # the fwd entry: 32-token chunks, 16 P rows
    fwd.limit, fwd.launches = 16, []
    bwd = _Refusing(scan._ssd_bwd_kernel, "BLOCK_L", 64, stages=3)
    monkeypatch.setattr(scan, "_ssd_bwd_kernel", bwd)
    with scan.recompute_states(False):
        compare_fwd_bwd("kept", scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float64, names=SCAN_NAMES)
    # fwd_train (32-token chunks, all 32 P rows): stages, P 16, chunk 16
    assert fwd.launches == [(32, 3), (32, 2), (32, 2), (16, 2)]
    assert [chunk for chunk, _ in bwd.launches] == [16]
