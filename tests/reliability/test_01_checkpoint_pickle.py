"""Issue 10, item 1: ``bmojo mqar`` never unpickles. Checkpoints are safetensors + JSON (the format
of ``bmojo.jobs.checkpoint``, shared with ``bmojo train``), validated against the run before
loading; a pickle planted where the old ``.pt`` checkpoint lived is never read."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from bmojo.cli import main
from bmojo.jobs import mqar
from bmojo.jobs.mqar import Settings, _run_key, arch_config

FLAGS = ["--seq-len", "16", "--kv-pairs", "2", "--steps", "3", "--d-model", "32", "--batch", "4"]
FLAGS += ["--eval-sequences", "4", "--arch", "transformer", "--ckpt-every", "1"]


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_planted_pickle_checkpoint_is_never_loaded(tmp_path):
    out = tmp_path / "out"
    s = Settings(seq_lens=(16,), kv_pairs=(2,), steps=3, d_model=32, batch=4, eval_sequences=4)
    cfg, _ = arch_config("transformer", s, None)
    key = _run_key("transformer", cfg, s)
    marker = tmp_path / "pwned"
    (out / "ckpt").mkdir(parents=True)
    with open(out / "ckpt" / f"{key}.pt", "wb") as f:
        pickle.dump(Payload(marker), f)
    rc = main(["mqar", *FLAGS, "--out", str(out)])
    assert not marker.exists(), "the planted pickle was executed"
    assert rc == 0
    assert [p.name for p in (out / "ckpt").iterdir()] == [f"{key}.pt"], "finished runs leave no checkpoint behind"


def _interrupted_then_resumed(tmp_path, monkeypatch, s, cfg, fail_at: int):
    """Train with a checkpoint every 2 steps, interrupted when batch ``fail_at`` is drawn."""
    real, calls = mqar.mqar_batch, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(*a, **k)

    ckpt = tmp_path / "ckpt" / "abc"
    monkeypatch.setattr(mqar, "mqar_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        mqar.train_run(cfg, s, torch.device("cpu"), ckpt, "t", 2)
    monkeypatch.setattr(mqar, "mqar_batch", real)
    return ckpt


def test_resume_is_exact_and_tampering_is_named(tmp_path, monkeypatch):
    s = Settings(seq_lens=(16,), kv_pairs=(2,), steps=6, d_model=32, batch=4, eval_sequences=4)
    cfg, _ = arch_config("transformer", s, None)
    whole = mqar.train_run(cfg, s, torch.device("cpu"), None, "t", 0)
    ckpt = _interrupted_then_resumed(tmp_path, monkeypatch, s, cfg, fail_at=5)  # checkpoint at step 4
    step_dir = ckpt / "checkpoints" / "step-00000004"
    assert sorted(p.name for p in step_dir.iterdir()) == [
        "config.json", "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng.safetensors",
        "trainer.json",
    ]  # fmt: skip
    resumed = mqar.train_run(cfg, s, torch.device("cpu"), ckpt, "t", 2)
    for key in ("accuracy", "final_loss", "loss_curve"):
        assert resumed[key] == whole[key], key
    assert not ckpt.exists(), "a finished run removes its checkpoint"

    ckpt = _interrupted_then_resumed(tmp_path, monkeypatch, s, cfg, fail_at=5)
    step_dir = ckpt / "checkpoints" / "step-00000004"
    trainer = json.loads((step_dir / "trainer.json").read_text())
    (step_dir / "trainer.json").write_text(json.dumps({**trainer, "step": 99}))
    with pytest.raises(
        ValueError, match=r"ckpt/abc: not a valid checkpoint of this run \(.*trainer\.json: step: expected 4"
    ):
        mqar.train_run(cfg, s, torch.device("cpu"), ckpt, "t", 2)
    (step_dir / "trainer.json").write_text(json.dumps({**trainer, "settings": {**trainer["settings"], "lr": 1.0}}))
    with pytest.raises(ValueError, match=r"not a valid checkpoint of this run \(settings"):
        mqar.train_run(cfg, s, torch.device("cpu"), ckpt, "t", 2)
    (step_dir / "trainer.json").write_text(json.dumps(trainer))
    (step_dir / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"not a valid checkpoint of this run \(.*model\.safetensors"):
        mqar.train_run(cfg, s, torch.device("cpu"), ckpt, "t", 2)
    (step_dir / "trainer.json").write_text('{"format": "bmojo-train-checkpoint", "vers')
    with pytest.raises(ValueError, match=r"not a valid checkpoint of this run \(.*expected JSON"):
        mqar.train_run(cfg, s, torch.device("cpu"), ckpt, "t", 2)
