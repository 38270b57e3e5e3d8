"""``python -m benchmarks``: --threads bounded, the case budget per case, compiled peers never timed
with their compilation, JSON written atomically after every section, and Ctrl-C keeping it."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("transformers", reason="transformers is a benchmark peer: pip install transformers")


def _bench(name: str):
    sys.path.insert(0, str(ROOT))
    try:
        return __import__(f"benchmarks.{name}", fromlist=["_"])
    finally:
        sys.path.remove(str(ROOT))


def _refused(parse, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


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
