"""bmojo generate: sampling filters, streaming with a bounded state, the CLI on a checkpoint."""

from __future__ import annotations

import pytest
import torch
from bmojo import BMojoLM, ModelConfig
from bmojo.cli import main
from bmojo.jobs.generate import encode_prompt, sample_next, stream
from bmojo.jobs.train import run_training


def test_greedy_and_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]]))
    assert sample_next(logits, temperature=0).tolist() == [0, 3]
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, temperature=1.0, top_k=2, generator=gen) for _ in range(400)])
    assert set(draws[:, 0].tolist()) == {0, 1} and set(draws[:, 1].tolist()) == {2, 3}
    # top-p 0.7: the smallest set reaching 0.7 is {0, 1} (0.8) for row 0 and {3, 2} (0.7) for row 1.
    draws = torch.stack([sample_next(logits, temperature=1.0, top_p=0.7, generator=gen) for _ in range(400)])
    assert set(draws[:, 0].tolist()) == {0, 1} and set(draws[:, 1].tolist()) == {2, 3}
    # Unfiltered sampling follows the probabilities (0.5 for token 0; 400 draws: ±0.1 is > 4 sigma).
    draws = torch.stack([sample_next(logits, temperature=1.0, generator=gen) for _ in range(400)])
    assert abs((draws[:, 0] == 0).float().mean().item() - 0.5) < 0.1
    a = sample_next(logits, temperature=0.8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, sample_next(logits, temperature=0.8, generator=torch.Generator().manual_seed(3)))


