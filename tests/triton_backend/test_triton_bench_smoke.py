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


def _bench():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton import __main__ as bench
    finally:
        sys.path.remove(str(ROOT))
    return bench


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--sections: expected comma-separated names"),
        ("ssm,,norm_conv", "--sections: expected comma-separated sections without empty entries"),
        ("ssm,ssm", "--sections: expected each section (at its sizes) once, got 'ssm' more than once"),
        ("ssm@40+40", "--sections: expected each size once, got 'ssm@40+40'"),
        ("ssm:nan", "--sections: expected a finite budget > 0 seconds after ':', got 'ssm:nan'"),
        ("ssm:inf", "--sections: expected a finite budget > 0 seconds after ':', got 'ssm:inf'"),
        ("ssm:0", "--sections: expected a finite budget > 0 seconds after ':', got 'ssm:0'"),
    ],
)
def test_sections_refused(text, message):
    with pytest.raises(ValueError) as err:
        _bench().parse_sections(text)
    assert message in str(err.value)


def test_sections_may_repeat_at_other_sizes():
    got = _bench().parse_sections("attention@8192:35,ssm:60,attention@32768:35,tune:60,tuned:25")
    assert [(n, Ts) for n, Ts, _ in got][:3] == [("attention", [8192]), ("ssm", None), ("attention", [32768])]


@pytest.mark.parametrize(
    ("argv", "message", "cpu_only"),
    [
        (["--budget", "0"], "--budget: expected finite seconds > 0, got 0.0", False),
        (["--budget", "-5"], "--budget: expected finite seconds > 0, got -5.0", False),
        (["--budget", "nan"], "--budget: expected finite seconds > 0, got nan", False),
        (["--budget", "inf"], "--budget: expected finite seconds > 0, got inf", False),
        (["--dtypes", "bf16"], "--dtypes: expected names from bfloat16,float16,float32,float64, got 'bf16'", False),
        (["--dtypes", "Tensor"], "--dtypes: expected names from bfloat16,float16,float32,float64, got 'Tensor'", False),
        (["--dtypes", ","], "--dtypes: expected comma-separated names from", False),
        (["--dtypes", "float32,float32"], "--dtypes: expected each name once, got 'float32' more than once", False),
        (["--sections", "ssm,ssm"], "--sections: expected each section (at its sizes) once", False),
        # an explicit dtype the interpreter path does not run is refused (not replaced by float32)
        (["--dtypes", "bfloat16", "--sections", "ssm,decode"], "--dtypes: expected float32 first on the CPU", True),
        (["--dtypes", "float16,float32", "--sections", "tune"], "(the sections tune run in float32 only", True),
    ],
)
def test_bad_flags_are_refused_before_measuring(argv, message, cpu_only, device, monkeypatch, capsys):
    if cpu_only and device.type == "cuda":
        pytest.skip("the CPU interpreter's dtype restriction")
    bench = _bench()
    monkeypatch.setattr(bench, "ceilings", lambda *a: pytest.fail("measured despite a bad flag"))
    assert bench.main(["--tiny", *argv]) == 2
    assert message in capsys.readouterr().err


def test_out_is_checked_before_measuring(tmp_path, monkeypatch, capsys):
    bench = _bench()
    monkeypatch.setattr(bench, "ceilings", lambda *a: pytest.fail("measured despite a bad --out"))
    assert bench.main(["--tiny", "--sections", "norm_conv", "--out", str(tmp_path)]) == 2
    assert f"--out: expected a file path, got the directory '{tmp_path}'" in capsys.readouterr().err


def test_a_failed_ceiling_or_write_does_not_stop_the_run(tmp_path, device, monkeypatch, capsys):
    """The copy/matmul ceilings failing (e.g. out of memory) and --out becoming unwritable mid-run
    (a full disk) are reported; the sections still run and print their figures."""
    if device.type == "cuda":
        pytest.skip("toy sizes under the interpreter")
    bench = _bench()

    def no_ceilings(*a):
        raise RuntimeError("CUDA out of memory (simulated)")

    out = tmp_path / "bench.json"
    write_text = Path.write_text

    def disk_full(self, *a, **k):
        if self == out:
            raise OSError(28, "No space left on device")
        return write_text(self, *a, **k)

    monkeypatch.setattr(bench, "ceilings", no_ceilings)
    monkeypatch.setattr(Path, "write_text", disk_full)
    assert bench.main(["--tiny", "--sections", "norm_conv", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ceilings failed: RuntimeError: CUDA out of memory (simulated); rooflines unknown" in text
    # after the section and at the end
    assert text.count(f"writing {out} failed: [Errno 28] No space left on device") == 2, text
    assert " ms " in text.split("[norm_conv]")[1]


def test_dtypes_by_section(device):
    """Without --dtypes the interpreter runs decode, eidetic, tune and tuned in float32 (and the
    JSON says so); the parsed flags are what the sections get."""
    import argparse

    import torch

    bench = _bench()
    a = argparse.Namespace(sections="norm_conv,decode", dtypes=None, budget=None, out=None)
    bench.check_args(a, gpu=False)
    assert a.dtype_list == [torch.bfloat16]
    assert bench.section_dtypes("norm_conv", a.dtype_list, False) == [torch.bfloat16]
    assert bench.section_dtypes("decode", a.dtype_list, False) == [torch.float32]
    assert bench.section_dtypes("decode", a.dtype_list, True) == [torch.bfloat16]
    both = [torch.bfloat16, torch.float32]
    assert bench.section_dtypes("ssm", both, False) == both and bench.section_dtypes("tune", both, True) == both[:1]
    a = argparse.Namespace(sections="decode", dtypes="float32,bfloat16", budget=10.0, out=None)
    bench.check_args(a, gpu=False)  # float32 first: decode runs in what was asked
    assert a.dtype_list == [torch.float32, torch.bfloat16]


def test_tune_stops_at_the_runs_deadline(device):
    """``--budget``'s deadline ends the tune section too (its own budget notwithstanding)."""
    import time

    import torch

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton import common
        from benchmarks.triton import tune as tn
    finally:
        sys.path.remove(str(ROOT))
    if device.type == "cuda":
        pytest.skip("builds the tiny groups on the interpreter")
    saved, n = common.DEADLINE[0], len(common.ROWS)
    common.DEADLINE[0] = time.perf_counter() - 1  # the run's --budget is spent
    try:
        tn.tune(_bench().SIZES["tiny"]["tune"], False, torch.device("cpu"), torch.float32, 1000.0)
    finally:
        common.DEADLINE[0] = saved
    rows = [r for r in common.ROWS[n:] if r["section"] == "tune"]
    del common.ROWS[n:]
    assert rows and {r["status"] for r in rows} == {"not timed: --budget exhausted"}
