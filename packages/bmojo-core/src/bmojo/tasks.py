"""Synthetic tasks generated in code from a seed (no downloads)."""

from __future__ import annotations

import torch


def recall_batch(batch: int, n_pairs: int, vocab: int, *, generator: torch.Generator | None = None):
    """Associative recall: ``k1 v1 … kn vn q1 a1 … qn an`` with keys from the first half of the
    vocabulary and values from the second; each query repeats a key and must be answered with its
    value. Returns input ids (batch, 4n-1), targets (same shape, -100 except at answer positions).
    """
    half = vocab // 2
    if n_pairs > half:
        raise ValueError(f"n_pairs: expected <= vocab // 2 = {half}, got {n_pairs}")
    keys = torch.stack([torch.randperm(half, generator=generator)[:n_pairs] for _ in range(batch)])
    values = torch.randint(half, vocab, (batch, n_pairs), generator=generator)
    order = torch.stack([torch.randperm(n_pairs, generator=generator) for _ in range(batch)])
    queries, answers = keys.gather(1, order), values.gather(1, order)
    context = torch.stack([keys, values], dim=2).reshape(batch, -1)
    tail = torch.stack([queries, answers], dim=2).reshape(batch, -1)
    seq = torch.cat([context, tail], dim=1)
    inputs, labels = seq[:, :-1], seq[:, 1:].clone()
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, 2 * n_pairs :: 2] = True  # predicting a_i from q_i
    labels[~mask] = -100
    return inputs, labels
