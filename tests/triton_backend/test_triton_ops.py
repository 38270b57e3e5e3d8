"""ssm_scan / ssm_step, causal_conv1d / step, the norms and innovation_scores at these kernels'
tile edges (chunk tile 16 on the interpreter, 64 on a GPU; P, N and channels not powers of two)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from bmojo.ops.causal_conv1d import reference as conv_ref
from bmojo.ops.eidetic import reference as eid_ref
from bmojo.ops.rmsnorm import reference as norm_ref
from bmojo.ops.ssm_scan import reference as ssm_ref
from bmojo_triton.ops import causal_conv1d as conv
from bmojo_triton.ops import eidetic, rmsnorm, ssm_scan
from triton_helpers import assert_close, compare_fwd_bwd


def rn(device, dtype, *shape, s=1.0, g=None):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * s).to(device, dtype)


def scan_args(device, dtype, b, T, H, P, G, N, D=True, h0=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        rn(device, dtype, b, T, H, P, g=g),
        (torch.rand(b, T, H, generator=g, dtype=torch.float64) * 0.3 + 0.01).to(device, dtype),
        (-torch.rand(H, generator=g, dtype=torch.float64) * 1.5 - 0.5).to(device, dtype),
        rn(device, dtype, b, T, G, N, s=0.5, g=g),
        rn(device, dtype, b, T, G, N, s=0.5, g=g),
        rn(device, dtype, H, g=g) if D else None,
        rn(device, dtype, b, H, P, N, s=0.5, g=g) if h0 else None,
    )


SCAN = {
    "ragged_T37_P24_N20_G2": dict(b=2, T=37, H=4, P=24, G=2, N=20),
    "T150_spans_gpu_chunks": dict(b=1, T=150, H=2, P=16, G=1, N=16, D=False, h0=False),
    "T1": dict(b=1, T=1, H=2, P=8, G=1, N=8),
    "P64_N128": dict(b=1, T=20, H=2, P=64, G=1, N=128),
}


SCAN_NAMES = ("x", "dt", "A", "B", "C", "D", "initial_state")


@pytest.mark.parametrize("name", list(SCAN))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ssm_scan_forward_and_gradients(name, dtype, device):
    """y and the final state, and the Triton backward's gradients of every input through both."""
    args = scan_args(device, dtype, **SCAN[name])
    kw = dict(chunk_size=16)
    compare_fwd_bwd(name, ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, kw, dtype, names=SCAN_NAMES)


def test_ssm_scan_gradients_float64(device):
    args = scan_args(device, torch.float64, b=2, T=37, H=4, P=24, G=2, N=20)
    compare_fwd_bwd("f64", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float64, names=SCAN_NAMES)


@pytest.mark.parametrize(
    "name, block_n",
    [("ragged_T37_P24_N20_G2", None), ("ragged_T37_P24_N20_G2", 16), ("T150_spans_gpu_chunks", None), ("T1", 16)],
)
def test_ssm_scan_parallel_out_matches_reference_and_the_sequential_pass(name, block_n, device):
    """``ScanTiles.parallel_out``: y from the chunk-parallel kernel reading the stored states, for
    inference and for training (gradients through the Triton backward), against the reference and
    the sequential pass: bit-equal on the interpreter (same chunk, same float operations) without an
    N split, within rounding with one and on a GPU (separately compiled kernels). ``block_n``: the
    state pass also split over N (N = 20: a full and a ragged 16-column tile; N = 8: one padded
    tile)."""
    args = scan_args(device, torch.float32, **SCAN[name])
    fwd, train = (ssm_scan.TILES.get(k, (0, 0), args[0].device) for k in ("fwd", "fwd_train"))
    opts = dict(parallel_out=True, block_n=block_n)
    par = dict(fwd=replace(fwd, **opts), fwd_train=replace(train, **opts))
    with torch.no_grad():
        seq_inf = ssm_scan.ssm_scan(*args)
        with ssm_scan.TILES.override(**par):
            par_inf = ssm_scan.ssm_scan(*args)
    # Bit-equal only where both passes multiply tiles of the same shapes: an N split gives the
    # state pass other matmul shapes, whose float32 summation order under the interpreter is
    # numpy/BLAS's choice for this CPU (it held on one CI machine and not on another).
    same_tiles = device.type != "cuda" and block_n is None
    for what, a, b in zip(("y", "final"), par_inf, seq_inf):
        if not same_tiles:
            assert_close(f"{name}: inference {what}, parallel_out vs sequential", a, b, torch.float32)
        else:
            assert torch.equal(a, b), f"{name}: inference {what} differs between parallel_out and the sequential pass"
    with ssm_scan.TILES.override(**par):
        compare_fwd_bwd(
            f"parallel_out {name}", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float32, names=SCAN_NAMES
        )


