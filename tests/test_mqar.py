"""``bmojo mqar``: the task generator, the state-budget matching, and a ``--quick`` end-to-end run
showing that the task and training loop are sound (a full-attention Transformer learns it)."""

from __future__ import annotations

import json

import pytest
import torch
from bmojo.cli import main
from bmojo.jobs.mqar import ARCHS, Settings, plan, state_bytes
from bmojo.tasks import check_mqar, mqar_batch, mqar_query_start


def test_mqar_batch_layout():
    T, n, V = 64, 8, 64
    gen = torch.Generator().manual_seed(1)
    x, y = mqar_batch(32, T, n, V, generator=gen)
    assert x.shape == y.shape == (32, T)
    qs = mqar_query_start(T, n)
    for row_x, row_y in zip(x, y):
        keys, values = row_x[0 : 2 * n : 2], row_x[1 : 2 * n : 2]
        assert len(set(keys.tolist())) == n and keys.min() >= 1 and keys.max() < V // 2
        assert values.min() >= V // 2 and values.max() < V
        assert (row_x[2 * n : qs] == 0).all()  # the gap is filler: nothing to recall there
        answer = dict(zip(keys.tolist(), values.tolist()))
        qpos = (row_y != -100).nonzero()[:, 0]
        assert len(qpos) == n and qpos.min() >= qs
        assert sorted(row_x[qpos].tolist()) == sorted(keys.tolist())  # every key queried once
        for p in qpos.tolist():
            assert row_y[p] == answer[int(row_x[p])]
            assert row_x[p + 1] == 0  # the answer is never shown: no scoring by elimination


def test_mqar_batch_is_seeded_and_checked():
    a = mqar_batch(4, 32, 4, 32, generator=torch.Generator().manual_seed(3))
    b = mqar_batch(4, 32, 4, 32, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match="seq_len"):
        check_mqar(20, 8, 64)
    with pytest.raises(ValueError, match="kv_pairs"):
        check_mqar(512, 40, 64)
    for args, kw, message in [
        ((-1, 32, 4, 32), {}, r"^batch: expected an int >= 1, got -1"),
        ((2.0, 32, 4, 32), {}, r"^batch: expected an int >= 1, got 2.0"),
        ((2, 32, 4, 32), dict(query_start=16.5), r"^query_start: expected an int >= 0, got 16.5"),
        ((2, 32, 4, 32), dict(query_start=True), r"^query_start: expected an int >= 0, got True"),
    ]:
        with pytest.raises(ValueError, match=message):
            mqar_batch(*args, **kw)
    from bmojo.tasks import recall_batch

    for args, message in [((2, 0, 32), r"^n_pairs: expected an int >= 1, got 0"), ((0, 3, 32), r"^batch: expected")]:
        with pytest.raises(ValueError, match=message):
            recall_batch(*args)


def test_budgets_are_matched_and_explicit():
    s = Settings(seq_lens=(128,), kv_pairs=(8,))
    runs = plan(s, list(ARCHS), [0.25, 0.5], None)
    full = next(r for r in runs if r["arch"] == "transformer")
    assert full["state_bytes"] == state_bytes(full["config"]) and full["fraction_of_full"] == 1.0
    for r in runs:
        if r["arch"] != "transformer":
            frac = float(r["budget"])
            # the largest configuration within the budget, never over it, and not far under
            assert 0.8 * frac <= r["fraction_of_full"] <= frac, r
    bmojo = [r for r in runs if r["arch"] == "bmojo"]
    assert bmojo and all(r["config"].layers[0].eidetic_capacity > 0 for r in bmojo)


