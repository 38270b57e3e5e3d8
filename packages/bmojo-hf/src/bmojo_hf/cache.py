"""``BMojoCache``: the bounded B'MOJO decode state (spec §5) behind the transformers cache API.

One core ``DecodeState`` holds the whole batch. Its rows may sit at different absolute positions
(``DecodeState.positions``), so a left-padded batch of prompts of different lengths is prefilled
in one core call (the leading pads of each row are skipped exactly: they never reach its SSM, conv
tail, windows or innovation scores) and then decodes the whole batch in one core ``step`` per
token. A row that has seen only pads sits at position 0 with the zero state it started from.

The memory is one batched core state, and it never depends on the number of tokens processed.
"""

from __future__ import annotations

import torch
from bmojo import DecodeState


class BMojoCache:
    """Decode state of a ``BMojoForCausalLM`` for one (padded) batch.

    ``seen`` counts the columns of the padded batch consumed so far; ``state`` is the core
    ``DecodeState`` of all rows (None before the first cached forward), whose ``positions`` are each
    row's own stream position. Created by the model on the first cached forward; pass it back
    through ``cache=`` (``generate`` does this for you).

    ``not_continuable`` is None, or why the cache cannot continue the sequences it came with: a
    cache left by beam search holds the last running beams, not the returned hypotheses, so
    ``generate`` sets it there and the model refuses the cache by name. It can still be inspected.
    """

    #: transformers generation flags: no torch.compile static shapes, no rollback of a recurrent state.
    is_compileable = False
    is_croppable = False

    def __init__(self, batch_size: int, num_layers: int):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers: expected an int >= 1, got {num_layers!r}")
        self.batch_size = batch_size
        self.num_layers = num_layers
        self.seen = 0
        self.state: DecodeState | None = None
        self.not_continuable: str | None = None
        #: set by the model's ``_reorder_cache`` (transformers' beam search loop), read by its ``generate``
        self._beam_reordered = False

    # ----- transformers Cache API surface used by generate -----
    @property
    def is_linear(self) -> list[bool]:
        """Every layer's state is bounded (no per-token growth), like linear attention."""
        return [True] * self.num_layers

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns of the padded batch processed so far (pad columns included)."""
        return self.seen

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: new row i continues old row ``beam_idx[i]`` (in place). A row takes over
        its source's whole state, position included, so this is exact for any reordering."""
        beam_idx = torch.as_tensor(beam_idx, dtype=torch.long).flatten().cpu()
        if beam_idx.numel() != self.batch_size:
            raise ValueError(f"beam_idx: expected {self.batch_size} row indices, got {beam_idx.numel()}")
        if int(beam_idx.min()) < 0 or int(beam_idx.max()) >= self.batch_size:
            raise ValueError(f"beam_idx: expected row indices in [0, {self.batch_size}), got {beam_idx.tolist()}")
        if self.state is not None:
            self.state = self.state.select(beam_idx)

    # ----- inspection -----
    def nbytes(self) -> int:
        """Bytes held by all tensors of the cache (constant while generating)."""
        return 0 if self.state is None else self.state.nbytes()

    def row_positions(self) -> list[int | None]:
        """Each row's stream position (tokens of its own consumed); None for a row not yet started."""
        if self.state is None:
            return [None] * self.batch_size
        return [p if p > 0 else None for p in self.state.positions.tolist()]

    def __repr__(self) -> str:
        return f"BMojoCache(batch_size={self.batch_size}, seen={self.seen}, row_positions={self.row_positions()})"
