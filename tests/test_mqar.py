"""``bmojo mqar``: the task generator, the state-budget matching, and a ``--quick`` end-to-end run
showing that the task and training loop are sound (a full-attention Transformer learns it)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from bmojo.cli import main
from bmojo.mqar import ARCHS, Settings, plan, state_bytes
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
def test_quick_run_end_to_end(tmp_path):
    """The whole pipeline on a tiny instance in under a minute; the Transformer must solve it."""
    t0 = time.perf_counter()
    assert main(["mqar", "--quick", "--out", str(tmp_path)]) == 0
    elapsed = time.perf_counter() - t0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "mqar.png").stat().st_size > 1000
    by_arch = {r["arch"]: r for r in summary["results"]}
    assert set(by_arch) == {"transformer", "bmojo"}
    for r in summary["results"]:
        assert r["state_bytes"] > 0 and r["parameters"] > 0
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
    transformer = by_arch["transformer"]["accuracy"]
    assert min(transformer.values()) > 0.9, transformer
    assert elapsed < 90, f"--quick took {elapsed:.0f} s"
    # Resumable: a second run reuses every cached result and trains nothing.
    t1 = time.perf_counter()
    assert main(["mqar", "--quick", "--out", str(tmp_path)]) == 0
    assert time.perf_counter() - t1 < 15
    again = json.loads((tmp_path / "results.json").read_text())
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in summary["results"]]
