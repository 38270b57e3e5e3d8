"""``benchmarks.triton.tune.choose``: which tuned config the ``tuned`` section adopts per table slot,
on hand-made timings (no kernel runs): the geometric mean over the slot's groups, eligibility (a
config must be timed in every group that could time it), the "atomic" variant ranked only in its
own groups, the threshold; and the ``tuned`` section's refusal to guess without a tune run."""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
try:
    from benchmarks.triton import tune as tn
finally:
    sys.path.remove(str(ROOT))


@dataclass(frozen=True)
class Cfg:
    block: int = 64
    dq: str = "split"


DEFAULT = Cfg()


def group(slot, results, extra=None, op="op"):
    g = tn.Group(
        f"{op}.{slot}",
        f"case{len(results)}",
        lambda cfg: f"line {cfg}",
        DEFAULT,
        [],
        [],
        lambda cfg: None,
        None,
        False,
        False,
        0,
        extra=extra,
        op=op,
        slot=slot,
    )
    g.results = list(results)
    return g


def test_geometric_mean_over_the_slots_groups_and_threshold():
    a, b = Cfg(block=32), Cfg(block=128)
    # a: 1.10x and 1.00x -> 1.0488; b: 1.30x and 0.80x -> 1.0198 (faster in one group only)
    g1 = group("fwd", [(DEFAULT, 1.0), (a, 1 / 1.1), (b, 1 / 1.3)])
    g2 = group("fwd", [(DEFAULT, 2.0), (a, 2.0), (b, 2.0 / 0.8)])
    (c,) = tn.choose([g1, g2], min_speedup=1.03)
    assert c.config == a and c.adopted and c.entries == {"fwd": a}
    assert c.speedup == pytest.approx(math.sqrt(1.1))
    assert c.lines == f"line {a}" and len(c.groups) == 2
    (c,) = tn.choose([g1, g2], min_speedup=1.05)
    assert c.config == a and not c.adopted and c.entries == {} and c.lines == ""


def test_a_config_missing_from_one_group_is_not_eligible():
    a, b = Cfg(block=32), Cfg(block=128)
    g1 = group("fwd", [(DEFAULT, 1.0), (a, 0.5), (b, 0.9)])
    g2 = group("fwd", [(DEFAULT, 1.0), (b, 0.9)])  # a was not timed here (budget)
    (c,) = tn.choose([g1, g2], min_speedup=1.0)
    assert c.config == b and c.speedup == pytest.approx(1 / 0.9)


def test_atomic_configs_rank_over_their_own_groups():
    at, split = Cfg(block=32, dq="atomic"), Cfg(block=128)
    atomic = dict(dq="atomic")
    g_w = group("bwd", [(DEFAULT, 1.0), (at, 0.8)], extra=atomic)
    g_f = group("bwd", [(DEFAULT, 2.0), (at, 1.6)], extra=atomic)
    g_split = group("bwd", [(DEFAULT, 2.0), (split, 1.9)])
    (c,) = tn.choose([g_w, g_f, g_split], min_speedup=1.03)
    assert c.config == at and c.adopted and c.speedup == pytest.approx(1.25)
    assert [name for name, _ in c.groups] == ["op.bwd", "op.bwd"] and len(c.groups) == 2
    # the split config alone wins when the atomic one loses in one of its groups
    g_f.results[1] = (at, 2.6)
    (c,) = tn.choose([g_w, g_f, g_split], min_speedup=1.03)
    assert c.config == split and c.speedup == pytest.approx(2.0 / 1.9)


def test_slots_are_ranked_apart_and_the_default_alone_is_kept():
    a = Cfg(block=32)
    cs = tn.choose(
        [group("fwd", [(DEFAULT, 1.0), (a, 0.5)]), group("bwd", [(DEFAULT, 1.0)]), group("x", [], op="other")]
    )
    by = {(c.op, c.slot): c for c in cs}
    assert by["op", "fwd"].adopted and by["op", "fwd"].speedup == pytest.approx(2.0)
    for key in (("op", "bwd"), ("other", "x")):
        assert by[key].config is None and not by[key].adopted and by[key].entries == {}


