"""Smoke test of the benchmark script (``python -m benchmarks``) at toy sizes, so it cannot rot.

The benchmark itself is not part of the test run; this only checks that every section runs, the
table prints and the JSON has the expected structure. Skipped without transformers (a benchmark
peer, not a core dependency).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("transformers", reason="transformers is a benchmark peer: pip install transformers")


@pytest.fixture(scope="module")
def bench_main():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.__main__ import main
    finally:
        sys.path.remove(str(ROOT))
    return main


def test_benchmark_runs_at_tiny_sizes(bench_main, tmp_path, capsys):
    out = tmp_path / "tiny.json"
    rc = bench_main(["--tiny", "--repeats", "1", "--warmup", "1", "--no-flex-compile", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ours/peer" in printed and "load average" in printed
    data = json.loads(out.read_text())
    assert data["scale"] == "tiny" and data["dtype"] == "float32"
    assert "loadavg" in data["machine_at_start"] and data["machine_at_start"]["torch"]
    sections = {row["section"][:2] for row in data["rows"]}
    assert sections == {"a.", "b.", "c.", "d."}
    for row in data["rows"]:
        assert row["ours"] is not None and row["ours"] > 0, row
        if row["peer"] is not None:
            assert row["ratio"] == pytest.approx(row["ours"] / row["peer"])
    # every peer that ran computed the same attention as ours
    diffs = [row["extra"]["max_abs_diff"] for row in data["rows"] if row["extra"].get("max_abs_diff") is not None]
    assert diffs and max(diffs) < 1e-4


def test_decode_worker_subprocess(tmp_path):
    """The per-position subprocess used for the RSS figures (one worker, toy size)."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.common import Settings
        from benchmarks.decode import _spawn
    finally:
        sys.path.remove(str(ROOT))
    res = _spawn("rss", "bmojo", [64], Settings(scale="tiny"), threads=1)
    assert res["latency_s"] > 0 and res["state_bytes"] > 0
    assert res["decode_peak_rss_mib"] is None or res["decode_peak_rss_mib"] > 0
