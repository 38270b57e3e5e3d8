"""Fixtures for the job tests: a small deterministic text corpus and tiny training settings.

Training here uses the ``tiny`` preset (2 layers, width 64) at context 32 on generated Python-like
text files, so a step takes tens of milliseconds on one CPU thread. The text is generated from a
fixed seed rather than copied from bmojo's own sources: with those, every edit anywhere in the
package changed the training data, and the float32-rounding bounds of the accumulation and
distributed tests held for some source trees and not for others.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from bmojo.jobs.data import is_validation_file, load_corpus
from bmojo.jobs.train import TrainSettings

_WORDS = ("state", "window", "chunk", "tokens", "memory", "score", "layer", "value", "key", "query", "fading")


def _generated_source(path: Path, seed: int) -> Path:
    """A few kB of deterministic Python-like text (functions, loops, comments) from ``seed``."""
    rng = random.Random(seed)
    lines = [f'"""Module {seed}: generated for the job tests."""', ""]
    for f in range(rng.randint(12, 30)):
        a, b = rng.sample(_WORDS, 2)
        lines += [
            f"def {a}_{b}_{f}({a}, {b}={rng.randint(0, 99)}):",
            f"    # {rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_WORDS)}",
            f"    for i in range({rng.randint(1, 64)}):",
            f"        {a} = {a} * {rng.randint(2, 9)} + {b} - i",
            f"    return {a} if {a} > {rng.randint(0, 999)} else {b}",
            "",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory) -> Path:
    """Generated .py files under fixed names, so both sides of the by-file split are non-empty."""
    gen = tmp_path_factory.mktemp("generated")
    sources = [_generated_source(gen / f"src{i:03d}.py", seed=i) for i in range(64)]
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
