"""Validated configuration for a B'MOJO layer and a model, with presets for the special cases.

One ``LayerConfig`` describes one mixer; which memories it uses follows from three numbers:
``window`` (w, in-context raw tokens), ``fading_window`` (f, fading tokens) and
``eidetic_capacity`` (M, innovation-selected tokens). The SSM is built only when something reads
its output (f > 0, M > 0, or w = 0 where the SSM *is* the layer). Every field is checked on
construction; errors name the field, the expected and the actual value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

#: Eviction rules of the eidetic memory (``bmojo.ops.eidetic`` re-exports this). Defined here so
#: reading a config needs no torch (the MLX model loads checkpoints without it).
EVICTIONS = ("lowest", "fifo")

LAYER_PRESETS = ("transformer", "swa", "mamba2", "bmojo_f", "bmojo", "bmojo_f_gated", "bmojo_gated")
SSM_BYPASSES = ("none", "gated")
#: Fields a preset fixes, with the value it fixes them to: overriding them would silently make it
#: another special case (or set a field the preset's layer never reads).
_NO_FADING = {"fading_window": 0, "eidetic_capacity": 0, "ssm_bypass": "none", "innovation_loss_weight": 0}
PRESET_FIXED: dict[str, dict[str, Any]] = {
    "transformer": {"fading_offset": None, **_NO_FADING},
    "swa": {"fading_offset": None, **_NO_FADING},
    "mamba2": {"window": 0, "fading_offset": None, **_NO_FADING},
    "bmojo_f": {"eidetic_capacity": 0},
    "bmojo": {},
    # layer v2, chosen from `bmojo mqar --full` (docs/experiments.md): the published layers plus the
    # gated SSM bypass (g = 0 at initialisation, so a fresh layer is the published one)
    "bmojo_f_gated": {"eidetic_capacity": 0, "ssm_bypass": "gated"},
    "bmojo_gated": {"ssm_bypass": "gated"},
}


class ConfigError(ValueError):
    """A config field is out of range or contradicts another field."""


def _bad(field_name: str, expected: str, actual: Any) -> ConfigError:
    return ConfigError(f"{field_name}: expected {expected}, got {actual!r}")


#: Largest value of an integer field: the largest integer every JSON reader holds exactly (float64
#: ones included), far beyond any size a model can allocate, and within torch's int64 sizes.
INT_MAX = 2**53
#: Float fields become (or initialise) float32 parameters: their magnitude stays in
#: [FLOAT_MIN, FLOAT_MAX], so neither they nor the exp/log/normal draws of initialisation overflow
#: float32 (max ~3.4e38) or round to 0 (smallest normal ~1.2e-38).
FLOAT_MIN, FLOAT_MAX = 1e-37, 1e37


def _int(cfg, name, minimum):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, "an int", value)
    if value < minimum:
        raise _bad(name, f"an int >= {minimum}", value)
    if value > INT_MAX:
        raise _bad(name, f"an int <= 2**53 = {INT_MAX}", value)


def _check_fields(cls, what: str, data: Any) -> None:
    """A config read from JSON must be a dict of known fields; unknown keys are typos, not extras."""
    if not isinstance(data, dict):
        raise _bad(what, "a dict", type(data).__name__)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _bad(what, f"only known fields {sorted(names)}", unknown)


def argparse_ns(**kw):
    """A throwaway namespace so plain arguments go through the same field checks."""
    return type("Args", (), kw)()


def _float(cfg, name, *, positive=True):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, "a number", value)
    if not math.isfinite(value):
        raise _bad(name, "a finite number", value)
    if positive and not value > 0:
        raise _bad(name, "a positive number", value)
    if abs(value) > FLOAT_MAX or (positive and value < FLOAT_MIN):
        low = f"{FLOAT_MIN:g}" if positive else f"-{FLOAT_MAX:g}"
        raise _bad(name, f"a number in [{low}, {FLOAT_MAX:g}] (float32 parameters come from it)", value)


@dataclass(frozen=True)
class LayerConfig:
    """One B'MOJO mixer (plus its optional MLP). Defaults give a small full B'MOJO layer."""

    d_model: int = 128
    # --- attention over the three memories (spec §2) ---
    window: int = 64  #: w: raw tokens in (i-w, i]; 0 disables attention (pure SSM layer)
    fading_window: int | None = None  #: f: fading tokens in (i-δ-f, i-δ]; None means f = w (set on construction)
    fading_offset: int | None = None  #: δ (spec §2.1), 0 <= δ <= w; None means δ = w (the published convention)
    ssm_bypass: str = "none"  #: "gated": y = Wo·attn + g ⊙ s with g per channel, initialised to 0 (spec §2.1)
    innovation_loss_weight: float = 0.0  #: weight of the auxiliary loss training Wk̃ s_{t-1} to predict Wk x_t
    eidetic_capacity: int = 16  #: M: eidetic slots; 0 gives B'MOJO-F
    eidetic_per_chunk: int = 4  #: k tokens offered per completed chunk
    eidetic_chunk: int | None = None  #: c; None means c = w
    eviction: str = "lowest"  #: "lowest" or "fifo"
    n_heads: int = 4
    n_kv_heads: int | None = None  #: None means n_heads (no GQA)
    head_dim: int | None = None  #: None means d_model // n_heads
    tie_fading_projections: bool = True  #: fading keys/values use Wk, Wv
    qk_norm: bool = False
    rope_theta: float = 10000.0
    attn_block_size: int = 64  #: query block of the reference attention (speed only)
    # --- fading memory: Mamba-2 style SSM (spec §1) ---
    ssm_expand: int = 2
    ssm_head_dim: int = 32  #: P
    ssm_state_size: int = 16  #: N
    ssm_groups: int = 1  #: G
    d_conv: int = 4
    ssm_chunk_size: int = 64
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    A_init_min: float = 1.0
    A_init_max: float = 16.0
    # --- block ---
    mlp: bool = True
    d_ff: int | None = None  #: None means the SwiGLU default, 8/3·d_model rounded up to 8
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.fading_window is None:
            # f follows w (spec §2: "fading_window f, default w"), fixed when the config is built.
            _int(self, "window", 0)
            object.__setattr__(self, "fading_window", self.window)
        self.validate()

    # ----- derived sizes -----
    @property
    def has_attention(self) -> bool:
        return self.window > 0

    @property
    def has_ssm(self) -> bool:
        return (
            not self.has_attention or self.fading_window > 0 or self.eidetic_capacity > 0 or self.ssm_bypass == "gated"
        )

    @property
    def uses_fading_keys(self) -> bool:
        """Whether attention projects fading tokens to keys (fading window or innovation scores)."""
        return self.has_attention and (self.fading_window > 0 or self.eidetic_capacity > 0)

    @property
    def delta(self) -> int:
        """δ, the fading offset: fading keys of query i sit at (i-δ-f, i-δ]."""
        return self.window if self.fading_offset is None else self.fading_offset

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def dh(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def chunk(self) -> int:
        return self.window if self.eidetic_chunk is None else self.eidetic_chunk

    @property
    def d_inner(self) -> int:
        return self.ssm_expand * self.d_model

    @property
    def ssm_heads(self) -> int:
        return self.d_inner // self.ssm_head_dim

    @property
    def ffn_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return -(-(8 * self.d_model // 3) // 8) * 8

    @property
    def kind(self) -> str:
        """Name of the special case this config falls into (for tables and logs)."""
        if not self.has_attention:
            return "mamba2"
        if not self.has_ssm:
            return "attention"
        return "bmojo" if self.eidetic_capacity > 0 else "bmojo_f"

    def validate(self) -> None:
        _int(self, "d_model", 1)
        for name in ("window", "fading_window", "eidetic_capacity"):
            _int(self, name, 0)
        _int(self, "eidetic_per_chunk", 1)
        _int(self, "n_heads", 1)
        _int(self, "attn_block_size", 1)
        for name in ("ssm_expand", "ssm_head_dim", "ssm_state_size", "ssm_groups", "d_conv", "ssm_chunk_size"):
            _int(self, name, 1)
        for name in ("rope_theta", "dt_min", "dt_max", "A_init_min", "A_init_max", "norm_eps"):
            _float(self, name)
        for name in ("tie_fading_projections", "qk_norm", "mlp"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, "a bool", getattr(self, name))
        if self.fading_offset is not None:
            _int(self, "fading_offset", 0)
            if self.fading_offset > self.window:
                raise _bad(
                    "fading_offset",
                    f"0 <= fading_offset <= window={self.window} (or None for window)",
                    self.fading_offset,
                )
        if self.ssm_bypass not in SSM_BYPASSES:
            raise _bad("ssm_bypass", f"one of {SSM_BYPASSES}", self.ssm_bypass)
        _float(self, "innovation_loss_weight", positive=False)
        if not (0 <= self.innovation_loss_weight < float("inf")):
            raise _bad("innovation_loss_weight", "a finite number >= 0", self.innovation_loss_weight)
        if self.eviction not in EVICTIONS:
            raise _bad("eviction", f"one of {EVICTIONS}", self.eviction)
        if self.n_kv_heads is not None:
            _int(self, "n_kv_heads", 1)
            if self.n_heads % self.n_kv_heads:
                raise _bad("n_kv_heads", f"a divisor of n_heads={self.n_heads}", self.n_kv_heads)
        if self.head_dim is not None:
            _int(self, "head_dim", 1)
        elif self.has_attention and self.d_model % self.n_heads:
            raise _bad("n_heads", f"a divisor of d_model={self.d_model} (or set head_dim)", self.n_heads)
        if self.has_attention and self.dh % 2:
            # An attention-free layer (w = 0) never builds heads, so their size cannot be wrong.
            raise _bad("head_dim", "an even number (RoPE rotates pairs)", self.dh)
        if self.d_ff is not None:
            _int(self, "d_ff", 1)
        if self.eidetic_chunk is not None:
            _int(self, "eidetic_chunk", 1)
        if self.dt_min > self.dt_max:
            raise _bad("dt_min", f"<= dt_max={self.dt_max}", self.dt_min)
        if self.A_init_min > self.A_init_max:
            raise _bad("A_init_min", f"<= A_init_max={self.A_init_max}", self.A_init_min)
        # Impossible combinations.
        if self.window == 0 and (self.fading_window > 0 or self.eidetic_capacity > 0):
            raise _bad(
                "window",
                "> 0 when fading_window or eidetic_capacity is set (attention needs the query's own token)",
                self.window,
            )
        if self.window == 0 and self.ssm_bypass != "none":
            raise _bad("ssm_bypass", "'none' when window = 0 (the layer output already is the SSM's)", self.ssm_bypass)
        if self.innovation_loss_weight > 0 and not self.uses_fading_keys:
            raise _bad(
                "innovation_loss_weight",
                "0 for a layer without fading keys (it needs window > 0 and fading_window or eidetic_capacity > 0)",
                self.innovation_loss_weight,
            )
        if self.eidetic_capacity > 0:
            if self.eidetic_per_chunk > self.eidetic_capacity:
                raise _bad("eidetic_per_chunk", f"<= eidetic_capacity={self.eidetic_capacity}", self.eidetic_per_chunk)
            if self.chunk > self.window:
                # The decode state keeps only the last w raw tokens; a chunk longer than w would
                # need keys that already left the window when it completes.
                raise _bad("eidetic_chunk", f"<= window={self.window}", self.chunk)
            if self.eidetic_per_chunk > self.chunk:
                raise _bad("eidetic_per_chunk", f"<= eidetic_chunk={self.chunk}", self.eidetic_per_chunk)
        if self.has_ssm:
            if self.d_inner % self.ssm_head_dim:
                raise _bad(
                    "ssm_head_dim", f"a divisor of d_inner = ssm_expand·d_model = {self.d_inner}", self.ssm_head_dim
                )
            if self.ssm_heads % self.ssm_groups:
                raise _bad("ssm_groups", f"a divisor of the SSM head count {self.ssm_heads}", self.ssm_groups)

    # ----- construction helpers -----
    def replace(self, **changes) -> LayerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "layer config") -> LayerConfig:
        """``what`` names the config in errors (``ModelConfig.from_dict`` passes ``layers[i]``)."""
        _check_fields(cls, what, data)
        return cls(**data)

    @classmethod
    def preset(cls, name: str, d_model: int = 128, **overrides) -> LayerConfig:
        """A special case of spec §4 by name.

        * ``transformer``: full causal attention (w = ``context``, default 2048), no SSM;
        * ``swa``: sliding-window attention (w = 64 unless overridden), no SSM;
        * ``mamba2``: only the SSM (w = f = M = 0);
        * ``bmojo_f``: window + fading tokens (f = w), M = 0;
        * ``bmojo``: window + fading + eidetic memory;
        * ``bmojo_f_gated``, ``bmojo_gated``: the same with ``ssm_bypass="gated"`` (layer v2, this
          project's extension: ``y = Wo·attn + g ⊙ s``, ``g`` = 0 at initialisation), chosen from
          ``bmojo mqar --full`` (docs/experiments.md).
        """
        if name not in LAYER_PRESETS:
            raise _bad("preset", f"one of {LAYER_PRESETS}", name)
        for fixed, value in PRESET_FIXED[name].items():
            if fixed in overrides and overrides[fixed] != value:
                raise _bad(fixed, f"{value!r} for the {name!r} preset (choose another preset)", overrides[fixed])
        if "context" in overrides and name != "transformer":
            raise _bad(
                "context",
                f"no context for the {name!r} preset (only 'transformer' reads it: its window)",
                overrides["context"],
            )
        context = overrides.pop("context", 2048)
        window = overrides.get("window", context if name == "transformer" else 64)
        if name != "mamba2" and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            what = "context" if name == "transformer" and "window" not in overrides else "window"
            raise _bad(what, f"an int >= 1 for the {name!r} preset (no attention is the 'mamba2' preset)", window)
        base: dict[str, Any] = {
            "transformer": dict(window=window, fading_window=0, eidetic_capacity=0),
            "swa": dict(window=window, fading_window=0, eidetic_capacity=0),
            "mamba2": dict(window=0, fading_window=0, eidetic_capacity=0),
            "bmojo_f": dict(window=window, fading_window=window, eidetic_capacity=0),
            "bmojo": dict(window=window, fading_window=window, eidetic_capacity=max(1, window // 4)),
        }[name.removesuffix("_gated")]
        if name.endswith("_gated"):
            base["ssm_bypass"] = "gated"
        base.update(overrides)
        if name in ("bmojo", "bmojo_gated") and "eidetic_per_chunk" not in overrides:
            # Offer up to 4 per chunk, but never more than the memory or a chunk can hold.
            chunk = base.get("eidetic_chunk") or base["window"]
            base["eidetic_per_chunk"] = max(1, min(4, base["eidetic_capacity"], chunk))
        return cls(d_model=d_model, **base)


@dataclass(frozen=True)
class ModelConfig:
    """A causal LM: embedding, one block per entry of ``layers``, final norm, LM head."""

    vocab_size: int = 256
    d_model: int = 128
    layers: tuple[LayerConfig, ...] = field(default_factory=lambda: (LayerConfig(), LayerConfig()))
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        self.validate()

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def validate(self) -> None:
        _int(self, "vocab_size", 1)
        _int(self, "d_model", 1)
        _float(self, "norm_eps")
        _float(self, "init_std")
        if not isinstance(self.tie_embeddings, bool):
            raise _bad("tie_embeddings", "a bool", self.tie_embeddings)
        if len(self.layers) == 0:
            raise _bad("layers", "at least one layer", 0)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, LayerConfig):
                raise _bad(f"layers[{i}]", "a LayerConfig", type(layer).__name__)
            if layer.d_model != self.d_model:
                raise _bad(f"layers[{i}].d_model", f"the model's d_model={self.d_model}", layer.d_model)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layers"] = [layer.to_dict() for layer in self.layers]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        _check_fields(cls, "model config", data)
        data = dict(data)
        if "layers" in data:
            if not isinstance(data["layers"], (list, tuple)):
                raise _bad("layers", "a list of layer configs", type(data["layers"]).__name__)
            data["layers"] = tuple(_layer_from_dict(i, layer) for i, layer in enumerate(data["layers"]))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """A config from JSON text; its ConfigErrors (and JSONDecodeErrors) are ValueErrors, which
        loaders prefix with the file."""
        try:
            data = json.loads(text)
        except RecursionError:  # json recurses per nesting level: "[" * 100000 is not a config
            raise ConfigError("model config: expected JSON, got nesting too deep to read") from None
        return cls.from_dict(data)

    @classmethod
    def preset(
        cls,
        name: str | list[str] | tuple[str, ...],
        *,
        vocab_size: int = 256,
        d_model: int = 128,
        n_layers: int = 2,
        **layer_overrides,
    ) -> ModelConfig:
        """A model whose layers are all ``name`` (see ``LayerConfig.preset``), or — given a list
        such as ``["swa", "mamba2"]`` — a Jamba-style interleaving repeated to ``n_layers``."""
        names = [name] if isinstance(name, str) else list(name)
        if not names:
            raise _bad("preset", "a preset name or a non-empty list of names", name)
        _int(argparse_ns(n_layers=n_layers), "n_layers", 1)
        for kind in names:
            if kind not in LAYER_PRESETS:
                raise _bad("preset", f"one of {LAYER_PRESETS}", kind)
        kinds = list(dict.fromkeys(names[:n_layers]))
        for key, value in layer_overrides.items():  # an override no layer takes is an error, not dropped
            if not any(_takes(kind, key, value) for kind in kinds):
                if key == "context":
                    raise _bad(
                        "context", "no context without a 'transformer' layer (only it reads it: its window)", value
                    )
                fixed = " / ".join(f"{PRESET_FIXED[kind][key]!r} for {kind!r}" for kind in kinds)
                raise _bad(
                    key,
                    f"{fixed} (the preset{'s fix' if len(kinds) > 1 else ' fixes'} it; choose another preset)",
                    value,
                )
        layers = []
        for i in range(n_layers):
            kind = names[i % len(names)]
            # Shared overrides (say window=32) apply where they mean something; a preset's fixed
            # fields are left out for it, so ["swa", "mamba2"] with window=32 just works.
            own = {k: v for k, v in layer_overrides.items() if _takes(kind, k)}
            layers.append(LayerConfig.preset(kind, d_model=d_model, **own))
        return cls(vocab_size=vocab_size, d_model=d_model, layers=tuple(layers))


def _layer_from_dict(i: int, layer: Any) -> LayerConfig:
    """Layer ``i`` of a model config read from a dict: its errors name it, ``layers[i].window: ...``."""
    if isinstance(layer, LayerConfig):
        return layer
    try:
        return LayerConfig.from_dict(layer, f"layers[{i}]")
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if message.startswith(f"layers[{i}]") else f"layers[{i}].{message}") from None


#: ``_takes``'s "only the fields a preset leaves free" (None is a real value: fading_offset's fixed one)
_FREE_ONLY = object()


def _takes(kind: str, key: str, value: Any = _FREE_ONLY) -> bool:
    """Whether the ``kind`` preset takes ``key`` as an override: a field it leaves free, or (given
    ``value``) a fixed field given its fixed value, which changes nothing. ``context`` is the
    transformer's alone."""
    if key == "context":
        return kind == "transformer"
    fixed = PRESET_FIXED.get(kind, {})
    return key not in fixed or (value is not _FREE_ONLY and fixed[key] == value)


def check_stored_config(stored_json: str | None, config: ModelConfig, config_name: str = "config.json") -> None:
    """The config a weights file stores in its metadata (``save_pretrained`` and training
    checkpoints write it) must be ``config``, read from ``config_name``; None (files without one)
    passes. A ConfigError names the fields that differ; callers prefix the file."""
    if stored_json is None:
        return
    try:
        stored = ModelConfig.from_json(stored_json)
    except ValueError as err:  # JSONDecodeError and ConfigError
        raise ConfigError(f"metadata config: expected a valid model config, got {err}") from None
    if stored != config:
        diff = "; ".join(config_diff(stored, config)[:4])
        raise ConfigError(f"saved for another config than {config_name} ({diff})")


def config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    """Where two model configs differ, field by field, as ``"layers[0].window: 8 vs 4"`` (for
    error messages; torch-free, so the MLX loader shares it)."""
    return _dict_diff(a.to_dict(), b.to_dict())


def _dict_diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                out.append(f"{sub}: {a.get(key, '(absent)')!r} vs {b.get(key, '(absent)')!r}")
            else:
                out += _dict_diff(a[key], b[key], sub)
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: {len(a)} entries vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _dict_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]
