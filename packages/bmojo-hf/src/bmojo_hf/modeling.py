"""``BMojoModel`` and ``BMojoForCausalLM``: transformers models around a bmojo-core ``BMojoLM``.

All math is core's: the model owns a ``bmojo.BMojoLM`` (``model.core``) and only orchestrates
its modules — ``embed``, each ``Block``'s ``forward``/``step`` with a core ``DecodeState``, and
``norm_f`` — exactly as ``BMojoLM.prefill``/``step`` do, plus the bookkeeping transformers needs
(attention masks with left padding, the ``cache`` keyword, model outputs, the loss).

Padding. Left padding is exact: a row's leading pads are passed to core as a per-row count
(``pad``), so they never enter its state, and its real tokens sit at positions 0, 1, ... as if the
row were alone; the whole batch runs in one core call, rows at their own positions (see
``bmojo_hf.cache``); their outputs are zeros. Right padding is harmless only without a cache (the
model is causal, so real tokens never see the trailing pads, whose outputs are ordinary ones that
the loss ignores through labels = -100), and rejected with one.
"""

from __future__ import annotations

import inspect
import os
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from bmojo import BMojoLM, DecodeState
from bmojo.state import SAFETENSORS_DTYPES
from safetensors import safe_open
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from bmojo_hf.cache import BMojoCache
from bmojo_hf.configuration import BMojoConfig


