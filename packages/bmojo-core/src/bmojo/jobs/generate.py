"""``bmojo generate``: stream a continuation from a checkpoint through the bounded decode state.

The prompt is prefilled in one call (``BMojoLM.prefill``), then every new token is one
``BMojoLM.step`` on a ``DecodeState`` whose size is fixed by the config (spec §5): memory does not
grow with the generated length, for any architecture (a Transformer's KV cache holds its window,
which for the ``transformer`` preset is the training context). Tokens are bytes for byte-level
models (vocabulary 256), printed as UTF-8 as they arrive (a byte sequence that is not UTF-8 as
U+FFFD); an empty prompt starts from the document separator (byte 0). The separator is the model's
end of document (the corpus has it after every file): generating it ends the continuation, and it
is not printed (a NUL byte is not text). Sampling: temperature (0 = greedy), top-k, top-p
(nucleus), seed.
"""

from __future__ import annotations

import codecs
import sys
import time
from collections.abc import Iterator

import torch

from bmojo._checks import check_device, check_int, fail
from bmojo.argcheck import check_temperature
from bmojo.jobs.data import BYTE_VOCAB, EOS
from bmojo.model import BMojoLM, tempered_scores
from bmojo.state import DecodeState


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    check_temperature("--temperature", temperature)
    check_int("--top-k", top_k, minimum=0)
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        fail("--top-p", "a number in (0, 1]", top_p)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` (batch, vocab). ``top_k`` 0 and ``top_p`` 1 disable the filters;
    top-p keeps the smallest set of most likely tokens whose probability reaches ``top_p``."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(-1)
    scores = tempered_scores(logits.float(), temperature)
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = before >= top_p  # the most likely token always stays (before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def stream(
    model: BMojoLM,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[int, DecodeState]]:
    """Yield (token, decode state after the prompt and the tokens so far) for one sequence."""
    check_int("--max-new-tokens", max_new_tokens, minimum=1)
    check_sampling(temperature, top_k, top_p)
    if prompt.ndim != 1 or prompt.numel() == 0:
        fail("prompt", "a non-empty 1-d tensor of token ids", f"shape {tuple(prompt.shape)}")
    logits, state = model.prefill(prompt[None])
    last = logits[:, -1]
    for _ in range(max_new_tokens):
        tok = sample_next(last, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        yield int(tok[0]), state
        last, state = model.step(tok, state)


def encode_prompt(text: str, vocab_size: int) -> torch.Tensor:
    """The prompt's bytes as token ids (the document separator for an empty prompt). A command-line
    argument that is not valid UTF-8 reaches Python with surrogate escapes: its original bytes are
    what a byte-level model reads, so they are encoded back as they were."""
    if vocab_size != BYTE_VOCAB:  # ids are bytes in and out: another vocabulary means other tokens
        fail(
            "--checkpoint" if not text else "--prompt",
            f"a byte-level model (vocab_size {BYTE_VOCAB}): bmojo generate reads and writes text",
            f"vocab_size {vocab_size}",
        )
    data = text.encode("utf-8", "surrogateescape")
    return torch.tensor(list(data) if data else [EOS], dtype=torch.long)


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="stream text from a checkpoint with the bounded decode state",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--checkpoint", required=True, help="a bmojo train --out directory, a step directory or a model")
    p.add_argument("--prompt", default="", help="text to continue (default: empty, start of a document)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=200,
        help="tokens to generate at most (default 200); the document separator, byte 0, ends the text earlier",
    )
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature, 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--stats", action="store_true", help="print tokens/s and decode-state bytes to stderr at the end")
    p.set_defaults(func=run)


def run(args) -> int:
    from bmojo.jobs.checkpoint import load_model

    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.temperature == 0:  # greedy: the filters and the seed would change nothing
        for flag, value, off in (("--top-k", args.top_k, 0), ("--top-p", args.top_p, 1.0)):
            if value != off:
                fail(flag, f"no {flag} with --temperature 0 (greedy decoding takes the most likely token)", value)
    check_int("--max-new-tokens", args.max_new_tokens, minimum=1)
    if not 0 <= args.seed < 2**64:  # torch.Generator.manual_seed's range
        raise ValueError(f"--seed: expected an int in [0, 2**64), got {args.seed}")
    check_device("--device", args.device)
    model, _ = load_model(args.checkpoint, device=args.device)
    if args.top_k > model.config.vocab_size:
        fail("--top-k", f"at most the vocabulary size {model.config.vocab_size} (0: off)", args.top_k)
    prompt = encode_prompt(args.prompt, model.config.vocab_size).to(args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = sys.stdout
    out.write(args.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    t0 = time.perf_counter()
    tokens = stream(
        model,
        prompt,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=generator,
    )
    last_state, n, ended = None, 0, False
    for tok, state in tokens:
        last_state, n = state, n + 1
        if tok == EOS:  # the end of the document: the model's stop token, not text
            ended = True
            break
        out.write(decoder.decode(bytes([tok])))
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")
    if args.stats:
        dt = time.perf_counter() - t0
        end = "; ended at the document separator (byte 0)" if ended else ""
        print(
            f"{n} tokens in {dt:.2f} s ({n / dt:.1f} tokens/s); decode state {last_state.nbytes():,} bytes{end}",
            file=sys.stderr,
        )
    return 0
