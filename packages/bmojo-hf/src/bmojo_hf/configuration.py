"""``BMojoConfig``: a transformers config that carries a bmojo-core ``ModelConfig``.

The core config is the single source of truth. It is stored as its plain dict under
``bmojo_config`` (so ``config.json`` is ordinary JSON) and validated by core on every
construction, so an impossible combination fails with core's message naming the field. The
transformers-standard attributes (``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
``tie_word_embeddings``) are derived from it, never set independently.
"""

from __future__ import annotations

from typing import Any

from bmojo import ConfigError, ModelConfig
from transformers import PretrainedConfig


def _core_config(value) -> ModelConfig:
    """``bmojo_config`` as a validated core config: a dict (``ModelConfig.to_dict()``), a
    ``ModelConfig`` or None (core's default); anything else is refused by name, never coerced."""
    if value is None:
        return ModelConfig()
    if isinstance(value, ModelConfig):
        return value
    if not isinstance(value, dict):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(
            "bmojo_config: expected a dict (a bmojo ModelConfig.to_dict()), a ModelConfig or None, "
            f"got {type(value).__name__} {shown}"
        )
    return ModelConfig.from_dict(dict(value))


class BMojoConfig(PretrainedConfig):
    """Configuration of a B'MOJO model.

    Build one from a core config with ``BMojoConfig.from_core(ModelConfig(...))``, from a core
    preset with ``BMojoConfig.from_preset("bmojo", vocab_size=..., d_model=..., n_layers=...)``,
    or directly with ``BMojoConfig(bmojo_config=model_config.to_dict())`` (a ``ModelConfig`` itself
    is accepted too). ``None`` means core's default ``ModelConfig()``; any other type is refused
    with a ``ConfigError`` naming ``bmojo_config``.
    """

    model_type = "bmojo"
    # ``num_hidden_layers`` etc. are derived, read-only views of the core config.
    bmojo_config: dict | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        # Derived attributes saved in an older config.json are recomputed, not trusted.
        for derived in ("vocab_size", "hidden_size", "num_hidden_layers", "tie_word_embeddings"):
            kwargs.pop(derived, None)
        self.bmojo_config = _core_config(self.bmojo_config).to_dict()
        super().__post_init__(**kwargs)

    # ----- derived views of the core config -----
    @property
    def core_config(self) -> ModelConfig:
        """The validated bmojo-core ``ModelConfig`` (a fresh, immutable object)."""
        return ModelConfig.from_dict(self.bmojo_config)

    @property
    def vocab_size(self) -> int:
        return self.bmojo_config["vocab_size"]

    @property
    def hidden_size(self) -> int:
        return self.bmojo_config["d_model"]

    @property
    def num_hidden_layers(self) -> int:
        return len(self.bmojo_config["layers"])

    @property
    def tie_word_embeddings(self) -> bool:
        return self.bmojo_config["tie_embeddings"]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for derived in ("vocab_size", "hidden_size", "num_hidden_layers", "tie_word_embeddings"):
            out.pop(derived, None)
        return out

    # ----- constructors -----
    @classmethod
    def from_core(cls, config: ModelConfig, **kwargs) -> BMojoConfig:
        """Wrap a core ``ModelConfig``; ``kwargs`` are transformers fields (``eos_token_id``, ...)."""
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config: expected a bmojo ModelConfig, got {type(config).__name__}")
        return cls(bmojo_config=config.to_dict(), **kwargs)

    @classmethod
    def from_preset(
        cls,
        name: str | list[str],
        *,
        vocab_size: int = 256,
        d_model: int = 128,
        n_layers: int = 2,
        hf_kwargs: dict[str, Any] | None = None,
        **layer_overrides,
    ) -> BMojoConfig:
        """A core preset (``transformer``, ``swa``, ``mamba2``, ``bmojo_f``, ``bmojo``, ``bmojo_f_gated``,
        ``bmojo_gated`` or a list for
        interleaving, see ``ModelConfig.preset``); ``hf_kwargs`` go to the transformers config."""
        core = ModelConfig.preset(name, vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, **layer_overrides)
        return cls.from_core(core, **(hf_kwargs or {}))