def test_tuned_without_a_tune_run_says_so(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton import __main__ as bench
    finally:
        sys.path.remove(str(ROOT))
    monkeypatch.setattr(tn, "LAST", [])
    n = len(bench.ROWS)
    bench.tuned(dict(T=[8]), {}, False, None, None, (), ())
    assert "no tune results in this run" in capsys.readouterr().out
    assert bench.ROWS[n:] == [dict(section="tuned", case="-", note=bench.ROWS[n]["note"])]
    del bench.ROWS[n:]


def test_tuned_retimes_with_the_adopted_configs_in_force(monkeypatch, capsys):
    from dataclasses import replace

    import torch
    from bmojo_triton.ops import bmojo_attention as att
    from bmojo_triton.ops import ssm_scan as scan

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton import __main__ as bench
    finally:
        sys.path.remove(str(ROOT))
    a_def = att.TILES.interpreter["fwd"]
    a_new = replace(a_def, block_m=a_def.block_m * 2)
    s_def = scan.TILES.interpreter["fwd"]
    s_new = replace(s_def, block_l=s_def.block_l * 2)
    g_att = tn.Group("a", "c", lambda c: "a line", a_def, [], [], None, None, False, False, 0, op="bmojo_attention")
    g_att.slot, g_att.entries = "fwd", lambda c: {"fwd": c}
    g_att.results = [(a_def, 1.0), (a_new, 0.5)]
    g_scan = tn.Group("s", "c", lambda c: "s line", s_def, [], [], None, None, False, False, 0, op="ssm_scan")
    g_scan.slot, g_scan.entries = "fwd", lambda c: {"fwd": c}
    g_scan.results = [(s_def, 1.0), (s_new, 0.99)]  # 1.01x: below the threshold, kept
    monkeypatch.setattr(tn, "LAST", [g_att, g_scan])
    seen = {}
    monkeypatch.setattr(bench, "attention", lambda s, *a: seen.update(att=(s, att.TILES.active(), scan.TILES.active())))
    monkeypatch.setattr(bench, "ssm", lambda s, *a: seen.update(ssm=s))
    n = len(bench.ROWS)
    sz = dict(attention=dict(T=[1], ref_max_T=64), ssm=dict(T=[1]))
    bench.tuned(dict(T=[40]), sz, False, torch.device("cpu"), torch.float32, (), ())
    out = capsys.readouterr().out
    assert "tuned bmojo_attention.fwd       adopted" in out and "a line" in out and "s line" not in out
    spec, over_att, over_scan = seen["att"]
    assert over_att == {"fwd": a_new} and not over_scan
    assert spec["T"] == [40] and spec["ref_max_T"] == 0 and spec["tag"] == " [tuned]"
    assert "ssm" not in seen  # nothing adopted for the scan: not re-timed
    rows = bench.ROWS[n:]
    assert [(r["case"], r["mode"]) for r in rows] == [
        ("bmojo_attention.fwd", "adopted"),
        ("ssm_scan.fwd", "default kept"),
    ]
    del bench.ROWS[n:]


@dataclass(frozen=True)
class Tile:
    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    interior: bool = True


def test_seeds_are_tried_right_after_the_default_and_its_flags():
    seed = dict(block_m=128, block_n=64, num_warps=8, num_stages=3)
    tiles = [dict(block_m=m, block_n=n) for m in (32, 64, 128) for n in (32, 64, 128)]
    g = tn.Group("g", "c", str, Tile(), tiles, [(4, 3)], lambda c: None, None, False, False, 99, flags=("interior",))
    g.seeds = (seed,)
    first = list(itertools.islice(g.candidates(), 4))
    assert first[:3] == [Tile(), Tile(interior=False), Tile(**seed)]
    assert first[3] in {Tile(**t) for t in tiles}  # then the tile pass
    # the benchmark's seeds are legal launch configs of their kernels
    from bmojo_triton.ops.bmojo_attention import TILES, AttnTiles

    for kernel, seeds in tn.ATTN_SEEDS.items():
        assert kernel in TILES.kernels and seeds
        for sd in seeds:
            AttnTiles(**sd)


def test_an_adopted_atomic_backward_leaves_the_dq_kernel_unadopted():
    at = Cfg(block=32, dq="atomic")
    dq_cfg = Cfg(block=128)
    groups = [
        group("bwd_dkdv", [(DEFAULT, 1.0), (at, 0.5)], extra=dict(dq="atomic"), op="bmojo_attention"),
        group("bwd_dq", [(DEFAULT, 1.0), (dq_cfg, 0.5)], op="bmojo_attention"),
    ]
    by = {c.slot: c for c in tn.choose(groups)}
    assert by["bwd_dkdv"].adopted and by["bwd_dkdv"].config == at
    assert not by["bwd_dq"].adopted and by["bwd_dq"].entries == {} and by["bwd_dq"].lines == ""
    assert "atomic" in by["bwd_dq"].note and by["bwd_dq"].config == dq_cfg
    # a split bwd_dkdv leaves bwd_dq's adoption alone
    groups[0].results[1] = (at, 2.0)
    by = {c.slot: c for c in tn.choose(groups)}
    assert not by["bwd_dkdv"].adopted and by["bwd_dq"].adopted and by["bwd_dq"].note == ""


def test_a_tie_goes_to_the_config_timed_first():
    a, b = Cfg(block=32), Cfg(block=128)
    for order in ([a, b], [b, a]):
        g = group("fwd", [(DEFAULT, 1.0)] + [(c, 0.5) for c in order])
        (c,) = tn.choose([g])
        assert c.config == order[0]