@dataclass
class BMojoModelOutput(ModelOutput):
    """``last_hidden_state`` is after the final norm; leading (left) pad positions hold zeros,
    trailing (right) pad positions, accepted without a cache, hold ordinary hidden states.
    ``hidden_states`` (``output_hidden_states=True``) has ``num_hidden_layers + 1`` entries, as in
    transformers' models: the embeddings, then each block's output, the last one after the final
    norm (``hidden_states[-1]`` is ``last_hidden_state``); pads are as in ``last_hidden_state``."""

    last_hidden_state: torch.FloatTensor | None = None
    cache: BMojoCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class BMojoCausalLMOutput(ModelOutput):
    """``logits`` at leading (left) pad positions are zeros; at trailing (right) pad positions,
    accepted without a cache, they are the pad tokens' ordinary logits. Set the labels of every
    pad position to -100."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: BMojoCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    aux_loss: torch.FloatTensor | None = None  #: weighted innovation loss, included in ``loss``


class BMojoPreTrainedModel(PreTrainedModel):
    config: BMojoConfig
    config_class = BMojoConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ("Block",)
    #: the decode state cannot be rolled back to a shorter prefix (no assisted generation)
    _is_stateful = True
    supports_gradient_checkpointing = False

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not build a DynamicCache: the model creates its own BMojoCache.
        return False

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, made strict. The checkpoint must hold exactly the weights of its
        config, with their shapes: missing weights (say, a config edited to one more layer) are
        not filled with random initial ones, and leftover weights (a config edited to fewer layers
        or to ``tie_embeddings=true``) are not dropped. Each tensor must also be stored in the
        model's dtype (from ``config.json``): a hand-edited float16/float64 tensor is not cast
        silently, unless ``dtype=``/``torch_dtype=`` is passed (an explicit cast); integer
        tensors are never cast to floats. All of this is checked from the checkpoint's header,
        before any weight is read."""
        _check_load_step()  # before anything is built: the check below lives in transformers' private step
        want_info = kwargs.pop("output_loading_info", False)
        where = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        where = "state_dict" if where is None and kwargs.get("state_dict") is not None else where
        cast = any(kwargs.get(k) not in (None, "auto") for k in ("dtype", "torch_dtype"))
        check = {"where": where, "cast": cast, "ran": False}
        token = _LOAD_CHECK.set(check)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        finally:
            _LOAD_CHECK.reset(token)
        if not check["ran"]:
            raise RuntimeError(
                f"{where}: transformers {transformers.__version__} loaded the weights without calling "
                f"{cls.__name__}._load_pretrained_model, so bmojo_hf could not check them (keys, shapes, dtypes); "
                f"refusing an unchecked model ({_LOAD_STEP_SUPPORTED})"
            )
        if not isinstance(info, dict) or not {"missing_keys", "unexpected_keys", "mismatched_keys"} <= set(info):
            raise RuntimeError(
                f"{where}: transformers {transformers.__version__}: expected output_loading_info to report "
                f"missing_keys, unexpected_keys and mismatched_keys, got {info!r:.200}; refusing an unchecked "
                f"model ({_LOAD_STEP_SUPPORTED})"
            )
        # The header check above already refuses these; transformers' own report is checked too.
        missing = sorted(info.get("missing_keys") or ())
        unexpected = sorted(info.get("unexpected_keys") or ())
        mismatched = sorted(str(m) for m in (info.get("mismatched_keys") or ()))
        if missing or unexpected or mismatched:
            raise ValueError(_weights_message(where, missing, unexpected, mismatched))
        return (model, info) if want_info else model

    @staticmethod
    def _load_pretrained_model(model, state_dict, checkpoint_files, load_config, *args, **kwargs):
        # transformers' loading step, after the model is built on the meta device and before any
        # weight is read: check the checkpoint's header against it (see ``from_pretrained``).
        check = _LOAD_CHECK.get()
        if check is not None:
            files = isinstance(checkpoint_files, (list, tuple)) and len(checkpoint_files) > 0
            files = files and all(isinstance(f, (str, os.PathLike)) for f in checkpoint_files)
            if not (isinstance(state_dict, dict) or (state_dict is None and files)):
                raise RuntimeError(
                    f"{check['where']}: transformers {transformers.__version__}: expected _load_pretrained_model to "
                    "get a state_dict (dict) or checkpoint_files (a list of paths), got state_dict of type "
                    f"{type(state_dict).__name__} and checkpoint_files {checkpoint_files!r:.200}; refusing an "
                    f"unchecked model ({_LOAD_STEP_SUPPORTED})"
                )
            check["ran"] = True
            _check_checkpoint(model, _checkpoint_header(state_dict, checkpoint_files), check["where"], check["cast"])
        return PreTrainedModel._load_pretrained_model(model, state_dict, checkpoint_files, load_config, *args, **kwargs)

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Give the model ``new_num_tokens`` tokens (rounded up to a multiple of ``pad_to_multiple_of``):
        the core config is rebuilt with the new ``vocab_size`` (core validates it), and the embedding
        and, when untied, ``core.lm_head`` keep their first rows; added rows take the mean of the old
        rows (``mean_resizing``, transformers' rule without its tiny noise) or core's normal(init_std)
        initialisation. Old tokens keep their logits; ties are kept. Every argument is checked
        before anything changes. Returns the new input embedding (``None`` for both sizes: the
        current one, unchanged)."""
        core = self.core
        old = core.embed
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        n = old.num_embeddings if new_num_tokens is None else new_num_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"new_num_tokens: expected an int >= 1 or None, got {new_num_tokens!r}")
        if pad_to_multiple_of is not None:
            m = pad_to_multiple_of
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise ValueError(f"pad_to_multiple_of: expected an int >= 1 or None, got {m!r}")
            n = -(-n // m) * m
        if not isinstance(mean_resizing, bool):
            raise ValueError(f"mean_resizing: expected a bool, got {mean_resizing!r}")
        config = core.config.replace(vocab_size=n)  # validated by core
        embed = nn.Embedding(n, config.d_model, device=old.weight.device, dtype=old.weight.dtype)
        _resized_rows_(embed.weight, old.weight, mean_resizing, config.init_std)
        head = None
        if not config.tie_embeddings:
            old_head = core.lm_head.weight
            head = nn.Linear(config.d_model, n, bias=False, device=old_head.device, dtype=old_head.dtype)
            _resized_rows_(head.weight, old_head, mean_resizing, config.init_std)
        core.embed = embed
        if head is not None:
            core.lm_head = head
        core.config = config
        for owner in (self, getattr(self, "model", None)):
            if isinstance(owner, PreTrainedModel):
                owner.config.bmojo_config = config.to_dict()
        return embed

    def _init_weights(self, module):
        # Core's own initialisation (normal(init_std), residual-scaled output projections); the
        # SSM's dt_bias/A_log/D are initialised by core's constructors.
        if isinstance(module, BMojoLM):
            module._init_weights()


def _resized_rows_(new: torch.Tensor, old: torch.Tensor, mean: bool, std: float) -> None:
    """Fill ``new`` (n, d) from ``old`` (V, d): the first min(n, V) rows copied, the rest the old
    rows' mean (``mean``) or normal(0, ``std``)."""
    keep = min(new.shape[0], old.shape[0])
    with torch.no_grad():
        new[:keep] = old[:keep]
        if new.shape[0] > keep:
            if mean:
                new[keep:] = old.double().mean(0).to(new.dtype)
            else:
                new[keep:].normal_(0.0, std)
    new.requires_grad_(old.requires_grad)


#: set by ``from_pretrained`` for its ``_load_pretrained_model`` step: where, whether a dtype was passed
_LOAD_CHECK: ContextVar[dict | None] = ContextVar("bmojo_hf_load_check", default=None)

#: the leading parameters of transformers' private ``PreTrainedModel._load_pretrained_model`` (a
#: staticmethod) that strict loading hooks into; transformers has no public hook that runs before the
#: weights are read with the checkpoint's names, shapes and dtypes (``output_loading_info`` reports
#: missing/unexpected/mismatched keys only, after loading: not duplicates, dtype casts or pickles)
_LOAD_STEP_PARAMS = ("model", "state_dict", "checkpoint_files", "load_config")
_LOAD_STEP_SUPPORTED = "bmojo_hf's strict loading is tested with transformers 5.x up to 5.25; see docs/hf.md"


def _check_load_step() -> None:
    """Refuse to load through a transformers whose private loading step is not the one
    ``BMojoPreTrainedModel._load_pretrained_model`` overrides, naming the installed version."""
    step = inspect.getattr_static(PreTrainedModel, "_load_pretrained_model", None)
    got = "missing"
    if isinstance(step, staticmethod):
        params = tuple(inspect.signature(step.__func__).parameters)
        if params[: len(_LOAD_STEP_PARAMS)] == _LOAD_STEP_PARAMS:
            return
        got = f"a staticmethod ({', '.join(params)})"
    elif step is not None:
        got = f"a {type(step).__name__}"
    raise RuntimeError(
        f"transformers {transformers.__version__}: expected PreTrainedModel._load_pretrained_model to be a "
        f"staticmethod ({', '.join(_LOAD_STEP_PARAMS)}, ...), the private step bmojo_hf's strict from_pretrained "
        f"checks the checkpoint in, got {got}; refusing to load unchecked weights ({_LOAD_STEP_SUPPORTED})"
    )


def _checkpoint_header(state_dict: dict | None, checkpoint_files) -> dict[str, tuple[tuple, object]]:
    """Name -> (shape, dtype) of every stored tensor, from safetensors headers (nothing is read
    beyond them); a torch dtype, or the header's own name for a dtype torch lacks."""
    if state_dict is not None:
        return {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}
    header: dict[str, tuple[tuple, object]] = {}
    for file in checkpoint_files or ():
        if not str(file).endswith(".safetensors"):  # pickled formats (pytorch_model.bin, ...)
            raise ValueError(
                f"{file}: expected a .safetensors checkpoint (bmojo unpickles nothing), got another format; "
                "convert it, or save with save_pretrained (safetensors by default)"
            )
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    piece = f.get_slice(name)
                    dtype = piece.get_dtype()
                    header[name] = (tuple(piece.get_shape()), SAFETENSORS_DTYPES.get(dtype, dtype))
        except Exception as err:  # safetensors raises its own error types for a corrupt header
            raise ValueError(f"{file}: expected a safetensors file, got {type(err).__name__}: {err}") from None
    return header


def _weights_message(where, missing, unexpected, mismatched) -> str:
    def few(names):
        return f"{list(names[:8])}{' ...' if len(names) > 8 else ''}"

    return (
        f"{where}: expected a checkpoint with every weight of its config; missing {few(missing)}, "
        f"unexpected {few(unexpected)}, mismatched shapes {few(mismatched)}"
    )


def _check_checkpoint(model: nn.Module, header: dict, where, cast: bool) -> None:
    """Refuse a checkpoint whose tensors are not exactly ``model``'s (names, shapes) or, unless
    ``cast``, not stored in the model's dtypes. A name may carry or lack the base-model prefix, as
    transformers maps it (a ``BMojoModel`` from a ``BMojoForCausalLM`` checkpoint and back), but
    one weight stored under two such names (which copy would win is up to transformers) is refused,
    naming both."""
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}."
    found, unexpected, duplicates = {}, [], []
    for key in sorted(header):
        if key in expected:
            name = key
        elif key.startswith(prefix) and key[len(prefix) :] in expected:
            name = key[len(prefix) :]
        elif prefix + key in expected:
            name = prefix + key
        else:
            unexpected.append(key)
            continue
        if name in found:
            duplicates.append(f"{found[name]!r} and {key!r} (both {name!r})")
        else:
            found[name] = key
    if duplicates:
        more = f"; and {len(duplicates) - 1} more" if len(duplicates) > 1 else ""
        raise ValueError(
            f"{where}: expected each weight stored once, got {duplicates[0]}{more}; "
            "remove the stray copy from the checkpoint"
        )
    missing = sorted(set(expected) - set(found))
    mismatched = sorted(
        f"{key}: expected {list(expected[name][0])}, got {list(header[key][0])}"
        for name, key in found.items()
        if header[key][0] != expected[name][0]
    )
    if missing or unexpected or mismatched:
        raise ValueError(_weights_message(where, missing, sorted(unexpected), mismatched))
    wrong = []
    for name, key in sorted(found.items()):
        want, got = expected[name][1], header[key][1]
        if got == want:
            continue
        float_to_float = want.is_floating_point and isinstance(got, torch.dtype) and got.is_floating_point
        if cast and float_to_float:
            continue  # a float-to-float cast the caller asked for with dtype=
        hint = (
            "pass dtype= to from_pretrained to cast the checkpoint on purpose"
            if float_to_float
            else "a tensor of another kind is never cast, whatever dtype= says"
        )
        wrong.append((f"{key}: expected {want} (the model's dtype), got {got}", hint))
    if wrong:
        more = f"; and {len(wrong) - 1} more tensors" if len(wrong) > 1 else ""
        raise ValueError(f"{where}: {wrong[0][0]}{more} ({wrong[0][1]})")


