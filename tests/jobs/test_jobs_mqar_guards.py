"""``bmojo mqar``: what the cache may reuse (backend, device, --save-models, --eval-every), flags a
mode does not read, repeated and unbounded values, --out checked up front, and atomic figures."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from bmojo.cli import build_parser, main
from bmojo.jobs import mqar, mqar_full, plotting

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--seq-len", "16", "--kv-pairs", "2", "--steps", "3", "--d-model", "32", "--batch", "4"]
TINY += ["--eval-sequences", "4", "--arch", "transformer"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """A command that sets torch's thread count (or, before the cap, 100000 of them) must not
    change it for the tests after this one."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def trained(monkeypatch):
    """Counts the runs trained (they still train: tiny)."""
    calls = []
    real = mqar.train_run

    def counted(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(mqar, "train_run", counted)
    return calls


@pytest.fixture
def no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("trained before the flags were checked")

    monkeypatch.setattr(mqar, "train_run", fail)
    monkeypatch.setattr(mqar_full, "train_until", fail)
    monkeypatch.setattr(mqar_full, "estimate", fail)


def _printed(capsys) -> str:
    got = capsys.readouterr()
    return got.out + got.err


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


# ----- 1. the cache: backend and device in the key, --save-models and --eval-every honoured -----


def test_run_key_holds_the_backend_and_the_device():
    s = mqar.Settings(seq_lens=(16,), kv_pairs=(2,), d_model=32)
    cfg, _ = mqar.arch_config("transformer", s, None)
    keys = {
        mqar._run_key("transformer", cfg, s, "reference", "cpu"),
        mqar._run_key("transformer", cfg, s, "implicit", "cpu"),
        mqar._run_key("transformer", cfg, s, "triton", "cpu"),
        mqar._run_key("transformer", cfg, s, "reference", torch.device("cuda")),
    }
    assert len(keys) == 4


def test_backend_label_is_the_selection_in_force(monkeypatch):
    from bmojo.backends import use_backend

    monkeypatch.delenv("BMOJO_BACKEND", raising=False)
    assert mqar.backend_label() == "implicit"
    monkeypatch.setenv("BMOJO_BACKEND", "reference")
    assert mqar.backend_label() == "reference"
    monkeypatch.delenv("BMOJO_BACKEND")
    with use_backend("reference"):
        assert mqar.backend_label() == "reference"


def test_another_backend_is_not_served_from_the_cache(tmp_path, trained, monkeypatch, capsys):
    monkeypatch.delenv("BMOJO_BACKEND", raising=False)
    assert main(["mqar", *TINY, "--out", str(tmp_path)]) == 0
    (first,) = _records(tmp_path)
    assert (first["backend"], first["device"]) == ("reference", "cpu")
    summary = json.loads((tmp_path / "results.json").read_text())
    assert (summary["backend"], summary["device"]) == ("reference", "cpu")
    assert main(["mqar", *TINY, "--backend", "auto", "--out", str(tmp_path)]) == 0
    assert len(trained) == 2 and "cached" not in _printed(capsys)
    assert sorted(r["backend"] for r in _records(tmp_path)) == ["implicit", "reference"]
    assert json.loads((tmp_path / "results.json").read_text())["backend"] == "implicit"
    assert main(["mqar", *TINY, "--out", str(tmp_path)]) == 0  # the reference run: cached
    assert len(trained) == 2


def test_save_models_and_eval_every_are_met_on_a_cached_run(tmp_path, trained, capsys):
    assert main(["mqar", *TINY, "--out", str(tmp_path)]) == 0
    (path,) = (tmp_path / "runs").glob("*.json")
    assert json.loads(path.read_text())["accuracy_curve"] == []
    assert main(["mqar", *TINY, "--save-models", "--out", str(tmp_path)]) == 0
    assert len(trained) == 2 and "without a saved model" in _printed(capsys)
    assert (tmp_path / "models" / path.stem / "model.safetensors").is_file()
    assert main(["mqar", *TINY, "--eval-every", "1", "--out", str(tmp_path)]) == 0
    assert len(trained) == 3 and "--eval-every" in _printed(capsys)
    record = json.loads(path.read_text())
    assert [c[0] for c in record["accuracy_curve"]] == [1, 2] and record["eval_every"] == 1
    # now both are in the cache: nothing is trained again
    assert main(["mqar", *TINY, "--eval-every", "1", "--save-models", "--out", str(tmp_path)]) == 0
    assert main(["mqar", *TINY, "--out", str(tmp_path)]) == 0
    assert len(trained) == 3


# ----- 2-5, 7. flags refused before any work, by name -----


NO_ARCH = TINY[: TINY.index("--arch")]
BASES = {"tiny": TINY, "ablation": NO_ARCH, "full": ["--arch", "transformer"]}


@pytest.mark.parametrize(
    ("base", "argv", "message"),
    [
        # 2. the ablation reads neither --arch nor --budgets
        ("ablation", ["--eidetic-capacity", "2", "--arch", "bmojo"], "--arch: expected no --arch here (--eidetic-cap"),
        ("ablation", ["--eidetic-capacity", "2", "--budgets", "0.3"], "--budgets: expected no --budgets here (--eid"),
        # 3. repeated values (a later flag replaces the base's)
        ("tiny", ["--seq-len", "16", "16"], "--seq-len: expected each value once, got 16 more than once in [16, 16]"),
        ("tiny", ["--kv-pairs", "2", "2"], "--kv-pairs: expected each value once, got 2 more than once"),
        ("tiny", ["--budgets", "2", "2"], "--budgets: expected each value once, got 2 more than once in [2.0, 2.0]"),
        ("tiny", ["--budgets", "0.5", "0.5000001"], "--budgets: expected each value once, got 0.5 more than once"),
        ("ablation", ["--eidetic-capacity", "2", "2"], "--eidetic-capacity: expected each value once, got 2 more"),
        ("tiny", ["--arch", "swa", "swa"], "--arch: expected each value once, got swa more than once"),
        ("full", ["--full", "--seeds", "0", "0"], "--seeds: expected each value once, got 0 more than once in [0, 0]"),
        ("full", ["--scale", "zoology", "--widths", "64", "64"], "--widths: expected each value once, got 64 more"),
        # 5. unbounded values
        ("tiny", ["--threads", "100000"], "--threads: expected at most 1024 torch CPU threads, got 100000"),
        ("tiny", ["--budgets", "1e308"], "--budgets: expected fractions of the full KV cache <= 1000, got 1e+308"),
        ("ablation", ["--eidetic-capacity", "1000000000000"], "--eidetic-capacity: expected capacities <= 64 (4 x"),
        ("full", ["--scale", "zoology", "--widths", "0"], "--widths: expected an int >= 1, got 0"),
        ("full", ["--scale", "zoology", "--widths", "24"], "--widths: expected widths the protocol's models can take"),
        # 7. an architecture asked for by name that fits no budget
        ("tiny", ["--arch", "mamba2", "bmojo", "--hybrid-state", "16", "--window", "4"], "--arch/--budgets: expected"),
    ],
)
def test_bad_values_are_refused_up_front(base, argv, message, tmp_path, capsys, no_training):
    rc = main(["mqar", *BASES[base], *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert "Traceback" not in err


def test_the_ablation_records_no_budgets(tmp_path):
    argv = [*NO_ARCH, "--eidetic-capacity", "0", "--out", str(tmp_path)]
    assert main(["mqar", *argv]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["budgets"] is None and summary["eidetic_capacity"] == [0]


@pytest.mark.parametrize("extra", [[], ["--estimate"], ["--scale", "zoology", "--estimate", "--widths", "16"]])
def test_full_checks_out_before_any_work(extra, tmp_path, capsys, no_training):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["mqar", "--arch", "transformer", "--max-steps", "2", "--seeds", "0", "--out", str(blocker)]
    if "--scale" not in extra:
        argv += ["--full", "--seq-len", "16", "--kv-pairs", "2", "--d-model", "32"]
    rc = main([*argv, *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "--out: expected a path inside a folder" in err and f"'{blocker}' is a file" in err, err


def test_the_docs_sweeps_plan_every_architecture_they_name():
    """Every `bmojo mqar` line of docs/experiments.md's sweeps passes the flag checks, and each
    architecture it names with --arch fits one of its budgets (nothing silently dropped)."""
    text = (ROOT / "docs" / "experiments.md").read_text()
    block = text.split("## Sweeps", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("bmojo mqar")]
    assert len(lines) >= 6
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        mqar.validate_args(args)
        s = mqar.settings_from_args(args)
        archs = args.arch or (["transformer", "bmojo"] if args.quick else list(mqar.ARCHS))
        budgets = [0.75] if args.quick else args.budgets
        runs = mqar.plan(s, archs, budgets, args.eidetic_capacity)
        if args.eidetic_capacity is None:
            mqar.check_archs_fit(args, archs, runs, budgets)
            assert {r["arch"] for r in runs} == set(archs), line


# ----- 8. figures replace the old file in one step -----


def test_full_figures_are_written_atomically(tmp_path, monkeypatch):
    rows = [{"arch": "transformer", "budget": "full", "state_bytes": 4096, "hard": [0.5, 0.7]}]
    records = [{"arch": "transformer", "budget": "full", "seed": 0, "accuracy_curve": [[2, 0.1, {"c": 0.5}]]}]
    for name in ("mqar_full.png", "mqar_full_curves.png"):
        (tmp_path / name).write_bytes(b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(plotting.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mqar_full.plot_full(rows, records, mqar.Settings(), tmp_path, 4)
    assert (tmp_path / "mqar_full.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mqar_full.png", "mqar_full_curves.png"]
    monkeypatch.undo()
    paths = mqar_full.plot_full(rows, records, mqar.Settings(), tmp_path, 4)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mqar_full.png", "mqar_full_curves.png"]


def test_line_plots_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(plotting.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plotting.line_plot({"a": ([1, 2], [3, 4])}, path, xlabel="x", ylabel="y")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
