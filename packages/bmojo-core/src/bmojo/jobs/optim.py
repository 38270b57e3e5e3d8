"""AdamW with decoupled weight decay on matrices only, and the jobs' learning-rate schedules.

Every schedule is a pure function of the optimizer step, so its whole state is that step (stored
in the checkpoint's ``trainer.json``); nothing else needs saving to resume it exactly. Each has
``lr(step)`` and ``beta1(step)`` (``None``: leave the optimizer's β1 alone), and :func:`apply`
sets both on an optimizer before its step:

* :class:`Schedule` — ``bmojo train``: linear warm-up, cosine decay to ``min_lr_ratio`` × peak;
* :class:`CosineToZero` — ``bmojo mqar --full``: warm-up × a cosine to 0 at the step cap, so an
  early stop simply ends sooner;
* :class:`OneCycle` — ``bmojo mqar`` and ``bmojo demo``: torch's ``OneCycleLR`` (cosine, β1
  cycled 0.95 → 0.85 → 0.95) as a function of the step, equal to it float for float (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bmojo._checks import check_int, fail


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up from ``peak_lr / warmup_steps`` to ``peak_lr`` over ``warmup_steps`` steps,
    then cosine decay to ``min_lr_ratio · peak_lr`` at ``total_steps``."""

    peak_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if not self.peak_lr > 0:
            fail("--lr", "a positive learning rate", self.peak_lr)
        check_int("--warmup", self.warmup_steps, minimum=0)
        check_int("--steps", self.total_steps, minimum=1)
        if self.warmup_steps > self.total_steps:
            fail("--warmup", f"<= --steps ({self.total_steps})", self.warmup_steps)
        if not 0 <= self.min_lr_ratio <= 1:
            fail("--min-lr-ratio", "a number in [0, 1]", self.min_lr_ratio)

    def beta1(self, step: int) -> None:
        return None

    def lr(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay = self.total_steps - self.warmup_steps
        progress = 1.0 if decay <= 0 else min(1.0, (step - self.warmup_steps) / decay)
        floor = self.min_lr_ratio * self.peak_lr
        return floor + 0.5 * (self.peak_lr - floor) * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class CosineToZero:
    """``peak_lr · min(1, (step + 1) / warmup_steps) · ½(1 + cos(π · min(1, step / total_steps)))``:
    the warm-up multiplies a cosine that reaches 0 at ``total_steps`` (the step cap)."""

    peak_lr: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self):
        if not self.peak_lr > 0:
            fail("--lr", "a positive learning rate", self.peak_lr)
        check_int("warmup_steps", self.warmup_steps, minimum=1)
        check_int("--max-steps", self.total_steps, minimum=1)

    def beta1(self, step: int) -> None:
        return None

    def lr(self, step: int) -> float:
        factor = (
            min(1.0, (step + 1) / self.warmup_steps)
            * 0.5
            * (1.0 + math.cos(math.pi * min(1.0, step / self.total_steps)))
        )
        return self.peak_lr * factor


@dataclass(frozen=True)
class OneCycle:
    """torch's ``OneCycleLR(max_lr=peak_lr, total_steps, pct_start)`` with its defaults (cosine
    annealing, ``div_factor`` 25, ``final_div_factor`` 1e4, β1 cycled between ``max_momentum`` 0.95
    and ``base_momentum`` 0.85), as a function of the step: from ``peak_lr / 25`` up to ``peak_lr``
    over the first ``pct_start`` of the steps, then down to ``peak_lr / 25 / 1e4``."""

    peak_lr: float
    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self):
        if not self.peak_lr > 0:
            fail("--lr", "a positive learning rate", self.peak_lr)
        check_int("--steps", self.total_steps, minimum=1)
        if not 0 <= self.pct_start <= 1:
            fail("pct_start", "a number in [0, 1]", self.pct_start)

    @staticmethod
    def _cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def _phase(self, step: int) -> tuple[int, float]:
        """(phase, fraction of it done) exactly as torch's OneCycleLR.get_lr computes them."""
        first_end = float(self.pct_start * self.total_steps) - 1
        if step <= first_end:
            return 0, (step - 0.0) / (first_end - 0.0)
        return 1, (step - first_end) / ((self.total_steps - 1) - first_end)

    def lr(self, step: int) -> float:
        initial = self.peak_lr / self.div_factor
        phase, pct = self._phase(step)
        if phase == 0:
            return self._cos(initial, self.peak_lr, pct)
        return self._cos(self.peak_lr, initial / self.final_div_factor, pct)

    def beta1(self, step: int) -> float:
        phase, pct = self._phase(step)
        if phase == 0:
            return self._cos(self.max_momentum, self.base_momentum, pct)
        return self._cos(self.base_momentum, self.max_momentum, pct)


def apply(optimizer: torch.optim.Optimizer, schedule, step: int) -> float:
    """Set ``schedule``'s learning rate (and β1 where it cycles it) for optimizer step ``step``; returns the lr."""
    lr, beta1 = schedule.lr(step), schedule.beta1(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if beta1 is not None:
            group["betas"] = (beta1, *group["betas"][1:])
    return lr


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on parameters with >= 2 dims (matrices, embeddings); none on norms, biases, A, D."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.95), eps=1e-8) -> torch.optim.AdamW:
    # foreach=False: the per-parameter loop gives the same float32 results whether the parameters
    # are plain tensors, DDP replicas or FSDP2 shards, which the equivalence test relies on.
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, foreach=False)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
