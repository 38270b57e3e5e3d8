"""The static resource report (``python -m bmojo_triton.aot --report``, ``bmojo_triton.resources``)
and tune's static pre-check: the occupancy rules on hand-computed cases, the cuobjdump parsers on
sample text, ``--tiles`` parsing, and one real sm_90 compile in a subprocess (the kernels must not
be interpreted there; skipped with the reason when Triton's cuobjdump is absent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bmojo_triton import resources as R
from bmojo_triton.aot import parse_tiles

ROOT = Path(__file__).resolve().parents[2]
KIB = 1024


# ----- occupancy: CUDA occupancy-calculator rules, numbers worked by hand -----
@pytest.mark.parametrize(
    "arch, regs, warps, smem, ctas, limiter",
    [
        # 255 regs -> 256/thread -> 8192/warp; 16384 per sub-partition holds 2 warps -> 8 warps -> 2 CTAs
        (90, 255, 4, 10 * KIB, 2, "regs"),
        # 97 regs round up to 104 -> 3328/warp -> 4 warps per sub-partition -> 16 -> 4 CTAs
        # (unrounded 3104/warp would give 5); 96 regs -> 3072/warp -> 5 -> 20 warps -> 5 CTAs
        (90, 97, 4, 0, 4, "regs"),
        (90, 96, 4, 0, 5, "regs"),
        # 152 regs -> 4864/warp: 3 per sub-partition -> 12 one-warp CTAs (65536 // 4864 = 13 on
        # one undivided register file: the sub-partition rule binds)
        (90, 152, 1, 0, 12, "regs"),
        # 64 regs -> 2048/warp -> 32 warps -> 8 CTAs; smem 100 KiB + 1 KiB reserved = 103424 B:
        # 233472 // 103424 = 2 on sm_90 (228 KiB), 167936 // 103424 = 1 on sm_80 (164 KiB)
        (90, 64, 4, 100 * KIB, 2, "smem"),
        (80, 64, 4, 100 * KIB, 1, "smem"),
        # smem rounds up to 128 B: 57 KiB + 100 B + 1 KiB -> 59492 -> 59520; 233472 // 59520 = 3
        (90, 32, 4, 57 * KIB + 100, 3, "smem"),
        # 24 regs, 1 warp: registers allow 84 warps, warps 64, the CTA cap 32 binds
        (90, 24, 1, 0, 32, "ctas"),
        # 16 regs, 8 warps: registers allow 128 warps (16 CTAs), warps 64 -> 8 CTAs
        (90, 16, 8, 0, 8, "warps"),
        # 255 regs x 16 warps = 131072 > 64K registers per CTA: does not launch
        (90, 255, 16, 0, 0, "launch fails"),
        # sm_86/sm_89: 48 warps and 16 / 24 CTAs per SM, 100 KiB of shared memory per SM:
        # 24 regs, 1 warp: the CTA cap binds (16, 24); 16 regs, 8 warps: 48 // 8 = 6 CTAs;
        # 50 KiB + 1 KiB reserved = 52224 B: 102400 // 52224 = 1
        (86, 24, 1, 0, 16, "ctas"),
        (89, 24, 1, 0, 24, "ctas"),
        (86, 16, 8, 0, 6, "warps"),
        (89, 32, 4, 50 * KIB, 1, "smem"),
        # more shared memory than one CTA may have (227 KiB on sm_90, 163 KiB on sm_80, 99 on sm_86)
        (90, 32, 4, 227 * KIB + 1, 0, "launch fails"),
        (80, 32, 4, 164 * KIB, 0, "launch fails"),
        (86, 32, 4, 99 * KIB + 1, 0, "launch fails"),
    ],
)
def test_occupancy_hand_computed(arch, regs, warps, smem, ctas, limiter):
    occ = R.occupancy(R.sm_limits(arch), regs=regs, num_warps=warps, smem=smem)
    assert (occ.ctas_per_sm, occ.limiter) == (ctas, limiter)
    assert occ.warps_per_sm == ctas * warps


def test_occupancy_hardware_rounds_warps_to_sub_partitions():
    # 255 regs, 6 warps: rounded to 8 warps x 8192 = 65536 fits; 9 warps -> 12 x 8192 does not
    lim = R.sm_limits(90)
    assert R.occupancy(lim, regs=255, num_warps=6, smem=0).ctas_per_sm == 1
    assert R.occupancy(lim, regs=255, num_warps=9, smem=0).limiter == "launch fails"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(regs=256, num_warps=4, smem=0), "regs: expected an int <= 255"),
        (dict(regs=32, num_warps=0, smem=0), "num_warps: expected an int >= 1"),
        (dict(regs=32, num_warps=4, smem=-1), "smem: expected an int >= 0"),
        (dict(regs=32.0, num_warps=4, smem=0), "regs: expected an int"),
    ],
)
def test_occupancy_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R.occupancy(R.sm_limits(90), **kwargs)


def test_unknown_arch_is_an_error():
    with pytest.raises(ValueError, match=r"arch: expected one of \[80, 86, 89, 90\].*got 75"):
        R.sm_limits(75)


# ----- parsers -----
RES_USAGE = """
Resource usage:
 Common:
  GLOBAL:11 CONSTANT[4]:8
 Function _other_kernel:
  REG:40 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _attn_bwd_dq_kernel:
  REG:254 STACK:128 SHARED:1024 LOCAL:8 CONSTANT[0]:816 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

