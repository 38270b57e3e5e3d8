"""bmojo eval-length validates what it reads from files: trainer.json's ``data``, ``settings.data``
and ``label``, and its own cached evaluations under --out/cache (a truncated or hand-edited file).
Wrong types (a string for a number, a list for a dict, a bool for an int) are one error line naming
the file and the field, not a traceback or a silently misused value."""

from __future__ import annotations

import json

import pytest
from bmojo import BMojoLM, ModelConfig
from bmojo.cli import main
from bmojo.jobs import checkpoint as ckpt


@pytest.fixture
def run_dir(tmp_path):
    """A checkpoint whose trainer.json names a real corpus, and the eval-length command line for it."""
    cfg = ModelConfig.preset("swa", vocab_size=256, d_model=16, n_layers=1, n_heads=2, window=4)
    BMojoLM(cfg).save_pretrained(tmp_path / "ck")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x * 2 + 1\n" * 400)
    argv = ["eval-length", "--checkpoint", str(tmp_path / "ck"), "--factors", "1", "2", "--windows", "1"]
    return tmp_path / "ck", str(corpus), [*argv, "--out", str(tmp_path / "out")]


def _trainer(step_dir, corpus, **fields):
    info = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "step": 1, "settings": {"seq_len": 8, "data": corpus}}
    (step_dir / ckpt.TRAINER).write_text(json.dumps({**info, **fields}))


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"data": [1]}, "data: expected a dict, got [1] (list)"),  # was AttributeError
        ({"data": "abc"}, "data: expected a dict, got 'abc' (str)"),
        # was "--data: the corpus now differs from the one ... trained on (... trained on 5)"
        ({"data": {"fingerprint": 5}}, "data.fingerprint: expected a corpus fingerprint (a string) or null, got 5"),
        ({"settings": {"seq_len": 8, "data": 5}}, "settings.data: expected a corpus path or null, got 5 (int)"),
        ({"settings": {"seq_len": 8, "data": ["x"]}}, "settings.data: expected a corpus path or null, got ['x']"),
        ({"label": ["a"]}, "label: expected a string, got ['a'] (list)"),  # was a TypeError in the table
        ({"label": 7}, "label: expected a string, got 7 (int)"),
    ],
)
def test_wrong_types_in_trainer_json_are_named(run_dir, capsys, fields, error):
    step_dir, corpus, argv = run_dir
    _trainer(step_dir, corpus, **fields)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bmojo eval-length: error: {step_dir / ckpt.TRAINER}: {error}"), err


def test_a_corrupt_cached_evaluation_is_named_with_its_field(run_dir, capsys):
    step_dir, corpus, argv = run_dir
    _trainer(step_dir, corpus)
    assert main(argv) == 0
    capsys.readouterr()  # the first run's progress bar
    (cached,) = (step_dir.parent / "out" / "cache").glob("*.json")
    text = cached.read_text()
    good = json.loads(text)
    rows = good["results"]
    corrupt = [
        ("{", "expected JSON (a cached evaluation), got unreadable text"),  # was the bare JSONDecodeError
        ("[]", "expected a JSON object (a cached evaluation), got a list of 0"),  # was a TypeError
        ({"results": None}, "results: expected a list of 2 (one row per factor), got None"),
        ({"results": rows[:1]}, "results: expected a list of 2 (one row per factor), got a list of 1"),  # was rc 0
        ({"results": [rows[0], [1]]}, "results[1]: expected a dict, got a list of 1"),
        ({"results": [{**rows[0], "ppl": "1.5"}, rows[1]]}, "results[0].ppl: expected a number, got '1.5' (str)"),
        ({"results": [rows[0], {**rows[1], "length": True}]}, "results[1].length: expected 16, got True (bool)"),
        ({"results": [{**rows[0], "factor": 2}, rows[1]]}, "results[0].factor: expected 1 (an int), got 2 (int)"),
        ({"label": 3}, "label: expected a string, got 3 (int)"),  # was a TypeError in the table
        ({"parameters": "12"}, "parameters: expected an int >= 1, got '12' (str)"),
        ({"context": True}, "context: expected 8 (an int), got True (bool)"),  # was rc 0
        ({"extend_attention": 1}, "extend_attention: expected True, got 1 (int)"),
    ]
    for edit, error in corrupt:
        cached.write_text(edit if isinstance(edit, str) else json.dumps({**good, **edit}))
        assert main(argv) == 2, edit
        err = capsys.readouterr().err
        assert err.startswith(f"bmojo eval-length: error: {cached}: {error}"), err
        assert err.rstrip().endswith("; delete the file to re-evaluate") and err.count("\n") == 1, err
    cached.write_text(text)  # the file as written is read back as it is
    assert main(argv) == 0
    assert json.loads((step_dir.parent / "out" / "length.json").read_text()) == [good]
