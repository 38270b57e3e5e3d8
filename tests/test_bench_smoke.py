"""Smoke test of the benchmark script (``python -m benchmarks``) at toy sizes, so it cannot rot.

The benchmark itself is not part of the test run; this only checks that every section runs, the
table prints and the JSON has the expected structure. Skipped without transformers (a benchmark
peer, not a core dependency).
"""

from __future__ import annotations

import json
import sys
import types
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
    # tiny: the decode RSS rows were measured in this process, and say so
    rss = [row for row in data["rows"] if row["case"].endswith("decode peak RSS")]
    assert rss and all(row["note"].startswith("in-process") for row in rss)
    (naive,) = [row for row in data["rows"] if row["peer_name"] == "naive recurrence"]
    assert naive["extra"]["repeats"] == 1


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


# ----- the command lines: bad input is refused before anything is measured -----
def _bench(name: str):
    sys.path.insert(0, str(ROOT))
    try:
        return __import__(f"benchmarks.{name}", fromlist=["_"])
    finally:
        sys.path.remove(str(ROOT))


def _refused(parse, argv, capsys) -> str:
    """``parse(argv)`` exits with status 2 (argparse's usage error); returns the message."""
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sections", ""], "--sections: expected comma-separated names"),
        (["--sections", "ssm,,layer"], "--sections: expected comma-separated names without empty entries"),
        (["--sections", "ssm,ssm"], "--sections: expected each name once, got 'ssm' more than once"),
        (["--sections", "ssm,nope"], "--sections: expected names from ssm,attention,layer,decode, got 'nope'"),
        (["--sections", "ssm", "--profile"], "--profile: expected the layer section in --sections, got 'ssm'"),
        (["--threads", "0"], "--threads: expected an int >= 1, got 0"),
        (["--threads", "-2"], "--threads: expected an int >= 1, got -2"),
        (["--repeats", "0"], "--repeats: expected an int >= 1, got 0"),
        (["--warmup", "-1"], "--warmup: expected an int >= 0, got -1"),
        (["--case-budget", "-1"], "--case-budget: expected finite seconds >= 0"),
        (["--case-budget", "nan"], "--case-budget: expected finite seconds >= 0"),
        (["--case-budget", "inf"], "--case-budget: expected finite seconds >= 0"),
        (["--dense-budget-gib", "-0.5"], "--dense-budget-gib: expected GiB >= 0"),
        (["--dense-budget-gib", "nan"], "--dense-budget-gib: expected GiB >= 0"),
    ],
)
def test_main_refuses_bad_flags(argv, message, capsys):
    assert message in _refused(_bench("__main__").parse_args, ["--tiny", *argv], capsys)


def test_out_is_checked_before_the_run(tmp_path, capsys):
    parse = _bench("__main__").parse_args
    err = _refused(parse, ["--tiny", "--out", str(tmp_path)], capsys)
    assert f"--out: expected a file path, got the directory '{tmp_path}'" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = _refused(parse, ["--tiny", "--out", str(blocker / "sub" / "x.json")], capsys)
    assert f"--out: expected a path inside a folder, got '{blocker / 'sub'}' ('{blocker}' is a file)" in err
    # a good path: its folders are made up front (as write_json would at the end), nothing written yet
    out = tmp_path / "a" / "b" / "x.json"
    args = parse(
        ["--tiny", "--sections", "layer,ssm", "--profile", "--warmup", "0", "--case-budget", "0", "--out", str(out)]
    )
    assert out.parent.is_dir() and not out.exists() and not list(out.parent.iterdir())
    assert args.sections == ["layer", "ssm"]
    s = args.settings
    assert (s.scale, s.warmup, s.case_budget_s, s.dense_budget_gib) == ("tiny", 0, 0.0, 4.0)


def test_timing_honours_warmup_and_repeats_exactly():
    common = _bench("common")
    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    for warmup in (0, 2):
        calls.clear()
        s = common.Settings(repeats=3, warmup=warmup, case_budget_s=1e6)
        _, out = common.timeit_out(fn, s)
        assert len(calls) == warmup + 3 and out == 1  # the first run's output
        calls.clear()
        times, outs = common.timeit_many({"a": fn}, s)
        assert len(calls) == warmup + 3 and outs["a"] == 1 and outs["repeats"] == 3 and times["a"] >= 0
    # a case budget of 0: one timed run after the warm-up
    calls.clear()
    _, outs = common.timeit_many({"a": fn}, common.Settings(repeats=5, warmup=1, case_budget_s=0))
    assert len(calls) == 2 and outs["repeats"] == 1
    for kw, flag in (
        (dict(repeats=0), "--repeats"),
        (dict(warmup=-1), "--warmup"),
        (dict(case_budget_s=-1.0), "--case-budget"),
        (dict(dense_budget_gib=float("nan")), "--dense-budget-gib"),
        (dict(scale="huge"), "scale"),
    ):
        with pytest.raises(ValueError, match=f"^{flag}: expected"):
            common.Settings(**kw)


