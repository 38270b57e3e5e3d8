"""Issue 10, item 1: ``bmojo mqar`` never unpickles. Checkpoints are safetensors + JSON, validated
against the run before loading; a pickle planted where the old ``.pt`` checkpoint lived is never
read."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from bmojo.cli import main
from bmojo.jobs.mqar import (
    Settings,
    _run_key,
    arch_config,
    checkpoint_exists,
    load_checkpoint,
    save_checkpoint,
)
from bmojo.model import BMojoLM

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
    assert not list((out / "ckpt").glob("*.json")), "finished runs leave no checkpoint behind"


def _train_objects(s, cfg):
    torch.manual_seed(0)
    model = BMojoLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=0.1)
    return model, opt, sched, torch.Generator().manual_seed(5)


def test_checkpoint_round_trip_is_exact_and_tampering_is_named(tmp_path):
    s = Settings(seq_lens=(16,), kv_pairs=(2,), steps=6, d_model=32, batch=4, eval_sequences=4)
    cfg, _ = arch_config("transformer", s, None)
    model, opt, sched, gen = _train_objects(s, cfg)
    for _ in range(2):
        loss = model(torch.randint(0, s.vocab, (2, 8), generator=gen)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    ckpt = tmp_path / "ckpt" / "abc.pt"
    save_checkpoint(ckpt, model, opt, sched, gen, 2, [1.0, 0.5], 3.5, [])
    assert checkpoint_exists(ckpt)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["abc.json", "abc.safetensors"]
    m2, o2, s2, g2 = _train_objects(s, cfg)
    step, losses, elapsed, curve = load_checkpoint(ckpt, m2, o2, s2, g2, s, "cpu")
    assert (step, losses, elapsed, curve) == (2, [1.0, 0.5], 3.5, [])
    for k, v in model.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k
    a, b = opt.state_dict(), o2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])
    assert sched.state_dict() == s2.state_dict()
    assert torch.equal(gen.get_state(), g2.get_state())

    meta = json.loads(ckpt.with_suffix(".json").read_text())
    meta["step"] = 99
    ckpt.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"abc\.json: not a valid checkpoint of this run \(step"):
        load_checkpoint(ckpt, *_train_objects(s, cfg), s, "cpu")
    meta["step"] = 2
    ckpt.with_suffix(".json").write_text(json.dumps(meta))
    ckpt.with_suffix(".safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"abc\.safetensors: not a valid checkpoint of this run"):
        load_checkpoint(ckpt, *_train_objects(s, cfg), s, "cpu")
    ckpt.with_suffix(".json").write_text('{"format": "bmojo-mqar-checkpoint", "vers')
    with pytest.raises(ValueError, match=r"abc\.json: not a valid checkpoint .*JSONDecodeError"):
        load_checkpoint(ckpt, *_train_objects(s, cfg), s, "cpu")
