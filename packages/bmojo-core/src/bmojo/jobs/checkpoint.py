"""Training checkpoints: safetensors tensors + JSON, written atomically, validated before loading.

A run directory (``bmojo train --out RUN``) holds::

    RUN/latest.json                      {"format", "step", "dir"}: the newest complete checkpoint
    RUN/log.jsonl                        the training log (bmojo.jobs.progress.JsonlLog)
    RUN/.train.lock                      held (flock) by the bmojo train run writing here; its pid
    RUN/checkpoints/step-00000100/
        config.json  model.safetensors   exactly what BMojoLM.save_pretrained writes (loads with from_pretrained)
        optimizer.safetensors            AdamW state per parameter name: state/<name>/{step,exp_avg,exp_avg_sq}
        optimizer.json                   AdamW param_groups (hyper-parameters, parameter names)
        rng.safetensors                  torch RNG states, one per rank (torch_cpu/rank<r>, torch_cuda/rank<r>),
                                         and a job's own data generators (generator/<name>)
        trainer.json                     step, tokens, elapsed time, world size, settings, data fingerprint

The learning-rate schedule is a pure function of the step (``bmojo.jobs.optim.Schedule``), so the
step is its whole state. Tensors are *full* (unsharded) whatever wrote them — one process, DDP or
FSDP2 — so a checkpoint from one mode loads in any other. ``bmojo mqar`` uses the same format, one
run directory per (model, settings) run. AdamW keeps moments only for parameters that have received
a gradient, and so does the checkpoint: each parameter has all three entries or none. Rank 0 writes everything into a
temporary directory, renames it into place and only then replaces ``latest.json`` (write to a
temporary file, ``os.replace``): a crash leaves the previous checkpoint intact. Nothing is
pickled. Loading reads the JSON and the safetensors headers first and checks the config, every
tensor name, shape and dtype before any tensor is read. A write killed mid-way leaves a
``checkpoints/.tmp-step-*`` directory; ``bmojo train`` removes those (:func:`remove_stale_tmp`)
when it starts, once it holds the run directory's lock (``RUN/.train.lock``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bmojo.config import ConfigError, ModelConfig, config_diff
from bmojo.model import CONFIG_NAME, WEIGHTS_NAME, BMojoLM, check_stored_config, expected_tensors
from bmojo.state import SAFETENSORS_DTYPES, StateError

FORMAT = "bmojo-train-checkpoint"
VERSION = 1
LATEST = "latest.json"
OPTIM_TENSORS = "optimizer.safetensors"
OPTIM_JSON = "optimizer.json"
RNG = "rng.safetensors"
TRAINER = "trainer.json"
ADAMW_KEYS = ("step", "exp_avg", "exp_avg_sq")
#: param-group keys every AdamW of the supported torch versions writes (others, such as
#: decoupled_weight_decay, came later: when present they are checked like these)
ADAMW_GROUP_KEYS = ("params", "lr", "betas", "eps", "weight_decay")


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, or does not fit the model or run it is loaded into."""


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` through a temporary file in the same directory and ``os.replace``: a crash
    or Ctrl-C leaves the old file or the new one, never a truncated one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


# ----------------------------------------------------------------------------- finding checkpoints


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    info = _loads(pointer, "a checkpoint pointer")
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("dir"), str):
        raise CheckpointError(f"{pointer}: expected a {FORMAT!r} pointer with a 'dir', got {info!r}")
    path = Path(run_dir) / info["dir"]
    if not path.is_dir():
        raise CheckpointError(f"{pointer}: expected the checkpoint directory {str(path)!r}, not found")
    return path


def resolve(path: str | Path, flag: str = "--checkpoint") -> Path:
    """A checkpoint directory from a run directory (its latest), a step directory, or any
    ``save_pretrained`` directory. A blank string is refused (``Path("")`` would be the current
    directory)."""
    if isinstance(path, str) and not path.strip():
        raise CheckpointError(f"{flag}: expected a run or checkpoint directory, got {path!r} (blank)")
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{flag}: expected a run or checkpoint directory, got {str(path)!r} (not found)")
    found = latest(path) if path.is_dir() else None
    if found is not None:
        return found
    if (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
        return path
    raise CheckpointError(
        f"{flag}: expected a directory with {LATEST} (a bmojo train --out directory) or with {CONFIG_NAME} and "
        f"{WEIGHTS_NAME}, got {str(path)!r}"
    )


def _loads(path: Path, what: str) -> Any:
    """``path``'s JSON, or a CheckpointError naming it (bad JSON, bad UTF-8, nesting too deep)."""
    try:
        return json.loads(path.read_text())
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError; json recurses per level
        reason = "nesting too deep to read" if isinstance(err, RecursionError) else str(err)
        raise CheckpointError(f"{path}: expected JSON ({what}), got unreadable text ({reason})") from None


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: expected {path.name} ({what}), not found")
    return _loads(path, what)


def read_trainer(step_dir: Path) -> dict | None:
    """``trainer.json`` of a training checkpoint; None for a plain ``save_pretrained`` directory."""
    path = Path(step_dir) / TRAINER
    if not path.is_file():
        return None
    info = read_json(path, "trainer state")
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
        raise CheckpointError(f"{path}: expected format {FORMAT!r} version {VERSION}, got {info!r:.200}")
    step = info.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise CheckpointError(f"{path}: step: expected an int >= 1, got {step!r}")
    named = re.fullmatch(r"step-(\d+)", Path(step_dir).name)  # save() names the directory after the step
    if named and int(named[1]) != step:
        raise CheckpointError(f"{path}: step: expected {int(named[1])} (the directory's), got {step}")
    return info


def read_config(step_dir: Path) -> ModelConfig:
    data = read_json(Path(step_dir) / CONFIG_NAME, "model config")
    try:
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{Path(step_dir) / CONFIG_NAME}: not a valid model config: {err}") from err


# ----------------------------------------------------------------------------- validated reading


def _header(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype | str]]:
    """Names, shapes and dtypes of a safetensors file, read from its header only."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: expected {path.name}, not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {}
            for name in f.keys():
                sl = f.get_slice(name)
                out[name] = (tuple(sl.get_shape()), SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype()))
            return out
    except SafetensorError as err:
        raise CheckpointError(f"{path}: expected a safetensors file, got an unreadable one ({err})") from err


def _check_header(path: Path, got: dict, want: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: expected exactly the model's tensors; missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}"
        )
    for name, (shape, dtype) in want.items():
        if got[name][0] != shape:
            raise CheckpointError(f"{path}: {name}: expected shape {shape}, got {got[name][0]}")
        if got[name][1] != dtype:
            raise CheckpointError(f"{path}: {name}: expected dtype {dtype}, got {got[name][1]}")


def _check_weights_config(step_dir: Path, config: ModelConfig) -> None:
    """The config stored in the weights' metadata (when there is one) must be config.json's."""
    weights = step_dir / WEIGHTS_NAME
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except SafetensorError as err:
        raise CheckpointError(f"{weights}: expected a safetensors file, got an unreadable one ({err})") from err
    try:
        check_stored_config(weights, meta, config, step_dir / CONFIG_NAME)
    except StateError as err:
        raise CheckpointError(str(err)) from None


def _read(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def _expected_model(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def load_model(path: str | Path, *, device="cpu", flag: str = "--checkpoint") -> tuple[BMojoLM, Path]:
    """A model from a run, step or ``save_pretrained`` directory, in the floating dtype its weights
    were saved in; everything is checked against the config before the weights are read. Returns
    the model (eval mode) and the step directory."""
    step_dir = resolve(path, flag)
    config = read_config(step_dir)
    weights = step_dir / WEIGHTS_NAME
    header = _header(weights)
    # The model in the dtype its floating tensors were saved in (training writes float32; a
    # save_pretrained model may be bfloat16, float16 or float64), when they agree on one.
    floats = {dt for _, dt in header.values() if isinstance(dt, torch.dtype) and dt.is_floating_point}
    dtype = floats.pop() if len(floats) == 1 else torch.float32
    # The config the weights were saved with first, then the tensors this config has (on the
    # meta device: nothing allocated), before anything is built for real.
    _check_weights_config(step_dir, config)
    try:
        expected = {
            k: (shape, dtype if dt.is_floating_point else dt) for k, (shape, dt) in expected_tensors(config).items()
        }
    except ConfigError as err:
        raise CheckpointError(f"{step_dir / CONFIG_NAME}: not a valid model config: {err}") from None
    _check_header(weights, header, expected)
    model = BMojoLM(config).to(dtype)
    model.load_state_dict(_read(weights))
    return model.to(device).eval(), step_dir


# ----------------------------------------------------------------------------- full state dicts


def _full_state(model, optimizer, distributed: bool):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=distributed)
    msd = get_model_state_dict(model, options=options)
    osd = get_optimizer_state_dict(model, optimizer, options=options)
    return msd, osd


def _optimizer_tensors(osd: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for name, state in osd["state"].items():
        for key in ADAMW_KEYS:
            value = state[key]
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(float(value), dtype=torch.float32)
            tensors[f"state/{name}/{key}"] = value.detach().to("cpu").contiguous()
    groups = []
    for group in osd["param_groups"]:
        g = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        groups.append(g)
    return tensors, groups


def save(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    base: BMojoLM,
    optimizer: torch.optim.Optimizer,
    *,
    trainer: dict,
    world,
    device: torch.device,
    keep: int,
    generators: dict[str, torch.Generator] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` (a collective: every rank calls it). Returns its directory.
    ``generators``: a single-process job's own ``torch.Generator``s (rank 0's), restored by
    :func:`load_for_resume`."""
    from bmojo.jobs.distributed import gather_tensors

    msd, osd = _full_state(model, optimizer, world.distributed)
    rng = {}
    cpu_states = gather_tensors(torch.get_rng_state().to(device), world)
    for r, s in enumerate(cpu_states):
        rng[f"torch_cpu/rank{r}"] = s.cpu()
    if device.type == "cuda":
        for r, s in enumerate(gather_tensors(torch.cuda.get_rng_state(device).to(device), world)):
            rng[f"torch_cuda/rank{r}"] = s.cpu()
    for name, gen in (generators or {}).items():
        rng[f"generator/{name}"] = gen.get_state()
    final = Path(run_dir) / "checkpoints" / step_dir_name(step)
    if world.main:
        tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / CONFIG_NAME).write_text(base.config.to_json())
        weights = {k: v.detach().to("cpu").contiguous() for k, v in msd.items()}
        meta = {"format": "pt", "library": "bmojo", "config": base.config.to_json()}  # as save_pretrained
        save_file(weights, str(tmp / WEIGHTS_NAME), metadata=meta)
        tensors, groups = _optimizer_tensors(osd)
        save_file(tensors, str(tmp / OPTIM_TENSORS), metadata={"format": "pt"})
        (tmp / OPTIM_JSON).write_text(json.dumps({"param_groups": groups}, indent=1))
        save_file(rng, str(tmp / RNG), metadata={"format": "pt"})
        info = {"format": FORMAT, "version": VERSION, "step": step, **trainer}
        (tmp / TRAINER).write_text(json.dumps(info, indent=1, sort_keys=True))
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # an earlier run reached this step and was resumed from before it
            shutil.rmtree(final)
        os.rename(tmp, final)
        pointer = Path(run_dir) / LATEST
        ptmp = pointer.with_name(f".{LATEST}.tmp-{os.getpid()}")
        ptmp.write_text(json.dumps({"format": FORMAT, "step": step, "dir": f"checkpoints/{final.name}"}))
        os.replace(ptmp, pointer)
        _prune(Path(run_dir) / "checkpoints", keep, final)
    _barrier(world)
    return final


def remove_stale_tmp(run_dir: Path) -> list[Path]:
    """Remove what a :func:`save` killed mid-way leaves in ``run_dir``: ``checkpoints/.tmp-step-*``
    directories (as large as a checkpoint) and ``.latest.json.tmp-*`` files. Only for a caller
    that knows no other process is writing to ``run_dir`` (``bmojo train`` holds its lock); a
    checkpoint that was renamed into place is never touched. Returns what was removed."""
    run_dir = Path(run_dir)
    stale = sorted((run_dir / "checkpoints").glob(".tmp-step-*")) + sorted(run_dir.glob(f".{LATEST}.tmp-*"))
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return stale


def _prune(directory: Path, keep: int, newest: Path) -> None:
    steps = sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for p in steps[: max(0, len(steps) - keep)]:
        if p != newest:
            shutil.rmtree(p)


def _barrier(world) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def _value_kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "a bool or null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} numbers"
    return type(value).__name__


def _check_param_groups(path: Path, optimizer: torch.optim.Optimizer) -> list[dict]:
    """``optimizer.json``'s param groups, checked against the fresh optimizer's: the same number of
    groups, AdamW's keys present, each key both have of the same kind (finite numbers where it
    holds numbers)."""
    data = read_json(path, "optimizer param groups")
    groups = data.get("param_groups") if isinstance(data, dict) else None
    fresh = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh) or not all(isinstance(g, dict) for g in groups):
        raise CheckpointError(f"{path}: param_groups: expected a list of {len(fresh)} dict(s), got {groups!s:.200}")
    for i, (got, want) in enumerate(zip(groups, fresh)):
        missing = sorted(set(ADAMW_GROUP_KEYS) - set(got))  # others may come and go between torch versions
        if missing:
            raise CheckpointError(
                f"{path}: param_groups[{i}]: expected the keys {list(ADAMW_GROUP_KEYS)}, missing {missing}"
            )
        params = got["params"]
        if not isinstance(params, list) or not all(isinstance(n, str) for n in params):
            raise CheckpointError(f"{path}: param_groups[{i}].params: expected a list of parameter names")
        for key in sorted((set(want) & set(got)) - {"params"}):
            kind, value = _value_kind(want[key]), got[key]
            numbers = value if isinstance(value, list) else [value]
            finite = all(not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) for x in numbers)
            if _value_kind(value) != kind or ("number" in kind and not finite):
                kind = kind.replace("number", "finite number")
                raise CheckpointError(f"{path}: param_groups[{i}].{key}: expected {kind}, got {value!r:.80}")
    return groups


def load_for_resume(
    step_dir: Path,
    model: torch.nn.Module,
    base: BMojoLM,
    optimizer: torch.optim.Optimizer,
    *,
    world,
    device,
    generators: dict[str, torch.Generator] | None = None,
) -> dict:
    """Restore weights, AdamW state, this rank's RNG state and the job's ``generators`` from
    ``step_dir`` into a freshly built (possibly wrapped) model and optimizer. Everything is
    validated before any tensor is read; the caller checks ``trainer.json`` against the run's
    settings. Returns ``trainer.json``."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    trainer = read_trainer(step_dir)
    if trainer is None:
        raise CheckpointError(f"--resume: expected a training checkpoint with {TRAINER} in {str(step_dir)!r}")
    saved = read_config(step_dir)
    if saved != base.config:
        raise CheckpointError(
            f"--config/--preset: the checkpoint in {str(step_dir)!r} was trained with another model config "
            f"({'; '.join(config_diff(saved, base.config)[:6])}); use the same config or another --out"
        )
    want_model = _expected_model(base)
    weights = step_dir / WEIGHTS_NAME
    _check_header(weights, _header(weights), want_model)
    _check_weights_config(step_dir, saved)
    otensors = step_dir / OPTIM_TENSORS
    got_optim = _header(otensors)
    want_optim = {}
    for name, (shape, dtype) in want_model.items():
        # every parameter's three entries: AdamW has state for each once a step has run (every
        # parameter of every architecture gets a gradient), and torch's strict loader refuses a
        # parameter without it — after reading the weights, with no file named
        if dtype.is_floating_point:
            want_optim[f"state/{name}/step"] = ((), torch.float32)
            want_optim[f"state/{name}/exp_avg"] = (shape, dtype)
            want_optim[f"state/{name}/exp_avg_sq"] = (shape, dtype)
    _check_header(otensors, got_optim, want_optim)
    groups = _check_param_groups(step_dir / OPTIM_JSON, optimizer)
    names = sorted(n for g in groups for n in g["params"])
    if names != sorted(n for n, (_, dt) in want_model.items() if dt.is_floating_point):
        raise CheckpointError(f"{step_dir / OPTIM_JSON}: expected param_groups naming every parameter once")
    rng_header = _header(step_dir / RNG)
    want_rng = (tuple(torch.get_rng_state().shape), torch.uint8)
    for key, got in rng_header.items():
        if key.startswith("torch_cpu/") and got != want_rng:
            raise CheckpointError(f"{step_dir / RNG}: {key}: expected shape {want_rng[0]} {want_rng[1]}, got {got}")
        if key.startswith("torch_cuda/") and (len(got[0]) != 1 or got[1] != torch.uint8):
            raise CheckpointError(f"{step_dir / RNG}: {key}: expected a 1-d torch.uint8 tensor, got {got}")
    for name, gen in (generators or {}).items():
        want = (tuple(gen.get_state().shape), torch.uint8)
        if rng_header.get(f"generator/{name}") != want:
            raise CheckpointError(
                f"{step_dir / RNG}: generator/{name}: expected shape {want[0]} {want[1]}, "
                f"got {rng_header.get(f'generator/{name}', 'nothing')}"
            )

    msd = _read(weights)
    flat = _read(otensors)
    state = {}
    for key, value in flat.items():
        name, field = key[len("state/") :].rsplit("/", 1)  # names contain dots, never slashes
        state.setdefault(name, {})[field] = value
    osd = {"state": state, "param_groups": [{**g, "betas": tuple(g["betas"])} for g in groups]}
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, msd, options=options)
    set_optimizer_state_dict(model, optimizer, osd, options=options)
    saved_rng = _read(step_dir / RNG)  # small (a few KiB per rank); read once
    key = f"torch_cpu/rank{world.rank}"
    if key in saved_rng:
        torch.set_rng_state(saved_rng[key])
    ckey = f"torch_cuda/rank{world.rank}"
    if device.type == "cuda" and ckey in saved_rng:
        torch.cuda.set_rng_state(saved_rng[ckey], device)
    for name, gen in (generators or {}).items():
        gen.set_state(saved_rng[f"generator/{name}"])
    return trainer
