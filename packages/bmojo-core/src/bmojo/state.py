"""The model's decode state: one fixed-shape tensor dict per layer plus each row's stream position.

Bounded by construction (spec §5): every tensor's shape comes from the config and the batch
size, never from the number of tokens seen. Rows of one batch may sit at different positions
(prompts of different lengths decoded together). The state round-trips through safetensors and is
validated against the model on load, so a state saved for another config fails loudly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bmojo.memory import State

FORMAT = "bmojo-decode-state"
#: "2": per-row positions (a ``positions`` tensor); "1" held one ``position`` in the metadata.
VERSION = "2"
POSITIONS_KEY = "positions"


class StateError(ValueError):
    """A decode state does not fit the model it is used with."""


@dataclass
class DecodeState:
    """``positions`` (batch,) int64 on the CPU: the absolute position of each row's next token.
    An int is accepted and broadcast to every row."""

    positions: torch.Tensor
    layers: list[State]

    def __post_init__(self):
        if isinstance(self.positions, int) and not isinstance(self.positions, bool):
            if self.positions < 0:
                raise StateError(f"positions: expected positions >= 0, got {self.positions}")
            self.positions = torch.full((self.batch_size,), self.positions, dtype=torch.int64)
        p = self.positions
        if not isinstance(p, torch.Tensor) or p.ndim != 1 or p.is_floating_point() or p.dtype == torch.bool:
            raise StateError(f"positions: expected an int or a 1-d integer tensor (batch,), got {p!r}")
        if p.shape[0] != self.batch_size:
            raise StateError(f"positions: expected {self.batch_size} rows (the state's batch), got {p.shape[0]}")
        if p.numel() and int(p.min()) < 0:
            raise StateError(f"positions: expected positions >= 0, got {int(p.min())}")
        self.positions = p.to(device="cpu", dtype=torch.int64)

    @property
    def position(self) -> int:
        """The stream position shared by every row; an error when rows sit at different positions."""
        first = int(self.positions[0])
        if not bool((self.positions == first).all()):
            raise StateError(
                f"position: expected every row at one position, got {self.positions.tolist()} (use .positions)"
            )
        return first

    @property
    def batch_size(self) -> int:
        for layer in self.layers:
            for t in layer.values():
                return t.shape[0]
        raise StateError("state: expected at least one tensor, got an empty state")

    def nbytes(self) -> int:
        """Total bytes of the layers' tensors: constant for a given config and batch size (the
        positions, 8 bytes per row, are bookkeeping and not counted)."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.values())

    def detach(self) -> DecodeState:
        return DecodeState(self.positions, [{k: v.detach() for k, v in layer.items()} for layer in self.layers])

    def select(self, rows: torch.Tensor) -> DecodeState:
        """The state of rows ``rows`` (int64 indices, repeats allowed), e.g. for beam search."""
        rows = torch.as_tensor(rows, dtype=torch.long).flatten()
        layers = [{k: v.index_select(0, rows.to(v.device)) for k, v in layer.items()} for layer in self.layers]
        return DecodeState(self.positions.index_select(0, rows.cpu()), layers)

    @staticmethod
    def cat(states: list[DecodeState]) -> DecodeState:
        """Rows of several states (of one model) stacked into one batch."""
        if not states:
            raise StateError("states: expected at least one state, got none")
        layers = [
            {k: torch.cat([s.layers[i][k] for s in states]) for k in lay} for i, lay in enumerate(states[0].layers)
        ]
        return DecodeState(torch.cat([s.positions for s in states]), layers)

    def save(self, path: str | Path, config_json: str) -> None:
        tensors = {
            f"layers.{i}.{k}": v.detach().contiguous() for i, layer in enumerate(self.layers) for k, v in layer.items()
        }
        tensors[POSITIONS_KEY] = self.positions.contiguous()
        meta = {"format": FORMAT, "version": VERSION, "config": config_json}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, model) -> DecodeState:
        """Load a state saved by ``save`` and check it against ``model`` (a ``BMojoLM``)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise StateError(f"path: expected an existing safetensors file, got {str(path)!r}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
        if meta.get("format") != FORMAT:
            raise StateError(f"{path}: expected metadata format={FORMAT!r}, got {meta.get('format')!r}")
        if meta.get("version") != VERSION:
            hint = " (version 1 states hold one position for the batch; re-create the state)"
            raise StateError(
                f"{path}: expected state version {VERSION!r}, got {meta.get('version')!r}"
                + (hint if meta.get("version") == "1" else "")
            )
        saved_cfg = json.loads(meta.get("config", "null"))
        if saved_cfg != model.config.to_dict():
            raise StateError(f"{path}: expected a state saved for this model's config, got a different config")
        if POSITIONS_KEY not in names:
            raise StateError(f"{path}: expected a {POSITIONS_KEY!r} tensor, got tensors {sorted(names)[:8]}")
        tensors = load_file(str(path), device=str(next(model.parameters()).device))
        positions = tensors.pop(POSITIONS_KEY).cpu()
        layers: list[State] = [{} for _ in range(model.config.n_layers)]
        for name, t in tensors.items():
            parts = name.split(".", 2)
            if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or int(parts[1]) >= len(layers):
                raise StateError(f"{path}: expected tensors 'layers.<i>.<name>' for {len(layers)} layers, got {name!r}")
            layers[int(parts[1])][parts[2]] = t
        batch = positions.shape[0] if positions.ndim == 1 else -1
        if batch < 1 or positions.is_floating_point():
            raise StateError(
                f"{POSITIONS_KEY}: expected a 1-d integer tensor (batch,), "
                f"got {positions.dtype} {tuple(positions.shape)}"
            )
        expected = model.init_state(batch)
        for i, (got, want) in enumerate(zip(layers, expected.layers)):
            if set(got) != set(want):
                raise StateError(f"layers[{i}]: expected tensors {sorted(want)}, got {sorted(got)}")
            for key, t in want.items():
                if got[key].shape != t.shape or got[key].dtype != t.dtype:
                    actual = f"{tuple(got[key].shape)} {got[key].dtype}"
                    raise StateError(f"layers[{i}].{key}: expected {tuple(t.shape)} {t.dtype}, got {actual}")
        return cls(positions, layers)
