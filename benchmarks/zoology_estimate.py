"""``python -m benchmarks.zoology_estimate``: the expected runtime of ``bmojo mqar --scale zoology
--device cuda`` on an NVIDIA H200, estimated on a CPU from counted work and H200 timings.

No GPU has run the zoology protocol yet, so its runtime cannot be measured; ``bmojo mqar --scale
zoology --device cuda --estimate`` times it on the card at hand. This script gives the figure the
docs quote until then, from a cost model whose every input is either counted here or was measured on
an H200 (``benchmarks/results/triton-h200-20261127T1821Z-run1/bench.json``):

* **Host time.** The MQAR models are small (widths 64–256, two layers), so a GPU step is bound by
  the host issuing operators one by one, not by the GPU. The torch profiler counts the top-level
  aten operators of one real training step per sequence length on the CPU (the same eager code
  path the GPU runs, at the protocol's batch: the count depends on it; see ``zoology_work`` for
  how widths above 64 are counted). The cost per operator, ``h``, is calibrated on
  the only host-bound work timed on the H200: the reference ``bmojo_attention`` and ``ssm_scan`` ops
  (forward and forward+backward, at the Triton benchmark's shapes), whose operators are counted here
  the same way. ``h`` is the range of ``H200 time / operators`` over those calibration points.
* **Device time.** Matmul FLOPs (profiler counts for mm/addmm/bmm, plus 4·Tq·Tk·Dh per head for
  each scaled-dot-product-attention call, forward and backward) at the H200's float32 rate (the
  runs train in float32 and torch does not use TF32 for matmuls by default): 67 TFLOP/s (the data
  sheet's peak; fast end) to half of it (slow end); bytes allocated by the step (profiler) written
  and read once at the device copy rate measured on the H200 (fast) to half of it (slow).
* **A step** takes ``max(host, device)`` at the fast end (the GPU runs while the host issues the next
  operators) and ``host + device`` at the slow end (no overlap). A held-out check (every 250 steps)
  and the final evaluation (plus the eidetic diagnostic, as one more check) are counted the same
  way.
* **Left out:** the data generation's host time is in the operator count (it runs inside the
  profiled step); Python work between operators is only in ``h`` as far as the calibration ops
  have it; ``--backend triton`` is not modelled.

The upper bound runs every model to the 6000-step cap, as ``--estimate`` does; runs that reach
0.99 stop earlier. ``--widths`` and ``--arch`` narrow it; ``--out`` writes the rows as JSON.
The calibration needs about 40 s; the whole protocol about 17 min on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from tqdm.auto import tqdm

from benchmarks.common import RESULTS_DIR, check_int, check_out_path, expect, write_json

H200_BENCH = RESULTS_DIR / "triton-h200-20261127T1821Z-run1" / "bench.json"
#: float32 matmul rate of an H200 (and H100 SXM): the NVIDIA data sheet's 67 TFLOP/s, not measured
FP32_PEAK = 67e12
#: the reference ops the H200 run timed (op, T, modes), at the Triton benchmark's shapes; the
#: attention's forward+backward at T = 8192 is left out: profiling it needs more than 23 GiB
CALIBRATION = (
    ("attention", 2048, ("fwd", "fwd+bwd")),
    ("attention", 8192, ("fwd",)),
    ("ssm", 2048, ("fwd", "fwd+bwd")),
)
#: the operators whose FLOPs count (the profiler also gives elementwise add/mul one FLOP per
#: element: that traffic is in the bytes term)
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm")
SDPA = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_efficient_attention")


@dataclasses.dataclass
class Work:
    """What one call issues: top-level aten operators, matmul FLOPs, bytes allocated."""

    ops: int
    flops: float
    nbytes: float


def _sdpa_flops(event) -> float:
    """4·Tq·Tk·Dh per batch row and head (QKᵀ and PV); the backward does twice that."""
    shapes = event.input_shapes
    if not shapes or len(shapes) < 2 or len(shapes[0]) != 4 or len(shapes[1]) != 4:
        return 0.0
    b, h, tq, d = shapes[0]
    tk = shapes[1][2]
    return 4.0 * b * h * tq * tk * d * (2 if event.name.endswith("_backward") else 1)


def count(fn, memory: bool = True) -> Work:
    """Profile ``fn()`` once on the CPU (bytes only with ``memory``)."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, profile_memory=memory, record_shapes=True) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    flops = sum(e.flops or 0 for e in events if e.name in MATMUL)
    flops += sum(_sdpa_flops(e) for e in events if e.name.startswith(SDPA))
    nbytes = sum(max(0, e.self_cpu_memory_usage) for e in events)
    return Work(len(top), float(flops), float(nbytes))