def test_tiny_temperatures_are_greedy_not_nan():
    """1/T overflows float32 below ~3e-39: the scores are shifted so the top one is 0 first."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]]))
    for t in (1e-30, 1e-40, 1e-300):
        assert sample_next(logits, temperature=t, generator=torch.Generator().manual_seed(0)).tolist() == [0, 3]
    model = BMojoLM(ModelConfig.preset("swa", vocab_size=16, d_model=16, n_layers=1, window=4, n_heads=2))
    ids = torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(1))
    greedy = model.generate(ids, 4)
    assert torch.equal(model.generate(ids, 4, temperature=1e-40, generator=torch.Generator().manual_seed(0)), greedy)


@pytest.mark.parametrize(
    "kw, flag",
    [
        (dict(temperature=-1.0), "--temperature"),
        (dict(temperature=float("inf")), "--temperature: expected a finite number"),
        (dict(top_k=-1), "--top-k"),
        (dict(top_p=0.0), "--top-p"),
    ],
)
def test_sampling_errors_name_the_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        sample_next(torch.zeros(1, 4), **kw)


@pytest.mark.parametrize("arch", ["bmojo", "transformer"])
def test_stream_memory_is_flat_in_the_generated_length(arch):
    kw = dict(d_model=32, n_layers=2, n_heads=4, window=8, ssm_head_dim=16, ssm_chunk_size=8)
    if arch == "transformer":
        kw = dict(d_model=32, n_layers=2, n_heads=4, context=8)
    model = BMojoLM(ModelConfig.preset(arch, **kw)).eval()
    prompt = torch.randint(0, 256, (5,))
    sizes, shapes, tokens = [], None, []
    for i, (tok, state) in enumerate(stream(model, prompt, 300, temperature=0)):
        tokens.append(tok)
        sizes.append(state.nbytes())
        current = [{k: tuple(v.shape) for k, v in layer.items()} for layer in state.layers]
        assert shapes is None or current == shapes, f"state shapes changed at token {i}"
        shapes = current
        assert state.position == 5 + i
    assert len(set(sizes)) == 1 and sizes[0] == model.init_state(1).nbytes()
    # The stream is the model's own greedy continuation.
    assert tokens == model.generate(prompt[None], 300)[0].tolist()


def test_cli_streams_from_a_checkpoint(tiny, corpus, capsys):
    s = tiny(steps=2)
    run_training(s, corpus=corpus)
    capsys.readouterr()
    argv = ["generate", "--checkpoint", s.out, "--prompt", "def ", "--max-new-tokens", "20", "--seed", "1"]
    assert main([*argv, "--stats"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("def ") and "20 tokens in" in out.err and "decode state" in out.err
    assert main(argv) == 0
    assert capsys.readouterr().out == out.out  # same seed, same text
    assert encode_prompt("", 256).tolist() == [0]
    assert main(["generate", "--checkpoint", s.out + "/missing"]) == 2
    assert "--checkpoint: expected a run or checkpoint directory" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", s.out, "--top-p", "1.5"]) == 2
    assert "--top-p" in capsys.readouterr().err
    for flags, message in [
        (["--device", "nonsense"], "--device: expected an available torch device, got 'nonsense'"),
        (["--seed", str(2**64)], "--seed: expected an int in [0, 2**64)"),
        (["--seed", "-1"], "--seed: expected an int in [0, 2**64)"),
    ]:
        assert main(["generate", "--checkpoint", s.out, *flags]) == 2
        assert message in capsys.readouterr().err


def test_cli_refuses_what_it_would_ignore_and_loads_any_saved_dtype(tiny, corpus, capsys, tmp_path):
    """Review findings: flags greedy decoding ignores, the meta device, a non-float32
    save_pretrained model (docs: --checkpoint takes any save_pretrained directory), a prompt that is
    not UTF-8 (its bytes are the tokens), a non-byte vocabulary blamed on --checkpoint."""
    from bmojo.jobs.checkpoint import load_model

    s = tiny(steps=2)
    run_training(s, corpus=corpus)
    capsys.readouterr()
    for flags, message in [
        (["--temperature", "0", "--top-k", "3"], "--top-k: expected no --top-k with --temperature 0"),
        (["--temperature", "0", "--top-p", "0.5"], "--top-p: expected no --top-p with --temperature 0"),
        (["--top-k", "257"], "--top-k: expected at most the vocabulary size 256 (0: off), got 257"),
        (["--device", "meta"], "--device: expected an available torch device, got 'meta'"),
    ]:
        assert main(["generate", "--checkpoint", s.out, *flags]) == 2, flags
        assert message in capsys.readouterr().err, flags
    model, _ = load_model(s.out)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    argv = ["generate", "--checkpoint", str(tmp_path / "bf16"), "--max-new-tokens", "3", "--temperature", "0"]
    assert main([*argv, "--prompt", "ab\udcffcd"]) == 0  # how Python passes the argv bytes b"ab\xffcd"
    assert capsys.readouterr().out.startswith("ab\ufffdcd")
    assert encode_prompt("ab\udcffcd", 256).tolist() == [97, 98, 255, 99, 100]
    with pytest.raises(ValueError, match=r"--checkpoint: expected a byte-level model \(vocab_size 256\)"):
        encode_prompt("", 300)
    with pytest.raises(ValueError, match=r"--prompt: expected a byte-level model"):
        encode_prompt("hi", 300)


def test_a_closed_pipe_ends_generate_quietly(tiny, corpus):
    """`bmojo generate | head -c 5`: no BrokenPipeError traceback; the shell's SIGPIPE status."""
    import subprocess
    import sys

    s = tiny(steps=2)
    run_training(s, corpus=corpus)
    cmd = [sys.executable, "-m", "bmojo.cli", "generate", "--checkpoint", s.out, "--max-new-tokens", "2000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(5)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_the_document_separator_ends_the_text_and_is_not_printed(tmp_path, capsys):
    """Byte 0 follows every file of the corpus: it is the model's end of document. Generating it
    ends the output (it used to be written as a raw NUL, making the output binary to grep & co.,
    and followed by an unrelated document); --stats counts the tokens actually generated."""
    from bmojo.jobs.checkpoint import load_model

    torch.manual_seed(0)
    cfg = ModelConfig.preset("swa", vocab_size=256, d_model=16, n_layers=1, n_heads=2, window=4)
    BMojoLM(cfg).save_pretrained(tmp_path / "ck")
    argv = ["generate", "--checkpoint", str(tmp_path / "ck"), "--prompt", "def ", "--temperature", "1"]
    assert main([*argv, "--max-new-tokens", "2000", "--seed", "0", "--stats"]) == 0
    out = capsys.readouterr()
    model, _ = load_model(str(tmp_path / "ck"))
    gen = torch.Generator().manual_seed(0)
    tokens = [t for t, _ in stream(model, encode_prompt("def ", 256), 2000, temperature=1.0, generator=gen)]
    assert 0 in tokens[1:]  # an untrained model samples the separator, about 1 token in 256
    n = tokens.index(0) + 1
    assert out.out == "def " + bytes(tokens[: n - 1]).decode("utf-8", "replace") + "\n"
    assert "\x00" not in out.out
    assert out.err.startswith(f"{n} tokens in "), out.err
    assert out.err.rstrip().endswith("; ended at the document separator (byte 0)"), out.err
