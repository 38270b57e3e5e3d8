"""Launch configs as data (``TILES`` in each op's ``__init__.py``): every config of the GPU tables
gives the default's result on odd sizes, the override used by the tune benchmark takes effect,
and bad configs are refused with the argument's name."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from bmojo.ops.bmojo_attention.reference import eidetic_snapshot_count
from bmojo_triton.ops import bmojo_attention as att
from bmojo_triton.ops import ssm_scan as scan
from bmojo_triton.ops._triton_utils import TileTable
from triton_helpers import assert_close, leaves


def _distinct(table: TileTable) -> list:
    """Every distinct config of the GPU table, over all kernels."""
    seen = []
    for entries in table.gpu.values():
        for cfg in entries.values():
            if cfg not in seen:
                seen.append(cfg)
    return seen


def _run(fn, args, seed=0):
    """Outputs and the gradients of every floating input for a fixed cotangent."""
    a = leaves(args)
    outs = fn(*a)
    g = torch.Generator().manual_seed(seed)
    cots = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]
    torch.autograd.backward(list(outs), cots)
    return [o.detach() for o in outs] + [t.grad for t in a if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _attention_args(device, T=37, H=2, Hkv=1, Dh=24, M=5, chunk=13):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, T, H, Dh, generator=g)
    k, v, kf, vf = (torch.randn(1, T, Hkv, Dh, generator=g) for _ in range(4))
    S = eidetic_snapshot_count(0, T, chunk)
    ek, ev = (torch.randn(1, S, M, Hkv, Dh, generator=g) for _ in range(2))
    epos = torch.randint(-1, T, (1, S, M), generator=g)
    return [t.to(device) for t in (q, k, v, kf, vf, ek, ev, epos)]


def _attention_configs() -> list:
    """Every distinct config of the attention table, each with both dQ variants of the backward."""
    out = []
    for cfg in _distinct(att.TILES):
        for dq in att.DQ_VARIANTS:
            if replace(cfg, dq=dq) not in out:
                out.append(replace(cfg, dq=dq))
    return out


_DEFAULT_RESULTS: dict = {}


def _attention_fn(*a):
    return att.bmojo_attention(*a, window=11, fading_window=7, eidetic_chunk=13, fading_offset=5)


@pytest.mark.parametrize("cfg", _attention_configs(), ids=str)
def test_attention_table_configs_match_the_default(cfg, device):
    """T = 37, w = 11, f = 7, M = 5, chunk 13, head size 24 (padded to 32), GQA 2:1: no size is
    a multiple of any tile; every kernel (forward, dQ, banded and eidetic dK/dV) uses cfg's tiles
    and the backward cfg's dQ variant ("split": the dQ kernel; "atomic": dQ by atomic adds in
    both dK/dV kernels, which only ``bwd_dkdv``'s config may choose)."""
    args = _attention_args(device)
    if str(device) not in _DEFAULT_RESULTS:  # the device's default result, computed once
        _DEFAULT_RESULTS[str(device)] = _run(_attention_fn, args)
    default = _DEFAULT_RESULTS[str(device)]
    configs = dict.fromkeys(att.TILES.kernels, replace(cfg, dq="split"))
    with att.TILES.override(**{**configs, "bwd_dkdv": cfg}):
        assert att._tiles("fwd", args[0])[0]["BLOCK_N"] == cfg.block_n  # the override is in force
        tuned = _run(_attention_fn, args)
    names = ["o", "lse", "dq", "dk", "dv", "dkf", "dvf", "dek", "dev"]
    for name, a, b in zip(names, tuned, default):
        assert_close(f"{cfg}: {name}", a, b, torch.float32, grad=name.startswith("d"))


def _scan_args(device, T=45, H=3, P=20, N=12):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, T, H, P, generator=g)
    dt = torch.rand(1, T, H, generator=g) * 0.1 + 0.01
    A = -torch.rand(H, generator=g) - 0.5
    B, C = (torch.randn(1, T, 1, N, generator=g) * 0.5 for _ in range(2))
    D = torch.randn(H, generator=g)
    h0 = torch.randn(1, H, P, N, generator=g) * 0.1
    return [t.to(device) for t in (x, dt, A, B, C, D, h0)]