@pytest.mark.parametrize(
    "name, dtype",
    [("ragged_T37_P24_N20_G2", torch.float32), ("T150_spans_gpu_chunks", torch.float32), ("P64_N128", torch.float64)],
)
def test_ssm_scan_backward_split_over_head_dim(name, dtype, device):
    """The backward with P split over programs (``ScanTiles.block_p`` on ``bwd``): partial dB, dC,
    d(dt), dA, dD summed by the launcher. 16-row tiles: P = 24 is a full and a ragged tile, P = 16
    one tile, P = 64 four; with GQA 2:1, with and without D and the initial state."""
    args = scan_args(device, dtype, **SCAN[name])
    with ssm_scan.TILES.override(bwd=ssm_scan.ScanTiles(block_l=None, block_p=16)):
        compare_fwd_bwd(f"P split {name}", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, dtype, names=SCAN_NAMES)


def _scan_grads(args, **bwd):
    """Every input's gradient through the Triton backward at the ``bwd`` tiles (fixed cotangents)."""
    leaves = [a.detach().clone().requires_grad_(True) if a is not None else None for a in args]
    base = ssm_scan.TILES.get("bwd", (0, 0), args[0].device)
    with ssm_scan.TILES.override(bwd=replace(base, **bwd)):
        y, final = ssm_scan.ssm_scan(*leaves)
    g = torch.Generator().manual_seed(1)
    cots = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in (y, final)]
    torch.autograd.backward([y, final], cots)
    return {n: a.grad for n, a in zip(SCAN_NAMES, leaves) if a is not None}


@pytest.mark.parametrize(
    "name, dtype, block_p, block_n",
    [
        ("ragged_T37_P24_N20_G2", torch.float32, None, None),
        ("ragged_T37_P24_N20_G2", torch.float32, 16, 16),
        ("T150_spans_gpu_chunks", torch.float32, None, None),
        ("T1", torch.float32, None, 16),
        ("P64_N128", torch.float64, 16, 32),
        ("ragged_T37_P24_N20_G2", torch.bfloat16, None, None),
    ],
)
def test_ssm_scan_chunk_parallel_backward(name, dtype, block_p, block_n, device):
    """``ScanTiles.parallel_grads``: the state gradient walked alone and stored per chunk, then
    every chunk's gradients at once (partial dA, dD per chunk). Against the reference, and against
    the sequential backward: on the interpreter without an N split bit-equal for the per-token and per-state gradients
    (the same float operations per chunk; a GPU compiles the two kernels separately, so there within
    rounding), within rounding for dA and dD (summed over chunks in another order).
    T = 37 and 150 end in ragged chunks, T = 1 is a single partial chunk; with the P split and the
    state-gradient pass's N split (``block_n``: N = 20 in a full and a ragged tile, 128 in four)."""
    args = scan_args(device, dtype, **SCAN[name])
    base = ssm_scan.TILES.get("bwd", (0, 0), args[0].device)
    with ssm_scan.TILES.override(bwd=replace(base, block_p=block_p, parallel_grads=True, block_n=block_n)):
        compare_fwd_bwd(
            f"parallel_grads {name}", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, dtype, names=SCAN_NAMES
        )
    seq = _scan_grads(args, block_p=block_p)
    par = _scan_grads(args, block_p=block_p, parallel_grads=True, block_n=block_n)
    same_tiles = device.type != "cuda" and block_n is None  # as in the parallel_out test above
    for n in seq:
        if n in ("A", "D") or not same_tiles:
            assert_close(f"{name}: d{n} parallel vs sequential", par[n], seq[n], dtype, grad=True)
        else:
            assert torch.equal(par[n], seq[n]), f"{name}: d{n} differs between the parallel and sequential backward"


