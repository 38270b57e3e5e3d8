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
