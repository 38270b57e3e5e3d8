"""Decoding with the bounded state, in three layers (each testable alone):

* :func:`generate_step` — token ids in, one sampled token id at a time out (prefill once, then one
  ``model.step`` per token: the decode state never grows);
* :func:`stream_generate` — text in, :class:`GenerationResponse` pieces out (text, token, speed);
* :func:`generate` — the whole continuation as one string.

``BMojoLM`` checkpoints carry no tokenizer, so text is UTF-8 bytes: ids 0-255 are bytes (the
model's vocabulary must have at least 256 entries); other ids print as ``<id>``. Pass token ids
instead of text to use your own tokenizer: a list of ints (or numpy/MLX integers) in
``[0, vocab_size)``; anything else (floats, bools) is refused, never truncated.

Sampling: ``temperature`` 0 is greedy; otherwise a token is drawn from
``softmax((logits - max) / temperature)``, so a tiny temperature tends to greedy instead of
overflowing. ``temperature`` must be a finite real number >= 0 and ``seed`` an int in
``[0, 2**64)``, as for core's ``BMojoLM.generate``.
"""

from __future__ import annotations

import codecs
import numbers
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
from bmojo.argcheck import check_int, fail
from bmojo.argcheck import check_temperature as _check_temperature

from bmojo_mlx.model import BMojoMLX
from bmojo_mlx.ops._checks import INT_DTYPES

BYTE_VOCAB = 256
SEED_LIMIT = 2**64  #: ``mx.random.seed`` takes an unsigned 64-bit int


def check_temperature(temperature: object) -> float:
    """Core's check (``bmojo.argcheck.check_temperature``, torch-free), under the argument's name."""
    return _check_temperature("temperature", temperature)


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        fail("seed", "an int in [0, 2**64)", f"{seed!r} ({type(seed).__name__})")
    return seed


def check_token_ids(name: str, ids: object, vocab_size: int) -> list[int]:
    """``ids`` as a list of Python ints, each an integer (not a bool) in ``[0, vocab_size)``."""
    expected = f"token ids (ints in [0, {vocab_size}))"
    if isinstance(ids, str) or not (isinstance(ids, Sequence) or hasattr(ids, "__array__")):
        fail(name, expected, f"{ids!r:.80} ({type(ids).__name__})")
    if getattr(ids, "ndim", 1) != 1:  # numpy or MLX arrays: one row of ids
        fail(name, expected, f"an array of shape {tuple(ids.shape)}")
    if isinstance(ids, mx.array):
        if ids.dtype not in INT_DTYPES:
            fail(name, expected, f"an mx.array of dtype {ids.dtype}")
        ids = ids.tolist()
    out = []
    for i, v in enumerate(ids):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            shown = repr(v) if isinstance(v, (str, bytes)) else str(v)
            fail(name, expected, f"{shown} ({type(v).__name__}) at index {i}")
        if not 0 <= v < vocab_size:
            fail(name, expected, f"{int(v)} at index {i}")
        out.append(int(v))
    return out


def encode(model: BMojoMLX, prompt: str | Sequence[int]) -> list[int]:
    """Prompt ids: UTF-8 bytes of a string (needs vocab_size >= 256), or the given ids (ints in
    ``[0, vocab_size)``, checked)."""
    if isinstance(prompt, str):
        if model.config.vocab_size < BYTE_VOCAB:
            fail("prompt", f"token ids (text needs a byte-level vocabulary of >= {BYTE_VOCAB})", "a string")
        ids = list(prompt.encode("utf-8"))
    else:
        ids = check_token_ids("prompt", prompt, model.config.vocab_size)
    if not ids:
        fail("prompt", "at least one token", "an empty prompt")
    return ids


