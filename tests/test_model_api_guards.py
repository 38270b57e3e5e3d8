"""The model-level decode API under less common uses: decoding under autocast, the memory a state
returned by ``prefill`` keeps alive, ``generate(pad=...)`` and its argument checks, and the
messages of ``DecodeState.load``/``select`` and of the state check."""

from __future__ import annotations

import pytest
import torch
from bmojo import StateError
from conftest import TOL, assert_close, rel_err, small_model

PRESETS = {
    "bmojo": ("bmojo", dict(eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4)),
    "bmojo_gated": ("bmojo_gated", dict(eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4)),
    "bmojo_f": ("bmojo_f", {}),
    "swa": ("swa", {}),
    "mamba2": ("mamba2", {}),
    "transformer": ("transformer", dict(context=16)),
    "jamba": (["bmojo", "mamba2"], {}),
}
SSM_PRESETS = ["bmojo", "bmojo_gated", "bmojo_f", "mamba2", "jamba"]


def build(name, dtype=torch.float64):
    preset, overrides = PRESETS[name]
    return small_model(preset, dtype=dtype, **overrides)


def dtypes(state):
    return [{k: t.dtype for k, t in layer.items()} for layer in state.layers]


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


# ----- decoding under autocast -----
@pytest.mark.parametrize("name", SSM_PRESETS)
def test_decode_under_autocast_keeps_the_state_dtypes(name, tmp_path):
    """Under bf16 autocast the conv and the fading-key projection compute in bfloat16; the state a
    layer returns still has init_state's dtypes, so prefill(state), step, generate and save_state
    accept it, and the logits stay close to float32's."""
    model = build(name, dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    want = dtypes(model.init_state(2))
    with torch.no_grad():
        ref, ref_state = model.prefill(ids[:, :8])
        ref_step, _ = model.step(ids[:, 8], ref_state)
        with _bf16():
            logits, state = model.prefill(ids[:, :8])
            assert dtypes(state) == want
            _, state2 = model.prefill(ids[:, 8:], state)
            assert dtypes(state2) == want
            step, state3 = model.step(ids[:, 8], state)
            assert dtypes(state3) == want
            new = model.generate(ids, 3)
            assert new.shape == (2, 3)
        model.save_state(state, tmp_path / "s.st")
        loaded = model.load_state(tmp_path / "s.st")
        assert dtypes(loaded) == want
        # outside autocast the float32 model continues the autocast state
        again, _ = model.step(ids[:, 8], loaded)
    assert rel_err(logits.float(), ref) < 0.05
    assert rel_err(step.float(), ref_step) < 0.05
    assert rel_err(again, ref_step) < 0.05


# ----- what a state keeps alive -----
def held_bytes(state) -> int:
    """Bytes of every storage the state's tensors keep alive (a storage shared by several counted once)."""
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for lay in state.layers for t in lay.values()
    }
    return sum(storages.values())


@pytest.mark.parametrize("name", list(PRESETS))
def test_prefill_state_owns_compact_storage(name):
    """A state after a long prefill holds its fixed-size tensors only, not views into the
    prefill's (batch, T, ...) buffers: decode memory stays flat in the prompt length."""
    model = build(name, dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 200))
    with torch.no_grad():
        _, state = model.prefill(ids)
        assert held_bytes(state) <= 2 * state.nbytes(), (held_bytes(state), state.nbytes())
        _, state = model.prefill(ids[:, :50], state)  # continuing a state, too
        assert held_bytes(state) <= 2 * state.nbytes(), (held_bytes(state), state.nbytes())


@pytest.mark.parametrize("name", ["bmojo", "bmojo_f"])
def test_gradient_still_flows_through_a_prefill_state(name):
    """The compact copies are differentiable: the gradient of a second piece's logits through the
    state of the first equals the gradient of the same logits from one forward pass."""
    model = build(name)
    ids = torch.randint(0, model.config.vocab_size, (2, 30))
    w = torch.randn(2, 10, model.config.vocab_size, dtype=torch.float64)
    _, state = model.prefill(ids[:, :20])
    logits, _ = model.prefill(ids[:, 20:], state)
    split = torch.autograd.grad((logits * w).sum(), model.embed.weight)[0]
    whole = torch.autograd.grad((model(ids)[:, 20:] * w).sum(), model.embed.weight)[0]
    assert_close(split, whole, 1e-8, "embedding gradient through the state")
    assert split[ids[:, :20].flatten()].abs().sum() > 0  # tokens of the first piece get gradient


