"""The model's decode state: one fixed-shape tensor dict per layer plus the stream position.

Bounded by construction (spec §5): every tensor's shape comes from the config and the batch
size, never from the number of tokens seen. It round-trips through safetensors and is validated
against the model on load, so a state saved for another config fails loudly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
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

    def check_like(self, expected: DecodeState, what: str = "state") -> None:
        """Raise :class:`StateError` unless this state has exactly ``expected``'s layers, keys,
        shapes and dtypes (``expected`` comes from ``model.init_state``, e.g. on the meta device)
        and a valid position. Generic: whatever keys ``init_state`` produces are the contract."""
        if len(self.layers) != len(expected.layers):
            raise StateError(f"{what}: expected {len(expected.layers)} layer states, got {len(self.layers)}")
        for i, (got, want) in enumerate(zip(self.layers, expected.layers)):
            if not isinstance(got, dict) or set(got) != set(want):
                keys = sorted(got) if isinstance(got, dict) else type(got).__name__
                raise StateError(f"{what}.layers[{i}]: expected tensors {sorted(want)}, got {keys}")
            for key, t in want.items():
                g = got[key]
                if not isinstance(g, torch.Tensor) or g.shape != t.shape or g.dtype != t.dtype:
                    actual = f"{tuple(g.shape)} {g.dtype}" if isinstance(g, torch.Tensor) else type(g).__name__
                    raise StateError(
                        f"{what}.layers[{i}].{key}: expected {tuple(t.shape)} {t.dtype} (the state of another "
                        f"model config or batch size?), got {actual}"
                    )
        _check_position(f"{what}.position", self.position, expected.position)

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
        """Load a state saved by ``save`` and check it against ``model`` (a ``BMojoLM``). The
        metadata, every tensor name, shape and dtype are validated before any tensor is read;
        every error names the file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise StateError(f"path: expected an existing safetensors file, got {str(path)!r}")

        def bad(what: str, expected: str, actual) -> StateError:
            return StateError(f"{path}: {what}: expected {expected}, got {actual}")

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                header = {n: (tuple(f.get_slice(n).get_shape()), f.get_slice(n).get_dtype()) for n in f.keys()}
        except Exception as err:  # safetensors raises its own error types for a corrupt header
            raise bad("file", "a safetensors file", f"{type(err).__name__}: {err}") from None
        if meta.get("format") != FORMAT:
            raise bad("metadata format", repr(FORMAT), repr(meta.get("format")))
        if meta.get("version") != VERSION:
            raise bad("metadata version", repr(VERSION), repr(meta.get("version")))
        position = _parse_position(meta.get("position"), lambda exp, got: bad("metadata position", exp, got))
        try:
            saved_cfg = json.loads(meta.get("config", "null"))
        except json.JSONDecodeError as err:
            raise bad("metadata config", "the model config as JSON", f"invalid JSON ({err})") from None
        if saved_cfg != model.config.to_dict():
            raise StateError(f"{path}: expected a state saved for this model's config, got a different config")
        if not header:
            raise bad("tensors", "at least one state tensor", "none")
        n_layers = model.config.n_layers
        names: dict[str, tuple[int, str]] = {}
        for name in header:
            m = _TENSOR_NAME.fullmatch(name)
            if m is None or int(m.group(1)) >= n_layers:
                raise bad("tensor name", f"'layers.<i>.<key>' with i in [0, {n_layers})", repr(name))
            names[name] = (int(m.group(1)), m.group(2))
        shape0 = next(iter(header.values()))[0]
        if not shape0:
            raise bad("tensor shapes", "a leading batch axis", "a 0-d tensor")
        expected = model.init_state(shape0[0], device="meta")
        got: list[dict[str, tuple]] = [{} for _ in range(n_layers)]
        for name, (i, key) in names.items():
            got[i][key] = header[name]
        for i, (have, want) in enumerate(zip(got, expected.layers)):
            if set(have) != set(want):
                raise bad(f"layers[{i}]", f"tensors {sorted(want)}", sorted(have))
            for key, t in want.items():
                shape, dtype = have[key]
                if shape != tuple(t.shape) or dtype != _ST_DTYPES.get(t.dtype):
                    raise bad(f"layers[{i}].{key}", f"{tuple(t.shape)} {t.dtype}", f"{shape} {dtype}")
        tensors = load_file(str(path), device=str(next(model.parameters()).device))
        layers: list[State] = [{} for _ in range(n_layers)]
        for name, t in tensors.items():
            i, key = names[name]
            layers[i][key] = t
        return cls(position, layers)


#: ``layers.<i>.<key>`` with a canonical non-negative index (no ``-1``, no ``01``).
_TENSOR_NAME = re.compile(r"layers\.(0|[1-9][0-9]*)\.(.+)")
_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _parse_position(text, error) -> int:
    """The stream position from the metadata: a canonical non-negative decimal integer."""
    if not isinstance(text, str) or re.fullmatch(r"0|[1-9][0-9]*", text) is None:
        raise error("a non-negative integer", repr(text))
    return int(text)


def _check_position(what: str, value, expected) -> None:
    """A position is a non-negative int, or — where ``init_state`` gives a tensor (e.g. one
    position per batch row) — a non-negative integer tensor of the same shape and dtype."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(value, torch.Tensor) or value.shape != expected.shape or value.dtype != expected.dtype:
            actual = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else repr(value)
            raise StateError(f"{what}: expected {tuple(expected.shape)} {expected.dtype}, got {actual}")
        if value.numel() and not value.is_meta and bool((value < 0).any()):
            raise StateError(f"{what}: expected non-negative positions, got {value.tolist()}")
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(f"{what}: expected a non-negative int, got {value!r}")