def _saved_shapes(fn, args):
    """The shapes of the tensors autograd saves while ``fn(*args)`` runs (its forward)."""
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return shapes


@pytest.mark.parametrize(
    "name, train_opts, fwd_chunk",
    [
        ("ragged_T37_P24_N20_G2", {}, None),
        ("T150_spans_gpu_chunks", {}, None),
        ("T1", {}, None),
        ("ragged_T37_P24_N20_G2", dict(parallel_out=True, block_n=16, block_p=16), None),
        ("T150_spans_gpu_chunks", {}, 32),
    ],
)
def test_ssm_scan_recompute_states(name, train_opts, fwd_chunk, device):
    """``ScanTiles.recompute`` (``fwd_train``; on by default): the forward keeps no chunk states —
    autograd saves no (b, H, chunks, P, N) tensor — and the backward recomputes them with one
    state pass at the training tiles (also the N-split state pass): gradients against the
    reference, and equal to those from kept states (bit-equal on the interpreter: the same state
    update). ``fwd_chunk``: the inference forward (which a recomputing training call runs) on
    another chunk than the training one — y then differs in rounding only, and the backward must
    still use the training chunk."""
    args = scan_args(device, torch.float32, **SCAN[name])
    train = replace(ssm_scan.TILES.get("fwd_train", (0, 0), args[0].device), **train_opts)
    fwd = ssm_scan.TILES.get("fwd", (0, 0), args[0].device)
    if fwd_chunk is not None:
        fwd = replace(fwd, block_l=fwd_chunk)
    keep, rec = replace(train, recompute=False), replace(train, recompute=True)
    leaves = [a.detach().requires_grad_(True) if a is not None else None for a in args]
    with ssm_scan.TILES.override(fwd_train=keep, fwd=fwd):
        assert [s for s in _saved_shapes(ssm_scan.ssm_scan, leaves) if len(s) == 5], "recompute=False kept nothing?"
        kept = _scan_grads(args)
    with ssm_scan.TILES.override(fwd_train=rec, fwd=fwd):
        assert not [s for s in _saved_shapes(ssm_scan.ssm_scan, leaves) if len(s) == 5]
        compare_fwd_bwd(
            f"recompute {name}", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float32, names=SCAN_NAMES
        )
        again = _scan_grads(args)
    for n in kept:
        if device.type == "cuda" or fwd_chunk is not None:
            assert_close(f"{name}: d{n} recomputed vs kept states", again[n], kept[n], torch.float32, grad=True)
        else:
            assert torch.equal(again[n], kept[n]), f"{name}: d{n} differs between recomputed and kept states"