# ----- generate -----
@pytest.mark.parametrize("name", ["bmojo", "bmojo_f", "mamba2", "swa"])
def test_generate_with_pad_equals_each_row_alone(name):
    model = build(name)
    V = model.config.vocab_size
    lens = [9, 5, 1]
    T = max(lens)
    rows = [torch.randint(0, V, (L,)) for L in lens]
    padded = torch.zeros(len(lens), T, dtype=torch.long)
    for r, row in enumerate(rows):
        padded[r, T - len(row) :] = row
    pad = torch.tensor([T - L for L in lens])
    got = model.generate(padded, 6, pad=pad)
    for r, row in enumerate(rows):
        assert torch.equal(got[r], model.generate(row[None], 6)[0]), f"row {r}"


def test_generate_checks_pad_before_prefill(monkeypatch):
    model = build("bmojo")
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    monkeypatch.setattr(model, "prefill", lambda *a, **k: pytest.fail("prefill ran before the check"))
    with pytest.raises(ValueError, match=r"pad: expected an integer tensor, got torch.float32"):
        model.generate(ids, 2, pad=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"pad: expected shape \(2,\)"):
        model.generate(ids, 2, pad=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"pad: expected counts .* in \[0, 5\], got \[6, 0\]"):
        model.generate(ids, 2, pad=torch.tensor([6, 0]))
    with pytest.raises(
        ValueError, match=r"pad: expected counts in \[0, 4\] \(each row needs a real token\), got \[5, 0\]"
    ):
        model.generate(ids, 2, pad=torch.tensor([5, 0]))


def test_generate_checks_the_generator_first(monkeypatch):
    model = build("bmojo")
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    monkeypatch.setattr(model, "prefill", lambda *a, **k: pytest.fail("prefill ran before the check"))
    for bad in (0, "seed", torch.tensor(1)):
        with pytest.raises(ValueError, match=r"generator: expected None or a torch.Generator, got "):
            model.generate(ids, 2, temperature=1.0, generator=bad)


# ----- state messages -----
def test_load_names_the_differing_config_fields(tmp_path):
    model = build("bmojo")
    _, state = model.prefill(torch.randint(0, model.config.vocab_size, (2, 7)))
    model.save_state(state, tmp_path / "s.st")
    cfg = model.config
    other = small_model("bmojo", eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4, rope_theta=500.0)
    assert other.config != cfg and other.config.replace(layers=cfg.layers) == cfg  # only the layers' rope_theta
    with pytest.raises(StateError, match=r"s\.st: expected a state saved for this model's config, got a different "
                       r"config \(saved vs this model's: layers\[0\]\.rope_theta: 10000\.0 vs 500\.0; "
                       r"layers\[1\]\.rope_theta"):  # fmt: skip
        other.load_state(tmp_path / "s.st")


@pytest.mark.parametrize("rows", [0, None, 1.5])
def test_select_refuses_a_non_sequence(rows):
    model = build("swa")
    state = model.init_state(2)
    with pytest.raises(StateError, match=r"rows: expected a 1-d sequence of integer row indices, got "):
        state.select(rows)


def test_state_check_names_a_dtype_mismatch():
    model = build("bmojo", dtype=torch.float32)
    tok = torch.tensor([1, 2])
    with pytest.raises(StateError, match=r"expected \(.*\) torch.float32 \(a state of another dtype than the "
                       r"model's\?\), got \(.*\) torch.float64"):  # fmt: skip
        model.step(tok, model.init_state(2, dtype=torch.float64))
    with pytest.raises(StateError, match=r"another model config or batch size\?"):  # a shape mismatch
        wider = small_model(
            "bmojo", dtype=torch.float32, eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4, window=16
        )
        wider.step(tok, model.init_state(2))


def test_float32_decode_is_unchanged():
    """The plain float32 path still meets spec §5's bound (prefill + steps == forward)."""
    model = build("bmojo", dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.no_grad():
        ref = model(ids)
        logits, state = model.prefill(ids[:, :9])
        outs = [logits]
        for t in range(9, 24):
            step, state = model.step(ids[:, t], state)
            outs.append(step[:, None])
    assert_close(torch.cat(outs, 1), ref, TOL[torch.float32], "prefill + step vs forward")
