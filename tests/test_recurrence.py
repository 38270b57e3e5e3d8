"""Parallel = recurrent (spec §5): ``BMojoLM.forward`` over T tokens equals ``step`` token by token
and equals random splits into ``prefill`` pieces followed by steps.

Small sizes (window 8, SSD chunk 8, attention block 4, eidetic chunk 4) so that ~50 tokens cross
every chunk, window and block boundary many times."""

from __future__ import annotations

import random

import pytest
import torch
from bmojo.layer import BMojoMixer
from conftest import TOL, assert_close, small_model

PRESETS = {
    "bmojo": dict(eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4),
    "bmojo_fifo_gqa": dict(eidetic_capacity=3, eidetic_per_chunk=1, eviction="fifo", n_kv_heads=2),
    "bmojo_f": dict(),
    "swa": dict(),
    "mamba2": dict(),
    "jamba": dict(),  # ["bmojo", "mamba2"] interleaved
    # layer v2 (spec §2.1): fading offset δ (w = 8) and the gated SSM bypass
    "bmojo_d0": dict(eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4, fading_offset=0),
    "bmojo_d1_gated": dict(eidetic_capacity=3, eidetic_per_chunk=1, fading_offset=1, ssm_bypass="gated"),
    "bmojo_d7": dict(eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4, fading_offset=7, fading_window=5),
    "bmojo_d8_gated": dict(eidetic_capacity=4, eidetic_per_chunk=2, fading_offset=8, ssm_bypass="gated"),
    "bmojo_f_d0": dict(fading_offset=0),
    "bmojo_f_d3_gated": dict(fading_offset=3, fading_window=3, ssm_bypass="gated"),
}
DTYPES = [torch.float64, torch.float32]
T = 50


def build(name, dtype):
    overrides = dict(PRESETS[name])
    preset = ["bmojo", "mamba2"] if name == "jamba" else name.split("_fifo")[0].split("_d")[0]
    model = small_model(preset, dtype=dtype, **overrides)
    if name.startswith("bmojo") and not name.startswith("bmojo_f"):
        assert all(b.mixer.cfg.eidetic_capacity > 0 for b in model.blocks)
    for block in model.blocks:
        cfg = block.mixer.cfg
        assert (cfg.fading_offset, cfg.ssm_bypass) == (
            overrides.get("fading_offset"),
            overrides.get("ssm_bypass", "none"),
        )
        if cfg.ssm_bypass == "gated":  # perturbed away from its zero init, so the bypass matters
            assert block.mixer.bypass_gate.abs().min() > 0
    return model


def run_steps(model, ids, state=None, first_logits=None):
    outs = [] if first_logits is None else [first_logits]
    if state is None:
        state = model.init_state(ids.shape[0])
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        outs.append(logits[:, None])
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(PRESETS))
def test_forward_equals_steps(name, dtype):
    model = build(name, dtype)
    ids = torch.randint(0, model.config.vocab_size, (2, T))
    with torch.no_grad():
        full = model(ids)
        stepped, state = run_steps(model, ids)
    assert state.position == T
    assert_close(stepped, full, TOL[dtype], f"{name} step vs forward")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(PRESETS))
def test_forward_equals_random_prefill_splits(name, dtype):
    model = build(name, dtype)
    ids = torch.randint(0, model.config.vocab_size, (2, T))
    rng = random.Random(1234)
    with torch.no_grad():
        full = model(ids)
        for trial in range(3):
            # Random piece lengths (1 … 2w+3) covering a random prefix, then single steps.
            n_prefill = rng.randrange(1, T)
            cuts, pos = [], 0
            while pos < n_prefill:
                pos = min(n_prefill, pos + rng.randint(1, 19))
                cuts.append(pos)
            state = None if trial % 2 == 0 else model.init_state(2)
            outs, start = [], 0
            for end in cuts:
                logits, state = model.prefill(ids[:, start:end], state)
                outs.append(logits)
                start = end
            assert state.position == n_prefill
            rest, state = run_steps(model, ids[:, n_prefill:], state)
            got = torch.cat([*outs, rest], 1)
            assert_close(got, full, TOL[dtype], f"{name} pieces {cuts} + steps")


@pytest.mark.parametrize("name", ["bmojo", "bmojo_f", "swa", "bmojo_d0", "bmojo_f_d3_gated"])
def test_prefill_batch_one(name):
    model = build(name, torch.float64)
    ids = torch.randint(0, model.config.vocab_size, (1, 37))
    with torch.no_grad():
        full = model(ids)
        a, state = model.prefill(ids[:, :13])
        b, _ = model.prefill(ids[:, 13:], state)
    assert_close(torch.cat([a, b], 1), full, TOL[torch.float64], "prefill split, batch 1")


