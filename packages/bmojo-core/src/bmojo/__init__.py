"""bmojo: B'MOJO sequence-model layers with eidetic and fading memory (reference implementation)."""

from bmojo.config import ConfigError, LayerConfig, ModelConfig
from bmojo.layer import BMojoMixer
from bmojo.model import Block, BMojoLM
from bmojo.state import DecodeState, StateError

__version__ = "0.1.0"

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
