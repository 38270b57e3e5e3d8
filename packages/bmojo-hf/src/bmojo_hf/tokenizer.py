"""Byte-level tokenizers built offline with ``tokenizers`` (no hub access).

``byte_level_tokenizer()`` needs no data: one token per byte (ids 0-255, so a core model with the
default ``vocab_size=256`` plus the special tokens fits) and two special tokens.
``train_byte_level_tokenizer(texts, vocab_size)`` learns BPE merges over bytes from local text.
Both return a transformers fast tokenizer that pads on the left (what generation needs) and
saves/loads with ``save_pretrained``/``AutoTokenizer.from_pretrained`` like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def _byte_symbols() -> list[str]:
    """The printable stand-in character of each byte 0..255 used by byte-level BPE: printable
    Latin-1 bytes stand for themselves, the others take code points from 256 up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = [], 0
    for b in range(256):
        if b in keep:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS, PAD])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD, padding_side="left"
    )


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """Bytes as tokens: id b is byte b; ``<|endoftext|>`` = 256, ``<|pad|>`` = 257 (vocab 258)."""
    vocab = {symbol: b for b, symbol in enumerate(_byte_symbols())}
    return _wrap(Tokenizer(models.BPE(vocab=vocab, merges=[])))


def train_byte_level_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts`` (every byte stays encodable); special tokens come last.

    ``vocab_size`` counts the 256 bytes, the learned merges and the two special tokens, so it must
    be at least 258. It is an upper bound: when ``texts`` offer fewer merges the tokenizer is
    smaller, so size a model with ``len(tokenizer)``."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 258:
        raise ValueError(f"vocab_size: expected an int >= 258 (256 bytes + {EOS} + {PAD}), got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)
