"""The model's decode state: one fixed-shape tensor dict per layer plus each row's stream position.

Bounded by construction (spec §5): every tensor's shape comes from the config and the batch
size, never from the number of tokens seen. Rows of one batch may sit at different positions
(prompts of different lengths decoded together). The state round-trips through safetensors and is
validated against the model on load, so a state saved for another config fails loudly.
"""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bmojo.argcheck import TORCH, check_layer_states
from bmojo.config import _dict_diff
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

    def check_like(self, expected: DecodeState, what: str = "state") -> None:
        """Raise :class:`StateError` unless this state has exactly ``expected``'s layers, keys,
        shapes and dtypes (``expected`` comes from ``model.init_state``, e.g. on the meta device)
        and valid positions. Generic: whatever keys ``init_state`` produces are the contract."""
        check_layer_states(TORCH, what, self.layers, expected.layers, error=StateError)
        _check_positions(f"{what}.positions", self.positions, expected.positions)

    def detach(self) -> DecodeState:
        return DecodeState(self.positions, [{k: v.detach() for k, v in layer.items()} for layer in self.layers])

    def select(self, rows: torch.Tensor) -> DecodeState:
        """The state of rows ``rows`` (a 1-d sequence or tensor of integer indices in
        ``[0, batch_size)``, repeats allowed), e.g. for beam search."""
        given = rows
        if not isinstance(rows, torch.Tensor):  # a sequence of ints ([] included), never floats or bools
            try:
                items = list(rows)
            except TypeError:  # an int, None, ...: not a sequence of rows
                raise StateError(
                    f"rows: expected a 1-d sequence of integer row indices, got {given!r:.80} ({type(given).__name__})"
                ) from None
            if not all(isinstance(r, numbers.Integral) and not isinstance(r, bool) for r in items):
                raise StateError(f"rows: expected a 1-d sequence of integer row indices, got {given!r:.80}")
            rows = torch.tensor(items, dtype=torch.long)
        if rows.ndim != 1 or rows.dtype.is_floating_point or rows.dtype.is_complex or rows.dtype == torch.bool:
            raise StateError(
                f"rows: expected a 1-d sequence of integer row indices, got {tuple(rows.shape)} {rows.dtype}"
            )
        rows = rows.to(torch.long)
        if rows.numel() and not (0 <= int(rows.min()) and int(rows.max()) < self.batch_size):
            raise StateError(f"rows: expected indices in [0, {self.batch_size}), got {given!r:.80}")
        layers = [{k: v.index_select(0, rows.to(v.device)) for k, v in layer.items()} for layer in self.layers]
        return DecodeState(self.positions.index_select(0, rows.cpu()), layers)

    @staticmethod
    def cat(states: list[DecodeState]) -> DecodeState:
        """Rows of several states (of one model) stacked into one batch: the same layers, tensors
        and per-row shapes, dtypes and devices (nothing is cast or dropped)."""
        if not states:
            raise StateError("states: expected at least one state, got none")
        first = states[0]
        for j, s in enumerate(states[1:], 1):
            if len(s.layers) != len(first.layers):
                raise StateError(
                    f"states[{j}]: expected {len(first.layers)} layer states (as states[0]), got {len(s.layers)}"
                )
            for i, (a, b) in enumerate(zip(first.layers, s.layers)):
                if set(a) != set(b):
                    raise StateError(f"states[{j}].layers[{i}]: expected the keys {sorted(a)}, got {sorted(b)}")
                for k, t in a.items():
                    u = b[k]
                    if u.shape[1:] != t.shape[1:] or u.dtype != t.dtype or u.device != t.device:
                        raise StateError(
                            f"states[{j}].layers[{i}].{k}: expected rows of {tuple(t.shape[1:])} {t.dtype} on "
                            f"{t.device} (as states[0]), got {tuple(u.shape[1:])} {u.dtype} on {u.device}"
                        )
        layers = [{k: torch.cat([s.layers[i][k] for s in states]) for k in lay} for i, lay in enumerate(first.layers)]
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
            hint = " (version 1 states hold one position for the batch; re-create the state)"
            raise StateError(
                f"{path}: expected state version {VERSION!r}, got {meta.get('version')!r}"
                + (hint if meta.get("version") == "1" else "")
            )
        try:
            saved_cfg = json.loads(meta.get("config", "null"))
        except json.JSONDecodeError as err:
            raise bad("metadata config", "the model config as JSON", f"invalid JSON ({err})") from None
        except RecursionError:  # json recurses per nesting level
            raise bad("metadata config", "the model config as JSON", "nesting too deep to read") from None
        if saved_cfg != model.config.to_dict():
            if isinstance(saved_cfg, dict):  # name the fields, as from_pretrained does
                diff = "saved vs this model's: " + "; ".join(_dict_diff(saved_cfg, model.config.to_dict())[:4])
            else:
                diff = f"saved: {saved_cfg!r:.80}"
            raise StateError(f"{path}: expected a state saved for this model's config, got a different config ({diff})")
        if POSITIONS_KEY not in header:
            raise bad("tensors", f"a {POSITIONS_KEY!r} tensor", sorted(header)[:8])
        pshape, pdtype = header.pop(POSITIONS_KEY)
        if len(pshape) != 1 or pshape[0] < 1 or pdtype not in _INT_DTYPES:
            raise bad(POSITIONS_KEY, "a 1-d integer tensor (batch,)", f"{pdtype} {pshape}")
        if not header:
            raise bad("tensors", "at least one state tensor", "none")
        n_layers = model.config.n_layers
        names: dict[str, tuple[int, str]] = {}
        for name in header:
            m = _TENSOR_NAME.fullmatch(name)
            if m is None or int(m.group(1)) >= n_layers:
                raise bad("tensor name", f"'layers.<i>.<key>' with i in [0, {n_layers})", repr(name))
            names[name] = (int(m.group(1)), m.group(2))
        expected = model.init_state(pshape[0], device="meta")
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
        positions = tensors.pop(POSITIONS_KEY).cpu()
        if bool((positions < 0).any()):
            raise bad(POSITIONS_KEY, "positions >= 0", positions.tolist())
        layers: list[State] = [{} for _ in range(n_layers)]
        for name, t in tensors.items():
            i, key = names[name]
            layers[i][key] = t
        return cls(positions, layers)


#: ``layers.<i>.<key>`` with a canonical non-negative index (no ``-1``, no ``01``).
_TENSOR_NAME = re.compile(r"layers\.(0|[1-9][0-9]*)\.(.+)")
#: safetensors header dtype codes -> torch dtypes (the ones bmojo files may hold; shared by the
#: checkpoint and transformers loaders, which read headers before any tensor)
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_DTYPES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}
_INT_DTYPES = ("I64", "I32", "I16", "I8", "U8")


def _check_positions(what: str, value, expected: torch.Tensor) -> None:
    """Positions as ``init_state`` makes them (a (batch,) int64 tensor), all non-negative."""
    if not isinstance(value, torch.Tensor) or value.shape != expected.shape or value.dtype != expected.dtype:
        actual = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else repr(value)
        raise StateError(f"{what}: expected {tuple(expected.shape)} {expected.dtype}, got {actual}")
    if value.numel() and bool((value < 0).any()):
        raise StateError(f"{what}: expected positions >= 0, got {value.tolist()}")