def test_unknown_backend_fails_clearly(tmp_path, capsys):
    rc = main(["mqar", "--quick", "--backend", "no-such-backend", "--out", str(tmp_path)])
    assert rc == 2
    assert "--backend" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path, monkeypatch, capsys):
    """The whole pipeline on a tiny instance; the Transformer must solve it. (Its runtime, under a
    minute on the 2-core VM, is documented from measurement, not asserted: a timed test fails on a
    busy machine for no fault of the code.)"""
    assert main(["mqar", "--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "mqar.png").stat().st_size > 1000
    by_arch = {r["arch"]: r for r in summary["results"]}
    assert set(by_arch) == {"transformer", "bmojo"}
    for r in summary["results"]:
        assert r["state_bytes"] > 0 and r["parameters"] > 0
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
    transformer = by_arch["transformer"]["accuracy"]
    assert min(transformer.values()) > 0.9, transformer
    # Resumable: a second run reuses every cached result and trains nothing.
    from bmojo.jobs import mqar

    def no_training(*a, **k):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(mqar, "train_run", no_training)
    assert main(["mqar", "--quick", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in summary["results"]]
    cached = sorted((tmp_path / "runs").glob("*.json"))[0]
    cached.write_text(json.dumps({**json.loads(cached.read_text()), "accuracy": {}}))
    assert main(["mqar", "--quick", "--out", str(tmp_path)]) == 2  # a cell missing: named, not a KeyError
    assert f"{cached}: not a valid run record (no accuracy for [" in capsys.readouterr().err


# ----- layer-v2 variants, the innovation loss, --full and the zoology protocol -----


def test_variants_fit_the_same_budgets():
    """δ = 0 keeps f fading rows instead of w + f, so the same budget buys at least the base's knob;
    the gated bypass and the innovation loss add no state."""
    from bmojo.jobs.mqar import ALL_ARCHS, VARIANTS

    s = Settings()
    runs = {(r["arch"], r["budget"]): r for r in plan(s, list(ALL_ARCHS), [0.25, 0.5], None)}
    for (arch, budget), r in runs.items():
        if arch not in VARIANTS:
            continue
        base, fields = VARIANTS[arch]
        layer = r["config"].layers[0]
        assert all(getattr(layer, k) == v for k, v in fields.items()), arch
        b = runs[(base, budget)]
        assert r["fraction_of_full"] <= float(budget)
        if "fading_offset" in fields:
            knob = "M" if base == "bmojo" else "w"
            assert r["knobs"][knob] >= b["knobs"][knob], (arch, budget)
        else:
            assert r["knobs"] == b["knobs"] and r["state_bytes"] == b["state_bytes"], (arch, budget)


def test_innovation_loss_flag_reaches_the_hybrid_layers():
    from bmojo.jobs.mqar import arch_config

    s = Settings(innovation_loss=0.5)
    for arch in ("bmojo", "bmojo_f", "bmojo_d0"):
        cfg, _ = arch_config(arch, s, 16_000)
        assert all(c.innovation_loss_weight == 0.5 for c in cfg.layers), arch
    for arch in ("swa", "mamba2"):
        cfg, _ = arch_config(arch, s, 16_000)
        assert all(c.innovation_loss_weight == 0 for c in cfg.layers), arch


def test_zoology_protocol_plans_every_model():
    """--scale zoology: vocabulary 8192, T 256/512, 16-64 pairs; every architecture and variant fits
    both budgets at the smallest and largest width (planned on the meta device, nothing trained)."""
    from bmojo.jobs.mqar import ALL_ARCHS
    from bmojo.jobs.mqar_full import ZOOLOGY, ZOOLOGY_WIDTHS

    for width in (min(ZOOLOGY_WIDTHS), max(ZOOLOGY_WIDTHS)):
        s = Settings(**ZOOLOGY, d_model=width)
        assert s.grid == [(256, 16), (256, 32), (256, 64), (512, 16), (512, 32), (512, 64)]
        runs = plan(s, list(ALL_ARCHS), [0.25, 0.5], None)
        assert len(runs) == 1 + 2 * (len(ALL_ARCHS) - 1), width


def test_full_protocol_end_to_end(tmp_path, capsys):
    """--full on a tiny instance: two seeds, a cap of 6 steps; cached runs are reused; the table,
    both PNGs and the eidetic diagnostic are written."""
    argv = ["mqar", "--full", "--arch", "transformer", "bmojo", "--seq-len", "32", "--kv-pairs", "4",
            "--budgets", "0.75", "--seeds", "0", "1", "--max-steps", "6", "--full-eval-every", "3",
            "--d-model", "32", "--batch", "8", "--eval-sequences", "16", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "full"
    summary = json.loads((out / "results.json").read_text())
    assert (out / "mqar_full.png").stat().st_size > 1000 and (out / "mqar_full_curves.png").stat().st_size > 1000
    assert sorted((r["arch"], r["seed"]) for r in summary["results"]) == [
        ("bmojo", 0), ("bmojo", 1), ("transformer", 0), ("transformer", 1)
    ]  # fmt: skip
    for r in summary["results"]:
        assert r["steps"] == 6 and [c[0] for c in r["accuracy_curve"]] == [3, 6]
    eid = next(r for r in summary["results"] if r["arch"] == "bmojo")["eidetic"]["T=32,kv=4"]
    assert len(eid) == 2 and all(0 <= layer["pair_share"] <= 1 for layer in eid)
    assert "steps to 0.9" in summary["table"]
    mtimes = {p: p.stat().st_mtime for p in (out / "runs").iterdir()}
    assert main(argv) == 0  # resumes: nothing retrained
    assert {p: p.stat().st_mtime for p in (out / "runs").iterdir()} == mtimes
    # an edited or truncated cached run is named, not a KeyError in the table
    path = sorted((out / "runs").iterdir())[0]
    text = path.read_text()
    for edit, message in [
        (lambda r: r.pop("accuracy"), "(no accuracy table)"),
        (lambda r: r["accuracy"].clear(), "(no accuracy for ['T=32,kv=4'])"),
        (lambda r: r.update(steps=None), "(steps: expected a number, got None)"),
    ]:
        record = json.loads(text)
        edit(record)
        path.write_text(json.dumps(record))
        capsys.readouterr()
        assert main(argv) == 2
        assert f"{path}: not a valid run record {message}" in capsys.readouterr().err
    path.write_text(text[:-20])
    assert main(argv) == 2 and "not a valid run record (JSONDecodeError" in capsys.readouterr().err


def test_flags_a_mode_does_not_read_are_refused(tmp_path, capsys):
    for argv, message in [
        (["--quick", "--lr", "0.5"], "--lr: expected no --lr here (--quick runs one fixed tiny instance"),
        (["--quick", "--window", "8"], "--window: expected no --window here (--quick"),
        (["--quick", "--budgets", "0.3"], "--budgets: expected no --budgets here (--quick"),
        (["--target", "0.5"], "--target: expected no --target here (only --full/--scale read it)"),
        (["--seeds", "4"], "--seeds: expected no --seeds here (only --full/--scale read it)"),
        (["--max-steps", "10"], "--max-steps: expected no --max-steps here"),
        (["--seq-len", "32", "--kv-pairs", "4", "40"], "--kv-pairs: expected values that each make a valid"),
        (["--seq-len", "32", "3", "--kv-pairs", "4"], "--seq-len: expected values that each make a valid"),
        (["--widths", "64"], "--widths: expected no --widths here (only --scale zoology reads it)"),
        (["--full", "--steps", "10"], "--steps: expected no --steps here (--full/--scale train to --target"),
        (["--full", "--seed", "3"], "--seed: expected no --seed here (--full/--scale"),
        (["--full", "--ckpt-every", "5"], "--ckpt-every: expected no --ckpt-every here (--full/--scale"),
        (["--full", "--eval-every", "5"], "--eval-every: expected no --eval-every here (--full/--scale"),
        (["--scale", "zoology", "--save-models"], "--save-models: expected no --save-models here (--full/--scale"),
        (["--scale", "zoology", "--vocab", "64"], "--vocab: expected no --vocab here (--scale zoology fixes"),
        (["--scale", "zoology", "--d-model", "32"], "--d-model: expected no --d-model here (--scale zoology"),
        (["--scale", "zoology", "--seq-len", "64"], "--seq-len: expected no --seq-len here (--scale zoology"),
        (["--full", "--quick"], "--quick: expected no --quick with --full/--scale"),
        (["--seed", str(2**32)], "--seed: expected an int in [0, 2**32), got 4294967296"),
        (["--full", "--seeds", "0", "-1"], "--seeds: expected an int in [0, 2**32), got -1"),
    ]:
        assert main(["mqar", *argv, "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err, argv
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_full_flags_are_checked(tmp_path, capsys):
    assert main(["mqar", "--full", "--target", "1.5", "--out", str(tmp_path)]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["mqar", "--widths", "64", "--full", "--out", str(tmp_path)]) == 2
    assert "--widths" in capsys.readouterr().err


def test_full_stops_on_a_check_set_disjoint_from_the_reported_held_out_set(monkeypatch):
    """--full's stopping rule must not see the sequences its final accuracy is reported on."""
    from bmojo.jobs import mqar as M
    from bmojo.jobs import mqar_full

    s = M.Settings(seq_lens=(32,), kv_pairs=(4,), vocab=32, d_model=32, steps=2, batch=4, eval_sequences=8, seed=1)
    cfg = M.plan(s, ["transformer"], [0.5], None)[0]["config"]
    seeds = []
    real = M._data_generator

    def logged(seed):
        seeds.append(seed)
        return real(seed)

    monkeypatch.setattr(M, "_data_generator", logged)
    record = mqar_full.train_until(cfg, s, torch.device("cpu"), "t", 2, 1, 2.0)  # target 2.0: never stops early
    cells = len(s.grid)
    checks, final = seeds[: 2 * cells], seeds[2 * cells :]
    assert len(final) == cells and final == [M.HELD_OUT + 1_000 * s.seed + i for i in range(cells)]
    assert not set(checks) & set(final)
    assert record["steps"] == 2
