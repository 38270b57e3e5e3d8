"""Issue 10, item 10: ``bmojo mqar`` checks its flags before training (errors name the flag),
writes its JSON atomically, names a bad cached file, and turns Ctrl-C into a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bmojo.cli import build_parser, main
from bmojo.jobs import checkpoint, mqar

FLAGS = ["--seq-len", "16", "--kv-pairs", "2", "--steps", "2", "--d-model", "32", "--batch", "4"]
FLAGS += ["--eval-sequences", "4", "--arch", "transformer"]


@pytest.fixture
def no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("trained before the flags were checked")

    monkeypatch.setattr(mqar, "train_run", fail)


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--eval-sequences", "0"], "--eval-sequences"),
        (["--budgets", "-1"], "--budgets"),
        (["--budgets", "nan"], "--budgets"),
        (["--window", "0"], "--window"),
        (["--steps", "0"], "--steps"),
        (["--batch", "0"], "--batch"),
        (["--lr", "inf"], "--lr"),
        (["--seq-len", "0"], "--seq-len"),
        (["--ckpt-every", "-1"], "--ckpt-every"),
        (["--threads", "0"], "--threads"),
        (["--d-model", "10"], "--d-model"),
        (["--eidetic-capacity", "-2"], "--eidetic-capacity"),
        (["--device", "nosuchdevice"], "--device"),
    ],
)
def test_bad_flags_are_refused_up_front_by_name(tmp_path, capsys, no_training, extra, flag):
    rc = main(["mqar", *FLAGS, *extra, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"bmojo mqar: error: {flag}" in err, err
    assert "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_names_the_flag(tmp_path, capsys, no_training):
    rc = main(["mqar", *FLAGS, "--device", "cuda", "--out", str(tmp_path)])
    assert rc == 2 and "--device: expected an available torch device, got 'cuda'" in capsys.readouterr().err


def test_out_under_a_file_names_the_flag(tmp_path, capsys, no_training):
    (tmp_path / "file").write_text("x")
    rc = main(["mqar", *FLAGS, "--out", str(tmp_path / "file" / "out")])
    assert rc == 2 and "--out: expected a directory" in capsys.readouterr().err


def _run_path(out: Path) -> Path:
    args = build_parser().parse_args(["mqar", *FLAGS, "--out", str(out)])
    s = mqar.settings_from_args(args)
    (run,) = mqar.plan(s, ["transformer"], args.budgets, None)
    return out / "runs" / f"transformer-{run['budget']}-{run['key']}.json"


def test_a_truncated_cached_run_is_named(tmp_path, capsys, no_training):
    path = _run_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"accuracy": {"T=16,kv=2": 0.')
    rc = main(["mqar", *FLAGS, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{path}: not a valid run record" in err and "delete it" in err


def test_json_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text('{"old": true}')

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mqar.write_atomic(path, json.dumps({"new": True}))
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_ctrl_c_is_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mqar, "plan", interrupted)
    rc = main(["mqar", *FLAGS, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 130 and "bmojo mqar: interrupted" in err and "Traceback" not in err
    # Called as a function, the command leaves the caller's backend selection as it was.
    from bmojo.backends import requested

    assert requested()[0] is None
