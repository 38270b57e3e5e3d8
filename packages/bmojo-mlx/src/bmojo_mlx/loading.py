"""``load(path)``: a ``BMojoLM.save_pretrained`` directory as a native MLX model, without torch.

The directory holds ``config.json`` (read by ``bmojo.config.ModelConfig``, which names unknown
keys) and ``model.safetensors``. The safetensors header (a small JSON block) is read and checked
against the config first — every name, dtype and shape, and that the data offsets fit the file —
so a wrong or truncated file fails with a clear message before any tensor data is loaded. Then
``mx.load`` reads the tensors and ``load_weights(strict=True)`` puts them in place. Nothing is
unpickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
from bmojo.config import ModelConfig
from mlx.utils import tree_flatten

from bmojo_mlx.model import BMojoMLX

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


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name → (dtype code, shape) from a safetensors file's header, checked against the file size."""
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
    header.pop("__metadata__", None)
    data_bytes = size - 8 - n
    out = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{path}: {name}: expected dtype, shape and data_offsets, got {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{name}: expected a dtype in {sorted(SAFETENSORS_DTYPES)}, got {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"{name}: expected a shape of non-negative ints, got {shape!r}")
        nbytes = math.prod(shape) * SAFETENSORS_DTYPES[dtype][1]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
            or offsets[1] - offsets[0] != nbytes
        ):
            raise CheckpointError(
                f"{name}: expected data_offsets spanning {nbytes} bytes inside the {data_bytes} data bytes, "
                f"got {offsets!r}"
            )
        out[name] = (dtype, tuple(shape))
    return out


def load(path: str | Path, *, dtype=None) -> BMojoMLX:
    """The model saved in directory ``path`` by ``BMojoLM.save_pretrained``.

    ``dtype`` (an ``mx`` float dtype) converts the weights after loading; by default every tensor
    must have the same dtype, which the model then uses (float32 for a default ``BMojoLM``).
    """
    directory = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"path: expected {name} in {str(directory)!r}, not found")
    config = ModelConfig.from_json((directory / CONFIG_NAME).read_text())
    header = read_safetensors_header(directory / WEIGHTS_NAME)
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
