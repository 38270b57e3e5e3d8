"""Synthetic tasks generated in code from a seed (no downloads)."""

from __future__ import annotations

import torch

#: Token 0 is the filler of MQAR's gaps; keys come from [1, vocab/2), values from [vocab/2, vocab).
FILLER = 0


def recall_batch(batch: int, n_pairs: int, vocab: int, *, generator: torch.Generator | None = None):
    """Associative recall: ``k1 v1 … kn vn q1 a1 … qn an`` with keys from the first half of the
    vocabulary and values from the second; each query repeats a key and must be answered with its
    value. Returns input ids (batch, 4n-1), targets (same shape, -100 except at answer positions).
    """
    for name, value, low in (("batch", batch, 1), ("n_pairs", n_pairs, 1), ("vocab", vocab, 2)):
        _check_count(name, value, low)
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


def mqar_query_start(seq_len: int, kv_pairs: int) -> int:
    """First position a query may take: the second half of the sequence (never inside the pairs)."""
    return max(2 * kv_pairs, seq_len // 2)


def _check_count(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")


def check_mqar(seq_len: int, kv_pairs: int, vocab: int, query_start: int | None = None) -> int:
    """Validate an MQAR instance; returns its query start. Errors name the argument."""
    for name, value, low in (("seq_len", seq_len, 2), ("kv_pairs", kv_pairs, 1), ("vocab", vocab, 4)):
        _check_count(name, value, low)
    if query_start is not None:
        _check_count("query_start", query_start, 0)
    if kv_pairs > vocab // 2 - 1:
        raise ValueError(f"kv_pairs: expected <= vocab // 2 - 1 = {vocab // 2 - 1} distinct keys, got {kv_pairs}")
    qs = mqar_query_start(seq_len, kv_pairs) if query_start is None else query_start
    if qs < 2 * kv_pairs:
        raise ValueError(f"query_start: expected >= 2·kv_pairs = {2 * kv_pairs} (after the pairs), got {qs}")
    if (seq_len - qs) // 2 < kv_pairs:
        raise ValueError(
            f"seq_len: expected room for {kv_pairs} query-answer pairs after position {qs} "
            f"(seq_len >= {qs + 2 * kv_pairs}), got {seq_len}"
        )
    return qs


def mqar_batch(
    batch: int,
    seq_len: int,
    kv_pairs: int,
    vocab: int,
    *,
    query_start: int | None = None,
    generator: torch.Generator | None = None,
):
    """Multi-query associative recall (Zoology-style MQAR).

    Each sequence of ``seq_len`` tokens starts with ``kv_pairs`` pairs ``k v`` (distinct keys from
    ``[1, vocab/2)``, values from ``[vocab/2, vocab)``), then filler tokens (0); from
    ``query_start`` (default: the second half, see ``mqar_query_start``) every key is queried once,
    in random order, at random even offsets. The target at a query's position is its value
    (next-token prediction); every other target is -100. Answers are never shown in the input (the
    token after a query is filler), so a model cannot score by elimination (the last query's
    answer being the one value not yet shown); and no query lies within
    ``query_start - 2·kv_pairs`` tokens of the pairs: a model must carry them across that gap.

    Returns ``(inputs, labels)``, both (batch, seq_len) int64.
    """
    qs = check_mqar(seq_len, kv_pairs, vocab, query_start)
    _check_count("batch", batch, 1)
    half = vocab // 2
    n = kv_pairs
    keys = torch.rand(batch, half - 1, generator=generator).argsort(dim=1)[:, :n] + 1
    values = torch.randint(half, vocab, (batch, n), generator=generator)
    slots = (seq_len - qs) // 2
    qpos = qs + 2 * torch.rand(batch, slots, generator=generator).argsort(dim=1)[:, :n]
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    seq = torch.full((batch, seq_len), FILLER, dtype=torch.long)
    seq[:, 0 : 2 * n : 2] = keys
    seq[:, 1 : 2 * n : 2] = values
    seq.scatter_(1, qpos, keys.gather(1, order))
    labels = torch.full_like(seq, -100)
    labels.scatter_(1, qpos, values.gather(1, order))
    return seq, labels
