"""bmojo train in one process: exact resume, accumulation, checkpoints validated, bad input named."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from bmojo.cli import main
from bmojo.jobs import checkpoint as ckpt
from bmojo.jobs.progress import JsonlLog
from bmojo.jobs.train import run_training
from safetensors.torch import load_file, save_file


def tensors(run: str | Path, step: int, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(Path(run) / "checkpoints" / ckpt.step_dir_name(step) / name))


def losses(run: str | Path) -> list[float]:
    return [r["loss"] for r in JsonlLog.read(Path(run) / "log.jsonl")]


def test_exact_resume_two_n_equals_n_plus_n(tiny, corpus, tmp_path):
    straight = tiny(out=str(tmp_path / "straight"))
    run_training(straight, corpus=corpus)
    pieces = tiny(out=str(tmp_path / "pieces"), stop_at=3)
    first = run_training(pieces, corpus=corpus)
    assert first["step"] == 3 and not first["finished"]
    second = run_training(replace(pieces, stop_at=None, resume=True), corpus=corpus)
    assert second["step"] == 6 and second["finished"]
    for name in ("model.safetensors", "optimizer.safetensors"):
        a, b = tensors(straight.out, 6, name), tensors(pieces.out, 6, name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    assert losses(straight.out) == losses(pieces.out)  # the log was cut back to step 3, then continued
    assert [r["step"] for r in JsonlLog.read(Path(pieces.out) / "log.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_accumulation_matches_one_big_batch(tiny, corpus, tmp_path):
    one = tiny(out=str(tmp_path / "one"), steps=3, ckpt_every=0)
    two = tiny(out=str(tmp_path / "two"), steps=3, ckpt_every=0, accum=2)
    run_training(one, corpus=corpus)
    run_training(two, corpus=corpus)
    a, b = tensors(one.out, 3), tensors(two.out, 3)
    # Same rows, summed in another order: float32 rounding, amplified a little by Adam.
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert losses(one.out) == pytest.approx(losses(two.out), rel=1e-5)


def test_checkpoint_layout_loads_as_a_pretrained_model(tiny, corpus):
    s = tiny(steps=3)
    run_training(s, corpus=corpus)
    step_dir = ckpt.resolve(s.out)
    assert step_dir.name == "step-00000003"
    assert json.loads((Path(s.out) / "latest.json").read_text())["step"] == 3
    assert not list((Path(s.out) / "checkpoints").glob(".tmp-*"))
    from bmojo import BMojoLM

    a = BMojoLM.from_pretrained(step_dir)
    b, _ = ckpt.load_model(s.out)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    trainer = ckpt.read_trainer(step_dir)
    assert trainer["step"] == 3 and trainer["world_size"] == 1 and trainer["settings"]["seq_len"] == 32


def test_resume_refuses_another_config_or_changed_settings(tiny, corpus):
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    with pytest.raises(ValueError, match=r"--config/--preset: .*another model config"):
        run_training(replace(s, arch="swa", resume=True, stop_at=None), corpus=corpus)
    with pytest.raises(ValueError, match=r"--lr: expected 0.003"):
        run_training(replace(s, lr=1e-3, resume=True), corpus=corpus)
    with pytest.raises(ValueError, match=r"--steps: expected 6 to resume"):  # fewer steps than the checkpoint's
        run_training(replace(s, steps=2, warmup=1, stop_at=None, resume=True), corpus=corpus)
    with pytest.raises(ValueError, match=r"--out: .* already holds a checkpoint"):
        run_training(s, corpus=corpus)
    with pytest.raises(ValueError, match=r"--resume: expected a checkpoint"):
        run_training(replace(s, out=s.out + "-new", resume=True), corpus=corpus)


def test_world_size_mismatch_on_resume_names_the_flag(tiny, corpus):
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    info_path = ckpt.resolve(s.out) / "trainer.json"
    info = json.loads(info_path.read_text())
    info["world_size"] = 2  # as if written by `torchrun --nproc_per_node=2` (tested for real in test_jobs_distributed)
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"--nproc_per_node: .* written by 2 process"):
        run_training(replace(s, resume=True, stop_at=None), corpus=corpus)


def test_loading_validates_before_reading(tiny, corpus):
    s = tiny(steps=3)
    run_training(s, corpus=corpus)
    step_dir = ckpt.resolve(s.out)
    weights = load_file(str(step_dir / "model.safetensors"))
    dropped = dict(weights)
    name = sorted(dropped)[0]
    del dropped[name]
    save_file(dropped, str(step_dir / "model.safetensors"))
    with pytest.raises(ckpt.CheckpointError, match=rf"missing \['{name}'\]"):
        ckpt.load_model(s.out)
    weights[name] = weights[name][:1]
    save_file(weights, str(step_dir / "model.safetensors"))
    with pytest.raises(ckpt.CheckpointError, match=f"{name}: expected shape"):
        ckpt.load_model(s.out)
    (step_dir / "config.json").write_text('{"d_model": 64, "bogus": 1}')
    with pytest.raises(ckpt.CheckpointError, match=r"not a valid model config"):
        ckpt.load_model(s.out)
    with pytest.raises(ckpt.CheckpointError, match=r"--checkpoint: expected a run or checkpoint directory"):
        ckpt.load_model(Path(s.out) / "nowhere")


def test_transformer_window_is_the_training_context(corpus):
    """--arch transformer is full attention over the training sequence, whatever --seq-len is;
    the bounded kinds keep the size's window."""
    from bmojo.jobs.train import TrainSettings, model_config

    for seq_len, arch, window in [(32, "transformer", 32), (None, "transformer", 64), (256, "transformer", 256),
                                  (256, "swa", 16), (256, "bmojo", 16)]:  # fmt: skip
        cfg = model_config(TrainSettings(preset="tiny", arch=arch, seq_len=seq_len), corpus)
        assert [layer.window for layer in cfg.layers] == [window] * 2, (seq_len, arch)