# ----- calibration: the reference ops the H200 timed -----
def _calibration_work(op: str, T: int, modes: tuple[str, ...]) -> dict[str, Work]:
    """The reference op at the Triton benchmark's full shapes, bfloat16 as timed there."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.triton.__main__ import SIZES

    dtype = torch.bfloat16
    g = torch.Generator().manual_seed(T)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype).requires_grad_(True)

    if op == "attention":
        from bmojo.ops.bmojo_attention.reference import bmojo_attention, eidetic_snapshot_count

        s = SIZES["full"]["attention"]
        b, H, Dh, w, f, M = s["b"], s["H"], s["Dh"], s["w"], s["f"], s["M"]
        q, k, v, kf, vf = (rnd(b, T, H, Dh) for _ in range(5))
        S = eidetic_snapshot_count(0, T, w)
        ek, ev = rnd(b, S, M, H, Dh), rnd(b, S, M, H, Dh)
        epos = torch.randint(0, T - w, (b, S, M), generator=g)

        def fwd():
            return bmojo_attention(q, k, v, kf, vf, ek, ev, epos, window=w, fading_window=f, eidetic_chunk=w)
    else:
        from bmojo.ops.ssm_scan.reference import ssm_scan

        s = SIZES["full"]["ssm"]
        b, H, P, N = s["b"], s["H"], s["P"], s["N"]
        x, B, C = rnd(b, T, H, P), rnd(b, T, 1, N, scale=0.5), rnd(b, T, 1, N, scale=0.5)
        dt = (torch.rand(b, T, H, generator=g) * 0.1 + 0.01).to(dtype).requires_grad_(True)
        A = (-torch.rand(H, generator=g) - 0.5).to(dtype).requires_grad_(True)
        D = rnd(H)

        def fwd():
            return ssm_scan(x, dt, A, B, C, D)

    def first(out):
        return out[0] if isinstance(out, tuple) else out

    work = {"fwd": count(fwd, memory=False)}
    if "fwd+bwd" in modes:
        probe = first(fwd())
        cot = torch.randn(probe.shape, generator=g).to(probe.dtype)
        work["fwd+bwd"] = count(lambda: first(fwd()).backward(cot), memory=False)
    return work


def calibrate(progress: bool = True) -> dict:
    """Seconds per top-level operator on the H200 host, from each timed (op, T, mode)."""
    rows = json.loads(H200_BENCH.read_text())["rows"]
    timed = {
        (r["section"], r["case"], r["mode"]): r["seconds"]
        for r in rows
        if r.get("impl", "").startswith("reference op") and r.get("seconds")
    }
    points = []
    for op, T, modes in tqdm(CALIBRATION, desc="calibration", unit="op", disable=not progress):
        work = _calibration_work(op, T, modes)
        for mode, w in work.items():
            seconds = timed[(op, f"T={T} bfloat16", mode)]
            points.append(dict(op=op, T=T, mode=mode, h200_s=seconds, ops=w.ops, us_per_op=1e6 * seconds / w.ops))
    per_op = [p["us_per_op"] for p in points]
    return {"points": points, "us_per_op": (min(per_op), statistics.median(per_op), max(per_op))}


# ----- the zoology protocol's work -----
def _vocab_settings(base: dict, width: int, vocab: int):
    from bmojo.jobs.mqar import Settings
    from bmojo.jobs.mqar_full import ZOOLOGY_MAX_STEPS

    return Settings(**(base | {"vocab": vocab}), d_model=width, steps=ZOOLOGY_MAX_STEPS, seed=0)


def _profile_model(cfg, s, cells, batch: int, check_batch: int) -> tuple[list[Work], list[Work]]:
    """One training step (``batch`` sequences) and one held-out check (``check_batch``, as a check
    in ``train_until``) per cell, profiled."""
    from bmojo.jobs import optim
    from bmojo.jobs.mqar import _data_generator
    from bmojo.model import BMojoLM
    from bmojo.ops.bmojo_attention import reference
    from bmojo.tasks import mqar_batch

    torch.manual_seed(0)
    model = BMojoLM(cfg)
    opt = optim.adamw(model, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    gen = _data_generator(0)

    def step(T, n):
        x, y = mqar_batch(batch, T, n, s.vocab, generator=gen)
        logits, aux = model(x, return_aux=True)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()

    @torch.no_grad()
    def check(T, n):  # what evaluate() does per cell and batch
        model.eval()
        x, y = mqar_batch(check_batch, T, n, s.vocab, generator=gen)
        mask = y != -100
        pred = model(x).argmax(-1)
        int((pred[mask] == y[mask]).sum())
        model.train()

    # the reference attention's CPU-only flash path is off: on a GPU it gathers and masks
    saved, reference.USE_FUSED_CPU_KERNEL = reference.USE_FUSED_CPU_KERNEL, False
    try:
        step(*cells[0])  # the optimizer state exists from here on, as in every later step
        train = [count(lambda c=c: step(*c)) for c in cells]
        checks = [count(lambda c=c: check(*c)) for c in cells]
    finally:
        reference.USE_FUSED_CPU_KERNEL = saved
    return train, checks


def _narrow(cfg, width: int):
    """``cfg`` with the model and every layer at ``width``, every other field (knobs) kept."""
    from bmojo.config import ModelConfig

    d = cfg.to_dict()
    d["d_model"] = width
    d["layers"] = [layer | {"d_model": width} for layer in d["layers"]]
    return ModelConfig.from_dict(d)


def zoology_work(
    width: int,
    archs: list[str] | None,
    vocab_pair=(256, 512),
    progress: bool = True,
    base: dict | None = None,
    small_batches: tuple[int, int] | None = None,
    ops_width: int = 64,
) -> list[dict]:
    """Per planned model at this width: the work of one training step (mean over the grid cells)
    and of one held-out check (every cell once, 128 sequences), at the protocol's batch sizes.

    The CPU profiles one cell per sequence length (the number of pairs changes no operator, FLOP
    or byte) with a small vocabulary ``vocab_pair[0]``, and the longest again with
    ``vocab_pair[1]``: FLOPs and bytes are affine in the vocabulary (embedding, LM head, loss) and
    proportional to the tokens, so that slope per token carries them to 8192. The operator count
    does not depend on the vocabulary.

    By default every profile runs at the protocol's batch sizes (64, and 128 for a check), which
    the operator count needs: the reference attention groups its query blocks by a memory budget
    that depends on the batch. That needs more memory than a 2-core VM has at widths above 64, so
    ``small_batches=(b1, b2)`` profiles the model at those batch sizes for FLOPs and bytes and
    carries them to the protocol's batch along the affine line through them (exact for FLOPs;
    bytes are affine too: parameters, gradients and optimizer state do not grow with the batch),
    and counts the operators on the same model narrowed to ``ops_width`` (every knob kept: the
    count depends on the knobs and the batch, not on the width, which
    ``tests/test_zoology_estimate.py`` checks) at the protocol's batch sizes.
    ``base`` replaces the protocol's settings (tests)."""
    from bmojo.jobs.mqar import ALL_ARCHS, plan
    from bmojo.jobs.mqar_full import ZOOLOGY

    base = ZOOLOGY if base is None else base
    V, (v1, v2) = base["vocab"], vocab_pair
    real, s1, s2 = (_vocab_settings(base, width, v) for v in (V, v1, v2))
    budgets = [0.25, 0.5]
    archs = list(archs or ALL_ARCHS)
    plans = {v: plan(s, archs, budgets, None) for v, s in ((V, real), (v1, s1), (v2, s2))}
    knobs = {v: [(p["arch"], p["budget"], p["knobs"]) for p in ps] for v, ps in plans.items()}
    if not knobs[V] == knobs[v1] == knobs[v2]:
        raise RuntimeError(f"the planned models depend on the vocabulary: {knobs}")
    grid = real.grid
    # FLOPs, bytes and operators depend on T, not on the number of pairs: profile one cell per T
    by_T = {T: (T, max(n for t, n in grid if t == T)) for T, _ in grid}
    lengths = sorted(by_T)
    T_long = lengths[-1]
    B, CB = real.batch, min(128, real.eval_sequences)
    out = []
    for p1, p2 in tqdm(list(zip(plans[v1], plans[v2], strict=True)), desc=f"width {width}", disable=not progress):
        cells = [by_T[T] for T in lengths]
        if small_batches is None:
            hi = _profile_model(p1["config"], s1, cells, B, CB)
            lo, per = None, ((B, B), (CB, CB))
        else:
            b1, b2 = small_batches
            lo = _profile_model(p1["config"], s1, cells, b1, b1)
            hi = _profile_model(p1["config"], s1, cells, b2, b2)
            per = ((b1, b2), (b1, b2))
        v2_long = _profile_model(p2["config"], s2, [by_T[T_long]], per[0][1], per[1][1])
        rows = {}
        for kind, idx, target in (("step", 0, B), ("check", 1, CB)):
            b_lo, b_hi = per[idx]
            at_long = hi[idx][-1]
            tokens = b_hi * T_long
            vf = (v2_long[idx][0].flops - at_long.flops) / (tokens * (v2 - v1))
            vb = (v2_long[idx][0].nbytes - at_long.nbytes) / (tokens * (v2 - v1))
            per_T = {}
            for k, T in enumerate(lengths):
                w_hi = hi[idx][k]
                fl, nb = w_hi.flops, w_hi.nbytes
                if lo is not None:  # along the batch line to the protocol's batch
                    w_lo = lo[idx][k]
                    fl += (w_hi.flops - w_lo.flops) / (b_hi - b_lo) * (target - b_hi)
                    nb += (w_hi.nbytes - w_lo.nbytes) / (b_hi - b_lo) * (target - b_hi)
                per_T[T] = Work(w_hi.ops, fl + vf * target * T * (V - v1), nb + vb * target * T * (V - v1))
            works = [per_T[T] for T, _ in grid]
            if kind == "step":  # the mean training step (cells in turn)
                rows[kind] = Work(
                    round(statistics.fmean(w.ops for w in works)),
                    statistics.fmean(w.flops for w in works),
                    statistics.fmean(w.nbytes for w in works),
                )
            else:  # a check visits every cell once
                rows[kind] = Work(sum(w.ops for w in works), sum(w.flops for w in works), sum(w.nbytes for w in works))
        row = dict(arch=p1["arch"], budget=p1["budget"], knobs=p1["knobs"], width=width)
        if small_batches is not None:  # operators: the same model at ops_width, the protocol's batch
            narrow = _narrow(p1["config"], ops_width)
            n_train, n_check = _profile_model(narrow, s1, cells, B, CB)
            for kind, counted in (("step", n_train), ("check", n_check)):
                by = dict(zip(lengths, counted, strict=True))
                ops_T = [by[T].ops for T, _ in grid]
                rows[kind].ops = round(statistics.fmean(ops_T)) if kind == "step" else sum(ops_T)
            row["ops_counted_at_width"] = ops_width
        row.update({k: dataclasses.asdict(v) for k, v in rows.items()})
        out.append(row)
    return out


