"""Decoding with the bounded state, in three layers (each testable alone):

* :func:`generate_step` — token ids in, one sampled token id at a time out (prefill once, then one
  ``model.step`` per token: the decode state never grows);
* :func:`stream_generate` — text in, :class:`GenerationResponse` pieces out (text, token, speed);
* :func:`generate` — the whole continuation as one string.

``BMojoLM`` checkpoints carry no tokenizer, so text is UTF-8 bytes: ids 0-255 are bytes (the
model's vocabulary must have at least 256 entries); other ids print as ``<id>``. Pass token ids
instead of text to use your own tokenizer.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
from bmojo.argcheck import check_int, fail

from bmojo_mlx.model import BMojoMLX

BYTE_VOCAB = 256


def encode(model: BMojoMLX, prompt: str | Sequence[int]) -> list[int]:
    """Prompt ids: UTF-8 bytes of a string (needs vocab_size >= 256), or the given ids."""
    if isinstance(prompt, str):
        if model.config.vocab_size < BYTE_VOCAB:
            fail("prompt", f"token ids (text needs a byte-level vocabulary of >= {BYTE_VOCAB})", "a string")
        ids = list(prompt.encode("utf-8"))
    else:
        ids = [int(i) for i in prompt]
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
    if temperature == 0:
        return mx.argmax(logits, axis=-1)
    return mx.random.categorical(logits * (1.0 / temperature))


def generate_step(
    model: BMojoMLX, prompt_ids: Sequence[int], *, max_tokens: int, temperature: float = 0.0
) -> Iterator[tuple[int, float]]:
    """Yield ``(token id, seconds)`` for ``max_tokens`` new tokens; the first item's seconds are the
    prefill (with the first sample), later ones one decode step each."""
    check_int("max_tokens", max_tokens, minimum=1)
    if not temperature >= 0:
        fail("temperature", "a number >= 0", temperature)
    t0 = time.perf_counter()
    logits, state = model.prefill(mx.array([list(prompt_ids)], dtype=mx.int32))
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
    if seed is not None:
        mx.random.seed(seed)
    ids = encode(model, prompt)
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