@pytest.mark.parametrize("name", ["bmojo", "bmojo_d0", "bmojo_d1_gated"])
def test_mixer_forward_equals_step_with_gradients(name):
    """Gradients of the recurrent path equal those of the parallel path (one bmojo mixer)."""
    model = build(name, torch.float64)
    mixer: BMojoMixer = model.blocks[0].mixer
    x = torch.randn(2, 21, 32, dtype=torch.float64)
    g = torch.randn(2, 21, 32, dtype=torch.float64)
    params = [p for p in mixer.parameters()]
    out, _ = mixer(x)
    grads_par = torch.autograd.grad((out * g).sum(), params, allow_unused=True)
    state = mixer.init_state(2)
    outs = []
    y, state = mixer(x[:, :6], state, 0)
    outs.append(y)
    for t in range(6, 21):
        y, state = mixer.step(x[:, t], state, t)
        outs.append(y[:, None])
    rec = torch.cat(outs, 1)
    assert_close(rec, out, 1e-10, "mixer output")
    grads_rec = torch.autograd.grad((rec * g).sum(), params, allow_unused=True)
    names = [n for n, _ in mixer.named_parameters()]
    for n, a, b in zip(names, grads_rec, grads_par):
        assert (a is None) == (b is None), n
        if a is not None:
            assert_close(a, b, 1e-10, f"grad {n}")


# ----- rows at different positions (DecodeState.positions) -----

LENGTHS = (3, 11, 6, 17)  # four different prompt lengths: every row at its own position


def left_padded(model, lengths=LENGTHS, pad_id=0):
    rows = [torch.randint(1, model.config.vocab_size, (n,)) for n in lengths]
    T = max(lengths)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = r
    return rows, ids, torch.tensor([T - n for n in lengths])


@pytest.mark.parametrize("name", ["bmojo", "bmojo_fifo_gqa", "bmojo_d0", "bmojo_d1_gated", "bmojo_f", "swa", "jamba"])
def test_left_padded_batch_decodes_in_one_step_per_token_like_each_row_alone(name):
    """One prefill of a left-padded batch of 4 prompts, then one ``step`` per token for the whole
    batch (rows at 4 different positions), equals each row prefilled and stepped alone."""
    model = build(name, torch.float64)
    rows, ids, pad = left_padded(model)
    n_new = 2 * model.config.layers[0].window + 3  # crosses windows and eidetic chunks
    new = torch.randint(1, model.config.vocab_size, (len(rows), n_new))
    with torch.no_grad():
        logits, state = model.prefill(ids, pad=pad)
        assert state.positions.tolist() == list(LENGTHS)
        batch_steps, state = run_steps(model, new, state)
        assert state.positions.tolist() == [n + n_new for n in LENGTHS]
        for i, r in enumerate(rows):
            alone_logits, alone = model.prefill(r[None])
            assert_close(logits[i, pad[i] :], alone_logits[0], TOL[torch.float64], f"row {i} prefill")
            alone_steps, alone = run_steps(model, new[i : i + 1], alone)
            assert_close(batch_steps[i], alone_steps[0], TOL[torch.float64], f"row {i} steps")
            for got, want in zip(state.select(torch.tensor([i])).layers, alone.layers):
                for key in want:
                    if key == "eidetic.pending":  # slots past position % chunk are scratch
                        continue
                    g, w = got[key], want[key]
                    if g.is_floating_point():  # empty slots score -inf in both
                        assert torch.equal(torch.isinf(g), torch.isinf(w)), f"row {i} state {key}"
                        g, w = g.nan_to_num(posinf=0, neginf=0), w.nan_to_num(posinf=0, neginf=0)
                    assert_close(g, w, TOL[torch.float64], f"row {i} state {key}")


def test_left_padded_forward_equals_each_row_alone():
    model = build("bmojo_d1_gated", torch.float64)
    rows, ids, pad = left_padded(model)
    with torch.no_grad():
        full = model(ids, pad=pad)
        for i, r in enumerate(rows):
            assert_close(full[i, pad[i] :], model(r[None])[0], TOL[torch.float64], f"row {i}")


def test_rows_at_different_positions_merge_and_split():
    """States of separately run rows, stacked with ``DecodeState.cat``, step together exactly."""
    model = build("bmojo", torch.float64)
    a_ids, b_ids = torch.randint(0, 61, (1, 13)), torch.randint(0, 61, (2, 4))
    nxt = torch.randint(0, 61, (3, 9))
    with torch.no_grad():
        _, a = model.prefill(a_ids)
        _, b = model.prefill(b_ids)
        merged = type(a).cat([a, b])
        assert merged.positions.tolist() == [13, 4, 4]
        together, _ = run_steps(model, nxt, merged)
        apart = torch.cat([run_steps(model, nxt[:1], a)[0], run_steps(model, nxt[1:], b)[0]])
    assert_close(together, apart, TOL[torch.float64], "merged state")


def test_pad_is_checked():
    model = build("bmojo", torch.float64)
    ids = torch.randint(0, 61, (2, 5))
    _, state = model.prefill(ids)
    with pytest.raises(ValueError, match=r"^pad: expected 0 for row 0, which already sits at position 5"):
        model.prefill(ids, state, pad=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"^pad: expected counts of leading pad columns in \[0, 5\]"):
        model.prefill(ids, pad=torch.tensor([6, 0]))
    with pytest.raises(ValueError, match=r"^pad: expected an integer tensor"):
        model.prefill(ids, pad=torch.tensor([1.0, 0.0]))