def test_load_model_refuses_weights_saved_under_another_config(tiny, corpus):
    """Training checkpoints carry their config in the weights' metadata, as save_pretrained does:
    weights whose stored config is not config.json's (same tensor shapes) are refused by
    load_model and by resume."""
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    step_dir = ckpt.resolve(s.out)
    weights = step_dir / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    other = json.loads(meta["config"])
    for layer in other["layers"]:
        layer["window"] //= 2  # same tensors, another model; config.json stays the run's
    save_file(load_file(str(weights)), str(weights), metadata={**meta, "config": json.dumps(other)})
    message = r"model.safetensors: saved for another config than config.json \(layers\[0\]\.window: 8 vs 16"
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load_model(s.out)
    with pytest.raises(ckpt.CheckpointError, match=message):
        run_training(replace(s, resume=True, stop_at=None), corpus=corpus)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.update(step=2), r"trainer.json: step: expected 3 \(the directory's\), got 2"),
        (lambda t: t.update(step=0), r"trainer.json: step: expected an int >= 1, got 0"),
        (lambda t: t.pop("world_size"), r"trainer.json: world_size: expected an int >= 1, got None"),
        (lambda t: t.update(settings=[]), r"trainer.json: settings: expected a dict, got \[\]"),
        (lambda t: t.update(tokens=-1), r"trainer.json: tokens: expected an int >= 0, got -1"),
        (lambda t: t.update(elapsed_s="1"), r"trainer.json: elapsed_s: expected a finite number"),
    ],
)
def test_resume_validates_trainer_json(tiny, corpus, edit, message):
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    path = ckpt.resolve(s.out) / "trainer.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))
    with pytest.raises(ckpt.CheckpointError, match=message):
        run_training(replace(s, resume=True, stop_at=None), corpus=corpus)


def test_trainer_json_step_is_checked_against_a_step_directory_name_only(tiny, corpus, tmp_path):
    import shutil

    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    step_dir = ckpt.resolve(s.out)
    for name, ok in [("step-3", True), ("step-final", True), ("my-copy", True), ("step-4", False)]:
        copy = tmp_path / name
        shutil.copytree(step_dir, copy)
        if ok:
            assert ckpt.read_trainer(copy)["step"] == 3, name
        else:
            with pytest.raises(ckpt.CheckpointError, match=r"step: expected 4 \(the directory's\), got 3"):
                ckpt.read_trainer(copy)