def test_ssm_scan_recompute_states_context(device):
    """``recompute_states()``: the user's memory knob, process-wide while its block runs —
    ``recompute_states(False)`` keeps the states even under a recomputing entry, ``True``
    recomputes under a keeping one; a thread started inside sees it, and a non-reentrant
    ``torch.utils.checkpoint`` (which re-runs the forward in the backward and checks it saved the
    same tensors) works inside it; a non-bool is refused by name."""
    import threading

    from torch.utils.checkpoint import checkpoint

    args = scan_args(device, torch.float32, **SCAN["ragged_T37_P24_N20_G2"])
    leaves = [a.detach().requires_grad_(True) if a is not None else None for a in args]

    def states_kept():
        return bool([s for s in _saved_shapes(ssm_scan.ssm_scan, leaves) if len(s) == 5])

    train = ssm_scan.TILES.get("fwd_train", (0, 0), args[0].device)
    with ssm_scan.TILES.override(fwd_train=replace(train, recompute=True)):
        assert not states_kept()
        with ssm_scan.recompute_states(False):
            assert states_kept()
            seen = []
            thread = threading.Thread(target=lambda: seen.append(states_kept()))
            thread.start()
            thread.join()
            assert seen == [True]
            y, final = checkpoint(ssm_scan.ssm_scan, *leaves, use_reentrant=False)
            (y.sum() + final.sum()).backward()
        assert not states_kept()
    with ssm_scan.TILES.override(fwd_train=replace(train, recompute=False)):
        assert states_kept()
        with ssm_scan.recompute_states():
            assert not states_kept()
            compare_fwd_bwd(
                "recompute_states", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float32, names=SCAN_NAMES
            )
    with pytest.raises(ValueError, match=r"recompute_states enabled: expected a bool"):
        with ssm_scan.recompute_states(1):
            pass


def test_ssm_scan_tiles_reject_options_on_the_wrong_kernel(device):
    """A forward entry with ``parallel_grads`` or a backward entry with ``parallel_out`` is an
    error naming the entry, not an ignored field."""
    args = scan_args(device, torch.float32, b=1, T=20, H=2, P=16, G=1, N=16)
    fwd = ssm_scan.TILES.get("fwd", (0, 0), args[0].device)
    with ssm_scan.TILES.override(fwd=replace(fwd, parallel_grads=True)), torch.no_grad():
        with pytest.raises(ValueError, match=r"ssm_scan tiles fwd\.parallel_grads: expected False"):
            ssm_scan.ssm_scan(*args)
    train = ssm_scan.TILES.get("fwd_train", (0, 0), args[0].device)
    with ssm_scan.TILES.override(fwd_train=replace(train, parallel_grads=True)):
        with pytest.raises(ValueError, match=r"ssm_scan tiles fwd_train\.parallel_grads: expected False"):
            ssm_scan.ssm_scan(*[a.requires_grad_(True) if a is not None else None for a in args])
    bwd = ssm_scan.TILES.get("bwd", (0, 0), args[0].device)
    with ssm_scan.TILES.override(bwd=replace(bwd, parallel_out=True)):  # refused by the forward
        with pytest.raises(ValueError, match=r"ssm_scan tiles bwd\.parallel_out: expected False \(a forward option\)"):
            ssm_scan.ssm_scan(*[a.detach().requires_grad_(True) if a is not None else None for a in args])
    with pytest.raises(ValueError, match=r"ScanTiles\.parallel_grads: expected a bool"):
        ssm_scan.ScanTiles(parallel_grads=1)
    with ssm_scan.TILES.override(fwd=replace(fwd, recompute=True)), torch.no_grad():
        with pytest.raises(
            ValueError, match=r"ssm_scan tiles fwd\.recompute: expected False \(a training-forward option\)"
        ):
            ssm_scan.ssm_scan(*args)
    with ssm_scan.TILES.override(fwd=replace(fwd, block_n=16)), torch.no_grad():
        with pytest.raises(ValueError, match=r"ssm_scan tiles fwd\.block_n: expected None without parallel_out"):
            ssm_scan.ssm_scan(*args)


def test_ssm_scan_without_grad_saves_nothing(device):
    """Inference calls skip the state saving (a different, lighter launch) and agree with it."""
    args = scan_args(device, torch.float32, b=1, T=40, H=2, P=8, G=1, N=8)
    with torch.no_grad():
        y0, h0 = ssm_scan.ssm_scan(*args)
    y1, h1 = ssm_scan.ssm_scan(*[a.requires_grad_(True) if a is not None else None for a in args])
    assert y1.grad_fn is not None
    assert_close("y", y0, y1.detach(), torch.float32)
    assert_close("h", h0, h1.detach(), torch.float32)


