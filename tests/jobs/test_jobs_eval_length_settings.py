"""bmojo eval-length reads the training context from trainer.json's settings.seq_len, checked as
--context is: an int >= 1 (a bool is not an int), under a settings dict; errors name the file and
the key (review of the core package, item 4)."""

from __future__ import annotations

import json

import pytest
from bmojo import BMojoLM, ModelConfig
from bmojo.cli import main
from bmojo.jobs import checkpoint as ckpt


@pytest.fixture
def step_dir(tmp_path):
    cfg = ModelConfig.preset("swa", vocab_size=256, d_model=16, n_layers=1, n_heads=2, window=4)
    BMojoLM(cfg).save_pretrained(tmp_path / "ck")
    return tmp_path / "ck"


def _trainer(step_dir, settings):
    info = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "step": 1, "settings": settings}
    (step_dir / ckpt.TRAINER).write_text(json.dumps(info))


@pytest.mark.parametrize("seq_len", [True, "8", 8.5, 0, -4])
def test_bad_seq_len_in_trainer_json_is_named(step_dir, tmp_path, capsys, seq_len):
    """A real corpus, so nothing but seq_len can fail (True used to evaluate lengths 1 and 2, rc 0)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x * 2 + 1\n" * 400)
    _trainer(step_dir, {"seq_len": seq_len, "data": str(corpus)})
    argv = ["eval-length", "--checkpoint", str(step_dir), "--factors", "1", "2", "--windows", "1"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"bmojo eval-length: error: {step_dir / ckpt.TRAINER}: settings.seq_len: expected an int >= 1"
    ), err
    assert f"got {seq_len!r}" in err


def test_settings_must_be_a_dict(step_dir, tmp_path, capsys):
    _trainer(step_dir, [16])
    assert main(["eval-length", "--checkpoint", str(step_dir), "--out", str(tmp_path / "out")]) == 2
    assert f"{step_dir / ckpt.TRAINER}: settings: expected a dict, got list" in capsys.readouterr().err


def test_missing_seq_len_says_what_is_missing(step_dir, tmp_path, capsys):
    _trainer(step_dir, {})
    assert main(["eval-length", "--checkpoint", str(step_dir), "--out", str(tmp_path / "out")]) == 2
    assert "--context: expected the training context" in capsys.readouterr().err