def test_scan_table_configs_match_the_default(device):
    """T = 45, P = 20, N = 12 (no multiples of the tiles), with D and an initial state: the GPU
    table's inference and training chunks and P tiles give the default's outputs and gradients."""
    args = _scan_args(device)
    default = _run(scan.ssm_scan, args)
    with torch.no_grad():
        default_inf = scan.ssm_scan(*args)
    for key, fwd in scan.TILES.gpu["fwd"].items():
        with scan.TILES.override(fwd=fwd), torch.no_grad():
            for name, a, b in zip(("y", "final"), scan.ssm_scan(*args), default_inf):
                assert_close(f"fwd {key} {fwd}: {name}", a, b, torch.float32)
    for key, train in scan.TILES.gpu["fwd_train"].items():
        bwd = scan.TILES.lookup("bwd", key)
        with scan.TILES.override(fwd_train=train, bwd=bwd):
            tuned = _run(scan.ssm_scan, args)
        for name, a, b in zip(("y", "final", "dx", "ddt", "dA", "dB", "dC", "dD", "dh0"), tuned, default):
            assert_close(f"train {key} {train}: {name}", a, b, torch.float32, grad=name.startswith("d"))


def test_lookup_prefers_the_most_specific_entry():
    t = TileTable(
        "demo",
        ("block_d", "itemsize"),
        gpu={"k": {(0, 0): att.AttnTiles(64, 64), (128, 0): att.AttnTiles(64, 32), (128, 2): att.AttnTiles(128, 32)}},
        interpreter={"k": att.AttnTiles(16, 16)},
        config_type=att.AttnTiles,
    )
    assert t.lookup("k", (128, 2)) == att.AttnTiles(128, 32)
    assert t.lookup("k", (128, 4)) == att.AttnTiles(64, 32)
    assert t.lookup("k", (64, 2)) == att.AttnTiles(64, 64)
    assert t.get("k", (128, 2), torch.device("cpu")) == att.AttnTiles(16, 16)  # interpreter