def seconds(work: dict, us_per_op: float, copy_bps: float, fast: bool) -> float:
    """The cost model above, at its fast or slow end."""
    host = work["ops"] * us_per_op * 1e-6
    if fast:
        device = work["flops"] / FP32_PEAK + 2 * work["nbytes"] / copy_bps
        return max(host, device)
    device = work["flops"] / (FP32_PEAK / 2) + 2 * work["nbytes"] / (copy_bps / 2)
    return host + device


def check_width(width: int, flag: str, base: dict | None = None) -> None:
    """``width`` builds the protocol's models: >= 1, divisible by its attention heads, and its SSM's
    inner width (``ssm_expand``·width) divisible by the SSM head size (a B'MOJO layer has both)."""
    from bmojo.config import ModelConfig
    from bmojo.jobs.mqar import _common
    from bmojo.jobs.mqar_full import ZOOLOGY

    base = ZOOLOGY if base is None else base
    heads = base["n_heads"]
    expect(width >= 1 and width % heads == 0, flag, f"a width >= 1 divisible by the protocol's {heads} heads", width)
    s = _vocab_settings(base, width, base["vocab"])
    try:
        ModelConfig.preset("bmojo", eidetic_capacity=1, ssm_state_size=s.hybrid_state, window=s.window, **_common(s))
    except ValueError as err:
        raise ValueError(f"{flag}: expected a width the protocol's models can take, got {width} ({err})") from None