SASS = """
        /*1770*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR12], RZ, !UPT ;   /* 0x00e000000c1879f0 */
                                                                                           /* 0x000fe20000000800 */
        /*17c0*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24, gsb0 ;   /* 0x00e00000081879f0 */
        /*1800*/               @P0 HMMA.16816.F32.BF16 R4, R8, R12, R4 ;                   /* 0x0000000c0804723c */
        /*1810*/                   STL.64 [R1+0x8], R2 ;                                   /* 0x0000080201007387 */
        /*1820*/              @!P1 LDL.LU R2, [R1+0x4] ;                                   /* 0x0000040001027983 */
        /*1830*/                   LDL R3, [R1] ;                                          /* 0x0000000001037983 */
        /*1840*/                   LDG.E R5, desc[UR4][R6.64] ;                            /* 0x0000000406057981 */
        /*1850*/                   MOV R9, 0x1 ;   // a comment naming HGMMA, LDL and STL
"""


def test_parse_res_usage_picks_the_function():
    f = R.parse_res_usage(RES_USAGE, "_attn_bwd_dq_kernel")
    assert (f["REG"], f["STACK"], f["SHARED"], f["LOCAL"]) == (254, 128, 1024, 8)
    assert R.parse_res_usage(RES_USAGE, "_other_kernel")["REG"] == 40
    with pytest.raises(ValueError, match="_missing_kernel"):
        R.parse_res_usage(RES_USAGE, "_missing_kernel")


def test_count_opcodes_ignores_modifiers_predicates_and_comments():
    assert R.count_opcodes(SASS, R.SPILL_OPS + R.MMA_OPS) == dict(LDL=2, STL=1, HGMMA=2, HMMA=1, DMMA=0, IMMA=0)


def test_kernel_resources_spill_flag():
    base = dict(regs=200, stack=0, local=0, smem_static=1024, smem_dynamic=4096, spill_loads=0, spill_stores=0)
    r = R.KernelResources(**base, mma=dict(HGMMA=3, HMMA=0))
    assert not r.spills and r.smem == 5120 and r.mma_text() == "HGMMAx3"
    assert R.KernelResources(**dict(base, stack=16), mma={}).spills
    assert R.KernelResources(**dict(base, spill_stores=1), mma={}).spills


# ----- --tiles -----
def test_parse_tiles_compact_and_fields():
    from bmojo_triton.ops import bmojo_attention as att
    from bmojo_triton.ops import ssm_scan as scan

    table, kernel, cfg = parse_tiles("bmojo_attention.fwd=128x32w8s2", torch.bfloat16)
    assert (table, kernel) == (att.TILES, "fwd")
    assert cfg == att.AttnTiles(block_m=128, block_n=32, num_warps=8, num_stages=2)
    _, _, cfg = parse_tiles("bmojo_attention.bwd_dkdv=64x64,dq=atomic", torch.bfloat16)
    assert cfg.dq == "atomic" and cfg.num_warps == att.TILES.lookup("bwd_dkdv", (64, 2)).num_warps
    _, _, cfg = parse_tiles("ssm_scan.fwd=block_l=32,block_p=None,num_warps=8", torch.bfloat16)
    assert cfg == scan.ScanTiles(block_l=32, block_p=None, num_warps=8, num_stages=cfg.num_stages)
    _, _, cfg = parse_tiles("bmojo_attention.fwd=interior=False", torch.bfloat16)
    assert cfg == att.AttnTiles(interior=False)  # a bool, not the string "False" (which is refused)