def test_the_defaults_are_the_untuned_first_choices():
    """The tables' defaults: the attention tiles chosen before they became data (64×64; 32 key
    rows at head size 128); the scan's inference chunk 32 × 16 P rows (the static report's
    spill-free shape), training chunks 32 with 8 backward warps and the states recomputed in the
    backward (as fla's and Mamba-2's scans do) on the GPU and the interpreter alike."""
    for kernel in att.TILES.kernels:
        assert att.TILES.lookup(kernel, (64, 2)) == att.AttnTiles(64, 64, 4, 3)
        assert att.TILES.lookup(kernel, (128, 4)) == att.AttnTiles(64, 32, 4, 3)
    assert scan.TILES.lookup("fwd", (64, 128)) == scan.ScanTiles(32, 16, 4, 3)
    assert scan.TILES.lookup("fwd_train", (64, 128)) == scan.ScanTiles(32, None, 4, 3, recompute=True)
    assert scan.TILES.interpreter["fwd_train"].recompute
    assert scan.TILES.lookup("bwd", (64, 128)) == scan.ScanTiles(None, None, 8, 3)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: att.AttnTiles(48, 64), "AttnTiles.block_m: expected a power of two >= 16, got 48"),
        (lambda: att.AttnTiles(64, 8), "AttnTiles.block_n: expected a power of two >= 16, got 8"),
        (lambda: att.AttnTiles(64, 64, num_warps=3), "AttnTiles.num_warps: expected one of"),
        (lambda: att.AttnTiles(64, 64, num_stages=0), "AttnTiles.num_stages: expected an int >= 1, got 0"),
        (lambda: att.AttnTiles(dq="atomics"), "AttnTiles.dq: expected one of ('split', 'atomic'), got 'atomics'"),
        (lambda: att.AttnTiles(interior=1), "AttnTiles.interior: expected a bool, got 1"),
        (lambda: scan.ScanTiles(block_l=24), "ScanTiles.block_l: expected a power of two >= 16, got 24"),
    ],
)
def test_bad_configs_are_refused(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_override_checks_names_and_types(device):
    with pytest.raises(ValueError, match="a kernel name from"):
        with att.TILES.override(fwdd=att.AttnTiles()):
            pass
    with pytest.raises(ValueError, match="expected a AttnTiles, got ScanTiles"):
        with att.TILES.override(fwd=scan.ScanTiles()):
            pass
    args = _scan_args(device)
    bad = scan.ScanTiles(block_l=32, block_p=None)  # the backward's chunk is the forward's
    with scan.TILES.override(bwd=bad), pytest.raises(ValueError, match="ssm_scan tiles bwd"):
        _run(scan.ssm_scan, args)


def test_only_the_dkdv_config_chooses_the_dq_variant(device):
    """dq="atomic" on another kernel's config is refused at launch, naming the kernel (it would
    otherwise be silently ignored)."""
    args = _attention_args(device, T=5, M=1, chunk=5)
    for kernel in ("fwd", "bwd_dq", "bwd_dkdv_eidetic"):
        cfg = replace(att.TILES.interpreter[kernel], dq="atomic")
        with (
            att.TILES.override(**{kernel: cfg}),
            pytest.raises(ValueError, match=f"tiles {kernel}.dq: expected 'split'"),
        ):
            _run(_attention_fn, [a.clone() for a in args])


class _Spy:
    """Counts the launches of a Triton kernel (``kernel[grid](...)``) and passes them on."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


def _backward_on_another_thread(outs):
    """Backpropagate on a fresh thread: like autograd's CUDA device thread, it starts without the
    caller's context variables (where a TILES override lives)."""
    errors = []

    def run():
        try:
            torch.autograd.backward(list(outs), [torch.ones_like(o) for o in outs])
        except BaseException as err:  # re-raised below, on the test's thread
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_the_backward_launches_with_the_override_of_its_forward(monkeypatch, device):
    """A TILES override in force when a call runs also configures that call's backward, wherever
    the backward runs: on CUDA autograd runs it on its own thread, where the override (a context
    variable) is not set — before this was handled, tune timed and tests checked the table's
    backward instead of the candidate's. Conversely an override around backward() alone does not
    apply. The scan's chunk-parallel kernel and attention's dQ kernel (absent under "atomic")
    show which backward ran."""
    chunk = _Spy(scan._ssd_bwd_chunk_kernel)
    monkeypatch.setattr(scan, "_ssd_bwd_chunk_kernel", chunk)
    par = replace(scan.TILES.get("bwd", (0, 0), device), parallel_grads=True)
    with scan.TILES.override(bwd=par):
        outs = scan.ssm_scan(*leaves(_scan_args(device)))
    _backward_on_another_thread(outs)
    assert chunk.launches == 1, "the forward's override did not reach the backward"
    outs = scan.ssm_scan(*leaves(_scan_args(device)))
    with scan.TILES.override(bwd=par):
        torch.autograd.backward(list(outs), [torch.ones_like(o) for o in outs])
    assert chunk.launches == 1, "an override around backward() alone changed the backward"

    dq_kernel = _Spy(att._attn_bwd_dq_kernel)
    monkeypatch.setattr(att, "_attn_bwd_dq_kernel", dq_kernel)
    args = _attention_args(device, T=5, M=1, chunk=5)
    atomic = replace(att.TILES.get("bwd_dkdv", (0, 0), device), dq="atomic")
    with att.TILES.override(bwd_dkdv=atomic):
        outs = _attention_fn(*leaves(args))
    _backward_on_another_thread(outs)
    assert dq_kernel.launches == 0, "the forward's dq='atomic' did not reach the backward"
    _backward_on_another_thread(_attention_fn(*leaves(args)))
    assert dq_kernel.launches == 1