def test_resume_validates_optimizer_json_and_rng(tiny, corpus):
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    step_dir = ckpt.resolve(s.out)
    original = (step_dir / "optimizer.json").read_text()
    resume = replace(s, resume=True, stop_at=None)
    for mutate, message in [
        (lambda g: g.clear(), r"param_groups: expected a list of \d+ dict"),
        (lambda g: g["param_groups"][0].pop("betas"), r"param_groups\[0\]: expected the keys"),
        (lambda g: g["param_groups"][0].update(weight_decay="0.1"), r"weight_decay: expected a finite number"),
        (lambda g: g["param_groups"][0].update(betas=[0.9]), r"betas: expected a list of 2 finite numbers"),
        (lambda g: g["param_groups"][0].update(lr=float("nan")), r"lr: expected a finite number"),
    ]:
        groups = json.loads(original)
        mutate(groups)
        (step_dir / "optimizer.json").write_text(json.dumps(groups))
        with pytest.raises(ckpt.CheckpointError, match=message):
            run_training(resume, corpus=corpus)
    # keys beyond AdamW's five may come and go between torch versions: missing ones take the defaults
    groups = json.loads(original)
    for group in groups["param_groups"]:
        for key in ("decoupled_weight_decay", "foreach"):
            group.pop(key, None)
    (step_dir / "optimizer.json").write_text(json.dumps(groups))
    run_training(replace(resume, stop_at=4), corpus=corpus)
    step_dir = ckpt.resolve(s.out)
    assert step_dir.name == "step-00000004"
    rng = load_file(str(step_dir / "rng.safetensors"))
    rng["torch_cpu/rank0"] = rng["torch_cpu/rank0"][:10]
    save_file(rng, str(step_dir / "rng.safetensors"))
    with pytest.raises(ckpt.CheckpointError, match=r"torch_cpu/rank0: expected shape"):
        run_training(resume, corpus=corpus)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--data", "/nonexistent/corpus"], "--data: expected an existing file"),
        (["--batch-size", "6", "--accum", "4"], "--batch-size: expected a multiple"),
        (["--warmup", "99", "--steps", "10"], "--warmup: expected <= --steps"),
        (["--stop-at", "0"], "--stop-at: expected a step"),
        (["--arch", "swa", "--ssm-bypass", "gated"], "--ssm-bypass: expected 'none' for --arch swa"),
        (["--fading-offset", "99"], "--fading-offset: expected 0 <= fading_offset <= window=16"),
        (["--threads", "0"], "--threads: expected an int >= 1, got 0"),
        (["--weight-decay", "nan"], "--weight-decay: expected a finite number, got nan"),
        (["--lr", "inf"], "--lr: expected a finite number, got inf"),
        (["--device", "nonsense"], "--device: expected a torch device, got 'nonsense'"),
        (["--seed", str(2**64)], "--seed: expected an int in [0, 2**32), got 18446744073709551616"),
        (["--seed", "-1"], "--seed: expected an int in [0, 2**32), got -1"),
    ],
)
def test_cli_errors_name_the_flag(argv, flag, text_dir, tmp_path, capsys):
    base = ["train", "--preset", "tiny", "--data", str(text_dir), "--seq-len", "32", "--out", str(tmp_path / "r")]
    assert main([*base, "--steps", "2", "--batch-size", "4", *argv]) == 2
    assert flag in capsys.readouterr().err


def test_divergence_is_an_error_naming_the_flag_not_a_traceback(text_dir, tmp_path, capsys, monkeypatch):
    import bmojo.jobs.train as train_mod

    real = train_mod.lm_loss
    monkeypatch.setattr(
        train_mod, "lm_loss", lambda *a, **k: tuple(x * float("nan") if x is not None else x for x in real(*a, **k))
    )
    argv = ["train", "--preset", "tiny", "--data", str(text_dir), "--seq-len", "32", "--out", str(tmp_path / "r")]
    assert main([*argv, "--steps", "2", "--batch-size", "4", "--threads", "1"]) == 2
    assert "--lr: training diverged at step 1 (loss nan)" in capsys.readouterr().err