def _strong_decay_args(device, dt_max, a_max, seed):
    """float32 scan inputs with |Σ dt·A| per chunk in the thousands (dt up to dt_max, A down to
    -a_max): the chunk's decay exponent then has an ulp near 1e-4."""
    g = torch.Generator().manual_seed(seed)
    b, T, H, P, G, N = 1, 64, 2, 8, 1, 8
    f32 = dict(dtype=torch.float32)
    return (
        torch.randn(b, T, H, P, generator=g, **f32).to(device),
        (torch.rand(b, T, H, generator=g, **f32) * dt_max).to(device),
        (-torch.rand(H, generator=g, **f32) * a_max - 0.1).to(device),
        torch.randn(b, T, G, N, generator=g, **f32).to(device),
        torch.randn(b, T, G, N, generator=g, **f32).to(device),
    )


@pytest.mark.parametrize("block_l", [16, 32])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ssm_scan_strong_decay_keeps_the_newest_token_exact(block_l, seed, device):
    """The leaving state weights token j by exp(cum_L − cum_j): cum_L must be the cumsum's own
    last entry, so the newest token's weight is exactly 1 (as the reference's
    ``cum[..., -1:] - cum``). A separate tl.sum rounded differently and put float32 final states
    20× outside the tolerance at dt ≤ 100, A ≥ −100 (review finding)."""
    args = _strong_decay_args(device, 100.0, 100.0, seed)
    x, N = args[0], args[3].shape[-1]
    cfg = {k: replace(ssm_scan._scan_tiles(k, x, N), block_l=block_l) for k in ("fwd", "fwd_train")}
    with ssm_scan.TILES.override(**cfg):
        with torch.no_grad():  # the inference kernel
            y, h = ssm_scan.ssm_scan(*args)
        # the training forward (inputs require grad: the kernel that keeps what the backward needs)
        compare_fwd_bwd(
            "strong decay", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float32, names=SCAN_NAMES, grads=False
        )
    y_ref, h_ref = ssm_ref.ssm_scan(*args)
    assert_close("y", y, y_ref, torch.float32)
    assert_close("final state", h, h_ref, torch.float32)


def test_ssm_scan_strong_decay_gradients(device):
    """The backward's chunk totals come from the cumsum too (dt ≤ 20, A ≥ −50, 32-token chunks)."""
    args = _strong_decay_args(device, 20.0, 50.0, 1)
    x, N = args[0], args[3].shape[-1]
    cfg = {k: replace(ssm_scan._scan_tiles(k, x, N), block_l=32) for k in ("fwd", "fwd_train")}
    with ssm_scan.TILES.override(**cfg):
        compare_fwd_bwd("strong decay", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float32, names=SCAN_NAMES)


