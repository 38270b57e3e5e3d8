"""bmojo.jobs.data: the default corpus, --data formats, the split rule and stateless batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bmojo.jobs import data as D
from safetensors.torch import save_file


def test_split_rule_is_by_file_and_deterministic(text_dir, corpus):
    files = sorted(p for p in text_dir.rglob("*.py"))
    val = [p for p in files if D.is_validation_file(p.relative_to(text_dir).as_posix())]
    train = [p for p in files if p not in val]
    expect_val = b"".join(p.read_bytes() + b"\0" for p in val)
    expect_train = b"".join(p.read_bytes() + b"\0" for p in train)
    assert bytes(corpus.val.numpy()) == expect_val
    assert bytes(corpus.train.numpy()) == expect_train
    assert corpus.vocab_size == 256 and "by file" in corpus.split
    assert D.load_corpus(text_dir).fingerprint == corpus.fingerprint


def test_default_corpus_is_the_stdlib_split_by_file():
    c = D.default_corpus()
    root = D.default_corpus_root()
    assert str(root) in c.source and c.vocab_size == 256
    # About VAL_PERCENT % of the bytes are held out (the rule is per file, so not exactly).
    frac = c.val.numel() / (c.val.numel() + c.train.numel())
    assert 0.01 < frac < 0.15, frac
    assert int(c.train.max()) < 256 and (c.train == D.EOS).sum() > 100  # many documents, byte 0 ends each


def test_single_text_file_splits_by_position(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("hello world\n" * 100)
    c = D.load_corpus(p)
    assert "by position" in c.split
    assert c.val.numel() == (c.train.numel() + c.val.numel()) * D.VAL_PERCENT // 100
    assert bytes(torch.cat([c.train, c.val]).numpy()) == p.read_bytes() + b"\0"


def test_npy_and_safetensors_token_files(tmp_path):
    ids = np.arange(1000, dtype=np.int32) % 700
    np.save(tmp_path / "t.npy", ids)
    c = D.load_corpus(tmp_path / "t.npy")
    assert c.vocab_size == 700 and c.train.numel() == 950 and c.val.numel() == 50
    assert torch.equal(torch.cat([c.train, c.val]).long(), torch.from_numpy(ids).long())
    save_file({"train": torch.arange(300), "validation": torch.arange(40)}, str(tmp_path / "s.safetensors"))
    s = D.load_corpus(tmp_path / "s.safetensors")
    assert s.train.numel() == 300 and s.val.numel() == 40 and s.vocab_size == 300


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing", "--data: expected an existing file or directory"),
        (lambda p: ((p / "e.txt").write_bytes(b"") and None) or p / "e.txt", "--data: expected a non-empty file"),
        (lambda p: (p / "d").mkdir() or p / "d", "--data: expected at least one non-empty text file"),
        (lambda p: ((p / "b.txt").write_bytes(b"ab\x00\x01") and None) or p / "b.txt", "--data: .*binary file"),
        (lambda p: ((p / "u.txt").write_bytes(b"\xff\xfe\xfa") and None) or p / "u.txt", "--data: .*binary file"),
        (lambda p: np.save(p / "f.npy", np.ones(10, np.float32)) or p / "f.npy", "--data: expected integer token ids"),
        (lambda p: np.save(p / "m.npy", np.ones((2, 5), np.int64)) or p / "m.npy", "--data: expected a 1-d array"),
        (
            lambda p: (
                save_file({"a": torch.ones(2, 2, dtype=torch.long)}, str(p / "m.safetensors")) or p / "m.safetensors"
            ),
            "--data: expected a 1-d tensor",
        ),
        (
            lambda p: (
                save_file({"a": torch.ones(3), "b": torch.ones(3)}, str(p / "x.safetensors")) or p / "x.safetensors"
            ),
            "--data: expected one 1-d token tensor",
        ),
    ],
    ids=["missing", "empty-file", "empty-dir", "nul-bytes", "not-utf8", "float-npy", "2d-npy", "2d-st", "two-st"],
)
def test_bad_data_names_the_flag(tmp_path, make, match):
    with pytest.raises(D.DataError, match=match):
        D.load_corpus(make(tmp_path))


def test_binary_file_inside_a_directory_is_named(tmp_path):
    (tmp_path / "ok.py").write_text("x = 1\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    with pytest.raises(D.DataError, match=r"blob.bin"):
        D.load_corpus(tmp_path)


def test_batches_are_stateless_and_shard_the_global_batch():
    a = D.batch_starts(10_000, 32, 8, seed=3, step=5)
    assert torch.equal(a, D.batch_starts(10_000, 32, 8, seed=3, step=5))
    assert not torch.equal(a, D.batch_starts(10_000, 32, 8, seed=3, step=6))
    assert not torch.equal(a, D.batch_starts(10_000, 32, 8, seed=4, step=5))
    assert int(a.max()) <= 10_000 - 33
    rows = [a[D.shard_rows(8, r, 4)] for r in range(4)]
    assert torch.equal(torch.cat(rows), a)
    tokens = torch.arange(100)
    x, y = D.windows(tokens, torch.tensor([0, 10]), 5)
    assert x.tolist() == [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]] and torch.equal(y, x + 1)
