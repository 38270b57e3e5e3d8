"""``load(path)``: a ``BMojoLM.save_pretrained`` directory as a native MLX model, without torch.

The directory holds ``config.json`` (read by ``bmojo.config.ModelConfig``, which names unknown
keys) and ``model.safetensors``. The safetensors header (a small JSON block) is read and checked
against the config first — the config stored in its metadata (``save_pretrained`` writes it) must
equal ``config.json``'s, as core's ``from_pretrained`` requires; every name, dtype and shape; and
the data offsets must tile the data bytes exactly (no overlap, gap or bytes over, the safetensors
format's rule) — so a wrong or truncated file fails with a clear message before any tensor data is
loaded. Then ``mx.load`` reads the tensors and ``load_weights(strict=True)`` puts them in place.
Nothing is unpickled. (Core's own checks live in ``bmojo.model``, which imports torch; the few
needed here are repeated.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
from bmojo.argcheck import fail
from bmojo.config import ConfigError, ModelConfig
from bmojo.config import check_stored_config as _check_stored
from mlx.utils import tree_flatten

from bmojo_mlx.model import BMojoMLX
from bmojo_mlx.ops._checks import MLX

#: File names written by ``BMojoLM.save_pretrained`` (``bmojo.model.CONFIG_NAME``/``WEIGHTS_NAME``;
#: repeated here because ``bmojo.model`` imports torch).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

#: safetensors dtype codes this loader accepts → (MLX dtype, bytes per element).
SAFETENSORS_DTYPES = {
    "F64": (mx.float64, 8),
    "F32": (mx.float32, 4),
    "F16": (mx.float16, 2),
    "BF16": (mx.bfloat16, 2),
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint directory does not hold what its config describes."""


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """``(name → (dtype code, shape), metadata)`` from a safetensors file's header, checked against
    the file size: the tensors' byte ranges must tile the data bytes exactly."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: expected a safetensors file (8-byte header length), got {size} bytes")
        n = int.from_bytes(raw, "little")
        if not 0 < n <= min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path}: expected a header length in (0, {min(size - 8, MAX_HEADER_BYTES)}], got {n}"
            )
        try:
            header = json.loads(f.read(n))
        except ValueError as err:
            raise CheckpointError(f"{path}: expected a JSON safetensors header, got {err}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: expected a JSON object as header, got {type(header).__name__}")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: __metadata__: expected a map of strings to strings, got {meta!r:.200}")
    data_bytes = size - 8 - n
    out = {}
    ranges = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{path}: {name}: expected dtype, shape and data_offsets, got {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{name}: expected a dtype in {sorted(SAFETENSORS_DTYPES)}, got {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{name}: expected a shape of non-negative ints, got {shape!r}")
        nbytes = math.prod(shape) * SAFETENSORS_DTYPES[dtype][1]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
            or offsets[1] - offsets[0] != nbytes
        ):
            raise CheckpointError(
                f"{name}: expected data_offsets spanning {nbytes} bytes inside the {data_bytes} data bytes, "
                f"got {offsets!r}"
            )
        out[name] = (dtype, tuple(shape))
        ranges.append((offsets[0], offsets[1], name))
    end, previous = 0, None
    for start, stop, name in sorted(ranges):
        if start != end:
            after = f"the end of {previous} at byte {end}" if previous else "byte 0"
            what = f"an overlap with {previous}" if start < end else f"a gap of {start - end} bytes"
            raise CheckpointError(
                f"{path}: {name}: expected data_offsets starting at {after}, got [{start}, {stop}] ({what})"
            )
        end, previous = stop, name
    if end != data_bytes:
        raise CheckpointError(
            f"{path}: expected the tensors to fill the {data_bytes} data bytes, "
            f"got {data_bytes - end} bytes after the last tensor"
        )
    return out, meta


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_stored_config(weights: Path, meta: dict[str, str], config: ModelConfig) -> None:
    """Refuse weights whose metadata stores another config than ``config.json``'s (core's
    ``bmojo.config.check_stored_config``; files written without one pass)."""
    try:
        _check_stored(meta.get("config"), config, CONFIG_NAME)
    except ConfigError as err:
        raise CheckpointError(f"{weights}: {err}") from None


def read_config(path: Path) -> ModelConfig:
    """``config.json`` as a ``ModelConfig``; a transformers ``save_pretrained`` config is named as such."""
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{path}: expected a JSON model config, got {err}") from None
    if isinstance(data, dict) and "bmojo_config" in data:
        raise CheckpointError(
            f"{path}: expected a BMojoLM.save_pretrained config, got a transformers checkpoint ('bmojo_config' "
            f"inside, architectures {data.get('architectures')!r}); bmojo_mlx loads core checkpoints: save one "
            "with model.core.save_pretrained(directory) (model: the transformers BMojoForCausalLM) and load that"
        )
    return ModelConfig.from_dict(data)


def load(path: str | Path, *, dtype=None) -> BMojoMLX:
    """The model saved in directory ``path`` by ``BMojoLM.save_pretrained``.

    ``dtype`` (None or ``mx.float16``/``bfloat16``/``float32``/``float64``; anything else is refused)
    converts the weights after loading; by default every tensor must have the same dtype, which the
    model then uses (float32 for a default ``BMojoLM``). The config stored in the weights' metadata,
    where there is one, must equal ``config.json``'s (see the module docstring).
    """
    if dtype is not None and (not isinstance(dtype, mx.Dtype) or dtype not in MLX.floating):
        fail("dtype", "None or a floating mx dtype (mx.float16, mx.bfloat16, mx.float32, mx.float64)", repr(dtype))
    directory = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"path: expected {name} in {str(directory)!r}, not found")
    config = read_config(directory / CONFIG_NAME)
    header, meta = read_safetensors_header(directory / WEIGHTS_NAME)
    check_stored_config(directory / WEIGHTS_NAME, meta, config)
    model = BMojoMLX(config)
    expected = dict(tree_flatten(model.parameters()))
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{WEIGHTS_NAME}: expected the config's tensors; missing {missing}, unexpected {unexpected}"
        )
    for name, (_, shape) in header.items():
        if shape != tuple(expected[name].shape):
            raise CheckpointError(f"{name}: expected shape {tuple(expected[name].shape)}, got {shape}")
    stored = {code for code, _ in header.values()}
    if len(stored) != 1 and dtype is None:
        raise CheckpointError(
            f"{WEIGHTS_NAME}: expected one dtype for all tensors (or pass dtype=), got {sorted(stored)}"
        )
    weights = mx.load(str(directory / WEIGHTS_NAME))
    if dtype is not None:
        weights = {k: v.astype(dtype) for k, v in weights.items()}
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model
