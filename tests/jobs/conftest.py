"""Fixtures for the job tests: a small deterministic text corpus and tiny training settings.

Training here uses the ``tiny`` preset (2 layers, width 64) on ~40 of bmojo's own source files
at context 32, so a step takes tens of milliseconds on one CPU thread.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import bmojo
import pytest
from bmojo.jobs.data import is_validation_file, load_corpus
from bmojo.jobs.train import TrainSettings


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory) -> Path:
    """bmojo's own .py sources under fixed names, so both sides of the by-file split are non-empty."""
    src = Path(bmojo.__file__).parent
    sources = [p for p in sorted(src.rglob("*.py")) if "__pycache__" not in p.parts and p.stat().st_size > 0]
    out = tmp_path_factory.mktemp("corpus")
    for i, path in enumerate(sources):
        sub = out / ("pkg" if i % 3 else "")  # some in a sub-directory
        sub.mkdir(exist_ok=True)
        shutil.copy(path, sub / f"doc{i:03d}.py")
    # Add copies under names the split rule sends to validation until it holds >= 30 kB.
    val_bytes = sum(p.stat().st_size for p in out.rglob("*.py") if is_validation_file(p.relative_to(out).as_posix()))
    big = sorted(sources, key=lambda p: -p.stat().st_size)
    j = 0
    while val_bytes < 30_000:
        name = f"extra{j:04d}.py"
        if is_validation_file(name):
            src_file = big[j % len(big)]
            shutil.copy(src_file, out / name)
            val_bytes += src_file.stat().st_size
        j += 1
    rels = [p.relative_to(out).as_posix() for p in out.rglob("*.py")]
    assert not all(is_validation_file(r) for r in rels)
    return out


@pytest.fixture(scope="session")
def corpus(text_dir):
    return load_corpus(text_dir)


@pytest.fixture
def tiny(text_dir, tmp_path):
    """Settings for a tiny run in a fresh --out; override fields with ``tiny(steps=…)``."""

    def make(**kw) -> TrainSettings:
        base = TrainSettings(
            preset="tiny",
            data=str(text_dir),
            seq_len=32,
            batch_size=4,
            steps=6,
            val_every=3,
            val_windows=4,
            ckpt_every=3,
            keep=5,
            threads=1,
            progress=False,
            out=str(tmp_path / "run"),
        )
        return replace(base, **kw)

    return make
