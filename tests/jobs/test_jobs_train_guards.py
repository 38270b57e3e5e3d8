"""bmojo train guards: a diverged run is never checkpointed, an inferred vocabulary is bounded,
resume refuses changed flags, --out is checked and locked, stale temporary checkpoints are
removed, progress reports the step a value belongs to, --threads is bounded."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from bmojo.cli import main
from bmojo.jobs import checkpoint as ckpt
from bmojo.jobs import train as train_mod
from bmojo.jobs.progress import JsonlLog
from bmojo.jobs.train import TrainSettings, model_config, run_training, validate


def cli(text_dir, out, *argv) -> list[str]:
    base = ["train", "--preset", "tiny", "--data", str(text_dir), "--seq-len", "32", "--out", str(out)]
    return [*base, "--batch-size", "4", "--threads", "1", "--val-windows", "4", *argv]


def checkpoints(out) -> list[str]:
    return sorted(p.name for p in (Path(out) / "checkpoints").iterdir()) if (Path(out) / "checkpoints").is_dir() else []


# ----------------------------------------------------------------------------- divergence


def test_divergence_seen_only_by_validation_is_an_error_and_nothing_is_saved(text_dir, tmp_path, capsys):
    """--lr 1e30: the training loss of step 1 (before the update) is finite, the validation loss
    after it is not: exit 2 naming --lr, no checkpoint, and the log stays valid JSON."""
    out = tmp_path / "r"
    assert main(cli(text_dir, out, "--steps", "1", "--lr", "1e30")) == 2
    assert "bmojo train: error: --lr: training diverged at step 1 (validation loss nan)" in capsys.readouterr().err
    assert not (out / "latest.json").exists() and checkpoints(out) == []
    text = (out / "log.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_weights_blown_up_by_an_update_are_not_checkpointed(text_dir, tmp_path, capsys):
    """A checkpoint at a step without validation: one forward pass checks the updated weights."""
    out = tmp_path / "r"
    argv = cli(text_dir, out, "--steps", "4", "--lr", "1e30", "--ckpt-every", "1", "--keep", "1", "--val-every", "0")
    assert main(argv) == 2
    assert "--lr: training diverged at step 1 (non-finite outputs after the update)" in capsys.readouterr().err
    assert not (out / "latest.json").exists() and checkpoints(out) == []


def test_nan_validation_keeps_the_last_good_checkpoint(tiny, corpus, monkeypatch):
    s = tiny(steps=6, val_every=3, ckpt_every=1, keep=1)
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: float("nan"))
    with pytest.raises(FloatingPointError, match=r"--lr: training diverged at step 3 \(validation loss nan\)"):
        run_training(s, corpus=corpus)
    assert ckpt.latest(s.out).name == "step-00000002"  # not pruned for a poisoned step-3
    assert checkpoints(s.out) == ["step-00000002"]
    assert [r["step"] for r in JsonlLog.read(Path(s.out) / "log.jsonl")] == [1, 2]


def test_nan_gradient_norm_is_an_error(tiny, corpus, monkeypatch):
    real, calls = torch.nn.utils.clip_grad_norm_, []

    def clip(*a, **k):
        calls.append(1)
        norm = real(*a, **k)
        return norm * float("nan") if len(calls) == 2 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    s = tiny(steps=3, ckpt_every=1)
    with pytest.raises(FloatingPointError, match=r"--lr: training diverged at step 2 \(gradient norm nan\)"):
        run_training(s, corpus=corpus)
    assert ckpt.latest(s.out).name == "step-00000001"


def test_log_refuses_non_finite_values(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl", enabled=True)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="not JSON compliant"):
            log.write({"step": 1, "val_loss": bad})
    assert (tmp_path / "log.jsonl").read_text() == ""


# ----------------------------------------------------------------------------- data


def test_a_stray_token_id_is_refused_before_the_model_is_built(tmp_path, capsys):
    ids = np.random.default_rng(0).integers(0, 256, 20_000)
    ids[100] = 10**9  # would be a 10**9-row embedding (256 GB at width 64)
    np.save(tmp_path / "ids.npy", ids)
    argv = ["train", "--preset", "tiny", "--data", str(tmp_path / "ids.npy"), "--steps", "2", "--batch-size", "4"]
    assert main([*argv, "--threads", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--data: expected token ids < 1048576" in err and "--config" in err and "got max id 1000000000" in err


def test_inferred_vocabulary_bound(corpus):
    s = TrainSettings(preset="tiny")
    assert model_config(s, replace(corpus, vocab_size=2**20)).vocab_size == 2**20  # nothing is built
    with pytest.raises(ValueError, match=r"--data: expected token ids < 1048576 .*got max id 1048576"):
        model_config(s, replace(corpus, vocab_size=2**20 + 1))


# ----------------------------------------------------------------------------- resume


def test_resume_refuses_another_val_windows(tiny, corpus):
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    with pytest.raises(ValueError, match=r"--val-windows: expected 4 to resume .*got 8"):
        run_training(replace(s, val_windows=8, stop_at=None, resume=True), corpus=corpus)


@pytest.mark.parametrize("stop_at", [2, 3])
def test_resume_refuses_a_stop_at_not_after_the_resumed_step(tiny, corpus, stop_at):
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    with pytest.raises(ValueError, match=rf"--stop-at: expected a step after the resumed step 3 .*got {stop_at}"):
        run_training(replace(s, stop_at=stop_at, resume=True), corpus=corpus)
    assert ckpt.latest(s.out).name == "step-00000003"  # nothing trained


# ----------------------------------------------------------------------------- --out


@pytest.mark.parametrize(
    "out, message",
    [
        ("", "--out: expected a run directory, got '' (blank)"),
        ("  ", "--out: expected a run directory, got '  ' (blank)"),
        ("afile", "--out: expected a path inside a folder, got 'afile' ('afile' is a file)"),
        ("afile/sub", "--out: expected a path inside a folder, got 'afile/sub' ('afile' is a file)"),
        ("/proc/bmojo-run", "--out: expected a folder that can be created and written, got '/proc/bmojo-run'"),
    ],
)
def test_out_is_checked_before_the_data_is_read(out, message, text_dir, tmp_path, monkeypatch, capsys):
    if out.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("hi\n")

    def no_data(*a, **k):
        raise AssertionError("the data was read before --out was checked")

    monkeypatch.setattr(train_mod.D, "load_corpus", no_data)
    assert main(cli(text_dir, out, "--steps", "2")) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written here


def test_a_second_run_on_the_same_out_is_refused(tiny, corpus, tmp_path):
    pytest.importorskip("fcntl")
    s = tiny(steps=2)
    out = Path(s.out)
    out.mkdir()
    holder = subprocess.Popen(  # another process holding the run's lock, as a running bmojo train does
        [sys.executable, "-c", "import fcntl, os, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
         "f.truncate(0); f.write(f'{os.getpid()}\\n'); f.flush(); print('locked', flush=True); sys.stdin.read()",
         str(out / ".train.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"--out: expected a directory no other run is writing to, got .*"
                           rf"\(locked by pid {holder.pid}"):  # fmt: skip
            run_training(s, corpus=corpus)
    finally:
        holder.communicate("")
    assert not (out / "log.jsonl").exists()
    run_training(s, corpus=corpus)  # the holder has ended: its lock went with it
    assert ckpt.latest(out).name == "step-00000002"


def test_the_lock_is_released_when_a_run_fails(tiny, corpus, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    s = tiny(steps=3)
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: float("nan"))
    with pytest.raises(FloatingPointError):
        run_training(s, corpus=corpus)
    with open(Path(s.out) / ".train.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if still held


def test_stale_temporary_checkpoints_are_removed_at_start(tiny, corpus):
    s = tiny(steps=2, ckpt_every=0)
    out = Path(s.out)
    stale = out / "checkpoints" / ".tmp-step-00000003-999999"  # a save killed mid-write (another pid)
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"\0" * 1024)
    (out / ".latest.json.tmp-999999").write_text("{")
    run_training(s, corpus=corpus)
    assert checkpoints(out) == ["step-00000002"]
    assert not (out / ".latest.json.tmp-999999").exists()


# ----------------------------------------------------------------------------- progress


def test_progress_postfix_is_this_steps_when_the_bar_redraws(tiny, corpus, monkeypatch):
    """Advancing the bar redraws it: the postfix must already hold the step's loss by then."""
    import bmojo.jobs.progress as progress_mod

    seen = []

    class Recording(progress_mod.tqdm):
        def update(self, n=1):
            seen.append(self.postfix)
            return super().update(n)

    monkeypatch.setattr(progress_mod, "tqdm", Recording)
    s = tiny(steps=2, ckpt_every=0, progress=True)
    run_training(s, corpus=corpus)
    losses = [r["loss"] for r in JsonlLog.read(Path(s.out) / "log.jsonl")]
    assert len(seen) == 2 and all(f"loss={loss:.4f}" in (text or "") for text, loss in zip(seen, losses)), seen


