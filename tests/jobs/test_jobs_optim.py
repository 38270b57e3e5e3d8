"""bmojo.jobs.optim: the warm-up + cosine schedule and the AdamW parameter groups."""

from __future__ import annotations

import itertools
import math

import pytest
from bmojo import BMojoLM, ModelConfig
from bmojo.jobs.optim import Schedule, adamw


def test_warmup_then_cosine_to_the_floor():
    s = Schedule(1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert s.lr(0) == pytest.approx(1e-4)
    assert s.lr(9) == pytest.approx(1e-3)
    assert s.lr(10) == pytest.approx(1e-3)
    assert s.lr(60) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half-way through the cosine
    assert s.lr(110) == pytest.approx(1e-4)
    lrs = [s.lr(i) for i in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert Schedule(1e-3, 0, 10, 0.0).lr(5) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize(
    "kw, flag",
    [(dict(peak_lr=0.0), "--lr"), (dict(warmup_steps=20), "--warmup"), (dict(min_lr_ratio=2.0), "--min-lr-ratio")],
)
def test_schedule_errors_name_the_flag(kw, flag):
    args = dict(peak_lr=1e-3, warmup_steps=1, total_steps=10, min_lr_ratio=0.1) | kw
    with pytest.raises(ValueError, match=flag):
        Schedule(**args)


def test_weight_decay_on_matrices_only():
    model = BMojoLM(ModelConfig.preset("bmojo", d_model=32, n_layers=1, window=8, ssm_head_dim=16, n_heads=4))
    opt = adamw(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
