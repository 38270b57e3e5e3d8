"""benchmarks/zoology_estimate.py: the counts its GPU-runtime estimate rests on.

The estimate itself (docs/experiments.md) cannot be checked without a GPU; these tests check what
it is built from: the profiler counts operators and matmul FLOPs as the model assumes, the
extrapolation from small vocabularies to the protocol's equals a direct count, and the H200
timings it calibrates on are in the repository."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import zoology_estimate as est  # noqa: E402


def test_count_sees_operators_flops_and_bytes():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    mm = est.count(lambda: a @ b)
    assert (mm.ops, mm.flops) == (1, 2 * 8 * 16 * 4)
    assert mm.nbytes >= 8 * 4 * 4
    add = est.count(lambda: a + a)
    assert (add.ops, add.flops) == (1, 0)
    two = est.count(lambda: (a @ b).relu())
    assert two.ops == 2


#: a tiny protocol (B'MOJO fits the 0.5 budget only) with the zoology protocol's structure
TINY = dict(seq_lens=(32, 48), kv_pairs=(2, 4), batch=9, eval_sequences=7, window=4, hybrid_state=4, vocab=1024)
ARCHS = ["bmojo"]


@pytest.fixture(scope="module")
def direct():
    """Profiled at the tiny protocol's own vocabulary and batch sizes: nothing carried."""
    from bmojo.jobs.mqar_full import ZOOLOGY

    return est.zoology_work(32, ARCHS, (1024, 2048), progress=False, base=ZOOLOGY | TINY)


def test_vocabulary_extrapolation_equals_a_direct_count(direct):
    """FLOPs and bytes carried from vocabularies 256/512 to 1024 by the per-token slope equal the
    counts of the same models profiled at 1024 (operators do not depend on the vocabulary)."""
    from bmojo.jobs.mqar_full import ZOOLOGY

    carried = est.zoology_work(32, ARCHS, (256, 512), progress=False, base=ZOOLOGY | TINY)
    rows = [(r["arch"], r["budget"]) for r in carried]
    assert rows == [(r["arch"], r["budget"]) for r in direct] == [("bmojo", "0.5")]
    for c, d in zip(carried, direct, strict=True):
        for kind in ("step", "check"):
            assert c[kind]["ops"] == d[kind]["ops"], (c["arch"], kind)
            assert c[kind]["flops"] == pytest.approx(d[kind]["flops"], rel=1e-9), (c["arch"], kind)
            assert c[kind]["nbytes"] == pytest.approx(d[kind]["nbytes"], rel=0.02), (c["arch"], kind)
        assert c["step"]["flops"] > 0 and c["check"]["ops"] > c["step"]["ops"] / 10


def test_small_batches_and_operators_at_another_width():
    """Width 48 profiled at batches 2 and 4, its operators counted on the same model narrowed to
    width 32 at the full batch, equals width 48 profiled at the full batch: the operator count does
    not depend on the width, and FLOPs and bytes follow the batch line."""
    from bmojo.jobs.mqar_full import ZOOLOGY

    kw = dict(progress=False, base=ZOOLOGY | TINY)
    full = est.zoology_work(48, ARCHS, (1024, 2048), **kw)
    small = est.zoology_work(48, ARCHS, (1024, 2048), small_batches=(2, 4), ops_width=32, **kw)
    assert [r["knobs"] for r in full] == [r["knobs"] for r in small] and full
    for f, s in zip(full, small, strict=True):
        assert s["ops_counted_at_width"] == 32
        for kind in ("step", "check"):
            assert s[kind]["ops"] == f[kind]["ops"], (f["arch"], kind)
            assert s[kind]["flops"] == pytest.approx(f[kind]["flops"], rel=1e-9), (f["arch"], kind)
            assert s[kind]["nbytes"] == pytest.approx(f[kind]["nbytes"], rel=0.05), (f["arch"], kind)


def test_calibration_timings_are_in_the_repository():
    rows = json.loads(est.H200_BENCH.read_text())["rows"]
    timed = {
        (r["section"], r["case"], r["mode"])
        for r in rows
        if r.get("impl", "").startswith("reference op") and r.get("seconds")
    }
    for op, T, modes in est.CALIBRATION:
        for mode in modes:
            assert (op, f"T={T} bfloat16", mode) in timed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--widths", "0"], "--widths: expected a width >= 1 divisible by the protocol's 4 heads, got 0"),
        (["--widths", "64", "66"], "--widths: expected a width >= 1 divisible by the protocol's 4 heads, got 66"),
        (["--widths", "72"], "--widths: expected a width the protocol's models can take, got 72 (ssm_head_dim"),
        (["--widths", "64", "64"], "--widths: expected each width once, got [64, 64]"),
        (["--arch", "bmojo", "gpt"], "--arch: expected names from transformer, swa, mamba2"),
        (["--arch", "bmojo", "bmojo"], "--arch: expected each name once, got ['bmojo', 'bmojo']"),
        (["--ops-width", "6"], "--ops-width: expected a width >= 1 divisible by the protocol's 4 heads, got 6"),
        (["--seeds", "0"], "--seeds: expected an int >= 1, got 0"),
    ],
)
def test_bad_flags_are_refused_before_the_calibration(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(est, "calibrate", lambda *a, **k: pytest.fail("calibrated despite a bad flag"))
    with pytest.raises(SystemExit) as exc:
        est.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_out_is_checked_before_the_calibration(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(est, "calibrate", lambda *a, **k: pytest.fail("calibrated despite a bad --out"))
    with pytest.raises(SystemExit) as exc:
        est.main(["--widths", "64", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--out: expected a file path, got the directory" in capsys.readouterr().err
    # the protocol's own widths and every architecture pass
    args = argparse.Namespace(widths=[64, 128, 256], arch=None, seeds=3, ops_width=64, out=tmp_path / "a" / "e.json")
    est.check_args(args)
    assert (tmp_path / "a").is_dir()
