"""``BMojoCache``: the bounded B'MOJO decode state (spec §5) behind the transformers cache API.

Why rows are grouped. A core ``DecodeState`` holds one integer stream position shared by every
row, and core has no attention mask: each row's stream starts at position 0. With left padding
the rows of a batch start at different columns, so their real tokens sit at different absolute
positions (RoPE angles, window membership, eidetic chunk boundaries all depend on it), and pad
tokens must never enter the SSM, the conv tail, the windows or the eidetic scores. Shifting a
state to another position is not exact either (window slots before a stream's start would become
visible). So the cache keeps **one core ``DecodeState`` per distinct start column**: rows whose
first real token is in the same column share a position for ever (every row advances by one
column per call), so they run batched through core's ``prefill``/``step`` code path; different
groups run one after another. Pad tokens are simply never fed to core.

The memory is the sum of the groups' core states, i.e. exactly what one batched core state of
the same rows would take, and it never depends on the number of tokens processed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from bmojo import DecodeState


@dataclass
class RowGroup:
    """Rows of the batch (indices into it) whose streams began in the same column."""

    start: int  #: the column (of the padded batch) holding the group's first real token
    rows: torch.Tensor  #: int64 row indices, ascending
    state: DecodeState  #: core decode state of these rows (batch = len(rows))


class BMojoCache:
    """Decode state of a ``BMojoForCausalLM`` for one (padded) batch.

    ``seen`` counts the columns of the padded batch consumed so far; a row's own stream position
    is ``seen - start`` for its group. Created by the model on the first cached forward; pass it
    back through ``cache=`` (``generate`` does this for you).
    """

    #: transformers generation flags: no torch.compile static shapes, no rollback of a recurrent state.
    is_compileable = False
    is_croppable = False

    def __init__(self, batch_size: int, num_layers: int):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.num_layers = num_layers
        self.seen = 0
        self.groups: list[RowGroup] = []

    # ----- transformers Cache API surface used by generate -----
    @property
    def is_linear(self) -> list[bool]:
        """Every layer's state is bounded (no per-token growth), like linear attention."""
        return [True] * self.num_layers

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns of the padded batch processed so far (pad columns included)."""
        return self.seen

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: new row i continues old row ``beam_idx[i]`` (in place).

        A row takes over its source's whole state, start column included, so this is exact for
        any reordering; rows that move together into one start column are gathered batched.
        """
        beam_idx = torch.as_tensor(beam_idx, dtype=torch.long).flatten().cpu()
        if beam_idx.numel() != self.batch_size:
            raise ValueError(f"beam_idx: expected {self.batch_size} row indices, got {beam_idx.numel()}")
        where = self._row_locations()
        moves: dict[int, list[tuple[int, int]]] = {}  # source group -> [(new row, index in its state)]
        for new_row, src in enumerate(beam_idx.tolist()):
            if src not in where:  # the source has seen only pads: so has the new row
                continue
            g, j = where[src]
            moves.setdefault(g, []).append((new_row, j))
        new_groups = []
        for g, pairs in sorted(moves.items()):
            rows = torch.tensor([r for r, _ in pairs], dtype=torch.long)
            local = torch.tensor([j for _, j in pairs], dtype=torch.long)
            new_groups.append(RowGroup(self.groups[g].start, rows, _select(self.groups[g].state, local)))
        self.groups = new_groups

    # ----- inspection -----
    def nbytes(self) -> int:
        """Bytes held by all tensors of the cache (constant while generating)."""
        return sum(group.state.nbytes() for group in self.groups)

    def row_positions(self) -> list[int | None]:
        """Each row's stream position (tokens of its own consumed); None for a row not yet started."""
        out: list[int | None] = [None] * self.batch_size
        for group in self.groups:
            for r in group.rows.tolist():
                out[r] = group.state.position
        return out

    def _row_locations(self) -> dict[int, tuple[int, int]]:
        """row -> (group index, index within the group's state)."""
        return {r: (g, j) for g, group in enumerate(self.groups) for j, r in enumerate(group.rows.tolist())}

    def __repr__(self) -> str:
        starts = [(g.start, len(g.rows), g.state.position) for g in self.groups]
        return f"BMojoCache(batch_size={self.batch_size}, seen={self.seen}, groups(start, rows, position)={starts})"


def _select(state: DecodeState, index: torch.Tensor) -> DecodeState:
    """Rows ``index`` of a core decode state (every core state tensor is batch-first)."""
    layers = []
    for layer in state.layers:
        layers.append({k: v.index_select(0, index.to(v.device)) for k, v in layer.items()})
    return DecodeState(state.position, layers)