@pytest.mark.parametrize(
    "text, match",
    [
        ("bmojo_attention.fwd", "--tiles: expected op.kernel=SPEC"),
        ("rmsnorm.fwd=64x64", "--tiles op: expected one of"),
        ("bmojo_attention.fwdx=64x64", "--tiles bmojo_attention kernel: expected one of"),
        ("bmojo_attention.fwd=64x48", "AttnTiles.block_n: expected a power of two >= 16, got 48"),
        ("bmojo_attention.fwd=64x64,warps=8", "expected AxB"),
    ],
)
def test_parse_tiles_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_tiles(text, torch.bfloat16)


def test_static_note_flags_only_spills():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton.tune import static_note
    finally:
        sys.path.remove(str(ROOT))
    clean = dict(kernel="_k", regs=128, stack=0, spill_loads=0, spill_stores=0, spills=False)
    assert static_note([clean]) is None
    spilled = dict(clean, kernel="_s", regs=255, stack=64, spill_loads=3, spill_stores=2, spills=True)
    note = static_note([clean, spilled])
    assert note == "static spills: _s 255 regs, stack 64 B, LDL/STL 3/2"


# ----- a real compile (sm_90, bf16) in a subprocess without the interpreter -----
SCRIPT = r"""
import json, sys, torch
from bmojo_triton import aot
out = sys.argv[1]
aot.main(["--report", "--arch", "90", "--case", "attention window", "--json", out + "/default.json"])
aot.main(["--report", "--arch", "90", "--case", "attention window", "--tiles", "bmojo_attention.fwd=128x64w8s3",
          "--json", out + "/big.json"])
# the JIT's specialisation: the width argument divisible by 16 (1024) and not (1000) compiles
# two variants of one kernel with the same constexprs (BLOCK = 1024 for both)
from bmojo_triton.ops.eidetic import innovation_scores
log = []
with aot.compile_instead_of_launch(90, log):
    for width in (1024, 1000, 1024):
        k = torch.randn(1, 8, 1, width)
        innovation_scores(k, k)
json.dump([dict(kernel=v.kernel, BLOCK=v.constexprs["BLOCK"]) for v in log], open(out + "/spec.json", "w"))
# tune's static pre-check on the attention forward group (CPU tensors, GPU tiles)
sys.path.insert(0, ".")
from benchmarks.triton.tune import _attn_groups, static_resources
s = dict(b=1, H=16, Dh=64, w=64, f=64, T=128, blocks=(64,), num_warps=(4,), num_stages=(3,))
grp = _attn_groups(s, False, torch.device("cpu"), torch.bfloat16, 1)[0]
cfg = aot.parse_tiles("bmojo_attention.fwd=64x64w4s3", torch.bfloat16)[2]
st = static_resources(grp.measure, cfg, grp.kernels, 90)
json.dump(st, open(out + "/static.json", "w"))
"""