def test_ssm_naive_row_records_the_repeats_it_ran(monkeypatch):
    """The naive recurrence runs at most 3 timed rounds whatever --repeats says: its row says so."""
    ssm = _bench("ssm")
    common = _bench("common")
    seen = []

    def fake(fns, settings, repeats=None):
        seen.append(repeats)
        return {n: 1.0 for n in fns}, {"errors": {}, "repeats": repeats}

    monkeypatch.setattr(ssm, "timeit_many", fake)
    monkeypatch.setattr(ssm, "_case", lambda *a: [])
    (row,) = ssm.run(common.Settings(scale="tiny", repeats=7))
    assert seen == [3] and row.extra == {"repeats": 3} and row.note == "3 timed runs, at most 3 here"


@pytest.mark.parametrize(
    ("worker", "message"),
    [
        (["rss", "gpt", "64"], "--worker MODEL: expected one of ('bmojo', 'llama'), got 'gpt'"),
        (["size", "bmojo", "64"], "--worker KIND: expected one of ('rss', 'latency'), got 'size'"),
        (["rss", "bmojo", "64,256"], "--worker POSITIONS: expected one position for KIND rss, got '64,256'"),
        (["latency", "bmojo", "64,x"], "--worker POSITIONS: expected comma-separated ints, got '64,x'"),
        (["latency", "bmojo", "64,64"], "--worker POSITIONS: expected each position once, got '64,64'"),
        (["latency", "llama", "0,64"], "--worker POSITIONS: expected positions >= 1, got '0,64'"),
    ],
)
def test_decode_worker_refuses_bad_arguments(worker, message, capsys):
    assert message in _refused(_bench("decode").parse_worker_args, ["--worker", *worker], capsys)


def test_decode_worker_arguments():
    decode = _bench("decode")
    a = decode.parse_worker_args(["--worker", "latency", "llama", "64,256", "--scale", "tiny", "--threads", "1"])
    assert (a.kind, a.model, a.positions, a.scale, a.threads) == ("latency", "llama", [64, 256], "tiny", 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps: expected an int >= 1, got 0"),
        (["--prefill", "0"], "--prefill: expected an int >= 1, got 0"),
        (["--prefill", "-5"], "--prefill: expected an int >= 1, got -5"),
        (["--repeats", "0"], "--repeats: expected an int >= 1, got 0"),
        (["--threads", "0"], "--threads: expected an int >= 1, got 0"),
    ],
)
def test_mlx_model_refuses_bad_flags(argv, message, capsys):
    assert message in _refused(_bench("mlx_model").parse_args, argv, capsys)


