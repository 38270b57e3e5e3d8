"""Token data for the language-model jobs: the embedded default corpus, ``--data``, and batches.

**Default corpus** (``bmojo train`` with no ``--data``): the ``.py`` files of the running Python's
standard library (``sysconfig.get_paths()["stdlib"]``), so training works offline with nothing to
download. Files under a directory named ``test``, ``tests``, ``site-packages``, ``dist-packages``
or ``__pycache__`` are left out (test data includes deliberately broken encodings; installed
packages differ between machines), and so are files that are not valid UTF-8 or contain a NUL
byte. Tokens are bytes (vocabulary 256); every file ends with the byte 0 (never present in text),
which marks document boundaries.

**Split by file**, deterministic: a file goes to validation when the first four bytes of
sha256(its path relative to the corpus root, '/'-separated), read as a big-endian integer, are
``< VAL_PERCENT`` modulo 100; files are concatenated in sorted path order. The split depends only
on a file's path, so adding a file never moves another. If either side ends up empty (a single
file, a handful of files), the concatenated stream is split instead: its last ``VAL_PERCENT`` %
(at least one token window) is validation.

**``--data PATH``**: a text file or a directory of text files (recursively, hidden files and
``__pycache__`` skipped; same byte tokens and split), a 1-d integer ``.npy`` array of token ids
(loaded memory-mapped, never unpickled) or a ``.safetensors`` file holding either one 1-d integer
tensor (split by its last ``VAL_PERCENT`` %) or two, named ``train`` and ``validation``. A binary
file among text, an empty file or directory, or a token file of the wrong shape or dtype is an
error that names ``--data``.

**Batches** are stateless: the windows of optimizer step ``s`` are drawn from a
``torch.Generator`` seeded with a hash of ``(seed, s)``, so a resumed run sees exactly the batches of an
uninterrupted one, and rank ``r`` of ``W`` takes rows ``[r·B/W, (r+1)·B/W)`` of the same global
batch: the world size changes who computes a row, never which rows there are.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

BYTE_VOCAB = 256
EOS = 0  #: byte appended after every text file
VAL_PERCENT = 5
#: Names the per-step batch draw; recorded in checkpoints so a resume under another draw fails.
BATCH_SCHEME = "sha256(seed:step)->mt19937/randint-v1"
SKIP_DIRS = frozenset({"test", "tests", "site-packages", "dist-packages", "__pycache__"})
TOKEN_SUFFIXES = (".npy", ".safetensors")
_INT_DTYPES = {"uint8", "int8", "int16", "uint16", "int32", "uint32", "int64"}


class DataError(ValueError):
    """``--data`` (or the default corpus) cannot be used; the message names the flag."""


@dataclass(frozen=True)
class Corpus:
    """A train/validation pair of 1-d token-id tensors (uint8 for bytes, int32/int64 for ids)."""

    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int  #: smallest vocabulary that covers every id (256 for byte corpora)
    source: str  #: what was read, for logs
    fingerprint: str  #: sha256 of both splits' ids (recorded in checkpoints)
    split: str  #: "by file" or "by position"

    def describe(self) -> str:
        return (
            f"{self.source}: {self.train.numel():,} train / {self.val.numel():,} validation tokens "
            f"(split {self.split}), vocabulary {self.vocab_size}"
        )


def is_validation_file(relpath: str) -> bool:
    """The documented split rule (see the module docstring)."""
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < VAL_PERCENT


def default_corpus_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _fingerprint(train: torch.Tensor, val: torch.Tensor) -> str:
    import numpy as np

    h = hashlib.sha256()
    for t in (train, val):
        h.update(str(t.dtype).encode())
        h.update(t.numel().to_bytes(8, "big"))
        h.update(np.ascontiguousarray(t.numpy()))  # the buffer itself: no copy of a memory-mapped corpus
    return h.hexdigest()[:16]


def _is_text(blob: bytes) -> bool:
    if b"\x00" in blob:
        return False
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _walk(root: Path, *, skip_dirs: frozenset[str], suffix: str | None) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in skip_dirs or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith(".") or not path.is_file():
            continue
        if suffix is not None and path.suffix != suffix:
            continue
        files.append(path)
    return files


def _split_stream(stream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n_val = max(1, stream.numel() * VAL_PERCENT // 100)
    return stream[:-n_val], stream[-n_val:]


def _from_texts(root: Path, files: list[Path], *, strict: bool, source: str) -> Corpus:
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    skipped = 0
    for path in files:
        blob = path.read_bytes()
        if not blob:
            continue
        if not _is_text(blob):
            if strict:
                raise DataError(
                    f"--data: expected text files (UTF-8 without NUL bytes) or a .npy/.safetensors token file, "
                    f"got a binary file {str(path)!r}"
                )
            skipped += 1
            continue
        rel = path.relative_to(root).as_posix() if path != root else path.name
        parts[is_validation_file(rel)].append(blob + bytes([EOS]))
    n_train, n_val = len(parts[False]), len(parts[True])
    if n_train + n_val == 0:
        raise DataError(f"--data: expected at least one non-empty text file, got none in {str(root)!r}")
    if skipped:
        source += f" ({skipped} non-UTF-8 files skipped)"
    if n_train and n_val:
        train = torch.frombuffer(bytearray(b"".join(parts[False])), dtype=torch.uint8)
        val = torch.frombuffer(bytearray(b"".join(parts[True])), dtype=torch.uint8)
        split = f"by file: {n_train} train / {n_val} validation files"
    else:
        ordered = b"".join(parts[False] or parts[True])  # one side is empty; sorted path order
        train, val = _split_stream(torch.frombuffer(bytearray(ordered), dtype=torch.uint8))
        split = f"by position ({n_train + n_val} file(s), last {VAL_PERCENT}% is validation)"
    return Corpus(train, val, BYTE_VOCAB, source, _fingerprint(train, val), split)


def default_corpus() -> Corpus:
    root = default_corpus_root()
    files = _walk(root, skip_dirs=SKIP_DIRS, suffix=".py")
    if not files:
        raise DataError(f"--data: no --data given and no .py files found in the standard library at {str(root)!r}")
    return _from_texts(root, files, strict=False, source=f"Python standard library .py files under {root}")


def _check_ids(name: str, ids: torch.Tensor, path: Path) -> torch.Tensor:
    if ids.ndim != 1:
        raise DataError(
            f"--data: expected a 1-d tensor of token ids in {name!r} of {str(path)!r}, got shape {tuple(ids.shape)}"
        )
    if ids.numel() == 0:
        raise DataError(f"--data: expected a non-empty token tensor {name!r} in {str(path)!r}, got 0 tokens")
    if int(ids.min()) < 0:
        raise DataError(f"--data: expected token ids >= 0 in {name!r} of {str(path)!r}, got {int(ids.min())}")
    return ids


def _torch_ids(array) -> torch.Tensor:
    import numpy as np

    kind = array.dtype
    if kind == np.uint16 or kind == np.uint32:  # torch has no unsigned 16/32-bit arithmetic
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    return torch.from_numpy(array)  # the memory map itself (copy-on-write: never written)


def _from_npy(path: Path) -> Corpus:
    import numpy as np

    try:
        # mmap_mode="c": copy-on-write pages, so torch gets a writable array without a copy;
        # under torchrun every rank maps the same file pages
        arr = np.load(path, mmap_mode="c", allow_pickle=False)  # reads the header only
    except ValueError as err:
        raise DataError(f"--data: expected a .npy array of integer token ids in {str(path)!r}, got: {err}") from err
    if arr.dtype.name not in _INT_DTYPES:
        raise DataError(
            f"--data: expected integer token ids ({sorted(_INT_DTYPES)}) in {str(path)!r}, got dtype {arr.dtype}"
        )
    if arr.ndim != 1:
        raise DataError(f"--data: expected a 1-d array of token ids in {str(path)!r}, got shape {arr.shape}")
    ids = _check_ids("array", _torch_ids(arr), path)
    train, val = _split_stream(ids)
    return Corpus(
        train,
        val,
        int(ids.max()) + 1,
        f"token file {path}",
        _fingerprint(train, val),
        f"by position (last {VAL_PERCENT}%)",
    )


def _from_safetensors(path: Path) -> Corpus:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = sorted(f.keys())
            dtypes = {k: f.get_slice(k).get_dtype() for k in keys}
            shapes = {k: f.get_slice(k).get_shape() for k in keys}
            if keys not in (["train", "validation"],) and len(keys) != 1:
                raise DataError(
                    f"--data: expected one 1-d token tensor, or two named 'train' and 'validation', in {str(path)!r}, "
                    f"got tensors {keys}"
                )
            for k in keys:
                if dtypes[k].lower() not in {"u8", "i8", "i16", "u16", "i32", "u32", "i64"}:
                    raise DataError(
                        f"--data: expected integer token ids in {k!r} of {str(path)!r}, got dtype {dtypes[k]}"
                    )
                if len(shapes[k]) != 1:
                    raise DataError(
                        f"--data: expected a 1-d tensor {k!r} in {str(path)!r}, got shape {tuple(shapes[k])}"
                    )
            tensors = {k: _check_ids(k, f.get_tensor(k), path) for k in keys}
    except SafetensorError as err:
        raise DataError(f"--data: expected a readable safetensors token file, got {str(path)!r}: {err}") from err
    tensors = {k: (t.long() if t.dtype in (torch.uint16, torch.uint32) else t) for k, t in tensors.items()}
    if len(keys) == 2:
        train, val = tensors["train"], tensors["validation"]
        split = "as stored (train / validation tensors)"
    else:
        train, val = _split_stream(tensors[keys[0]])
        split = f"by position (last {VAL_PERCENT}%)"
    vocab = max(int(train.max()), int(val.max())) + 1
    return Corpus(train, val, vocab, f"token file {path}", _fingerprint(train, val), split)


def load_corpus(data: str | Path | None) -> Corpus:
    """The default corpus (``data`` None) or what ``--data`` names; see the module docstring."""
    if data is None:
        return default_corpus()
    path = Path(data)
    if str(data).strip() == "":
        raise DataError("--data: expected a file or directory path, got an empty string")
    if not path.exists():
        raise DataError(f"--data: expected an existing file or directory, got {str(path)!r} (not found)")
    if path.is_dir():
        files = _walk(path, skip_dirs=frozenset({"__pycache__"}), suffix=None)
        if not files or all(p.stat().st_size == 0 for p in files):
            raise DataError(f"--data: expected at least one non-empty text file, got an empty directory {str(path)!r}")
        return _from_texts(path, files, strict=True, source=f"{len(files)} text files under {path}")
    if path.stat().st_size == 0:
        raise DataError(f"--data: expected a non-empty file, got an empty file {str(path)!r}")
    if path.suffix == ".npy":
        return _from_npy(path)
    if path.suffix == ".safetensors":
        return _from_safetensors(path)
    return _from_texts(path, [path], strict=True, source=f"text file {path}")


# ----------------------------------------------------------------------------- batches


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator that draws step ``step``'s windows (independent of rank, world size, resume)."""
    # A hash, not seed·2^32 + step: the CPU generator (mt19937) keeps only 32 bits of its seed.
    digest = hashlib.sha256(f"bmojo-batch:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:4], "big"))


def batch_starts(n_tokens: int, seq_len: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Start offsets of the ``batch`` windows (``seq_len + 1`` tokens each) of one optimizer step."""
    if n_tokens < seq_len + 1:
        raise DataError(
            f"--data: expected a training split of at least --seq-len + 1 = {seq_len + 1} tokens, got {n_tokens}"
        )
    return torch.randint(0, n_tokens - seq_len, (batch,), generator=step_generator(seed, step))


def windows(tokens: torch.Tensor, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets (len(starts), seq_len), as int64."""
    idx = starts[:, None] + torch.arange(seq_len + 1)
    w = tokens[idx].long()
    return w[:, :-1], w[:, 1:]


def shard_rows(batch: int, rank: int, world: int) -> slice:
    """Rows of the global batch that ``rank`` computes (``batch`` divisible by ``world``)."""
    per = batch // world
    return slice(rank * per, (rank + 1) * per)


def validation_starts(n_tokens: int, seq_len: int, max_windows: int) -> torch.Tensor:
    """Non-overlapping validation windows from the start of the split (the same every time)."""
    if n_tokens < seq_len + 1:
        raise DataError(
            f"--data: expected a validation split of at least --seq-len + 1 = {seq_len + 1} tokens, got {n_tokens}"
        )
    return torch.arange(0, n_tokens - seq_len, seq_len)[:max_windows]