@pytest.mark.skipif(R.cuobjdump() is None, reason="Triton's cuobjdump is not available (TRITON_CUOBJDUMP_PATH)")
def test_report_compiles_and_is_plausible(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| case" in proc.stdout and "_attn_fwd_kernel" in proc.stdout and "compile-time figures" in proc.stdout
    default = json.loads((tmp_path / "default.json").read_text())
    big = json.loads((tmp_path / "big.json").read_text())
    assert default["arch"] == 90 and default["dtype"] == "bfloat16"
    kernels = {r["kernel"] for r in default["rows"]}
    assert kernels == {
        "_attn_fwd_kernel",
        "_attn_bwd_delta_kernel",
        "_attn_bwd_dq_kernel",
        "_attn_bwd_dkdv_band_kernel",
    }
    for r in default["rows"] + big["rows"]:
        res, occ = r["resources"], r["occupancy"]
        assert 0 < res["regs"] <= 255
        assert res["smem"] == res["smem_static"] + res["smem_dynamic"] > 0
        # every attention kernel but Δ's (a row-wise dot product) multiplies on tensor cores
        assert (sum(res["mma"].values()) > 0) == (r["kernel"] != "_attn_bwd_delta_kernel")
        assert res["spills"] == bool(res["stack"] or res["local"] or res["spill_loads"] or res["spill_stores"])
        assert 1 <= occ["ctas_per_sm"] <= 32 and occ["warps_per_sm"] == occ["ctas_per_sm"] * r["num_warps"]

    def fwd(rows):
        (row,) = [r for r in rows if r["kernel"] == "_attn_fwd_kernel"]
        return row

    small, large = fwd(default["rows"]), fwd(big["rows"])
    assert (small["constexprs"]["BLOCK_M"], small["num_warps"]) == (64, 4)
    assert (large["constexprs"]["BLOCK_M"], large["num_warps"]) == (128, 8)
    assert large["resources"]["smem"] >= small["resources"]["smem"]  # a bigger query tile
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec == [dict(kernel="_innovation_kernel", BLOCK=1024)] * 2
    (st,) = json.loads((tmp_path / "static.json").read_text())
    assert st["kernel"] == "_attn_fwd_kernel" and 0 < st["regs"] <= 255 and st["ctas_per_sm"] >= 1
    # the same kernel, config, head size and argument divisibility as the report's window forward
    assert st["regs"] == small["resources"]["regs"]


@pytest.mark.parametrize("mode", ["flag", "skip"])
def test_tune_static_flags_or_skips_spilling_configs(monkeypatch, mode):
    """Group.run with the pre-check (its compile replaced by fixed resources: the default config
    spills, one candidate spills, one does not): "flag" times all three and marks the spills,
    "skip" does not time the spilling candidate but always times the default, the reference."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton import tune
        from benchmarks.triton.common import ROWS
    finally:
        sys.path.remove(str(ROOT))
    from bmojo_triton.ops.bmojo_attention import AttnTiles

    def fake_static(measure, cfg, names, arch):
        spills = cfg.block_m in (64, 32)  # the default (64x64) and the 32x32 candidate
        res = dict(kernel=names[0], regs=255, stack=64 * spills, spill_loads=int(spills), spill_stores=int(spills))
        return [dict(res, spills=spills, smem=1024, ctas_per_sm=2)]

    monkeypatch.setattr(tune, "static_resources", fake_static)
    timed = []

    def measure(cfg, check):
        if check:
            return [torch.zeros(3), torch.zeros(3)]
        timed.append(cfg)
        return 1e-3

    grp = tune.Group(
        "attention.fwd",
        "test",
        str,
        AttnTiles(64, 64),
        [dict(block_m=32, block_n=32), dict(block_m=128, block_n=64)],
        [],
        lambda cfg: None,
        measure,
        False,
        False,
        5,
        kernels=("_attn_fwd_kernel",),
        static=mode,
        arch=90,
    )
    start = len(ROWS)
    grp.run(float("inf"))
    rows = {r["config"]: r for r in ROWS[start:]}
    del ROWS[start:]
    by_m = {r["config"].split("block_m=")[1].split(",")[0]: r for r in rows.values()}
    assert by_m["64"]["status"] == "ok" and by_m["64"]["static_spills"] is True  # the default is timed
    assert by_m["128"]["status"] == "ok" and by_m["128"]["static_spills"] is False
    assert "static_note" not in by_m["128"]
    assert by_m["32"]["static_note"] == "static spills: _attn_fwd_kernel 255 regs, stack 64 B, LDL/STL 1/1"
    if mode == "flag":
        assert by_m["32"]["status"] == "ok" and len(timed) == 3
    else:
        assert by_m["32"]["status"].startswith("pruned: static spills") and by_m["32"]["seconds"] is None
        assert len(timed) == 2 and all(c.block_m != 32 for c in timed)


def test_tune_compiled_info_reads_the_tuned_kernels():
    """Rows carry n_regs/n_spills of the launched CompiledKernels named by the group, once each."""
    from types import SimpleNamespace as NS

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton.tune import _compiled_info
    finally:
        sys.path.remove(str(ROOT))

    def kernel(regs, spills, warps=4):
        return NS(metadata=NS(num_warps=warps, num_stages=3), n_regs=regs, n_spills=spills)

    a, b = kernel(140, 0), kernel(255, 32, 8)
    record = [("_fwd", a), ("_other", kernel(10, 0)), ("_bwd", b), ("_fwd", a), ("_bwd", None)]
    assert _compiled_info(record, ("_fwd", "_bwd")) == [
        dict(kernel="_fwd", num_warps=4, num_stages=3, n_regs=140, n_spills=0),
        dict(kernel="_bwd", num_warps=8, num_stages=3, n_regs=255, n_spills=32),
    ]


def test_tune_flips_each_flag_at_the_default_and_at_the_best_tile_shape():
    """A launch option (here attention's ``interior``) is tried flipped at the default tiles and,
    after the tile pass, flipped at the best config found, so a flag that only pays at other tiles
    (e.g. the scan's chunk-parallel backward at smaller chunks) is not missed."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton import tune
        from benchmarks.triton.common import ROWS
    finally:
        sys.path.remove(str(ROOT))
    from bmojo_triton.ops.bmojo_attention import AttnTiles

    timed = []

    def measure(cfg, check):
        if check:
            return [torch.zeros(3), torch.zeros(3)]
        timed.append((cfg.block_m, cfg.block_n, cfg.interior))
        return 1e-3 if cfg.block_m == 128 else 2e-3

    tiles = [dict(block_m=32, block_n=32), dict(block_m=128, block_n=64)]
    grp = tune.Group(
        "attention.fwd", "test", str, AttnTiles(64, 64), tiles, [], lambda c: None, measure, False, False, 10
    )
    grp.flags = ("interior",)
    start = len(ROWS)
    grp.run(float("inf"))
    del ROWS[start:]
    # tile shapes nearest the default first (128 × 64 before 32 × 32)
    assert timed == [(64, 64, True), (64, 64, False), (128, 64, True), (32, 32, True), (128, 64, False)]
    # a group's ``extra`` (e.g. the atomic-dQ groups' dq="atomic") holds for every candidate but the
    # default, which is their baseline — the flips at the best config included
    dqs = []
    grp = tune.Group(
        "attention.bwd_dkdv[dq=atomic]",
        "test",
        str,
        AttnTiles(64, 64),
        tiles,
        [],
        lambda c: None,
        lambda cfg, check: [torch.zeros(3)] * 2 if check else dqs.append(cfg.dq) or 1e-3,
        False,
        False,
        10,
        extra=dict(dq="atomic"),
    )
    grp.flags = ("interior",)
    start = len(ROWS)
    grp.run(float("inf"))
    del ROWS[start:]
    assert dqs[0] == "split" and len(dqs) > 2 and set(dqs[1:]) == {"atomic"}, dqs


# ----- the fit ladder against a real compile: the scan's training backward on sm_86 -----
FIT_SCRIPT = r"""
import json, torch
from bmojo_triton import aot
from bmojo_triton.ops.ssm_scan import ssm_scan
out = {}
for arch in (86, 90):
    log = []
    with aot.compile_instead_of_launch(arch, log, inspect=True) as session:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 64, 2, 64, generator=g).bfloat16().requires_grad_()
        dt = (torch.rand(1, 64, 2, generator=g) * 0.1 + 0.01).bfloat16().requires_grad_()
        A = (-torch.rand(2, generator=g) - 0.5).bfloat16().requires_grad_()
        B, C = (torch.randn(1, 64, 1, 128, generator=g).bfloat16().requires_grad_() for _ in range(2))
        D = torch.randn(2, generator=g).bfloat16().requires_grad_()
        aot._backward(ssm_scan(x, dt, A, B, C, D))
    out[arch] = dict(
        launched=[[v.kernel, v.constexprs["BLOCK_P"], v.num_stages, v.resources.smem] for v in log],
        refused=session.refused,
    )
print(json.dumps(out))
"""


@pytest.mark.skipif(R.cuobjdump() is None, reason="Triton's cuobjdump is not available (TRITON_CUOBJDUMP_PATH)")
def test_sm86_compile_steps_the_scan_backward_down():
    """Mamba-2's P = 64, N = 128 in bfloat16: the table's training backward (all of P, 3 stages)
    needs more than the 99 KiB an sm_86/sm_89 CTA may have, so the compile for sm_86 refuses it as
    the driver would and the launcher steps down to a variant that fits; on sm_90 (227 KiB) the
    table's config launches as it is."""
    env = dict(os.environ, TRITON_INTERPRET="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", FIT_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    bwd = {arch: [row for row in got["launched"] if row[0] == "_ssd_bwd_kernel"] for arch, got in out.items()}
    assert [row[1:3] for row in bwd["90"]] == [[64, 3]] and out["90"]["refused"] == []
    # sm_86: refused at 3 stages (over 99 KiB), launched at 2 (all of P still)
    assert [row[1:3] for row in bwd["86"]] == [[64, 2]]
    assert bwd["86"][0][3] <= R.sm_limits(86).smem_per_block < bwd["90"][0][3]
    (line,) = out["86"]["refused"]
    assert line.startswith("_ssd_bwd_kernel L32 P64 N128 w8 s3 needs ") and line.endswith(" KiB > 99")
    assert float(line.split(" needs ")[1].split()[0]) > 99
