"""The decode state (spec §5): bounded size, safetensors round trip into a fresh process, and
clear failures when a state or checkpoint does not fit the model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from bmojo import BMojoLM, StateError
from conftest import TOL, assert_close, small_model
from safetensors.torch import load_file, save_file

PRESETS = {
    "bmojo": ("bmojo", dict(eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4)),
    "bmojo_f": ("bmojo_f", {}),
    "swa": ("swa", {}),
    "mamba2": ("mamba2", {}),
    "jamba": (["bmojo", "mamba2"], {}),
}


def build(name, dtype=torch.float64):
    preset, overrides = PRESETS[name]
    return small_model(preset, dtype=dtype, **overrides)


def signature(state):
    return [{k: (tuple(t.shape), t.dtype) for k, t in layer.items()} for layer in state.layers]


@pytest.mark.parametrize("name", list(PRESETS))
def test_state_size_is_bounded(name):
    model = build(name)
    # w + f + M of the widest layer (the SSM chunk for a pure Mamba-2 model, whose w + f + M = 0)
    span = max(max(c.window + c.fading_window + c.eidetic_capacity for c in model.config.layers), 8)
    init = model.init_state(2)
    sizes, sigs = [], []
    with torch.no_grad():
        for mult in (1, 4, 16):
            ids = torch.randint(0, model.config.vocab_size, (2, mult * span))
            _, state = model.prefill(ids)
            # and a few single steps on top, so the step path is covered as well
            for t in range(3):
                _, state = model.step(ids[:, -t], state)
            assert state.position == mult * span + 3
            sizes.append(state.nbytes())
            sigs.append(signature(state))
    assert sizes[0] == sizes[1] == sizes[2] == init.nbytes(), sizes
    assert sigs[0] == sigs[1] == sigs[2] == signature(init)
    assert init.nbytes() > 0


def test_state_holds_what_the_spec_lists():
    """Spec §5: SSM state (Hs×P×N), conv state (d_conv-1 rows), last w raw K/V, last w+f fading
    K/V, M eidetic K/V with positions and scores, the current chunk's scores."""
    model = build("bmojo")
    c = model.config.layers[0]
    layer = model.init_state(3).layers[0]
    assert layer["fading.ssm"].shape == (3, c.ssm_heads, c.ssm_head_dim, c.ssm_state_size)
    assert layer["fading.conv"].shape[:2] == (3, c.d_conv - 1)
    kv = (c.kv_heads, c.dh)
    assert layer["window.k"].shape == layer["window.v"].shape == (3, c.window, *kv)
    assert layer["fading_window.k"].shape == (3, c.window + c.fading_window, *kv)
    assert layer["eidetic.k"].shape == layer["eidetic.v"].shape == (3, c.eidetic_capacity, *kv)
    assert layer["eidetic.pos"].shape == layer["eidetic.score"].shape == (3, c.eidetic_capacity)
    assert layer["eidetic.pending"].shape == (3, c.chunk)


@pytest.mark.parametrize("delta", [0, 1, 7, 8])
def test_fading_cache_keeps_delta_plus_f_rows(delta):
    """Spec §2.1/§5: the fading cache holds the last δ+f fading K/V, never more than v1's w+f."""
    model = small_model("bmojo", eidetic_capacity=4, eidetic_per_chunk=2, fading_offset=delta, fading_window=5)
    v1 = small_model("bmojo", eidetic_capacity=4, eidetic_per_chunk=2, fading_window=5)
    c = model.config.layers[0]
    layer = model.init_state(2).layers[0]
    assert layer["fading_window.k"].shape[1] == layer["fading_window.v"].shape[1] == delta + c.fading_window
    assert model.init_state(2).nbytes() <= v1.init_state(2).nbytes()
    assert (model.init_state(2).nbytes() == v1.init_state(2).nbytes()) == (delta == c.window)


