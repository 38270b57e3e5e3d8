"""``bmojo train``: train a causal LM on the default corpus or ``--data``, in one process or under torchrun.

One optimizer step consumes a *global* batch of ``--batch-size`` windows of ``--seq-len + 1``
tokens, drawn statelessly from ``(--seed, step)`` (``bmojo.jobs.data``). Each of the ``W``
processes computes ``B/W`` of those rows in ``--accum`` micro-batches; DDP (or FSDP2 with
``--strategy fsdp``) averages the gradients, so a run's math does not depend on ``W`` or
``--accum`` beyond float32 summation order. AdamW (decay on matrices), linear warm-up and cosine
decay (``bmojo.jobs.optim``), gradient clipping, optional bfloat16 autocast and ``torch.compile``.
Checkpoints (``bmojo.jobs.checkpoint``) make ``--resume`` exact: N steps, stop, resume, N more
steps gives the same weights as 2N steps in one go. See docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from bmojo._checks import MAX_THREADS, check_device, check_seed, check_threads
from bmojo.argcheck import check_out_dir
from bmojo.config import ModelConfig
from bmojo.jobs import checkpoint as ckpt
from bmojo.jobs import data as D
from bmojo.jobs.backend import selected_backend
from bmojo.jobs.distributed import STRATEGIES, all_reduce_sum, any_rank, setup, teardown, wrap
from bmojo.jobs.optim import Schedule, adamw, set_lr
from bmojo.jobs.presets import ARCHS, LABELS, LAYER_FLAGS, SIZES, context_of, preset_config
from bmojo.jobs.progress import JsonlLog, Progress
from bmojo.model import BMojoLM

try:
    import fcntl
except ImportError:  # Windows: no flock; runs sharing an --out are not detected there
    fcntl = None

AUTOCAST = ("auto", "bf16", "off")
#: The largest vocabulary inferred from --data (its max id + 1); a larger one needs --config. One
#: stray id would otherwise size the embedding (10**9: a 256 GB model).
MAX_DATA_VOCAB = 2**20
#: The lock file in --out that rank 0 holds for the whole run (one run per --out at a time).
LOCK = ".train.lock"


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``bmojo train`` takes (the CLI flags, one field each)."""

    preset: str = "small"
    arch: str = "bmojo"
    config: str | None = None  #: a ModelConfig JSON file; replaces --preset/--arch
    ssm_bypass: str | None = None  #: layer v2, on every layer of a preset (None: the preset's)
    fading_offset: int | None = None
    innovation_loss_weight: float | None = None
    data: str | None = None  #: None: the embedded default corpus
    seq_len: int | None = None  #: None: the preset's context (256 for small, 64 for tiny)
    batch_size: int = 16  #: global sequences per optimizer step
    accum: int = 1  #: micro-batches per step and process
    steps: int = 400
    lr: float = 3e-3
    warmup: int | None = None  #: None: steps // 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    clip: float = 1.0
    autocast: str = "auto"
    compile: bool = False
    val_every: int = 100
    val_windows: int = 64
    ckpt_every: int = 50
    keep: int = 2
    out: str = "runs/train"
    resume: bool = False
    stop_at: int | None = None
    time_limit: float | None = None  #: minutes; checkpoint and stop when exceeded
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    strategy: str = "ddp"
    backend: str = "reference"
    allow_world_size_change: bool = False
    progress: bool = True

    @property
    def warmup_steps(self) -> int:
        return self.steps // 20 if self.warmup is None else self.warmup

    def context(self) -> int:
        if self.seq_len is not None:
            return self.seq_len
        return context_of(self.preset) if self.config is None else 256


