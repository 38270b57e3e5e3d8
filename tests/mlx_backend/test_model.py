"""The native MLX model against the PyTorch ``BMojoLM`` it loads (issue 12, point 4): the same
``save_pretrained`` files, logits equal in float32 for the parallel forward, step-by-step decoding
and prefill splits (float64 much tighter), the same greedy tokens, the same bounded state size;
checkpoint errors; the CLI; and no torch/transformers import on the inference path. Configs cover
every layer kind and the layer-v2 features (fading offset δ, gated SSM bypass)."""

from __future__ import annotations

import json
import subprocess
import sys

import bmojo_mlx
import mlx.core as mx
import numpy as np
import pytest
import torch
from bmojo import BMojoLM, LayerConfig, ModelConfig
from bmojo.config import ConfigError
from bmojo_mlx import cli
from bmojo_mlx.loading import CheckpointError

SMALL = dict(d_model=32, window=8, n_heads=4, ssm_head_dim=16, ssm_chunk_size=8, ssm_state_size=8, attn_block_size=4)
CONFIGS = {
    # every layer kind, GQA, tied everything
    "mixed": ModelConfig.preset(
        ["bmojo", "swa", "mamba2", "bmojo_f"], vocab_size=256, n_layers=4, n_kv_heads=2, **SMALL
    ),
    # untied head and fading projections, qk-norm, fifo eviction, eidetic chunk < window, no MLP
    "variants": ModelConfig.preset("bmojo", vocab_size=256, n_layers=2, **SMALL).replace(
        tie_embeddings=False,
        layers=tuple(
            layer.replace(
                tie_fading_projections=False, qk_norm=True, eviction="fifo", eidetic_chunk=4, mlp=i == 0, d_conv=3
            )
            for i, layer in enumerate(ModelConfig.preset("bmojo", vocab_size=256, n_layers=2, **SMALL).layers)
        ),
    ),
    # layer v2 (spec §2.1): fading offsets δ = 0, 3 (< w = 8) and the gated SSM bypass
    "v2": ModelConfig(
        vocab_size=256,
        d_model=32,
        layers=(
            LayerConfig.preset("bmojo", fading_offset=0, ssm_bypass="gated", **SMALL),
            LayerConfig.preset("bmojo_f", fading_offset=3, **SMALL),
            LayerConfig.preset("bmojo", fading_offset=5, eidetic_chunk=4, **SMALL),
        ),
    ),
}
T = 41  # crosses windows, eidetic chunks, SSM chunks and attention blocks several times


def _make(name, directory):
    torch.manual_seed(0)
    model = BMojoLM(CONFIGS[name]).eval()
    with torch.no_grad():  # move away from the tiny init so every path changes the logits visibly
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.15)
    model.save_pretrained(directory)
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    return _make(request.param, directory), bmojo_mlx.load(directory), directory


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(1))


def rel(a, e) -> float:
    a, e = np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64)
    return float(np.abs(a - e).max() / np.abs(e).max())


def test_parallel_logits_equal(pair, ids):
    torch_model, mlx_model, _ = pair
    with torch.no_grad():
        ref = torch_model(ids).numpy()
    out = np.array(mlx_model(mx.array(ids.numpy())))
    assert rel(out, ref) < 1e-4, rel(out, ref)


@pytest.mark.parametrize("split", [1, 13, T - 1])
def test_prefill_then_steps_equal(pair, ids, split):
    torch_model, mlx_model, _ = pair
    with torch.no_grad():
        ref = torch_model(ids).numpy()
    logits, state = mlx_model.prefill(mx.array(ids[:, :split].numpy()))
    outs = [np.array(logits)]
    size = state.nbytes()
    for t in range(split, T):
        step, state = mlx_model.step(mx.array(ids[:, t].numpy()), state)
        outs.append(np.array(step)[:, None])
        assert state.nbytes() == size, "the decode state must not grow"
    assert state.position == T
    assert rel(np.concatenate(outs, 1), ref) < 1e-4
    assert size == torch_model.init_state(2).nbytes(), "same bounded state as the torch model"


