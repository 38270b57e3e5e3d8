"""AdamW with decoupled weight decay on matrices only, and the warm-up + cosine schedule.

The schedule is a pure function of the optimizer step, so its whole state is that step (stored in
the checkpoint's ``trainer.json``); nothing else needs saving to resume it exactly. Any job can use
it: ``Schedule(peak_lr, warmup_steps, total_steps).lr(step)``.
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

    def lr(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay = self.total_steps - self.warmup_steps
        progress = 1.0 if decay <= 0 else min(1.0, (step - self.warmup_steps) / decay)
        floor = self.min_lr_ratio * self.peak_lr
        return floor + 0.5 * (self.peak_lr - floor) * (1 + math.cos(math.pi * progress))


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
