"""bmojo eval-length: the perplexity arithmetic, attention widening, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from bmojo.cli import main
from bmojo.jobs import checkpoint as ckpt
from bmojo.jobs.eval_length import length_nll, widen_attention
from bmojo.jobs.train import run_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_dir):
    from bmojo.jobs.data import load_corpus
    from bmojo.jobs.train import TrainSettings

    corpus = load_corpus(text_dir)
    out = {}
    for arch in ("transformer", "bmojo"):
        s = TrainSettings(
            preset="tiny",
            arch=arch,
            data=str(text_dir),
            seq_len=16,
            batch_size=4,
            steps=2,
            val_every=0,
            threads=1,
            progress=False,
            out=str(tmp_path_factory.mktemp(arch)),
        )
        run_training(s, corpus=corpus)
        out[arch] = s.out
    return out, corpus


def test_length_nll_matches_a_direct_computation(trained):
    runs, corpus = trained
    model, _ = ckpt.load_model(runs["bmojo"])
    tokens = corpus.val
    nll, tail = length_nll(model, tokens, length=32, longest=64, context=16, windows=2, batch_tokens=64)
    per_window = []
    with torch.no_grad():
        for start in range(0, 128, 32):
            w = tokens[start : start + 33].long()[None]
            per_window.append(F.cross_entropy(model(w[:, :-1])[0], w[0, 1:], reduction="none"))
    nlls = torch.stack(per_window)
    assert nll == pytest.approx(float(nlls.mean()), rel=1e-5)
    # Tail targets: the last 16 tokens of each 64-token window, here the windows ending at 64 and 128.
    assert tail == pytest.approx(float(nlls[1::2, -16:].mean()), rel=1e-5)


def test_widening_changes_only_full_attention(trained):
    runs, corpus = trained
    transformer, _ = ckpt.load_model(runs["transformer"])
    assert all(layer.window == 16 for layer in transformer.config.layers)  # the training context, --seq-len
    wide, n = widen_attention(transformer, context=16, length=256)
    assert n == 2 and all(layer.window == 256 for layer in wide.config.layers)
    x = corpus.val[:16].long()[None]
    with torch.no_grad():  # within the stored window the widened model is the same function
        # (up to float32 summation order: the reference attention pads key blocks to the window)
        torch.testing.assert_close(wide(x), transformer(x), rtol=1e-5, atol=1e-5)
    bmojo, _ = ckpt.load_model(runs["bmojo"])
    assert widen_attention(bmojo, context=16, length=256) == (bmojo, 0)


def test_cli_writes_table_json_and_png(trained, tmp_path, capsys):
    runs, _ = trained
    out = tmp_path / "ev"
    argv = ["eval-length", "--checkpoint", runs["transformer"], runs["bmojo"], "--factors", "1", "2", "8"]
    assert main([*argv, "--windows", "2", "--out", str(out), "--label", "T", "B"]) == 0
    results = json.loads((out / "length.json").read_text())
    assert [r["label"] for r in results] == ["T", "B"]
    for r in results:
        assert r["context"] == 16 and [x["length"] for x in r["results"]] == [16, 32, 128]
        assert all(math.isfinite(x[k]) and x[k] > 1 for x in r["results"] for k in ("ppl", "tail_ppl"))
    # The tiny Transformer's window is its training context, 16 (--seq-len): widened beyond it.
    assert [x["widened_layers"] for x in results[0]["results"]] == [0, 2, 2]
    assert [x["widened_layers"] for x in results[1]["results"]] == [0, 0, 0]
    assert (out / "length.png").stat().st_size > 0 and "| T |" in (out / "length.md").read_text()
    assert "| B |" in capsys.readouterr().out
    # A second command reuses the cached evaluations (one per checkpoint) and writes the same numbers.
    assert len(list((out / "cache").glob("*.json"))) == 2
    assert main([*argv, "--windows", "2", "--out", str(out), "--label", "T", "B"]) == 0
    assert json.loads((out / "length.json").read_text()) == results
    assert main([*argv, "--windows", "100000", "--out", str(out)]) == 2
    assert "--windows" in capsys.readouterr().err
    for flags, message in [
        (["--threads", "-1"], "--threads: expected an int >= 1, got -1"),
        (["--threads", "0"], "--threads: expected an int >= 1, got 0"),
        (["--device", "nonsense"], "--device: expected an available torch device"),
    ]:
        assert main([*argv, *flags, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err


def test_the_documented_m0_ablation_recipe_runs(trained, tmp_path):
    """docs/experiments.md's recipe for "B'MOJO weights, M=0 at evaluation": the snippet, run on a
    trained tiny run, writes a model that loads (an edited config.json beside the weights would be
    refused) with every layer's eidetic capacity 0 and the trained weights unchanged."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    snippet = re.search(r"python - <<'PY'\n(.*?)\nPY\n", doc, flags=re.S).group(1)
    assert "eidetic_capacity=0" in snippet
    runs, _ = trained
    step = ckpt.resolve(runs["bmojo"], "--checkpoint")
    out = tmp_path / "bmojo_weights_M0"
    snippet = snippet.replace("runs/length/bmojo/checkpoints/step-00000400", str(step))
    snippet = snippet.replace("runs/length/bmojo_weights_M0", str(out))
    exec(compile(snippet, "docs/experiments.md", "exec"), {})
    ablated, _ = ckpt.load_model(out)
    original, _ = ckpt.load_model(runs["bmojo"])
    assert [layer.eidetic_capacity for layer in ablated.config.layers] == [0] * len(ablated.config.layers)
    assert any(layer.eidetic_capacity > 0 for layer in original.config.layers)
    for (name, a), (_, b) in zip(ablated.state_dict().items(), original.state_dict().items()):
        assert torch.equal(a, b), name