@dataclass
class GenerationResponse:
    text: str  #: the text this token completes ("" while a UTF-8 sequence is incomplete)
    token: int
    prompt_tokens: int
    prompt_tps: float  #: prefill tokens per second
    generation_tokens: int
    generation_tps: float  #: decode tokens per second so far
    state_bytes: int  #: size of the decode state (constant while decoding)
    finish_reason: str | None = None  #: "length" on the last response


def _sample(logits: mx.array, temperature: float) -> mx.array:
    """Greedy for 0, else a draw from ``softmax((logits - max) / temperature)``. The maximum scores
    exactly 0 and every other logit <= 0, so a tiny temperature gives -inf (probability 0) for the
    others, never inf or nan (``logits * (1 / temperature)`` overflows once 1/T > float32's range);
    the ``where`` keeps the maximum at 0 even when T rounds to 0 in float32. Half precision samples
    in float32."""
    if temperature == 0:
        return mx.argmax(logits, axis=-1)
    if logits.dtype in (mx.float16, mx.bfloat16):
        logits = logits.astype(mx.float32)
    top = mx.max(logits, axis=-1, keepdims=True)
    scores = mx.where(logits == top, 0.0, (logits - top) / temperature)
    return mx.random.categorical(scores)


def generate_step(
    model: BMojoMLX, prompt_ids: Sequence[int], *, max_tokens: int, temperature: float = 0.0
) -> Iterator[tuple[int, float]]:
    """Yield ``(token id, seconds)`` for ``max_tokens`` new tokens; the first item's seconds are the
    prefill (with the first sample), later ones one decode step each."""
    check_int("max_tokens", max_tokens, minimum=1)
    temperature = check_temperature(temperature)
    prompt_ids = check_token_ids("prompt_ids", prompt_ids, model.config.vocab_size)
    if not prompt_ids:
        fail("prompt_ids", "at least one token", "an empty prompt")
    t0 = time.perf_counter()
    logits, state = model.prefill(mx.array([prompt_ids], dtype=mx.int32))
    tok = _sample(logits[:, -1], temperature)
    mx.eval(tok)
    yield int(tok.item()), time.perf_counter() - t0
    for _ in range(max_tokens - 1):
        t0 = time.perf_counter()
        logits, state = model.step(tok, state)
        tok = _sample(logits, temperature)
        mx.eval(tok)
        yield int(tok.item()), time.perf_counter() - t0


def stream_generate(
    model: BMojoMLX,
    prompt: str | Sequence[int],
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Iterator[GenerationResponse]:
    """Stream the continuation of ``prompt`` piece by piece (see the module docstring)."""
    check_int("max_tokens", max_tokens, minimum=1)
    check_temperature(temperature)
    if seed is not None:
        check_seed(seed)
    ids = encode(model, prompt)
    if seed is not None:
        mx.random.seed(seed)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    state_bytes = model.init_state(1).nbytes()
    prompt_tps = 0.0
    gen_time = 0.0
    for n, (tok, seconds) in enumerate(generate_step(model, ids, max_tokens=max_tokens, temperature=temperature)):
        if n == 0:
            prompt_tps = len(ids) / seconds
        else:
            gen_time += seconds
        text = decoder.decode(bytes([tok])) if tok < BYTE_VOCAB else f"<{tok}>"
        last = n + 1 == max_tokens
        if last:
            text += decoder.decode(b"", final=True)
        yield GenerationResponse(
            text=text,
            token=tok,
            prompt_tokens=len(ids),
            prompt_tps=prompt_tps,
            generation_tokens=n + 1,
            generation_tps=n / gen_time if gen_time > 0 else 0.0,
            state_bytes=state_bytes,
            finish_reason="length" if last else None,
        )


def generate(
    model: BMojoMLX,
    prompt: str | Sequence[int],
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    seed: int | None = None,
) -> str:
    """The continuation of ``prompt`` as one string."""
    return "".join(
        r.text for r in stream_generate(model, prompt, max_tokens=max_tokens, temperature=temperature, seed=seed)
    )
