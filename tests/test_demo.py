"""``bmojo demo`` end to end at a tiny step count: the pipeline runs and reports what it measured."""

from __future__ import annotations

import argparse
import re

import pytest
from bmojo.cli import main
from bmojo.jobs import demo


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


def test_demo_sizes_past_memory_are_refused_up_front_naming_the_flag(capsys):
    """Sizes whose tensors cannot fit (2**40 here, petabytes) are one line naming the flag, not
    torch's allocation traceback (or, for --batch, a Python loop over 2**40 rows)."""
    for flag, named in (
        ("--window", "--window/--d-model:"),
        ("--batch", "--batch/--pairs/--vocab:"),
        ("--vocab", "--pairs/--vocab:"),
        ("--d-model", "--d-model/--window give an invalid model"),
    ):
        assert main(["demo", flag, str(2**40), "--steps", "1"]) == 2, flag
        err = capsys.readouterr().err
        assert err.startswith(f"bmojo demo: error: {named}") and err.count("\n") == 1, err
        if flag != "--d-model":  # 2**40 · d_model · vocab overflows int64 bytes: an invalid model
            assert re.search(r"expected sizes whose tensors fit in this machine's memory \([0-9.]+ [GT]iB\)", err), err
            assert f"{flag} {2**40}" in err, err


def test_demo_memory_floor_counts_what_the_run_allocates():
    """The floor is a lower bound: at the defaults the parameters (with gradients and AdamW moments)
    and the test sequences' logits, the parameters the larger part; the final sample's decode state
    once the window is large."""
    args = argparse.Namespace(steps=1, pairs=6, vocab=32, d_model=64, batch=32, window=4, seed=0)
    need, part, flags = demo.memory_floor(args, demo._config(args))
    model = demo.BMojoLM(demo._config(args))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    logits = 256 * 23 * 32 * 4  # the test sequences' logits, with 4 copies of the parameters alive
    assert need == 4 * params + logits and flags == ("--vocab", "--d-model") and "parameters" in part, part
    args.window = 2**20
    need, part, flags = demo.memory_floor(args, demo._config(args))
    state = demo.BMojoLM(demo._config(args)).init_state(1, device="meta").nbytes()
    assert need == 4 * params + state and flags == ("--window", "--d-model") and "decode state" in part


def test_demo_allocation_failure_is_one_line_naming_the_flags(capsys, monkeypatch):
    """Sizes under the floor that still do not fit end as one line, not torch's traceback."""

    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 140737488355328 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(demo, "recall_batch", no_memory)
    assert main(["demo", "--steps", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("bmojo demo: error: --batch/--pairs/--vocab/--d-model/--window: expected sizes that fit")
    assert "you tried to allocate 140737488355328 bytes" in err, err

    def bug(*args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(demo, "recall_batch", bug)
    with pytest.raises(RuntimeError, match="some other failure"):  # not every RuntimeError is about memory
        main(["demo", "--steps", "1"])