def test_cache_follows_the_corpus_content_and_contexts_are_checked_first(tmp_path, capsys):
    """An edited --data file is a new cache entry (the cache keyed the path only and replayed
    stale numbers, also past the trained-on fingerprint check); checkpoints of different contexts
    are refused before any evaluation."""
    from bmojo.jobs.train import TrainSettings

    train, other = tmp_path / "train.txt", tmp_path / "other.txt"
    train.write_text("hello world " * 400)
    other.write_text("the quick brown fox " * 300)
    runs = {}
    for seq_len in (16, 32):
        s = TrainSettings(preset="tiny", data=str(train), seq_len=seq_len, batch_size=2, steps=1, val_every=0,
                          threads=1, progress=False, out=str(tmp_path / f"run{seq_len}"))  # fmt: skip
        run_training(s)
        runs[seq_len] = s.out

    def ppl(data):
        argv = ["eval-length", "--checkpoint", runs[16], "--data", str(data), "--factors", "1", "--windows", "1"]
        code = main([*argv, "--out", str(tmp_path / "eval"), "--threads", "1"])
        if code != 0:
            return code
        return json.loads((tmp_path / "eval" / "length.json").read_text())[0]["results"][0]["ppl"]

    first = ppl(other)
    other.write_text("".join(chr(97 + (i * 7919) % 26) for i in range(5000)))
    second = ppl(other)
    assert isinstance(second, float) and second != first  # re-evaluated, not the cached number
    assert isinstance(ppl(train), float)
    train.write_text("hello there " * 400)  # the training corpus changed after training: refused, cache or not
    capsys.readouterr()
    assert ppl(train) == 2
    assert "--data: the corpus now differs from the one" in capsys.readouterr().err
    mixed = ["eval-length", "--checkpoint", runs[16], runs[32], "--data", str(other), "--out", str(tmp_path / "m")]
    assert main(mixed) == 2
    assert "--checkpoint: expected models trained at one context, got [16, 32]" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # refused before evaluating or writing anything