def check_args(a: argparse.Namespace) -> None:
    """Every flag, before the calibration (about a minute) starts."""
    from bmojo.jobs.mqar import ALL_ARCHS

    for name in ("seeds", "ops_width"):
        check_int(getattr(a, name), f"--{name.replace('_', '-')}", 1)
    check_width(a.ops_width, "--ops-width")
    if a.widths is not None:
        expect(len(set(a.widths)) == len(a.widths), "--widths", "each width once", a.widths)
        for w in a.widths:
            check_width(w, "--widths")
    if a.arch is not None:
        unknown = [x for x in a.arch if x not in ALL_ARCHS]
        expect(not unknown, "--arch", f"names from {', '.join(ALL_ARCHS)}", unknown)
        expect(len(set(a.arch)) == len(a.arch), "--arch", "each name once", a.arch)
    if a.out is not None:
        check_out_path(a.out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.zoology_estimate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=None, help="default: the protocol's 64 128 256")
    ap.add_argument("--arch", nargs="+", default=None, help="default: every row of the protocol")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per model (the protocol's default: 3)")
    ap.add_argument(
        "--ops-width",
        type=int,
        default=64,
        help="other widths count operators on their models narrowed to this width at the protocol's batch "
        "sizes, and FLOPs and bytes at batches 4 and 8 (default 64: the 2-core VM's memory)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the rows and totals as JSON (after every width)")
    a = ap.parse_args(argv)
    try:
        check_args(a)
    except ValueError as err:
        ap.error(str(err))
    from bmojo.jobs.mqar_full import ZOOLOGY_MAX_STEPS, ZOOLOGY_WIDTHS

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    bench = json.loads(H200_BENCH.read_text())
    copy_bps = bench["ceilings"]["copy_gbps"] * 1e9
    cal = calibrate()
    lo, mid, hi = cal["us_per_op"]
    print(f"calibration ({H200_BENCH.relative_to(RESULTS_DIR.parent.parent)}, {bench['info']['device']}):")
    for p in cal["points"]:
        print(
            f"  reference {p['op']:9} T={p['T']:5} {p['mode']:7}: {p['h200_s'] * 1e3:7.2f} ms on the H200, "
            f"{p['ops']:5} operators -> {p['us_per_op']:.1f} us/operator"
        )
    print(f"  host cost per operator: {lo:.1f} (fast end) / {mid:.1f} (median) / {hi:.1f} (slow end) us")
    cap, every = ZOOLOGY_MAX_STEPS, 250
    widths = a.widths or list(ZOOLOGY_WIDTHS)
    result = {"calibration": cal, "copy_gbps": copy_bps / 1e9, "fp32_peak_tflops": FP32_PEAK / 1e12, "widths": {}}
    total = [0.0, 0.0, 0.0]
    for width in widths:
        if width == a.ops_width:
            rows = zoology_work(width, a.arch)
        else:
            rows = zoology_work(width, a.arch, small_batches=(4, 8), ops_width=a.ops_width)
        print(f"\nwidth {width}: {len(rows)} models x {a.seeds} seeds, each to the {cap}-step cap")
        print(f"  {'model':16} {'budget':>6} {'ops/step':>8} {'GFLOP/step':>10} {'ms/step fast-mid-slow':>22}")
        width_total = [0.0, 0.0, 0.0]
        for r in rows:
            per = []
            for us, fast in ((lo, True), (mid, True), (hi, False)):
                st = seconds(r["step"], us, copy_bps, fast)
                ck = seconds(r["check"], us, copy_bps, fast)  # every cell, one batch of 128
                # + the final evaluation (256 per cell: two checks) and the eidetic diagnostic (a
                # prefill of 128 per cell, counted as one check)
                per.append(cap * st + (cap // every) * ck + 3 * ck)
            r["run_to_cap_s"] = per
            for i in range(3):
                width_total[i] += a.seeds * per[i]
            ms = [1e3 * seconds(r["step"], us, copy_bps, f) for us, f in ((lo, True), (mid, True), (hi, False))]
            print(
                f"  {r['arch']:16} {r['budget']:>6} {r['step']['ops']:8d} {r['step']['flops'] / 1e9:10.1f} "
                f"{ms[0]:7.1f} {ms[1]:6.1f} {ms[2]:7.1f}"
            )
        print(
            f"  width {width} upper bound: {width_total[0] / 3600:.1f} h (fast) / {width_total[1] / 3600:.1f} h "
            f"(median) / {width_total[2] / 3600:.1f} h (slow)"
        )
        result["widths"][str(width)] = {"rows": rows, "upper_bound_s": width_total}
        total = [t + w for t, w in zip(total, width_total, strict=True)]
        if a.out:
            write_json(a.out, result | {"partial": True})
    result["upper_bound_s"] = total
    print(
        f"\nall widths, every run to the cap: {total[0] / 3600:.1f} h (fast) / {total[1] / 3600:.1f} h (median) / "
        f"{total[2] / 3600:.1f} h (slow) on one H200, reference backend [{time.perf_counter() - t0:.0f} s]"
    )
    if a.out:
        write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