def test_mlx_model_checks_out_and_says_when_mlx_is_missing(tmp_path, monkeypatch, capsys):
    mlx_model = _bench("mlx_model")
    err = _refused(mlx_model.parse_args, ["--out", str(tmp_path)], capsys)
    assert "--out: expected a file path, got the directory" in err
    out = tmp_path / "new" / "mlx.json"
    assert mlx_model.parse_args(["--out", str(out)]).out == out and out.parent.is_dir()
    for name in ("mlx", "mlx.core", "bmojo_mlx"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(SystemExit) as exc:
        mlx_model.main(["--out", str(out)])
    assert "benchmarks.mlx_model: needs bmojo-mlx and MLX" in str(exc.value.code)
    assert "pip install -e packages/bmojo-mlx" in str(exc.value.code) and not out.exists()


def test_device_check_writes_under_the_results_folder():
    common = _bench("common")
    device_check = _bench("device_check")
    dest = device_check.destination({})
    assert dest.parent == common.RESULTS_DIR and dest.name.startswith("device-check-") and dest.suffix == ".json"
    assert device_check.destination({"OUT": "/some/dir"}) == Path("/some/dir/device_check.json")


# ----- guards: --threads bounded, the case budget per case, compiled peers never timed with their
# compilation, JSON written atomically after every section, and Ctrl-C keeping it -----
@pytest.mark.parametrize(
    ("module", "parse", "argv"),
    [
        ("__main__", "parse_args", ["--tiny", "--threads", "100000"]),
        ("decode", "parse_worker_args", ["--worker", "rss", "bmojo", "64", "--threads", "100000"]),
        ("mlx_model", "parse_args", ["--threads", "100000"]),
    ],
)
def test_threads_are_capped_as_in_bmojo_train(module, parse, argv, capsys):
    err = _refused(getattr(_bench(module), parse), argv, capsys)
    assert "--threads: expected at most 1024 torch CPU threads, got 100000" in err


class FakeClock:
    """``perf_counter`` that advances only when a contender runs (its cost in seconds)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def fn(self, *costs):
        calls = []

        def run():
            calls.append(1)
            self.now += costs[min(len(calls), len(costs)) - 1]
            return len(calls)

        run.calls = calls
        return run


def test_case_budget_is_per_case_not_per_contender(monkeypatch):
    common = _bench("common")
    clock = FakeClock()
    monkeypatch.setattr(common, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    fns = {name: clock.fn(1.0) for name in ("ours", "sdpa", "flex")}  # a round: 3 s
    _, outs = common.timeit_many(fns, common.Settings(repeats=5, warmup=1, case_budget_s=2.0))
    assert outs["repeats"] == 1  # a 3 s round does not fit 2 s: one round, not two
    _, outs = common.timeit_many(fns, common.Settings(repeats=5, warmup=1, case_budget_s=7.0))
    assert outs["repeats"] == 2  # 7 s: two rounds of 3 s, not five (7 s per contender)


def test_a_compiled_contender_is_never_timed_with_its_compilation(monkeypatch):
    common = _bench("common")
    clock = FakeClock()
    monkeypatch.setattr(common, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    ours, compiled = clock.fn(1.0), clock.fn(100.0, 0.5)  # the first compiled call compiles
    s = common.Settings(repeats=3, warmup=0, case_budget_s=1e6)
    times, outs = common.timeit_many({"ours": ours, "flex_compiled": compiled}, s, compiled=("flex_compiled",))
    assert times == {"ours": 1.0, "flex_compiled": 0.5}
    assert len(ours.calls) == 3 and len(compiled.calls) == 4 and outs["flex_compiled"] == 1


def test_attention_names_its_compiled_peer(monkeypatch):
    attention = _bench("attention")
    common = _bench("common")
    flex = attention._flex_available()
    if flex is None:
        pytest.skip("no FlexAttention in this torch")
    seen = {}

    def fake(fns, settings, repeats=None, **kw):
        seen.update(kw)
        return {n: 1.0 for n in fns}, {n: fn() for n, fn in fns.items()} | {"errors": {}}

    monkeypatch.setattr(attention, "timeit_many", fake)
    s = common.Settings(scale="tiny")
    attention._case(s, attention.shapes(s), 128, False, flex, compiled=flex)  # eager stands in for compiled
    assert "flex_compiled" in seen.get("compiled", ())


def test_write_json_is_atomic(tmp_path, monkeypatch):
    common = _bench("common")
    path = tmp_path / "r.json"
    path.write_text('{"old": true}')

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        common.write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True} and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    monkeypatch.undo()
    assert json.loads(common.write_json(path, {"new": True}).read_text()) == {"new": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_ctrl_c_keeps_the_sections_measured(tmp_path, monkeypatch, capsys):
    main = _bench("__main__")
    common = _bench("common")
    ssm, layer = _bench("ssm"), _bench("layer")
    out = tmp_path / "b.json"
    row = common.Row("a. ssm_scan", "case", "time_s", "ours", 1.0, "peer", 2.0)
    monkeypatch.setattr(ssm, "run", lambda settings: [row])
    written = []

    def interrupted(settings):
        written.append(json.loads(out.read_text()))  # the ssm section is on disk already
        raise KeyboardInterrupt

    monkeypatch.setattr(layer, "run", interrupted)
    rc = main.main(["--tiny", "--sections", "ssm,layer", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err
    assert "python -m benchmarks: interrupted (sections finished: ssm); their 1 rows are in" in err
    assert written[0]["partial"] is True and len(written[0]["rows"]) == 1
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and [r["ours_name"] for r in data["rows"]] == ["ours"]
    assert list(data["section_seconds"]) == ["ssm"]
    # interrupted before any section finished: nothing is written, and it says so
    out.unlink()
    monkeypatch.setattr(ssm, "run", lambda settings: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main.main(["--tiny", "--sections", "ssm", "--out", str(out)]) == 130
    assert "nothing written" in capsys.readouterr().err and not out.exists()
