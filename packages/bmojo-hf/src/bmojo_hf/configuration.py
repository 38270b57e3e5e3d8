"""``BMojoConfig``: a transformers config that carries a bmojo-core ``ModelConfig``.

The core config is the single source of truth. It is stored as its plain dict under
``bmojo_config`` (so ``config.json`` is ordinary JSON) and validated by core on every
construction, so an impossible combination fails with core's message naming the field. The
transformers-standard attributes (``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
``tie_word_embeddings``) are derived from it, never set independently: passed to the constructor
(an older ``config.json`` may hold them) or assigned, they must equal the derived value, anything
else is refused with a ``ConfigError`` naming the attribute and the core field to set instead.
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


#: read-only views of the core config: name -> (where it comes from, how it is derived from the dict)
_DERIVED = {
    "vocab_size": ("bmojo_config['vocab_size']", lambda c: c["vocab_size"]),
    "hidden_size": ("bmojo_config['d_model']", lambda c: c["d_model"]),
    "num_hidden_layers": ("len(bmojo_config['layers'])", lambda c: len(c["layers"])),
    "tie_word_embeddings": ("bmojo_config['tie_embeddings']", lambda c: c["tie_embeddings"]),
    "core_config": ("ModelConfig.from_dict(bmojo_config)", ModelConfig.from_dict),
}


def _check_derived(name: str, value, bmojo_config: dict) -> None:
    """Accept ``value`` for the derived view ``name`` only when it is exactly the derived value
    (same type, equal): a conflicting one is refused, never dropped or cast."""
    where, derive = _DERIVED[name]
    want = derive(bmojo_config)
    if type(value) is type(want) and value == want:
        return
    expected, got = repr(want), repr(value)
    if isinstance(want, ModelConfig):  # name the differing fields, not two pages of repr
        expected = "the ModelConfig in bmojo_config"
        if isinstance(value, ModelConfig):
            differ = [k for k, v in want.to_dict().items() if value.to_dict().get(k) != v]
            got = f"a ModelConfig differing in {', '.join(differ)}"
        else:
            got = f"{type(value).__name__} {got if len(got) <= 60 else got[:57] + '...'}"
    raise ConfigError(
        f"{name}: expected {expected} (a read-only view of the core config, {where}), got {got}; "
        "change the core config instead (bmojo_config / BMojoConfig.from_core)"
    )


def _view(name: str) -> property:
    where, derive = _DERIVED[name]

    def get(self):
        return derive(self.bmojo_config)

    def set_(self, value):  # transformers' from_pretrained(..., name=value) assigns config attributes
        _check_derived(name, value, self.bmojo_config)

    return property(get, set_, doc=f"``{where}`` (read-only: assigning another value is refused).")


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
        self.bmojo_config = _core_config(self.bmojo_config).to_dict()
        # Derived attributes (an older config.json may hold them) must agree with the core config.
        for name in _DERIVED:
            if name in kwargs:
                _check_derived(name, kwargs.pop(name), self.bmojo_config)
        super().__post_init__(**kwargs)

    # ----- derived views of the core config -----
    #: the validated bmojo-core ``ModelConfig`` (a fresh, immutable object)
    core_config = _view("core_config")
    vocab_size = _view("vocab_size")
    hidden_size = _view("hidden_size")
    num_hidden_layers = _view("num_hidden_layers")
    tie_word_embeddings = _view("tie_word_embeddings")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for derived in _DERIVED:
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