def test_prefill_state_holds_only_its_own_bytes():
    """The state after a long prefill owns its arrays: MLX slices share their base buffer, so a
    window / conv state / k_pred sliced out of the prefill's arrays would keep O(T) memory alive
    (6.8 MB for this 16.6 KB state at T = 4096 before the fix), against the bounded state promised."""
    import gc

    model = bmojo_mlx.BMojoMLX(CONFIGS["mixed"])
    mx.eval(model.parameters())
    gc.collect()
    base = mx.get_active_memory()
    ids = mx.array(np.random.default_rng(0).integers(0, 256, (1, 4096)))
    logits, state = model.prefill(ids)
    mx.eval(state.layers)
    del logits, ids
    gc.collect()
    held = mx.get_active_memory() - base
    assert held <= 2 * state.nbytes() + (1 << 16), f"state {state.nbytes()} bytes, {held} bytes held"


def test_float64_is_tight(pair, ids):
    torch_model, _, directory = pair
    mlx64 = bmojo_mlx.load(directory, dtype=mx.float64)
    with torch.no_grad():
        ref = torch_model.double()(ids).numpy()
        torch_model.float()
    logits, state = mlx64.prefill(mx.array(ids[:, :20].numpy()))
    outs = [np.array(logits)]
    for t in range(20, T):
        step, state = mlx64.step(mx.array(ids[:, t].numpy()), state)
        outs.append(np.array(step)[:, None])
    assert rel(np.array(mlx64(mx.array(ids.numpy()))), ref) < 1e-10
    assert rel(np.concatenate(outs, 1), ref) < 1e-10


def test_greedy_tokens_equal(pair, ids):
    torch_model, mlx_model, _ = pair
    want = torch_model.generate(ids[:1, :10], 12)[0].tolist()
    got = [r.token for r in bmojo_mlx.stream_generate(mlx_model, ids[0, :10].tolist(), max_tokens=12)]
    assert got == want


def test_cli_streams_the_greedy_text(pair, capsys):
    _, mlx_model, directory = pair
    assert cli.main(["generate", "--model", str(directory), "--prompt", "hello", "--max-tokens", "8"]) == 0
    out = capsys.readouterr()
    assert out.out == bmojo_mlx.generate(mlx_model, "hello", max_tokens=8) + "\n"
    assert "tokens/s" in out.err and "decode state" in out.err


