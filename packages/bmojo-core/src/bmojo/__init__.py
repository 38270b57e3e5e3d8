"""bmojo: B'MOJO sequence-model layers with eidetic and fading memory (reference implementation).

The public names below are imported on first access (PEP 562), so ``import bmojo`` stays cheap:
the CLI's ``--version``/``backends`` and the conformance pytest plugin load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "BMojoLM": "bmojo.model",
    "BMojoMixer": "bmojo.layer",
    "Block": "bmojo.model",
    "ConfigError": "bmojo.config",
    "DecodeState": "bmojo.state",
    "LayerConfig": "bmojo.config",
    "ModelConfig": "bmojo.config",
    "StateError": "bmojo.state",
}

__all__ = [
    "BMojoLM",
    "BMojoMixer",
    "Block",
    "ConfigError",
    "DecodeState",
    "LayerConfig",
    "ModelConfig",
    "StateError",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from bmojo.config import ConfigError, LayerConfig, ModelConfig
    from bmojo.layer import BMojoMixer
    from bmojo.model import Block, BMojoLM
    from bmojo.state import DecodeState, StateError


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bmojo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