SUBPROCESS = textwrap.dedent(
    """
    import sys
    import torch
    from safetensors.torch import load_file, save_file
    from bmojo import BMojoLM

    torch.set_num_threads(1)
    work, dtype = sys.argv[1], getattr(torch, sys.argv[2])
    model = BMojoLM.from_pretrained(work + "/model", dtype=dtype).eval()
    state = model.load_state(work + "/state.safetensors")
    ids = load_file(work + "/ids.safetensors")["rest"]
    with torch.no_grad():
        logits, state = model.prefill(ids[:, :5], state)
        outs = [logits]
        for t in range(5, ids.shape[1]):
            step_logits, state = model.step(ids[:, t], state)
            outs.append(step_logits[:, None])
    save_file({"logits": torch.cat(outs, 1).contiguous(), "position": torch.tensor(state.position)},
              work + "/out.safetensors")
    """
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", ["bmojo", "jamba"])
def test_save_load_in_fresh_process_continues_identically(tmp_path, name, dtype):
    model = build(name, dtype)
    T, cut = 60, 23
    ids = torch.randint(0, model.config.vocab_size, (2, T))
    with torch.no_grad():
        full = model(ids)
        a, state = model.prefill(ids[:, :10])
        b, state = model.prefill(ids[:, 10:cut], state)
        model.save_state(state, tmp_path / "state.safetensors")
        model.save_pretrained(tmp_path / "model")
        save_file({"rest": ids[:, cut:].contiguous()}, str(tmp_path / "ids.safetensors"))
        # Never stopping: the same calls in this process.
        c, cont = model.prefill(ids[:, cut : cut + 5], state)
        outs = [c]
        for t in range(cut + 5, T):
            logits, cont = model.step(ids[:, t], cont)
            outs.append(logits[:, None])
        expected = torch.cat(outs, 1)
    assert_close(torch.cat([a, b, expected], 1), full, TOL[dtype], "in-process continuation")
    del state, cont  # nothing from this process reaches the subprocess except the files

    proc = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(tmp_path), str(dtype).removeprefix("torch.")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = load_file(str(tmp_path / "out.safetensors"))
    assert int(out["position"]) == T
    assert out["logits"].dtype == dtype
    assert torch.equal(out["logits"], expected), f"max diff {(out['logits'] - expected).abs().max().item():.3e}"


def test_from_pretrained_float64_keeps_every_bit(tmp_path):
    """Weights that are not float32-representable survive save_pretrained/from_pretrained."""
    model = build("bmojo", torch.float64)
    model.save_pretrained(tmp_path)
    loaded = BMojoLM.from_pretrained(tmp_path, dtype=torch.float64)
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert q.dtype == torch.float64
        assert torch.equal(p, q), name


def test_from_pretrained_dtype_mismatch_is_explicit(tmp_path):
    build("swa", torch.float64).save_pretrained(tmp_path)
    with pytest.raises(StateError, match="dtype"):
        BMojoLM.from_pretrained(tmp_path)  # float64 checkpoint, float32 model, no dtype= given


def test_from_pretrained_dtype_converts_floats_only_and_arguments_are_checked_first(tmp_path):
    model = build("swa", torch.float32)
    model.save_pretrained(tmp_path)
    for kw, message in [
        (dict(dtype="float16"), r"dtype: expected None or a floating torch.dtype"),
        (dict(dtype=torch.int32), r"dtype: expected None or a floating torch.dtype"),
        (dict(device="nonsense"), r"device: expected None or a torch device"),
    ]:
        with pytest.raises(ValueError, match=message):
            BMojoLM.from_pretrained(tmp_path / "not-even-there", **kw)  # before any file is opened
    weights = load_file(str(tmp_path / "model.safetensors"))
    name = "embed.weight"
    weights[name] = (weights[name] * 100).long()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file(weights, str(tmp_path / "model.safetensors"), metadata=meta)
    with pytest.raises(
        StateError, match=rf"{name}: expected a floating dtype \(dtype= converts between those\), got I64"
    ):
        BMojoLM.from_pretrained(tmp_path, dtype=torch.float32)


def test_load_state_into_other_config_fails(tmp_path):
    model = build("bmojo")
    _, state = model.prefill(torch.randint(0, model.config.vocab_size, (1, 9)))
    model.save_state(state, tmp_path / "s.safetensors")
    assert model.load_state(tmp_path / "s.safetensors").position == 9  # the right model loads it
    for other in (build("bmojo_f"), small_model("bmojo", eidetic_capacity=4, eidetic_per_chunk=2, window=6)):
        with pytest.raises(StateError, match="config"):
            other.load_state(tmp_path / "s.safetensors")


def test_load_tampered_state_fails(tmp_path):
    model = build("bmojo_f")
    _, state = model.prefill(torch.randint(0, model.config.vocab_size, (1, 9)))
    path = tmp_path / "s.safetensors"
    model.save_state(state, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = "layers.0.window.k"
    bad = dict(tensors)
    bad[key] = tensors[key][:, :-1].contiguous()
    save_file(bad, str(path), metadata=meta)
    with pytest.raises(StateError, match=r"layers\[0\]\.window\.k"):
        model.load_state(path)
    bad = {k: v for k, v in tensors.items() if k != key}
    save_file(bad, str(path), metadata=meta)
    with pytest.raises(StateError, match=r"layers\[0\]"):
        model.load_state(path)
    with pytest.raises(StateError, match="path"):
        model.load_state(tmp_path / "missing.safetensors")


def test_from_pretrained_tampered_checkpoint_fails(tmp_path):
    model = build("bmojo")
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(str(weights))
    name = "blocks.0.mixer.q_proj.weight"
    assert name in tensors
    wrong = dict(tensors)
    wrong[name] = tensors[name][:-1].contiguous()
    save_file(wrong, str(weights))
    with pytest.raises(StateError, match=r"blocks\.0\.mixer\.q_proj\.weight: expected shape"):
        BMojoLM.from_pretrained(tmp_path, dtype=torch.float64)
    save_file({k: v for k, v in tensors.items() if k != name}, str(weights))
    with pytest.raises(StateError, match=r"missing \['blocks\.0\.mixer\.q_proj\.weight'\]"):
        BMojoLM.from_pretrained(tmp_path, dtype=torch.float64)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        BMojoLM.from_pretrained(tmp_path)


def test_per_row_positions_round_trip(tmp_path):
    """Rows at different positions (a left-padded prefill) save and load with their positions."""
    model = build("bmojo")
    ids = torch.randint(1, model.config.vocab_size, (3, 9))
    with torch.no_grad():
        _, state = model.prefill(ids, pad=torch.tensor([0, 4, 8]))
        model.save_state(state, tmp_path / "s.safetensors")
        back = model.load_state(tmp_path / "s.safetensors")
        assert back.positions.tolist() == [9, 5, 1]
        with pytest.raises(StateError, match=r"^position: expected every row at one position, got \[9, 5, 1\]"):
            back.position
        nxt = torch.randint(1, model.config.vocab_size, (3,))
        assert torch.equal(model.step(nxt, back)[0], model.step(nxt, state)[0])


@pytest.mark.parametrize("version, hint", [("1", "version 1 states hold one position"), ("3", "")])
def test_old_or_unknown_state_version_is_refused(tmp_path, version, hint):
    model = build("bmojo_f")
    _, state = model.prefill(torch.randint(0, model.config.vocab_size, (1, 9)))
    path = tmp_path / "s.safetensors"
    model.save_state(state, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    meta["version"] = version
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(StateError, match=rf"expected state version '2', got '{version}'.*{hint}"):
        model.load_state(path)


def test_state_positions_are_checked():
    from bmojo import DecodeState

    layers = build("bmojo_f").init_state(2).layers
    with pytest.raises(StateError, match=r"^positions: expected 2 rows"):
        DecodeState(torch.tensor([1, 2, 3]), layers)
    with pytest.raises(StateError, match=r"^positions: expected positions >= 0"):
        DecodeState(torch.tensor([1, -2]), layers)
    with pytest.raises(StateError, match=r"^positions: expected an int or a 1-d integer tensor"):
        DecodeState(torch.tensor([1.0, 2.0]), layers)


def test_select_and_cat_refuse_what_they_would_cast_or_drop():
    """select takes 1-d integer row indices in range (a float index was truncated, an index past
    the batch raised a bare IndexError); cat takes states of one model (a 3-layer state was cut to
    2 layers, float32 + float64 was promoted)."""
    model = build("bmojo", torch.float64)
    _, state = model.prefill(torch.randint(0, 32, (2, 5)))
    assert torch.equal(state.select([1, 1, 0]).positions, state.positions[[1, 1, 0]])
    assert state.select([]).positions.numel() == 0 and state.select(torch.tensor([], dtype=torch.long)).batch_size == 0
    for rows, message in [
        (torch.tensor([1.9, 0.2]), r"rows: expected a 1-d sequence of integer row indices, got \(2,\) torch.float32"),
        (torch.tensor([[0, 1]]), r"rows: expected a 1-d sequence of integer row indices, got \(1, 2\)"),
        ([True, False], r"rows: expected a 1-d sequence of integer row indices, got \[True, False\]"),
        ([1.0], r"rows: expected a 1-d sequence of integer row indices, got \[1.0\]"),
        (torch.tensor([True, False]), r"rows: expected a 1-d sequence of integer row indices, got \(2,\) torch.bool"),
        ([5], r"rows: expected indices in \[0, 2\), got \[5\]"),
        ([-1], r"rows: expected indices in \[0, 2\)"),
    ]:
        with pytest.raises(StateError, match=message):
            state.select(rows)
    eidetic = dict(eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=4)
    other = small_model(["bmojo", "bmojo", "mamba2"], dtype=torch.float64, n_layers=3, **eidetic)
    _, three = other.prefill(torch.randint(0, 32, (2, 5)))
    with pytest.raises(StateError, match=r"states\[1\]: expected 2 layer states \(as states\[0\]\), got 3"):
        type(state).cat([state, three])
    single = type(state)(state.positions, [{k: v.float() for k, v in layer.items()} for layer in state.layers])
    with pytest.raises(StateError, match=r"states\[1\]\.layers\[0\]\.[\w.]+: expected rows of .* torch.float64"):
        type(state).cat([state, single])
    both = type(state).cat([state, state])
    assert both.batch_size == 4 and torch.equal(both.select([2, 3]).positions, state.positions)


def test_save_state_names_a_non_state_argument(tmp_path):
    model = build("bmojo_f")
    with pytest.raises(ValueError, match=r"state: expected a DecodeState \(see init_state\), got dict"):
        model.save_state({}, tmp_path / "s.safetensors")
    assert not (tmp_path / "s.safetensors").exists()


def test_state_metadata_config_nested_too_deep_is_a_state_error(tmp_path):
    """json recurses per nesting level: a config of "[" * 100000 is refused by name, not a RecursionError."""
    from safetensors import safe_open

    model = build("bmojo_f")
    _, state = model.prefill(torch.randint(0, model.config.vocab_size, (1, 5)))
    path = tmp_path / "s.safetensors"
    model.save_state(state, path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(path)), str(path), metadata={**meta, "config": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(StateError, match=r"s\.safetensors: metadata config: expected the model config as JSON, got "):
        model.load_state(path)