def test_inference_path_imports_neither_torch_nor_transformers(pair):
    directory = pair[2]
    code = (
        "import sys\n"
        "from bmojo_mlx import cli\n"
        f"cli.main(['generate', '--model', {str(directory)!r}, '--prompt', 'ab', '--max-tokens', '3'])\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_cli_errors_are_one_line(pair, tmp_path, capsys):
    """As core's ``bmojo``: a bad flag is ``bmojo-mlx generate: error: ...`` naming it, exit 2, no
    traceback; a reader closing the pipe ends the run with 141, quietly."""
    _, _, directory = pair
    assert cli.main(["generate", "--model", str(directory), "--prompt", "a", "--max-tokens", "0"]) == 2
    assert capsys.readouterr().err == "bmojo-mlx generate: error: max_tokens: expected an int >= 1, got 0\n"
    assert cli.main(["generate", "--model", str(tmp_path / "none"), "--prompt", "a"]) == 2
    assert capsys.readouterr().err.startswith("bmojo-mlx generate: error: --model: expected a directory")
    code = (
        "import sys; from bmojo_mlx import cli; "
        f"sys.exit(cli.main(['generate', '--model', {str(directory)!r}, '--prompt', 'a', '--max-tokens', '2000']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(1)
    proc.stdout.close()  # the reader goes away mid-stream (`| head -c 1`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


# ----- checkpoint errors -----
def test_checkpoint_errors(tmp_path):
    _make("mixed", tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"expected model\.safetensors"):
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
        bmojo_mlx.load(tmp_path / "b")
    # a config that does not describe the weights: the stored config's fields, or (a file without
    # one) named tensors and shapes
    other = CONFIGS["mixed"].replace(vocab_size=128)
    (tmp_path / "a" / "config.json").write_text(other.to_json())
    with pytest.raises(CheckpointError, match=r"saved for another config .*vocab_size: 256 vs 128\)"):
        bmojo_mlx.load(tmp_path / "a")
    weights = tmp_path / "a" / "model.safetensors"
    original = weights.read_bytes()
    n = int.from_bytes(original[:8], "little")
    header = json.loads(original[8 : 8 + n])
    del header["__metadata__"]
    text = json.dumps(header).encode()
    weights.write_bytes(len(text).to_bytes(8, "little") + text + original[8 + n :])
    with pytest.raises(CheckpointError, match=r"embed.weight: expected shape \(128, 32\), got \(256, 32\)"):
        bmojo_mlx.load(tmp_path / "a")
    weights.write_bytes(original)
    data = json.loads(CONFIGS["mixed"].to_json())
    data["layers"][0]["windw"] = 3
    (tmp_path / "a" / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="windw"):
        bmojo_mlx.load(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(CONFIGS["mixed"].to_json())
    weights.write_bytes(weights.read_bytes()[:-16])  # truncated
    with pytest.raises(CheckpointError, match="expected data_offsets spanning"):
        bmojo_mlx.load(tmp_path / "a")
    weights.write_bytes(b"\xff" * 16)
    with pytest.raises(CheckpointError, match="expected a header length"):
        bmojo_mlx.load(tmp_path / "a")


def test_model_argument_errors(pair):
    _, mlx_model, _ = pair
    with pytest.raises(ValueError, match=r"input_ids: expected ids in \[0, vocab_size=256\), got id 256"):
        mlx_model(mx.array([[1, 256]]))
    with pytest.raises(ValueError, match="input_ids: expected an integer array"):
        mlx_model(mx.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="state: expected batch size 1"):
        mlx_model.step(mx.array([1]), mlx_model.init_state(2))
    with pytest.raises(ValueError, match="max_tokens: expected an int >= 1"):
        bmojo_mlx.generate(mlx_model, "a", max_tokens=0)


def test_state_of_another_model_refused(pair):
    """As core's ``DecodeState.check_like``: a state whose keys, shapes or dtypes are not this
    model's ``init_state``'s is refused by name, never continued (a smaller window's state once
    gave wrong logits and shrank a row per step)."""
    _, mlx_model, _ = pair
    config = mlx_model.config
    other = bmojo_mlx.BMojoMLX(
        config.replace(layers=tuple(layer.replace(window=layer.window * 2) for layer in config.layers))
    )
    token = mx.array([1])
    with pytest.raises(ValueError, match=r"state\.layers\[\d+\]\.\S+: expected .*another model config"):
        mlx_model.step(token, other.init_state(1))
    with pytest.raises(ValueError, match=r"state\.layers\[\d+\]\.\S+: expected .*float32.*got .*float16"):
        mlx_model.prefill(mx.array([[1, 2]]), mlx_model.init_state(1, dtype=mx.float16))
    state = mlx_model.init_state(1)
    key = sorted(state.layers[0])[0]
    del state.layers[0][key]
    with pytest.raises(ValueError, match=rf"state\.layers\[0\]: expected arrays .*{key}"):
        mlx_model.step(token, state)
    for bad in (-1, 1.5, True):
        state = mlx_model.init_state(1)
        state.position = bad
        with pytest.raises(ValueError, match=r"state\.position: expected an int >= 0"):
            mlx_model.step(token, state)
    mlx_model.step(token, mlx_model.init_state(1))  # its own state still goes through
