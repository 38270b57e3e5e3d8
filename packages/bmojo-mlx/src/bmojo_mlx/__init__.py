"""bmojo-mlx: B'MOJO on MLX.

* ``bmojo_mlx.ops`` — the op set (spec §7) on ``mx.array``, selected through bmojo's backend
  registry (this package registers the ``mlx`` backend, ``framework="mlx"``);
* ``bmojo_mlx.load(path)`` — the native MLX model from a ``BMojoLM.save_pretrained`` directory;
* ``bmojo_mlx.generate`` / ``stream_generate`` — decoding with the bounded decode state;
* ``bmojo-mlx generate --model DIR --prompt TEXT`` — the same from the shell.

Nothing on the inference path imports torch or transformers. Public names load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "BMojoMLX": "bmojo_mlx.model",
    "load": "bmojo_mlx.loading",
    "generate": "bmojo_mlx.generation",
    "stream_generate": "bmojo_mlx.generation",
    "GenerationResponse": "bmojo_mlx.generation",
}

__all__ = ["BMojoMLX", "GenerationResponse", "__version__", "generate", "load", "stream_generate"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bmojo_mlx' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
