"""The GPU benchmark script runs end to end at toy sizes (on CPU through the interpreter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_tiny_runs(tmp_path, device):
    if device.type == "cuda":
        pytest.skip("the GPU run executes the full benchmark itself (benchmarks/triton/gpu_run.sh)")
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.triton.__main__ import main
    finally:
        sys.path.remove(str(ROOT))
    out = tmp_path / "bench.json"
    assert main(["--tiny", "--sections", "attention,ssm,norm_conv,decode", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    ours = [r for r in rows if str(r.get("impl", "")).startswith("triton")]
    assert ours and all(r["seconds"] is not None for r in ours)
    assert {r["section"] for r in rows} >= {"attention", "ssm", "norm_conv", "decode"}