def test_ssm_scan_chunk_size_does_not_change_the_result(device):
    args = scan_args(device, torch.float64, b=1, T=45, H=2, P=8, G=1, N=8)
    y1, h1 = ssm_scan.ssm_scan(*args, chunk_size=7)
    y2, h2 = ssm_ref.ssm_scan(*args, chunk_size=64)
    assert_close("y", y1, y2, torch.float64)
    assert_close("h", h1, h2, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ssm_step_chain_equals_scan(dtype, device):
    x, dt, A, B, C, D, h0 = scan_args(device, dtype, b=2, T=6, H=4, P=12, G=2, N=10)
    state, ys = h0, []
    for t in range(6):
        y, state = ssm_scan.ssm_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
        ys.append(y)
    y_r, h_r = ssm_ref.ssm_scan(x.float(), dt.float(), A.float(), B.float(), C.float(), D.float(), h0.float())
    assert_close("y", torch.stack(ys, 1), y_r.to(dtype), dtype)
    assert_close("state", state, h_r.to(dtype), dtype)


CONV = {
    "T40_ch20_K4": dict(b=2, T=40, ch=20, K=4),
    "T_lt_K_minus_1": dict(b=1, T=2, ch=20, K=4),
    "K1": dict(b=1, T=5, ch=8, K=1),
    "no_bias_no_state_linear": dict(b=1, T=17, ch=33, K=3, bias=False, state=False, act=None),
}


@pytest.mark.parametrize("name", list(CONV))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_conv1d_forward_gradients_and_step(name, dtype, device):
    c = dict(bias=True, state=True, act="silu") | CONV[name]
    g = torch.Generator().manual_seed(1)
    b, T, ch, K = c["b"], c["T"], c["ch"], c["K"]
    args = (
        rn(device, dtype, b, T, ch, g=g),
        rn(device, dtype, ch, K, s=0.5, g=g),
        rn(device, dtype, ch, g=g) if c["bias"] else None,
        rn(device, dtype, b, K - 1, ch, g=g) if c["state"] else None,
        c["act"],
    )
    names = ("x", "weight", "bias", "initial_state")
    compare_fwd_bwd(name, conv.causal_conv1d, conv_ref.causal_conv1d, args, {}, dtype, names=names)
    # the step continues the sequence exactly
    _, s = conv_ref.causal_conv1d(*args)
    x1 = rn(device, dtype, b, ch, g=g)
    step = conv.causal_conv1d_step(x1, s, args[1], args[2], c["act"])
    step_r = conv_ref.causal_conv1d_step(x1, s, args[1], args[2], c["act"])
    assert_close(f"{name}: step y", step[0], step_r[0], dtype)
    assert_close(f"{name}: step state", step[1], step_r[1], dtype)


NORM = {"rms_48": (None, 48), "gated_48": (48, 48), "gated_groups_3x16": (16, 48), "gated_1x200": (200, 200)}


@pytest.mark.parametrize("name", list(NORM))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_norms_forward_and_gradients(name, dtype, device):
    group, width = NORM[name]
    g = torch.Generator().manual_seed(2)
    x = rn(device, dtype, 2, 5, width, g=g)
    w = (rn(device, dtype, width, s=0.5, g=g) + 1).to(dtype)
    if name.startswith("rms"):
        compare_fwd_bwd(name, rmsnorm.rmsnorm, norm_ref.rmsnorm, (x, w, 1e-6), {}, dtype, names=("x", "weight"))
    else:
        z = rn(device, dtype, 2, 5, width, g=g)
        args = (x, z, w, 1e-6, None if group == width else group)
        compare_fwd_bwd(
            name, rmsnorm.gated_rmsnorm, norm_ref.gated_rmsnorm, args, {}, dtype, names=("x", "z", "weight")
        )


#: zero-sized dimensions core's checks allow (T = 0 it refuses): no state columns (y = D·x), no head-dim rows
ZERO_SCAN = {"N0": dict(N=0), "P0": dict(P=0), "N0_no_D": dict(N=0, D=False), "P0_N0": dict(P=0, N=0)}


@pytest.mark.parametrize("name", list(ZERO_SCAN))
def test_zero_sized_scan_and_step_match_reference(name, device):
    shape = dict(b=2, T=5, H=2, P=4, G=1, N=3) | ZERO_SCAN[name]
    args = scan_args(device, torch.float32, **shape)
    compare_fwd_bwd(name, ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float32, names=SCAN_NAMES)
    with ssm_scan.TILES.override(**ssm_scan.chunk_parallel_tiles(args[0], shape["N"])):
        compare_fwd_bwd(
            f"chunk-parallel {name}", ssm_scan.ssm_scan, ssm_ref.ssm_scan, args, {}, torch.float32, names=SCAN_NAMES
        )
    if shape["T"]:
        x, dt, A, B, C, D, h0 = args
        step = ssm_scan.ssm_step(h0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
        step_r = ssm_ref.ssm_step(h0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
        assert_close(f"{name}: step y", step[0], step_r[0], torch.float32)
        assert_close(f"{name}: step state", step[1], step_r[1], torch.float32)


def test_zero_width_norms_match_reference(device):
    x, w = torch.zeros(2, 3, 0, device=device), torch.zeros(0, device=device)
    compare_fwd_bwd(
        "rmsnorm width 0", rmsnorm.rmsnorm, norm_ref.rmsnorm, (x, w, 1e-6), {}, torch.float32, names=("x", "weight")
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_innovation_scores(dtype, device):
    g = torch.Generator().manual_seed(3)
    k, kp = rn(device, dtype, 2, 19, 3, 12, g=g), rn(device, dtype, 2, 19, 3, 12, g=g)
    out, ref = eidetic.innovation_scores(k, kp), eid_ref.innovation_scores(k, kp)
    assert out.dtype == torch.float32
    assert_close("scores", out, ref, torch.float32)


def test_steps_in_place_match_the_ops(device):
    """The in-place entry points (preallocated decode caches) equal the registered ops."""
    x, dt, A, B, C, D, h0 = scan_args(device, torch.float32, b=2, T=1, H=4, P=12, G=2, N=10)
    y, new = ssm_scan.ssm_step(h0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    cache = h0.clone()
    y2 = ssm_scan.ssm_step_(cache, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    assert torch.equal(y, y2) and torch.equal(new, cache)
    with pytest.raises(ValueError, match="state"):
        ssm_scan.ssm_step_(h0.double(), x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    g = torch.Generator().manual_seed(5)
    xc, s, w = (
        rn(device, torch.float32, 2, 20, g=g),
        rn(device, torch.float32, 2, 3, 20, g=g),
        rn(device, torch.float32, 20, 4, g=g),
    )
    yc, sn = conv.causal_conv1d_step(xc, s, w, None, "silu")
    cache = s.clone()
    yc2 = conv.causal_conv1d_step_(xc, cache, w, None, "silu")
    assert torch.equal(yc, yc2) and torch.equal(sn, cache)


def test_steps_in_place_refuse_what_torch_in_place_ops_refuse(device):
    """The kernels write the cache through its pointer, outside autograd: an argument that needs a
    gradient is refused (y would silently have none), the cache's version counter moves (a graph
    that saved it fails loudly instead of reading new values), inference tensors stay in inference
    mode."""
    x, dt, A, B, C, D, h0 = scan_args(device, torch.float32, b=1, T=1, H=2, P=4, G=1, N=4)
    args = (x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    g = torch.Generator().manual_seed(5)
    xc, s, w = (rn(device, torch.float32, 1, 6, g=g), rn(device, torch.float32, 1, 3, 6, g=g),
                rn(device, torch.float32, 6, 4, g=g))  # fmt: skip
    steps = {
        "ssm_step_": (lambda state, *a: ssm_scan.ssm_step_(state, *a), h0, args),
        "causal_conv1d_step_": (lambda state, *a: conv.causal_conv1d_step_(a[0], state, *a[1:]), s, (xc, w)),
    }
    for name, (step, state, rest) in steps.items():
        cache = state.clone()
        version = cache._version
        step(cache, *rest)
        assert cache._version > version, name
        for i, t in enumerate(rest):  # each tensor argument that asks for a gradient
            leaf = list(rest)
            leaf[i] = t.clone().requires_grad_()
            with pytest.raises(ValueError, match=r"expected no gradient"):
                step(state.clone(), *leaf)
            with torch.no_grad():
                step(state.clone(), *leaf)  # fine without grad mode
        with pytest.raises(ValueError, match=r"state: expected a tensor that does not require grad"):
            step(state.clone().requires_grad_(), *rest)
        cache, weight = state.clone(), torch.ones_like(state, requires_grad=True)
        loss = (weight * cache).sum()  # saves `cache` for weight's gradient
        step(cache, *rest)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()
        with torch.inference_mode():
            frozen = state.clone()
            step(frozen, *rest)  # inside inference mode: fine
        with pytest.raises(ValueError, match=r"state: expected a tensor made outside torch.inference_mode"):
            step(frozen, *rest)


def test_rows_past_tritons_largest_block_are_refused_by_name(device):
    """The norms and ``innovation_scores`` hold a whole row (normalisation group, a token's keys)
    in one block of next_pow2(width) elements: past Triton's largest (2**20) the call is refused
    before any launch, naming the argument, on every device. The widest allowed row runs. (Second
    derivatives: test_triton_double_backward.py.)"""
    from bmojo_triton.ops._guards import MAX_BLOCK

    assert MAX_BLOCK == 2**20
    wide, w = torch.zeros(1, MAX_BLOCK + 1, device=device), torch.ones(MAX_BLOCK + 1, device=device)
    msg = r"expected {} <= 1048576 \(Triton's largest block: one program holds it whole\), got 1048577$"
    with pytest.raises(ValueError, match="^x: " + msg.format("last axis")):
        rmsnorm.rmsnorm(wide, w)
    with pytest.raises(ValueError, match="^x: " + msg.format("last axis")):
        rmsnorm.rmsnorm_backward([wide], [True, True], wide, w)
    with pytest.raises(ValueError, match=r"^x: expected last axis \(the normalisation group without group_size\)"):
        rmsnorm.gated_rmsnorm(wide, wide, w)
    two = torch.zeros(1, 2 * (MAX_BLOCK + 1), device=device)
    with pytest.raises(ValueError, match="^group_size: " + msg.format("a normalisation group")):
        rmsnorm.gated_rmsnorm(two, two, torch.ones(two.shape[-1], device=device), group_size=MAX_BLOCK + 1)
    k = wide.reshape(1, 1, 1, -1)
    with pytest.raises(ValueError, match=r"^k: expected Hkv × Dh \(one program reduces a token's keys\) <= 1048576"):
        eidetic.innovation_scores(k, k)
    edge = torch.ones(1, MAX_BLOCK, device=device)  # the widest row: runs
    assert_close("rmsnorm at 2**20", rmsnorm.rmsnorm(edge, edge[0]), edge, torch.float32)
    assert eidetic.innovation_scores(edge.reshape(1, 1, 2, -1), edge.reshape(1, 1, 2, -1)).item() == 0


def test_grid_axis_limits_are_refused_by_name(device):
    """An extent a kernel puts on a CUDA grid's second or third axis (at most 65535 programs) is
    refused before any launch, naming the argument — on every device, so the interpreter refuses
    what a GPU would. Tiny tensors (head size 1) with 65536 batch × heads."""
    from bmojo_triton.ops import bmojo_attention as att

    q = torch.zeros(1, 1, 65536, 1, device=device)
    with pytest.raises(ValueError, match=r"^q: expected batch × heads <= 65535 \(a CUDA grid axis"):
        att.bmojo_attention(q, q, q, window=1)
    x = torch.zeros(65536, 1, 1, device=device)
    with pytest.raises(ValueError, match=r"^x: expected batch <= 65535"):
        conv.causal_conv1d(x, torch.zeros(1, 4, device=device))
    x, dt, A = torch.zeros(1, 1, 65536, 1), torch.ones(1, 1, 65536), -torch.ones(65536)
    B = C = torch.zeros(1, 1, 1, 1)
    x, dt, A, B, C = (t.to(device) for t in (x, dt, A, B, C))
    fwd = ssm_scan.TILES.get("fwd", (0, 0), x.device)
    with ssm_scan.TILES.override(fwd=replace(fwd, parallel_out=True)), torch.no_grad():
        with pytest.raises(ValueError, match=r"^x: expected batch × heads \(with ScanTiles.parallel_out\) <= 65535"):
            ssm_scan.ssm_scan(x, dt, A, B, C)
    bwd = ssm_scan.TILES.get("bwd", (0, 0), x.device)
    with ssm_scan.TILES.override(bwd=replace(bwd, parallel_grads=True)):  # refused by the forward
        with pytest.raises(ValueError, match=r"^x: expected batch × heads \(with ScanTiles.parallel_grads\) <= 65535"):
            ssm_scan.ssm_scan(x.requires_grad_(True), dt, A, B, C)