def _check_ids(input_ids, vocab_size: int) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids: expected a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding accepts
        raise ValueError(f"input_ids: expected an integer tensor (int64 or int32), got {input_ids.dtype}")
    if input_ids.ndim != 2 or input_ids.numel() == 0:
        raise ValueError(f"input_ids: expected a non-empty (batch, T) tensor, got shape {tuple(input_ids.shape)}")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"input_ids: expected ids in [0, vocab_size={vocab_size}), got id {lo if lo < 0 else hi}")


def _check_labels(labels, shape: tuple[int, int], vocab_size: int, ignore_index: int) -> None:
    """``labels`` must be an int64 tensor of ``shape`` (batch, kept logit columns) holding ids in
    [0, vocab_size) or ``ignore_index``: the loss flattens both, so a transposed or flattened tensor
    of the same size would otherwise give a loss silently paired with the wrong tokens."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels: expected a torch.Tensor of token ids, got {type(labels).__name__}")
    if labels.dtype != torch.int64:  # what cross_entropy takes
        raise ValueError(
            f"labels: expected an int64 tensor of token ids ({ignore_index} to ignore), got {labels.dtype}"
        )
    if tuple(labels.shape) != shape:
        raise ValueError(
            f"labels: expected shape {shape} (batch, logit columns: those of input_ids, or the ones "
            f"logits_to_keep keeps), got {tuple(labels.shape)}"
        )
    bad = labels[((labels < 0) | (labels >= vocab_size)) & (labels != ignore_index)]
    if bad.numel():
        raise ValueError(
            f"labels: expected ids in [0, vocab_size={vocab_size}) or ignore_index {ignore_index}, got {bad[0].item()}"
        )


def _right_padded(attention_mask: torch.Tensor | None, length: int) -> bool:
    """Whether some row of the current ``length`` columns has a pad after a real token."""
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2:
        return False  # _first_real names what is wrong with it
    mask = attention_mask[:, attention_mask.shape[1] - length :] != 0
    return bool((mask.to(torch.int8).cummax(1).values.bool() & ~mask).any())


def _first_real(
    attention_mask: torch.Tensor | None, batch: int, length: int, past: int = 0, *, allow_right_padding: bool
):
    """Per-row index of the first real token among the current ``length`` columns (``length`` when
    none), after checking the mask has exactly the ``past`` columns a cache consumed plus ``length``
    and each row is pads*, real+ (then pads* only when ``allow_right_padding``). None when every token
    is real."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2:
        raise ValueError(
            "attention_mask: expected a 2-d (batch, columns) tensor of 0/1, got "
            f"{getattr(attention_mask, 'shape', type(attention_mask).__name__)}"
        )
    if tuple(attention_mask.shape) != (batch, past + length):
        # a longer mask would be cut to its last columns silently: likely one of another batch or padding
        columns = f"{past} consumed by the cache + {length} of input_ids" if past else "those of input_ids"
        raise ValueError(
            f"attention_mask: expected shape (batch={batch}, columns={past + length}: {columns}), "
            f"got {tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)][0].item()
        raise ValueError(f"attention_mask: expected values 0 (pad) or 1 (real token), got {bad!r}")
    mask = attention_mask[:, attention_mask.shape[1] - length :].to(torch.bool).cpu()
    if bool(mask.all()):
        return None
    first = torch.where(mask.any(1), mask.to(torch.int8).argmax(1), torch.full((batch,), length)).tolist()
    for r, f in enumerate(first):
        tail = mask[r, f:]
        if bool(tail.all()):
            continue
        last = f + int(tail.to(torch.int8).argmin())
        if not allow_right_padding:
            raise ValueError(
                f"attention_mask: row {r} has a pad after a real token (column {last}); with a cache only left "
                "padding is supported, since pad tokens would enter the recurrent state (use padding_side='left')"
            )
        if not bool((~mask[r, last:]).all()):
            raise ValueError(f"attention_mask: row {r} has a hole (0 between 1s); expected pads only at the ends")
    return first


class BMojoModel(BMojoPreTrainedModel):
    """The B'MOJO backbone: embedding, blocks, final norm. ``self.core`` is a ``bmojo.BMojoLM``."""

    def __init__(self, config: BMojoConfig):
        super().__init__(config)
        self.core = BMojoLM(config.core_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.core.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.core.embed = value

    # ----- running core -----
    def _run(
        self, input_ids: torch.Tensor, state: DecodeState | None, collect: bool, pad: torch.Tensor | None, aux=None
    ):
        """Core blocks over ``input_ids`` (batch, T) from ``state`` (fresh parallel forward when None),
        skipping ``pad`` leading columns per row; returns the normed hidden states, the new state and
        (``collect``) transformers' ``hidden_states`` list: the embeddings, then each block's output,
        the last one after the final norm (so ``hidden_states[-1]`` is ``last_hidden_state``, as in
        transformers' own models)."""
        core = self.core
        h = core.embed(input_ids)
        hidden = [h] if collect else None
        layers = []
        start = 0 if state is None else core._start(state)
        for i, block in enumerate(core.blocks):
            if state is None:
                h, _ = block(h, None, 0, pad, aux)
            elif input_ids.shape[1] == 1 and pad is None:  # core's step path, as BMojoLM.step
                out, new = block.step(h[:, 0], state.layers[i], start)
                h = out[:, None]
                layers.append(new)
            else:  # core's prefill path, as BMojoLM.prefill
                h, new = block(h, state.layers[i], start, pad, aux)
                layers.append(new)
            if collect:
                hidden.append(h)
        new_state = None
        if state is not None:
            advance = input_ids.shape[1] if pad is None else input_ids.shape[1] - pad
            new_state = DecodeState(state.positions + advance, layers)
        h = core.norm_f(h)
        if collect:
            hidden[-1] = h
        return h, new_state, hidden

    def _check_cache(self, cache: BMojoCache, batch: int) -> None:
        """Refuse a cache made by another model (layer count, or a state whose layers' keys, shapes
        or dtypes differ from this model's, as core's ``prefill``/``step`` do) or batch size, or one
        marked not continuable (left by beam search), before anything is run or rewritten."""
        _check_continuable(cache)
        layers = self.config.num_hidden_layers
        if cache.num_layers != layers:
            raise ValueError(
                f"cache: expected a BMojoCache of {layers} layers (this model's num_hidden_layers), "
                f"got {cache.num_layers}"
            )
        if cache.batch_size != batch:
            raise ValueError(f"cache: expected batch size {batch} (same as input_ids), got {cache.batch_size}")
        if cache.state is not None:
            try:
                self.core._check_state(cache.state, batch)
            except ValueError as err:  # core's StateError / argument errors, which name ``state``
                raise type(err)(f"cache: {err}") from None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: BMojoCache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: BMojoCache | None = None,
        aux_losses: list | None = None,
        **kwargs,
    ) -> BMojoModelOutput | tuple:
        """``attention_mask`` (batch, columns) covers the columns a passed ``cache`` has consumed and
        the current ``input_ids`` (its last T columns are theirs), exactly; ``position_ids`` are
        ignored: a row's positions start at its first real token, as in core. ``aux_losses``: a list
        the layers append their weighted innovation losses to (core's ``return_aux``)."""
        if inputs_embeds is not None:
            raise ValueError("inputs_embeds: not supported by B'MOJO models; pass input_ids")
        _check_ids(input_ids, self.config.vocab_size)  # first: everything below reads its shape
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, BMojoCache):
            raise ValueError(f"cache: expected a BMojoCache (or None), got {type(cache).__name__}")
        explicit = use_cache is not None or cache is not None
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        use_cache = bool(use_cache) or cache is not None
        if use_cache and not explicit and _right_padded(attention_mask, input_ids.shape[-1]):
            # the default cache (config.use_cache in eval mode) is dropped for a right-padded batch,
            # which only a cache cannot take: an evaluation loop over right-padded batches works
            use_cache = False
        collect = bool(output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        B, T = input_ids.shape
        past = cache.seen if cache is not None else 0
        first = _first_real(attention_mask, B, T, past, allow_right_padding=not use_cache)
        pad = None if first is None or not any(first) else torch.tensor(first, dtype=torch.long)

        state = None
        if use_cache:
            if cache is None:
                cache = BMojoCache(B, self.config.num_hidden_layers)
            self._check_cache(cache, B)
            state = cache.state if cache.state is not None else self.core.init_state(B)
            if pad is not None:
                for r, (p, position) in enumerate(zip(first, state.positions.tolist())):
                    if p and position:
                        raise ValueError(
                            f"attention_mask: row {r} already started but has a pad in the new columns; pads may "
                            "only precede a row's first real token"
                        )
        h, new_state, hidden = self._run(input_ids, state, collect, pad, aux_losses)
        if use_cache:
            cache.state = new_state
            cache.seen += T
        if pad is not None:  # pad columns hold zeros (their labels should be -100)
            is_pad = (torch.arange(T)[None, :] < pad[:, None]).to(h.device)[..., None]
            h = h.masked_fill(is_pad, 0.0)
            hidden = [x.masked_fill(is_pad, 0.0) for x in hidden[:-1]] + [h] if collect else None
        out = BMojoModelOutput(h, cache if use_cache else None, tuple(hidden) if collect else None)
        return out if return_dict else out.to_tuple()


def _short(value) -> str:
    return type(value).__name__ if isinstance(value, nn.Module) else repr(value)


#: why a cache that beam search used cannot be passed back (``BMojoCache.not_continuable``)
_BEAM_CACHE = (
    "expected a cache that continues the returned sequences, got one left by beam search (num_beams > 1): "
    "it holds the last running beams, while the returned sequences are the best finished hypotheses in "
    "score order, and a B'MOJO state cannot be rebuilt for them; pass the sequences without a cache "
    "(they are prefilled again)"
)


def _check_continuable(cache) -> None:
    if isinstance(cache, BMojoCache) and cache.not_continuable is not None:
        raise ValueError(f"cache: {cache.not_continuable}")


def _check_rows_start(attention_mask, rows: str) -> None:
    """Refuse a generation prompt with a row of pads only: an empty prompt, whose first new token
    would be drawn from the zero logits of pads (greedy: token 0), silently."""
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2 and attention_mask.shape[1] > 0:
        empty = (~attention_mask.bool().any(1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"attention_mask: expected at least one real token (1) in every row of the prompt, got row "
                f"{empty[0]}{rows} all pads (an empty prompt; without an attention_mask generate derives it from "
                "pad_token_id); start each row with a token, e.g. the eos token"
            )


class BMojoForCausalLM(BMojoPreTrainedModel, GenerationMixin):
    """B'MOJO causal LM. The head is core's: tied to the embedding unless the core config says
    ``tie_embeddings=False`` (then ``model.core.lm_head``)."""

    def __init__(self, config: BMojoConfig):
        super().__init__(config)
        self.model = BMojoModel(config)
        self.post_init()

    @property
    def core(self) -> BMojoLM:
        """The underlying bmojo-core ``BMojoLM`` (shares every parameter with this model)."""
        return self.model.core

    #: what turns on transformers' assisted (speculative) generation: an argument of ``generate``
    #: or a field of its generation config
    _ASSISTED = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")

    def generate(self, *args, **kwargs):
        """transformers' ``generate``, refusing assisted generation first: it rolls the decode
        state back to a shorter prefix after each draft, which B'MOJO's state (SSM state, fading
        window, eidetic memory) cannot do. transformers itself checked ``_is_stateful`` up to
        some 5.x release; 5.25 no longer does and fails with an unrelated "requires a cache"."""
        config = kwargs.get("generation_config", args[1] if len(args) > 1 else None) or self.generation_config
        for name in self._ASSISTED:
            value = kwargs.get(name)
            where = f"generate({name}=...)"
            if value is None:
                value, where = getattr(config, name, None), f"generation_config.{name}"
            if value is not None:
                raise ValueError(
                    f"{where}: assisted generation is not supported by {type(self).__name__}: its decode "
                    "state is stateful (SSM state, fading window, eidetic memory) and cannot be rolled back "
                    f"to a shorter prefix after a draft is rejected; expected {name}=None, got {_short(value)}"
                )
        for key in ("cache", "past_key_values"):
            _check_continuable(kwargs.get(key))
        for prompt in (args[0] if args else None, kwargs.get("inputs"), kwargs.get("input_ids")):
            if isinstance(prompt, torch.Tensor) and prompt.ndim == 2 and prompt.shape[1] == 0:
                # transformers would fail inside its loop (an IndexError for batch > 1)
                raise ValueError(
                    "input_ids: expected a prompt of at least one token per row (B'MOJO has no BOS to start "
                    f"from nothing; start each row with a token, e.g. the eos token), got shape {tuple(prompt.shape)}"
                )
        _check_rows_start(kwargs.get("attention_mask"), "")
        given = [kwargs.get(key) for key in ("cache", "past_key_values")]
        result = None
        try:
            result = super().generate(*args, **kwargs)
        finally:
            # Beam search (num_beams > 1, ``_reorder_cache`` ran) leaves its running beams in the
            # cache, not the returned hypotheses: mark it, here, after transformers' loop is done,
            # so passing it back is refused by name instead of silently continuing other beams.
            for cache in [*given, getattr(result, "cache", None)]:
                if isinstance(cache, BMojoCache) and cache._beam_reordered:
                    cache.not_continuable = _BEAM_CACHE
        return result

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.core.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.core.embed = value

    def get_output_embeddings(self):
        return None if self.config.tie_word_embeddings else self.model.core.lm_head

    @classmethod
    def from_core(cls, core: BMojoLM, **config_kwargs) -> BMojoForCausalLM:
        """Wrap a trained core ``BMojoLM`` (its weights are copied; ``config_kwargs`` such as
        ``eos_token_id`` go to ``BMojoConfig``)."""
        if not isinstance(core, BMojoLM):
            raise TypeError(f"core: expected a bmojo.BMojoLM, got {type(core).__name__}")
        p = next(core.parameters())
        model = cls(BMojoConfig.from_core(core.config, **config_kwargs)).to(device=p.device, dtype=p.dtype)
        model.model.core.load_state_dict(core.state_dict())
        return model.eval() if not core.training else model

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        core = self.model.core
        return F.linear(h, core.embed.weight) if self.config.tie_word_embeddings else core.lm_head(h)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: BMojoCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: BMojoCache | None = None,
        **kwargs,
    ) -> BMojoCausalLMOutput | tuple:
        """Logits (batch, T, vocab); with ``labels`` also the shifted cross-entropy loss, plus the
        weighted innovation loss of layers with ``innovation_loss_weight`` > 0 (also returned
        alone as ``aux_loss``)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None:  # checked before the model runs (and advances a passed cache)
            _check_ids(input_ids, self.config.vocab_size)  # first: the labels' shape is read from it
            B, T = input_ids.shape
            if isinstance(logits_to_keep, int):
                kept = min(logits_to_keep, T) if logits_to_keep > 0 else T
            else:
                kept = torch.arange(T)[torch.as_tensor(logits_to_keep).cpu()].numel()
            _check_labels(labels, (B, kept), self.config.vocab_size, kwargs.get("ignore_index", -100))
        wants_aux = labels is not None and any(c.innovation_loss_weight > 0 for c in self.core.config.layers)
        aux_losses = [] if wants_aux else None
        out = self.model(
            aux_losses=aux_losses,
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            past_key_values=past_key_values,
            return_dict=True,
        )
        h = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            h = h[:, -logits_to_keep:] if logits_to_keep > 0 else h
        else:
            h = h[:, logits_to_keep]
        logits = self._logits(h)
        loss = None
        if labels is not None:
            loss_kwargs = {k: v for k, v in kwargs.items() if k in ("num_items_in_batch", "ignore_index")}
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **loss_kwargs)
        aux_loss = sum(aux_losses) if aux_losses else None
        if aux_loss is not None:
            loss = loss + aux_loss
        result = BMojoCausalLMOutput(loss, logits, out.cache, out.hidden_states, aux_loss)
        return result if return_dict else result.to_tuple()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: BMojoCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        is_first_iteration: bool | None = False,
        past_key_values: BMojoCache | None = None,
        **kwargs,
    ) -> dict:
        """Feed only the columns the cache has not consumed yet (all of them without a cache)."""
        if inputs_embeds is not None:
            raise ValueError("inputs_embeds: not supported by B'MOJO models; pass input_ids")
        cache = cache if cache is not None else past_key_values
        _check_continuable(cache)
        # generate's own mask (derived from pad_token_id when none is passed), rows repeated for beams
        _check_rows_start(attention_mask, " of generate's batch (rows repeated num_beams / num_return_sequences times)")
        if cache is not None:
            seen = cache.get_seq_length()
            if seen and input_ids.shape[1] <= seen:
                raise ValueError(
                    f"input_ids: expected more than the {seen} columns the cache has already consumed (pass the "
                    f"whole sequence so far, e.g. out.sequences, with the cache it returned), got {input_ids.shape[1]}"
                )
            input_ids = input_ids[:, seen:]
        inputs = {
            "input_ids": input_ids.contiguous(),
            "attention_mask": attention_mask,
            "cache": cache,
            "use_cache": use_cache,
        }
        for key in ("logits_to_keep", "output_hidden_states"):
            if key in kwargs:
                inputs[key] = kwargs[key]
        return inputs

    def _reorder_cache(self, cache: BMojoCache, beam_idx: torch.LongTensor) -> BMojoCache:
        """transformers' beam search loop: reorder the rows, and note that beam search ran (``generate``
        marks the cache not continuable once the loop is over)."""
        cache.reorder_cache(beam_idx)
        cache._beam_reordered = True
        return cache
