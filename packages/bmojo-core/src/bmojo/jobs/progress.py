"""Progress reporting shared by the jobs: a tqdm bar with loss and tokens/s, and a JSONL log.

Only rank 0 shows a bar or writes the log; other ranks get silent stand-ins, so callers never
branch on the rank themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm


class Progress:
    """A step bar: ``update(loss=…, tokens=…, lr=…, seconds=…)`` after each optimizer step."""

    def __init__(self, *, total: int, initial: int, desc: str, enabled: bool):
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)

    def update(self, *, loss: float, tokens: int, lr: float, seconds: float) -> float:
        """Advance one step that took ``seconds`` (its training only: the caller leaves validation
        and checkpoints out); returns its tokens/s. The postfix is set before the bar advances, so
        the redraw that advancing triggers shows this step's values, not the previous step's."""
        rate = tokens / max(seconds, 1e-9)
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}", lr=f"{lr:.2e}", refresh=False)
        self.bar.update(1)
        return rate

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        self.bar.close()


class JsonlLog:
    """Append-only JSON-lines log. Opening it for a resumed run first drops records past the
    resumed step (written after the checkpoint by the interrupted run), atomically."""

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None = None):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.is_file():
            kept = [line for line in self._records(self.path) if json.loads(line).get("step", 0) <= resume_step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        """Append ``record``; a NaN or infinity in it is a ValueError (JSON has neither, and the
        caller should have stopped before logging one)."""
        if self.enabled:
            line = json.dumps(record, sort_keys=True, allow_nan=False)
            with self.path.open("a") as f:
                f.write(line + "\n")

    @staticmethod
    def _records(path: Path) -> list[str]:
        """The log's record lines. A last line that is not a whole JSON record is what a process
        killed mid-append (or a full disk) leaves: it is dropped. Any other bad line is an error
        naming the file and the line."""
        lines = [(i, line) for i, line in enumerate(Path(path).read_text().splitlines(), 1) if line.strip()]
        kept = []
        for j, (i, line) in enumerate(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if j == len(lines) - 1:
                    break
                raise ValueError(f"{path}: line {i}: expected a JSON record, got {line[:40]!r}… ({err})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}: line {i}: expected a JSON object, got {type(record).__name__}")
            kept.append(line)
        return kept

    @staticmethod
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in JsonlLog._records(path)]
