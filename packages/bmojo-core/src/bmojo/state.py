"""The model's decode state: one fixed-shape tensor dict per layer plus the stream position.

Bounded by construction (spec §5): every tensor's shape comes from the config and the batch
size, never from the number of tokens seen. It round-trips through safetensors and is validated
against the model on load, so a state saved for another config fails loudly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from bmojo.memory import State

FORMAT = "bmojo-decode-state"
VERSION = "1"


class StateError(ValueError):
    """A decode state does not fit the model it is used with."""


@dataclass
class DecodeState:
    position: int  #: absolute position of the next token
    layers: list[State]

    @property
    def batch_size(self) -> int:
        for layer in self.layers:
            for t in layer.values():
                return t.shape[0]
        raise StateError("state: expected at least one tensor, got an empty state")

    def nbytes(self) -> int:
        """Total bytes of all tensors: constant for a given config and batch size."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.values())

    def detach(self) -> DecodeState:
        return DecodeState(self.position, [{k: v.detach() for k, v in layer.items()} for layer in self.layers])

    def save(self, path: str | Path, config_json: str) -> None:
        tensors = {
            f"layers.{i}.{k}": v.detach().contiguous() for i, layer in enumerate(self.layers) for k, v in layer.items()
        }
        meta = {"format": FORMAT, "version": VERSION, "position": str(self.position), "config": config_json}
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
        if meta.get("format") != FORMAT:
            raise StateError(f"{path}: expected metadata format={FORMAT!r}, got {meta.get('format')!r}")
        saved_cfg = json.loads(meta.get("config", "null"))
        if saved_cfg != model.config.to_dict():
            raise StateError(f"{path}: expected a state saved for this model's config, got a different config")
        tensors = load_file(str(path), device=str(next(model.parameters()).device))
        layers: list[State] = [{} for _ in range(model.config.n_layers)]
        for name, t in tensors.items():
            _, idx, key = name.split(".", 2)
            layers[int(idx)][key] = t
        batch = next(iter(tensors.values())).shape[0]
        expected = model.init_state(batch)
        for i, (got, want) in enumerate(zip(layers, expected.layers)):
            if set(got) != set(want):
                raise StateError(f"layers[{i}]: expected tensors {sorted(want)}, got {sorted(got)}")
            for key, t in want.items():
                if got[key].shape != t.shape or got[key].dtype != t.dtype:
                    actual = f"{tuple(got[key].shape)} {got[key].dtype}"
                    raise StateError(f"layers[{i}].{key}: expected {tuple(t.shape)} {t.dtype}, got {actual}")
        return cls(int(meta["position"]), layers)