def test_tokens_per_s_times_the_training_step_only(tiny, corpus, monkeypatch):
    real = train_mod.evaluate

    def slow(*a, **k):
        time.sleep(0.6)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "evaluate", slow)
    s = tiny(steps=3, val_every=1, ckpt_every=0)
    run_training(s, corpus=corpus)
    records = JsonlLog.read(Path(s.out) / "log.jsonl")
    # 4 × 32 tokens a step; with the 0.6 s validation of the step before it counted, < 214 tokens/s
    assert all(128 / r["tokens_per_s"] < 0.3 for r in records[1:]), [r["tokens_per_s"] for r in records]


def test_a_stopped_run_names_the_step_its_validation_loss_was_measured_at(text_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(cli(text_dir, out, "--steps", "6", "--val-every", "2", "--stop-at", "3")) == 0
    val = [r for r in JsonlLog.read(out / "log.jsonl") if "val_loss" in r]
    assert [r["step"] for r in val] == [2]
    printed = capsys.readouterr().out.splitlines()[-1]  # the summary, after the bar's messages
    assert printed.startswith("step 3: loss ")
    assert f"validation loss {val[0]['val_loss']:.4f} (measured at step 2); checkpoint" in printed
    assert ckpt.read_trainer(ckpt.resolve(out))["val_step"] == 2
    assert main([*cli(text_dir, out, "--steps", "6", "--val-every", "2"), "--resume"]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    assert printed.startswith("step 6: loss ") and "measured at" not in printed


# ----------------------------------------------------------------------------- --threads


def test_threads_is_bounded(text_dir, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"--threads: expected at most 1024 torch CPU threads, got 100000"):
        validate(TrainSettings(threads=100_000))
    validate(TrainSettings(threads=1024))

    def crash(n):
        raise AssertionError(f"torch.set_num_threads({n}) reached (it segfaults for 100000)")

    monkeypatch.setattr(torch, "set_num_threads", crash)
    argv = cli(text_dir, tmp_path / "r", "--steps", "2")
    argv[argv.index("--threads") + 1] = "100000"
    assert main(argv) == 2
    assert "--threads: expected at most 1024" in capsys.readouterr().err