def test_bf16_autocast_trains_close_to_float32(tiny, corpus, tmp_path):
    """Explicit bf16 trains on CPU with the reference ops (dispatch.AUTOCAST_POLICY casts each op's
    inputs) and its first losses follow float32's; never a silent fallback to float32."""
    f32 = run_training(tiny(out=str(tmp_path / "f32"), steps=2, autocast="off"), corpus=corpus)
    bf16 = run_training(tiny(out=str(tmp_path / "bf16"), steps=2, autocast="bf16"), corpus=corpus)
    assert bf16["loss"] != f32["loss"]  # it really ran in bfloat16
    assert abs(bf16["loss"] - f32["loss"]) < 0.02 * f32["loss"]


def test_innovation_loss_is_added_when_its_weight_is_set(tiny, corpus, tmp_path):
    plain = tiny(out=str(tmp_path / "plain"), steps=2, ckpt_every=0, val_every=0)
    inno = replace(plain, out=str(tmp_path / "inno"), innovation_loss_weight=0.5)
    run_training(plain, corpus=corpus)
    run_training(inno, corpus=corpus)
    a, b = JsonlLog.read(Path(plain.out) / "log.jsonl"), JsonlLog.read(Path(inno.out) / "log.jsonl")
    assert "innovation_loss" not in a[0] and b[0]["innovation_loss"] > 0
    # Step 1: same weights and batch, so the logged total is the cross-entropy plus the innovation part.
    assert b[0]["loss"] == pytest.approx(a[0]["loss"] + b[0]["innovation_loss"], abs=2e-6)
    cfg = ckpt.read_config(ckpt.resolve(inno.out))
    assert all(layer.innovation_loss_weight == 0.5 for layer in cfg.layers)
    with pytest.raises(ValueError, match="--innovation-loss-weight: "):
        run_training(replace(inno, arch="swa", out=str(tmp_path / "swa")), corpus=corpus)


def test_resume_refuses_a_parameter_without_optimizer_state(tiny, corpus):
    """Every parameter's AdamW entries (step, exp_avg, exp_avg_sq) must be in the checkpoint; a
    missing one is named with the file before any tensor is read (torch's strict loader would
    fail later, naming no file)."""
    s = tiny(stop_at=2)
    run_training(s, corpus=corpus)
    path = ckpt.resolve(s.out) / "optimizer.safetensors"
    optim = load_file(str(path))
    for key in [k for k in optim if k.startswith("state/embed.weight/")]:
        del optim[key]
    save_file(optim, str(path))
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer.safetensors: expected exactly .*missing \['state/embed"):
        run_training(replace(s, resume=True, stop_at=None), corpus=corpus)


def test_a_partial_last_log_line_is_dropped_on_resume(tiny, corpus):
    """A kill (or a full disk) mid-append leaves half a JSON record at the end of log.jsonl: resume
    drops it with the other records past the checkpoint; a bad line before the end is named."""
    s = tiny(stop_at=3)
    run_training(s, corpus=corpus)
    log = Path(s.out) / "log.jsonl"
    whole = log.read_text()
    log.write_text(whole + '{"elapsed_s": 0.2, "grad_')
    run_training(replace(s, resume=True, stop_at=4), corpus=corpus)
    assert [r["step"] for r in JsonlLog.read(log)] == [1, 2, 3, 4]
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"log.jsonl: line 2: expected a JSON record"):
        run_training(replace(s, resume=True, stop_at=None), corpus=corpus)


def test_val_every_0_validates_at_the_end_only(tiny, corpus):
    s = tiny(steps=3, val_every=0, ckpt_every=0)
    run_training(s, corpus=corpus)
    records = JsonlLog.read(Path(s.out) / "log.jsonl")
    assert ["val_loss" in r for r in records] == [False, False, True]
