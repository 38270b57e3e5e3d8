"""Pre-norm residual blocks and the causal LM (spec §6).

Block: RMSNorm → B'MOJO mixer → residual → (optional) RMSNorm → SwiGLU → residual.
LM: embedding → blocks → final RMSNorm → head (tied to the embedding by default).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from bmojo._checks import check_device, check_int, fail
from bmojo.argcheck import check_temperature
from bmojo.config import ConfigError, LayerConfig, ModelConfig
from bmojo.config import check_stored_config as _check_stored
from bmojo.layer import BMojoMixer
from bmojo.memory import State
from bmojo.norm import RMSNorm
from bmojo.state import _ST_DTYPES, DecodeState, StateError

#: safetensors dtype codes of the floating dtypes ``from_pretrained(dtype=...)`` converts between
_FLOAT_CODES = {code for dt, code in _ST_DTYPES.items() if dt.is_floating_point}
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = BMojoMixer(cfg)
        if cfg.mlp:
            self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.mlp = SwiGLU(cfg.d_model, cfg.ffn_dim)

    def _ffn(self, h):
        return h + self.mlp(self.mlp_norm(h)) if hasattr(self, "mlp") else h

    def forward(
        self,
        x,
        state: State | None = None,
        start: int | torch.Tensor = 0,
        pad: torch.Tensor | None = None,
        aux: list[torch.Tensor] | None = None,
    ):
        y, new = self.mixer(self.norm(x), state, start, pad, aux)
        return self._ffn(x + y), new

    def step(self, x, state: State, position: int | torch.Tensor):
        y, new = self.mixer.step(self.norm(x), state, position)
        return self._ffn(x + y), new


class BMojoLM(nn.Module):
    """A causal language model of B'MOJO blocks.

    ``model(ids)`` gives logits for a whole sequence; ``prefill``/``step`` continue a stream
    through an explicit ``DecodeState`` of fixed size.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            fail("config", "a ModelConfig", type(config).__name__)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(layer) for layer in config.layers)
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self):
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)  # GPT-2: scale residual outputs
        for name, module in self.named_modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.Linear):
                out = name.endswith(("o_proj", "out_proj", "down_proj"))
                nn.init.normal_(module.weight, std=residual_std if out else std)

    # ----- inputs -----
    def _check_ids(self, ids, name="input_ids", ndim=2):
        if not isinstance(ids, torch.Tensor):
            fail(name, "a torch.Tensor of token ids", type(ids).__name__)
        if ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding accepts
            fail(name, "an integer tensor of token ids (int64 or int32)", ids.dtype)
        if ids.ndim != ndim:
            want = "(batch, T)" if ndim == 2 else "(batch,)"
            fail(name, f"a {ndim}-d tensor {want}", f"shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            fail(name, "a non-empty batch and sequence", f"shape {tuple(ids.shape)}")
        if torch.compiler.is_compiling():
            return  # the range check reads values (a graph break); eager calls always run it
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            fail(name, f"ids in [0, vocab_size={self.config.vocab_size})", f"id {bad}")

    def _check_state(self, state, batch):
        if not isinstance(state, DecodeState):
            fail("state", "a DecodeState (see init_state)", type(state).__name__)
        if len(state.layers) != self.config.n_layers:
            fail("state", f"{self.config.n_layers} layer states", len(state.layers))
        if state.batch_size != batch:
            fail("state", f"batch size {batch} (same as input_ids)", state.batch_size)
        # Every key, shape and dtype as init_state makes them for this model (meta: no allocation).
        state.check_like(self.init_state(batch, device="meta"))

    def _head(self, h):
        h = self.norm_f(h)
        return h @ self.embed.weight.T if self.config.tie_embeddings else self.lm_head(h)

    def _check_pad(self, pad, ids):
        if pad is None:
            return None
        from bmojo._checks import check_tensor

        check_tensor("pad", pad, shape=(ids.shape[0],), floating=False)
        if int(pad.min()) < 0 or int(pad.max()) > ids.shape[1]:
            fail("pad", f"counts of leading pad columns in [0, {ids.shape[1]}]", pad.tolist())
        return pad.cpu() if bool(pad.any()) else None

    # ----- compute -----
    def forward(
        self, input_ids: torch.Tensor, *, pad: torch.Tensor | None = None, return_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (batch, T, vocab) for a whole sequence from position 0.

        ``pad`` (batch,) optionally counts each row's leading pad columns (left padding): they
        are not part of the row's stream, whose first token then sits at position 0; the logits
        at pad columns are meaningless.

        ``return_aux=True`` returns ``(logits, aux_loss)``: the sum over layers of
        ``innovation_loss_weight`` × the layer's innovation loss (``BMojoMixer.innovation_loss``),
        a scalar to add to the training loss (``loss = ce + aux_loss``). Layers with weight 0
        compute nothing; with every weight 0 it is a constant 0."""
        self._check_ids(input_ids)
        pad = self._check_pad(pad, input_ids)
        aux: list[torch.Tensor] | None = [] if return_aux else None
        h = self.embed(input_ids)
        for block in self.blocks:
            h, _ = block(h, None, 0, pad, aux)
        logits = self._head(h)
        if not return_aux:
            return logits
        return logits, sum(aux) if aux else logits.new_zeros(())

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> DecodeState:
        check_int("batch_size", batch_size, minimum=1)
        return DecodeState(0, [b.mixer.init_state(batch_size, device=device, dtype=dtype) for b in self.blocks])

    @staticmethod
    def _start(state: DecodeState) -> int | torch.Tensor:
        """The blocks' ``start``: one int when every row sits at one position (the batched path)."""
        p = state.positions
        return int(p[0]) if bool((p == p[0]).all()) else p

    def prefill(
        self, input_ids: torch.Tensor, state: DecodeState | None = None, *, pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, DecodeState]:
        """Process a piece of any length, continuing ``state`` (fresh when None).

        Rows may sit at different positions (``state.positions``). ``pad`` (batch,) optionally
        counts leading pad columns of rows that have not started yet (position 0): a left-padded
        batch of prompts of different lengths is prefilled in one call, each row exactly as if
        alone; a row then advances by its own count of real tokens."""
        self._check_ids(input_ids)
        if state is None:
            state = self.init_state(input_ids.shape[0])
        self._check_state(state, input_ids.shape[0])
        pad = self._check_pad(pad, input_ids)
        start = self._start(state)
        h = self.embed(input_ids)
        layers = []
        for block, layer_state in zip(self.blocks, state.layers):
            h, new = block(h, layer_state, start, pad)
            layers.append(new)
        advance = input_ids.shape[1] if pad is None else input_ids.shape[1] - pad
        return self._head(h), DecodeState(state.positions + advance, layers)

    def step(self, token_ids: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """One token per sequence: token_ids (batch,) → logits (batch, vocab). Each row continues
        at its own position (``state.positions``), so rows of different lengths step together."""
        self._check_ids(token_ids, "token_ids", ndim=1)
        self._check_state(state, token_ids.shape[0])
        start = self._start(state)
        h = self.embed(token_ids)
        layers = []
        for block, layer_state in zip(self.blocks, state.layers):
            h, new = block.step(h, layer_state, start)
            layers.append(new)
        return self._head(h), DecodeState(state.positions + 1, layers)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        generator=None,
        pad: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation; returns the new tokens (batch, n).

        ``pad`` (batch,) counts each row's leading pad columns of a left-padded batch of prompts,
        as in ``prefill``; every row needs at least one real token (a count < T). Each row then
        continues exactly as it would alone."""
        check_int("max_new_tokens", max_new_tokens, minimum=1)
        check_temperature("temperature", temperature)
        if generator is not None and not isinstance(generator, torch.Generator):
            fail("generator", "None or a torch.Generator", type(generator).__name__)
        if pad is not None:  # checked before the prefill, as prefill checks it
            self._check_ids(input_ids)
            self._check_pad(pad, input_ids)
            if int(pad.max()) >= input_ids.shape[1]:
                fail("pad", f"counts in [0, {input_ids.shape[1] - 1}] (each row needs a real token)", pad.tolist())
        logits, state = self.prefill(input_ids, pad=pad)
        last = logits[:, -1]
        out = []
        for _ in range(max_new_tokens):
            if temperature > 0:
                scores = tempered_scores(last, temperature)
                tok = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)[:, 0]
            else:
                tok = last.argmax(-1)
            out.append(tok)
            last, state = self.step(tok, state)
        return torch.stack(out, dim=1)

    # ----- persistence -----
    def save_state(self, state: DecodeState, path: str | Path) -> None:
        """Write a decode state to a safetensors file tagged with this model's config."""
        self._check_state(state, getattr(state, "batch_size", None))  # a non-DecodeState is named first
        state.save(path, self.config.to_json())

    def load_state(self, path: str | Path) -> DecodeState:
        """Read a decode state written by ``save_state``; fails if it was saved for another config."""
        return DecodeState.load(path, self)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (tied weights stored once); the weights
        file carries the config too, so weights are never loaded under another config."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(self.config.to_json())
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": "pt", "library": "bmojo", "config": self.config.to_json()}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata=meta)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device=None, dtype=None) -> BMojoLM:
        """Load a model saved by ``save_pretrained``. The config, and every tensor's name, shape
        and dtype in the weights file's header, are checked before the model is allocated."""
        from safetensors import safe_open

        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            fail("dtype", "None or a floating torch.dtype (e.g. torch.float64)", repr(dtype))
        if device is not None:
            try:
                torch.device(device)
            except (RuntimeError, TypeError, ValueError) as err:
                fail("device", "None or a torch device", f"{device!r} ({err})")
            check_device("device", device)  # one that exists here, and holds data (not meta)
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"directory: expected {name} in {str(directory)!r}, not found")
        cfg_path, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        try:
            config = ModelConfig.from_json(cfg_path.read_text())
        except ValueError as err:  # JSONDecodeError and ConfigError are ValueErrors
            raise StateError(f"{cfg_path}: {err}") from None
        try:
            with safe_open(str(weights), framework="pt") as f:
                meta = f.metadata() or {}
                header = {n: (tuple(f.get_slice(n).get_shape()), f.get_slice(n).get_dtype()) for n in f.keys()}
        except Exception as err:  # safetensors raises its own error types for a corrupt header
            raise StateError(f"{weights}: expected a safetensors file, got {type(err).__name__}: {err}") from None
        check_stored_config(weights, meta, config, cfg_path)
        try:
            expected = expected_tensors(config)
        except ConfigError as err:
            raise StateError(f"{cfg_path}: {err}") from None
        missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
        if missing or unexpected:
            raise StateError(
                f"{WEIGHTS_NAME}: expected the config's tensors; missing {missing}, unexpected {unexpected}"
            )
        for name, (shape, st_dtype) in header.items():
            want_shape, want_dtype = expected[name]
            if shape != want_shape:
                raise StateError(f"{name}: expected shape {want_shape}, got {shape}")
            if st_dtype == _ST_DTYPES.get(want_dtype):
                continue
            if dtype is None:
                raise StateError(f"{name}: expected dtype {want_dtype} (pass dtype= to convert), got {st_dtype}")
            if want_dtype.is_floating_point and st_dtype not in _FLOAT_CODES:  # dtype= converts floats only
                raise StateError(f"{name}: expected a floating dtype (dtype= converts between those), got {st_dtype}")
        model = cls(config)
        tensors = load_file(str(weights))
        if dtype is not None:
            # Convert before loading: copying float64 weights into the float32 model built above
            # would round them to float32 first.
            model = model.to(dtype)
        model.load_state_dict(tensors)
        if device is not None:
            model = model.to(device)
        return model


def expected_tensors(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name → (shape, dtype) of every tensor of ``BMojoLM(config)``, from a model built on the meta
    device (nothing allocated). A config whose tensors torch cannot even size (a product of sizes
    past int64, say vocab_size · d_model bytes >= 2**63) is a ConfigError, not torch's error."""
    try:
        with torch.device("meta"):
            model = BMojoLM(config)
    except (RuntimeError, TypeError, OverflowError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model config: expected sizes whose tensors stay under 2**63 bytes, got more ({first})"
        ) from None
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def tempered_scores(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` up to a per-row shift, for sampling: the top logit is exactly 0 and
    the others ``(logit - top) / temperature`` <= 0, so a tiny temperature gives them -inf (greedy)
    instead of overflowing into inf - inf or 0 / 0 = nan (1/T overflows float32 below ~3e-39)."""
    top = logits.amax(-1, keepdim=True)
    return torch.where(logits == top, 0.0, (logits - top) / temperature)


def check_stored_config(weights: Path, meta: dict, config: ModelConfig, cfg_path: Path) -> None:
    """``bmojo.config.check_stored_config`` for a weights file's metadata, as a StateError naming it."""
    try:
        _check_stored(meta.get("config"), config, cfg_path.name)
    except ConfigError as err:
        raise StateError(f"{weights}: {err}") from None
