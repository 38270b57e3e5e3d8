"""bmojo.jobs.optim: the schedules (warm-up + cosine, cosine to zero, one-cycle) and the AdamW parameter groups."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from bmojo import BMojoLM, ModelConfig
from bmojo.jobs.optim import CosineToZero, OneCycle, Schedule, adamw, apply


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


@pytest.mark.parametrize("total,pct", [(300, 0.1), (7, 0.1), (100, 0.3), (1, 0.3), (13, 0.5)])
def test_one_cycle_equals_torch_float_for_float(total, pct):
    """bmojo mqar's schedule as a function of the step: the lr and β1 torch's OneCycleLR sets,
    exactly (mqar's results must not move when it stopped using the torch scheduler object)."""
    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW(p, lr=3e-3, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=total, pct_start=pct)
    ours = OneCycle(3e-3, total, pct)
    mine = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=3e-3, betas=(0.9, 0.98))
    for step in range(total):
        apply(mine, ours, step)
        assert mine.param_groups[0]["lr"] == opt.param_groups[0]["lr"], step
        assert mine.param_groups[0]["betas"] == opt.param_groups[0]["betas"], step
        opt.step()
        sched.step()


def test_cosine_to_zero_is_warmup_times_cosine():
    s = CosineToZero(1e-3, warmup_steps=10, total_steps=100)
    assert s.lr(0) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(0.0)))
    assert s.lr(50) == pytest.approx(0.5e-3)
    assert s.lr(100) == 0.0 and s.lr(150) == 0.0  # an early stop just ends sooner; past the cap it stays 0
    assert s.beta1(5) is None
