"""The GPU benchmark script runs end to end at toy sizes (on CPU through the interpreter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_tiny_runs(tmp_path, device, monkeypatch):
    if device.type == "cuda":
        pytest.skip("the GPU run executes the full benchmark itself (benchmarks/triton/gpu_run.sh)")
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton import tune as tn
        from benchmarks.triton.__main__ import main
    finally:
        sys.path.remove(str(ROOT))
    out = tmp_path / "bench.json"
    # tuned: adopt every slot's best other config whatever its speed (interpreter timings are
    # noise), so the re-timing with the adopted configs in force runs here too
    monkeypatch.setattr(tn, "ADOPT_SPEEDUP", 0.0)
    sections = "attention,ssm,norm_conv,decode,eidetic,tune:120,tuned"
    assert main(["--tiny", "--sections", sections, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    timed = [r for r in rows if r.get("mode") in ("fwd", "fwd+bwd", "step")]
    ours = [r for r in timed if str(r.get("impl", "")).startswith("triton")]
    assert ours and all(r["seconds"] is not None for r in ours)
    # the benchmark checks that what it times agrees with the reference (bf16 tolerance)
    diffs = [r for r in rows if r.get("mode") == "max_abs_diff"]
    assert diffs and all(r["value"] is not None and r["value"] <= 1e-2 + 2e-2 * r["scale"] for r in diffs)
    assert {r["section"] for r in rows} >= {"attention", "ssm", "norm_conv", "decode", "eidetic", "tune", "tuned"}
    assert not [r for r in rows if "stopped" in str(r.get("note", ""))]
    # eidetic: both ops were called by the layer and timed; their share of the layer is reported
    shares = [r for r in rows if r["section"] == "eidetic" and str(r.get("mode", "")).startswith("share")]
    assert len(shares) == 6 and all(r["value"] is not None and r["value"] > 0 for r in shares)
    # tune: per group the default and one other config were checked against the default and
    # timed, and a best row carries the line to paste into the op's TILES table
    tune = [r for r in rows if r["section"] == "tune"]
    best = [r for r in tune if r["mode"] == "best"]
    assert len(best) == 9, [r["impl"] for r in best]
    # the "atomic" backward is timed against the default "split" one (window only and w + f)
    atomic = [r for r in tune if r["impl"] == "attention.bwd_dkdv[dq=atomic]" and r.get("status") == "ok"]
    assert sorted(r["config"].count("dq='atomic'") for r in atomic) == [0, 0, 1, 1], atomic
    for b in best:
        timed = [r for r in tune if r["impl"] == b["impl"] and r["case"] == b["case"] and r.get("status") == "ok"]
        assert len(timed) == 2 and b["seconds"] == min(r["seconds"] for r in timed)
        assert "TILES gpu[" in b["snippet"]
        if b["impl"] != "ssm_scan.train":  # train: the chunk and the backward's launch, two lines
            assert b["config"] in b["snippet"]
    # tuned: one choice per table slot, each adopted (threshold 0), then our kernels re-timed with
    # them in force (attention: no reference op; ssm: no [parallel]/[recompute] rows)
    choices = [r for r in rows if r["section"] == "tuned"]
    assert sorted(r["case"] for r in choices) == sorted(
        f"{op}.{slot}"
        for op, slots in (("bmojo_attention", ("fwd", "bwd_dq", "bwd_dkdv")), ("ssm_scan", ("fwd", "train")))
        for slot in slots
    )
    # (bwd_dq adopts nothing when bwd_dkdv adopts the atomic backward, which runs no dQ kernel)
    atomic = any(r["case"].endswith("bwd_dkdv") and "dq='atomic'" in r["config"] for r in choices)
    for r in choices:
        if atomic and r["case"].endswith("bwd_dq"):
            assert r["mode"] == "default kept" and r["snippet"] == "", r
        else:
            assert r["mode"] == "adopted" and "TILES gpu[" in r["snippet"], r
    again = [r for r in rows if r.get("mode") in ("fwd", "fwd+bwd") and str(r["case"]).endswith("[tuned]")]
    assert {r["section"] for r in again} == {"attention", "ssm"}
    assert all(r["impl"].startswith("triton") and r["seconds"] is not None for r in again), again
    assert len([r for r in again if r["section"] == "attention"]) == 6
    assert {r["impl"] for r in again if r["section"] == "ssm"} == {"triton ssm_scan", "triton ssm_scan (no_grad)"}
