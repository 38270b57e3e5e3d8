"""``bmojo demo`` end to end at a tiny step count: the pipeline runs and reports what it measured."""

from __future__ import annotations

import re

from bmojo.cli import main


def test_demo_runs_and_reports_accuracy(capsys):
    assert main(["demo", "--steps", "20", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"recall accuracy on 256 fresh sequences: ([0-9.]+)", out)
    assert match, out
    assert 0.0 <= float(match.group(1)) <= 1.0
    assert "model says" in out


def test_demo_seed_outside_the_generator_range_is_named(capsys):
    for seed in (str(2**64), "-1"):
        assert main(["demo", "--seed", seed]) == 2
        assert "--seed: expected an int in [0, 2**32)" in capsys.readouterr().err