#: Settings a resumed run must share with its checkpoint (they change the math, or, for
#: --val-windows, what the logged validation curve measures), with their flag.
#: (--data is checked by the corpus fingerprint, so the same data under another path is fine.)
RESUME_MUST_MATCH = {
    "seq_len": "--seq-len",
    "batch_size": "--batch-size",
    "steps": "--steps",
    "lr": "--lr",
    "warmup": "--warmup",
    "min_lr_ratio": "--min-lr-ratio",
    "weight_decay": "--weight-decay",
    "clip": "--clip",
    "autocast": "--autocast",
    "seed": "--seed",
    "val_windows": "--val-windows",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(s: TrainSettings) -> None:
    def positive_int(name, minimum=1):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{_flag(name)}: expected an int >= {minimum}, got {value!r}")

    for name in ("batch_size", "accum", "steps", "val_windows", "keep"):
        positive_int(name)
    for name in ("val_every", "ckpt_every"):
        positive_int(name, 0)
    check_seed("--seed", s.seed)
    if s.seq_len is not None:
        positive_int("seq_len", 2)
    if s.config is None:
        if s.preset not in SIZES:
            raise ValueError(f"--preset: expected one of {sorted(SIZES)}, got {s.preset!r}")
        if s.arch not in ARCHS:
            raise ValueError(f"--arch: expected one of {list(ARCHS)}, got {s.arch!r}")
    if s.autocast not in AUTOCAST:
        raise ValueError(f"--autocast: expected one of {AUTOCAST}, got {s.autocast!r}")
    if s.strategy not in STRATEGIES:
        raise ValueError(f"--strategy: expected one of {STRATEGIES}, got {s.strategy!r}")
    if s.threads is not None:
        check_threads("--threads", s.threads)
    if not str(s.out).strip():  # Path("") would be the current directory
        raise ValueError(f"--out: expected a run directory, got {s.out!r} (blank)")
    for name in ("lr", "clip", "weight_decay", "min_lr_ratio"):
        if not math.isfinite(getattr(s, name)):
            raise ValueError(f"{_flag(name)}: expected a finite number, got {getattr(s, name)}")
    if not s.clip > 0:
        raise ValueError(f"--clip: expected a positive max gradient norm, got {s.clip}")
    if s.weight_decay < 0:
        raise ValueError(f"--weight-decay: expected >= 0, got {s.weight_decay}")
    try:  # parsed here; whether it exists is checked on this rank's device (run_training)
        torch.device(s.device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device: expected a torch device, got {s.device!r} ({err})") from None
    if s.stop_at is not None and not 1 <= s.stop_at <= s.steps:
        raise ValueError(f"--stop-at: expected a step in [1, --steps={s.steps}], got {s.stop_at}")
    if s.time_limit is not None and not s.time_limit > 0:
        raise ValueError(f"--time-limit: expected a positive number of minutes, got {s.time_limit}")
    Schedule(s.lr, s.warmup_steps, s.steps, s.min_lr_ratio)  # checks --lr, --warmup, --min-lr-ratio


def model_config(s: TrainSettings, corpus: D.Corpus) -> ModelConfig:
    if s.config is None:
        if corpus.vocab_size > MAX_DATA_VOCAB:
            raise ValueError(
                f"--data: expected token ids < {MAX_DATA_VOCAB} (the largest vocabulary inferred from the data; "
                f"pass --config with a vocab_size for a larger one), got max id {corpus.vocab_size - 1}"
            )
        vocab = max(D.BYTE_VOCAB, corpus.vocab_size) if corpus.vocab_size <= D.BYTE_VOCAB else corpus.vocab_size
        overrides = {k: getattr(s, k) for k in LAYER_FLAGS}
        return preset_config(s.preset, s.arch, vocab_size=vocab, overrides=overrides, context=s.context())
    given = [flag for name, flag in LAYER_FLAGS.items() if getattr(s, name) is not None]
    if given:
        raise ValueError(f"{given[0]}: expected no layer flags with --config (set the field in the JSON), got one")
    path = Path(s.config)
    if not path.is_file():
        raise ValueError(f"--config: expected a ModelConfig JSON file, got {str(path)!r} (not found)")
    try:
        cfg = ModelConfig.from_json(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--config: expected JSON in {str(path)!r}, got unreadable text ({err})") from err
    except (ValueError, TypeError) as err:
        raise ValueError(f"--config: {path}: {err}") from err
    if corpus.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"--data: expected token ids < the config's vocab_size={cfg.vocab_size}, "
            f"got ids up to {corpus.vocab_size - 1}"
        )
    return cfg


def autocast_context(mode: str, device: torch.device, model: BMojoLM | None = None):
    """bfloat16 autocast: 'auto' uses it where it works (CUDA with bf16 support, off on CPU where
    it is usually slower), 'bf16' wherever it works and is an error elsewhere. "Works" is probed:
    one forward of ``model`` on 8 tokens under autocast (the ops cast their inputs by
    ``bmojo.backends.dispatch.AUTOCAST_POLICY``; a third-party op that still refuses is reported)."""
    if mode == "off":
        return contextlib.nullcontext
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if mode == "auto" and not cuda_bf16:
        return contextlib.nullcontext
    if device.type == "cuda" and not cuda_bf16:
        raise ValueError(f"--autocast: bf16 requested but device {device} does not support bfloat16")
    context = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    if model is not None:
        try:
            with torch.no_grad(), context():
                model(torch.zeros(1, 8, dtype=torch.long, device=device))
        except (ValueError, RuntimeError) as err:
            if mode == "auto":
                return contextlib.nullcontext
            raise ValueError(
                f"--autocast: bf16 autocast does not work with this model's ops on {device}: {err}"
            ) from err
    return context


def lm_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, innovation: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean next-token cross-entropy (float32), plus the layer-v2 innovation loss when any layer
    has ``innovation_loss_weight`` > 0 (``innovation``): returns (total, innovation part or None)."""
    if not innovation:
        logits = model(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten()), None
    logits, aux = model(x, return_aux=True)  # aux: Σ over layers of λ · mean innovation score
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) + aux.float(), aux.detach()


def _check_trainer_fields(trainer: dict, step_dir: Path) -> None:
    """The fields of ``trainer.json`` a resumed run reads, checked before anything is restored
    (``read_trainer`` has checked ``step``: an int >= 1, the directory's)."""
    path = Path(step_dir) / ckpt.TRAINER

    def count(value, low):
        return not isinstance(value, bool) and isinstance(value, int) and value >= low

    checks = [
        ("tokens", count(trainer.get("tokens"), 0), "an int >= 0"),
        ("world_size", count(trainer.get("world_size"), 1), "an int >= 1"),
        ("settings", isinstance(trainer.get("settings"), dict), "a dict"),
        ("data", isinstance(trainer.get("data"), dict), "a dict"),
    ]
    elapsed = trainer.get("elapsed_s")
    ok = not isinstance(elapsed, bool) and isinstance(elapsed, (int, float)) and math.isfinite(elapsed) and elapsed >= 0
    checks.append(("elapsed_s", ok, "a finite number of seconds >= 0"))
    for name, ok, expected in checks:
        if not ok:
            raise ckpt.CheckpointError(f"{path}: {name}: expected {expected}, got {trainer.get(name)!r:.80}")


def _check_resume(s: TrainSettings, trainer: dict, world, step_dir: Path) -> None:
    _check_trainer_fields(trainer, step_dir)
    saved = trainer["settings"]
    for name, flag in RESUME_MUST_MATCH.items():
        mine = getattr(s, name)
        if name == "seq_len":
            mine = s.context()
        if name == "warmup":
            mine = s.warmup_steps
        if saved.get(name) != mine:
            raise ValueError(
                f"{flag}: expected {saved.get(name)!r} to resume the checkpoint in {str(step_dir)!r} "
                f"(it was trained with that), got {mine!r}"
            )
    if trainer["step"] > s.steps:  # the settings agree (--steps included): the file was edited
        raise ckpt.CheckpointError(
            f"{step_dir / ckpt.TRAINER}: step: expected <= --steps {s.steps}, got {trainer['step']}"
        )
    if s.stop_at is not None and s.stop_at <= trainer["step"]:
        raise ValueError(
            f"--stop-at: expected a step after the resumed step {trainer['step']} of {str(step_dir)!r}, got {s.stop_at}"
        )
    if trainer["world_size"] != world.size and not s.allow_world_size_change:
        raise ValueError(
            f"--nproc_per_node: the checkpoint in {str(step_dir)!r} was written by {trainer['world_size']} process(es) "
            f"(torchrun --nnodes × --nproc_per_node), this run has {world.size}; resume with the same number, or "
            f"pass --allow-world-size-change (batches are the same at any world size; ranks without a saved RNG "
            f"state keep their seeded one)"
        )


def _recorded_settings(s: TrainSettings) -> dict:
    out = asdict(s)
    out["seq_len"] = s.context()
    out["warmup"] = s.warmup_steps
    return out


def evaluate(model, corpus: D.Corpus, s: TrainSettings, world, device, autocast) -> float:
    """Mean validation cross-entropy over the first ``--val-windows`` windows (all ranks agree).

    Rank r takes windows r, r + size, …; every window counts once at any world size. Ranks whose
    share is one window short pad it with a window whose loss is not counted, so every rank runs
    the same number of forward passes (FSDP2's all-gathers need that)."""
    T = s.context()
    starts = D.validation_starts(corpus.val.numel(), T, s.val_windows)
    mine = starts[world.rank :: world.size]
    share = -(-starts.numel() // world.size)  # the largest share
    counted = mine.numel()
    if counted < share:
        mine = torch.cat([mine, starts[: share - counted]])
    per = max(1, s.batch_size // world.size)
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, share, per):
            x, y = D.windows(corpus.val, mine[i : i + per], T)
            with autocast():
                logits = model(x.to(device))
            rows = max(0, min(counted - i, x.shape[0]))  # the padding window is never counted
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="none")
            total += float(loss.view(x.shape[0], T)[:rows].sum())
            count += rows * T
    model.train()
    total, count = all_reduce_sum([total, count], device)
    return total / count


def finite_outputs(model, corpus: D.Corpus, s: TrainSettings, world, device, autocast) -> bool:
    """Whether the logits on the first validation window are all finite (all ranks agree): one
    forward pass, run before a checkpoint is written at a step without validation. The training
    loss is measured *before* the update, so it cannot tell that the update blew the weights up."""
    T = s.context()
    x, _ = D.windows(corpus.val, D.validation_starts(corpus.val.numel(), T, 1), T)
    model.eval()
    with torch.no_grad(), autocast():
        ok = bool(torch.isfinite(model(x.to(device))).all())
    model.train()
    return not any_rank(not ok, device)


def _diverged(step: int, what: str) -> FloatingPointError:
    return FloatingPointError(f"--lr: training diverged at step {step} ({what}); lower --lr or --clip")


def _lock_out(out: Path):
    """Create ``out``, check that it is a writable directory, lock it for this run and remove the
    temporary checkpoint directories a killed run left there (with the lock held, every one is
    stale). Returns the open lock file; errors name --out."""
    check_out_dir(out, "--out")
    try:
        handle = open(out / LOCK, "a+")
    except OSError as err:
        raise ValueError(f"--out: expected a folder that can be created and written, got '{out}' ({err})") from None
    try:
        if fcntl is not None:  # released by the OS when this process ends, however it ends
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise ValueError(
                    f"--out: expected a directory no other run is writing to, got {str(out)!r} "
                    f"(locked by pid {holder}: {out / LOCK})"
                ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        ckpt.remove_stale_tmp(out)
    except OSError as err:
        handle.close()
        raise ValueError(f"--out: expected a directory this run can lock and write, got {str(out)!r} ({err})") from None
    except BaseException:
        handle.close()
        raise
    return handle


def _claim_out(s: TrainSettings, world, device):
    """Rank 0 runs :func:`_lock_out`; every rank learns whether it worked, so none goes on to wait
    for a rank 0 that has stopped. Returns the lock file (rank 0) or None."""
    handle = error = None
    if world.main:
        try:
            handle = _lock_out(Path(s.out))
        except ValueError as err:
            error = err
    if any_rank(error is not None, device):
        raise error or ValueError(f"--out: rank 0 could not use {s.out!r} (see its error)")
    return handle


def run_training(s: TrainSettings, *, corpus: D.Corpus | None = None) -> dict:
    """Train per ``s``; returns a summary (step, losses, checkpoint directory). Every rank calls it."""
    validate(s)
    with selected_backend(s.backend):
        if s.threads is not None:
            torch.set_num_threads(s.threads)
        world, device = setup(s.device)
        lock = None
        try:
            check_device("--device", str(device))
            lock = _claim_out(s, world, device)
            return _train(s, world, device, corpus)
        finally:
            if lock is not None:
                lock.close()
            teardown()


def _train(s: TrainSettings, world, device, corpus) -> dict:
    if s.batch_size % (world.size * s.accum):
        raise ValueError(
            f"--batch-size: expected a multiple of processes × --accum = {world.size} × {s.accum}, got {s.batch_size}"
        )
    corpus = D.load_corpus(s.data) if corpus is None else corpus
    T = s.context()
    if corpus.train.numel() < T + 1:
        raise D.DataError(
            f"--data: expected a training split of at least --seq-len + 1 = {T + 1} tokens, got {corpus.train.numel()}"
        )
    D.validation_starts(corpus.val.numel(), T, 1)  # fails early, naming --data, if validation is too short
    config = model_config(s, corpus)
    out = Path(s.out)
    found = ckpt.latest(out)
    if found is not None and not s.resume:
        raise ValueError(
            f"--out: {str(out)!r} already holds a checkpoint ({found.name}); pass --resume or choose another --out"
        )
    if found is None and s.resume:
        raise ValueError(f"--resume: expected a checkpoint in --out {str(out)!r}, found none")
    if found is not None:  # the settings first, before the model is built
        trainer = ckpt.read_trainer(found)
        if trainer is None:
            raise ValueError(f"--resume: expected a training checkpoint in {str(found)!r}")
        _check_resume(s, trainer, world, found)
        if trainer["data"].get("fingerprint") != corpus.fingerprint:
            raise ValueError(f"--data: the corpus differs from the one the checkpoint in {str(found)!r} was trained on")
        if trainer["data"].get("batch_scheme") != D.BATCH_SCHEME:
            raise ValueError(
                f"--resume: the checkpoint in {str(found)!r} drew its batches with another scheme "
                f"({trainer['data'].get('batch_scheme')!r}, this bmojo: {D.BATCH_SCHEME!r})"
            )

    torch.manual_seed(s.seed)
    base = BMojoLM(config).to(device)
    n_params = sum(p.numel() for p in base.parameters())
    if s.compile:
        base.compile()
    model = wrap(base, s.strategy, world, device)
    optimizer = adamw(model, lr=s.lr, weight_decay=s.weight_decay)
    schedule = Schedule(s.lr, s.warmup_steps, s.steps, s.min_lr_ratio)
    autocast = autocast_context(s.autocast, device, base)
    innovation = any(layer.innovation_loss_weight > 0 for layer in config.layers)

    start, tokens, elapsed = 0, 0, 0.0
    if found is not None:
        trainer = ckpt.load_for_resume(found, model, base, optimizer, world=world, device=device)
        start, tokens, elapsed = trainer["step"], trainer["tokens"], trainer["elapsed_s"]

    label = LABELS.get(s.arch, s.arch) if s.config is None else Path(s.config).stem
    v2 = [f"{k}={getattr(s, k)}" for k in LAYER_FLAGS if getattr(s, k) is not None]
    if v2:
        label += f" ({', '.join(v2)})"
    log = JsonlLog(out / "log.jsonl", enabled=world.main, resume_step=start if found is not None else None)
    bar = Progress(total=s.steps, initial=start, desc=f"train {label}", enabled=world.main and s.progress)
    if found is None:
        bar.write(
            f"{label}: {n_params:,} parameters, context {T}, global batch {s.batch_size} × {T} tokens, "
            f"{s.steps} steps, {world.size} process(es) ({s.strategy if world.distributed else 'single'}), "
            f"device {device}; "
            f"data {corpus.describe()}"
        )
    else:
        bar.write(f"{label}: resumed from {found} at step {start}")

    per_rank = s.batch_size // world.size
    micro = per_rank // s.accum
    rows = D.shard_rows(s.batch_size, world.rank, world.size)
    ddp = hasattr(model, "no_sync")
    fsdp = hasattr(model, "set_requires_gradient_sync")
    t0 = time.perf_counter() - elapsed
    run_t0 = time.perf_counter()
    step = start
    last_loss = val_loss = val_step = None
    stopped = False

    def trainer_state() -> dict:
        return {
            "tokens": tokens,
            "elapsed_s": round(time.perf_counter() - t0, 3),
            "world_size": world.size,
            "strategy": s.strategy if world.distributed else "single",
            "settings": _recorded_settings(s),
            "arch": s.arch if s.config is None else "config",
            "label": label,
            "parameters": n_params,
            "data": {
                "source": corpus.source,
                "fingerprint": corpus.fingerprint,
                "vocab_size": corpus.vocab_size,
                "batch_scheme": D.BATCH_SCHEME,
            },
            "last_loss": last_loss,
            "val_loss": val_loss,
            "val_step": val_step,  #: the step val_loss was measured at
        }

    while step < s.steps:
        t_step = time.perf_counter()
        lr = schedule.lr(step)
        set_lr(optimizer, lr)
        starts = D.batch_starts(corpus.train.numel(), T, s.batch_size, s.seed, step)[rows]
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        aux_sum = torch.zeros((), dtype=torch.float64, device=device)
        for m in range(s.accum):
            x, y = D.windows(corpus.train, starts[m * micro : (m + 1) * micro], T)
            last = m == s.accum - 1
            if fsdp:
                model.set_requires_gradient_sync(last)
            sync = model.no_sync() if ddp and not last else contextlib.nullcontext()
            with sync:
                with autocast():
                    loss, aux = lm_loss(model, x.to(device), y.to(device), innovation=innovation)
                (loss / s.accum).backward()
            loss_sum += loss.detach().double() / s.accum
            if aux is not None:
                aux_sum += aux.double() / s.accum
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += s.batch_size * T
        last_loss, last_aux = (v / world.size for v in all_reduce_sum([float(loss_sum), float(aux_sum)], device))
        step_s = time.perf_counter() - t_step  # this step's training only (not validation, checkpoints, logging)
        grad_norm = float(grad_norm)  # the same on every rank (DDP and FSDP2 reduce the gradients)
        if not math.isfinite(last_loss):
            raise _diverged(step, f"loss {last_loss}")
        if not math.isfinite(grad_norm):
            raise _diverged(step, f"gradient norm {grad_norm}")
        rate = bar.update(loss=last_loss, tokens=s.batch_size * T, lr=lr, seconds=step_s)
        record = {
            "step": step,
            "loss": round(last_loss, 6),
            "lr": lr,
            "grad_norm": round(grad_norm, 6),
            "tokens": tokens,
            "tokens_per_s": round(rate, 1),
            "elapsed_s": round(time.perf_counter() - t0, 3),
        }
        if innovation:
            record["innovation_loss"] = round(last_aux, 6)  # included in "loss"
        validated = step == s.steps or (s.val_every and step % s.val_every == 0)  # --val-every 0: at the end only
        if validated:
            val_loss, val_step = evaluate(model, corpus, s, world, device, autocast), step
            val_ppl = math.exp(val_loss) if val_loss < 709 else math.inf  # math.exp overflows past ~709.78
            if not math.isfinite(val_ppl):  # nan too; before anything is logged or saved
                raise _diverged(step, f"validation loss {val_loss}")
            record.update(val_loss=round(val_loss, 6), val_ppl=round(val_ppl, 4))
            bar.write(f"step {step}: loss {last_loss:.4f}, validation loss {val_loss:.4f} (ppl {val_ppl:.3f})")
        log.write(record)
        over_time = s.time_limit is not None and (time.perf_counter() - run_t0) > 60 * s.time_limit
        stopped = step < s.steps and (step == s.stop_at or any_rank(over_time, device))
        if stopped or step == s.steps or (s.ckpt_every and step % s.ckpt_every == 0):
            if not validated and not finite_outputs(model, corpus, s, world, device, autocast):
                raise _diverged(step, "non-finite outputs after the update")
            ckpt.save(
                out, step, model, base, optimizer, trainer=trainer_state(), world=world, device=device, keep=s.keep
            )
        if stopped:
            bar.write(f"stopped at step {step} of {s.steps}; continue with the same command plus --resume")
            break
    bar.close()
    return {
        "step": step,
        "finished": step == s.steps,
        "loss": last_loss,
        "val_loss": val_loss,
        "val_step": val_step,
        "checkpoint": str(ckpt.latest(out)),
        "parameters": n_params,
        "world_size": world.size,
    }


# ----------------------------------------------------------------------------- CLI


def register(sub) -> None:
    d = TrainSettings()
    p = sub.add_parser(
        "train",
        help="train a causal LM (default: the Python stdlib as bytes); runs under torchrun for DDP/FSDP2",
        description=__doc__.split("\n\n")[0],
    )
    model = p.add_argument_group("model")
    model.add_argument("--preset", default=d.preset, choices=sorted(SIZES), help=f"model size (default {d.preset})")
    model.add_argument(
        "--arch", default=d.arch, choices=ARCHS, help=f"layer kind, parameter-matched (default {d.arch})"
    )
    model.add_argument(
        "--config", default=None, metavar="JSON", help="a ModelConfig JSON file (replaces --preset/--arch)"
    )
    model.add_argument("--ssm-bypass", default=None, choices=("none", "gated"), help="layer v2: gated SSM bypass")
    model.add_argument("--fading-offset", type=int, default=None, help="layer v2: fading offset δ (default w)")
    model.add_argument(
        "--innovation-loss-weight", type=float, default=None, help="layer v2: innovation loss weight λ (default 0)"
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="text file, directory, or .npy/.safetensors token file (default: stdlib)",
    )
    data.add_argument("--seq-len", type=int, default=None, help="training context (default: the preset's)")
    data.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"global sequences per step (default {d.batch_size})"
    )
    data.add_argument("--accum", type=int, default=d.accum, help="gradient-accumulation micro-batches (default 1)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    opt.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    opt.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: steps/20)")
    opt.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="final lr / peak lr (default 0.1)")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decay on matrices (default 0.1)")
    opt.add_argument("--clip", type=float, default=d.clip, help="max gradient norm (default 1.0)")
    opt.add_argument(
        "--autocast", default=d.autocast, choices=AUTOCAST, help="bfloat16 autocast (default auto: CUDA only)"
    )
    opt.add_argument("--compile", action="store_true", help="torch.compile the model")
    opt.add_argument("--seed", type=int, default=d.seed, help="seed of weights and batches (default 0)")
    run = p.add_argument_group("run")
    run.add_argument(
        "--out", default=d.out, help=f"run directory: checkpoints, log.jsonl; one run at a time (default {d.out})"
    )
    run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    run.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop after this step (resume later)")
    run.add_argument(
        "--time-limit", type=float, default=None, metavar="MIN", help="checkpoint and stop after MIN minutes"
    )
    run.add_argument("--val-every", type=int, default=d.val_every, help="validation interval in steps (0: end only)")
    run.add_argument(
        "--val-windows", type=int, default=d.val_windows, help="validation windows of --seq-len (default 64)"
    )
    run.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="checkpoint interval (0: at the end only)")
    run.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept (default 2)")
    run.add_argument(
        "--device", default=d.device, help="torch device (default cpu; cuda under torchrun uses LOCAL_RANK)"
    )
    run.add_argument("--threads", type=int, default=None, help=f"torch CPU threads per process (1 to {MAX_THREADS})")
    run.add_argument("--strategy", default=d.strategy, choices=STRATEGIES, help="under torchrun: ddp or fsdp (FSDP2)")
    run.add_argument("--backend", default=d.backend, help="op backend, or 'auto' (default reference)")
    run.add_argument(
        "--allow-world-size-change", action="store_true", help="resume with a different number of processes"
    )
    p.set_defaults(func=run_cli)


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in vars(args).items() if k in names})


def run_cli(args) -> int:
    from bmojo.jobs.distributed import world_from_env

    result = run_training(settings_from_args(args))
    if world_from_env().main and result["val_loss"] is not None:
        at = "" if result["val_step"] == result["step"] else f" (measured at step {result['val_step']})"
        print(
            f"step {result['step']}: loss {result['loss']:.4f}, validation loss {result['val_loss']:.4f}{at}; "
            f"checkpoint {result['checkpoint']}"
        )
    return 0
