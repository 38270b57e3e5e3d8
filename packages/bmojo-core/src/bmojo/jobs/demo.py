"""``bmojo demo``: train a small B'MOJO LM on associative recall on CPU and show it learn."""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bmojo._checks import check_flag, check_seed
from bmojo.config import ModelConfig
from bmojo.jobs import optim
from bmojo.model import BMojoLM, expected_tensors
from bmojo.tasks import recall_batch


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a small B'MOJO LM on a synthetic recall task (CPU, ~30 s)")
    p.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    p.add_argument("--pairs", type=int, default=6, help="key-value pairs per sequence (default 6)")
    p.add_argument("--vocab", type=int, default=32, help="vocabulary size (default 32)")
    p.add_argument("--d-model", type=int, default=64, help="model width (default 64)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--window", type=int, default=4, help="attention window w (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run)


def validate_args(args) -> None:
    """Every flag up front; errors name the flag, not the config field behind it."""
    from bmojo.config import ConfigError

    for name in ("--steps", "--pairs", "--vocab", "--d-model", "--batch", "--window"):
        check_flag(name, getattr(args, name[2:].replace("-", "_")), minimum=1)
    check_seed("--seed", args.seed)
    if args.pairs > args.vocab // 2:
        raise ValueError(f"--pairs: expected <= --vocab // 2 = {args.vocab // 2}, got {args.pairs}")
    try:
        need, part, flags = memory_floor(args, _config(args))
    except ConfigError as err:
        raise ValueError(f"--d-model/--window give an invalid model: {err}") from None
    ram = physical_memory()
    if ram is not None and need > ram:  # refused before anything is allocated
        got = ", ".join(f"{f} {getattr(args, f[2:].replace('-', '_'))}" for f in flags)
        raise ValueError(
            f"{'/'.join(flags)}: expected sizes whose tensors fit in this machine's memory ({_size(ram)}), "
            f"got {got}: the demo needs at least {_size(need)} at once ({part})"
        )


#: Sequences of the accuracy check after training.
EVAL_SEQUENCES = 256


def memory_floor(args, cfg: ModelConfig) -> tuple[int, str, tuple[str, ...]]:
    """(bytes, the largest part, the flags that size it): a lower bound on the memory the demo
    holds at once, from tensors it certainly allocates (activations are not counted), computed on
    the meta device. A config whose tensors torch cannot size is a ConfigError."""
    params = sum(math.prod(shape) * dtype.itemsize for shape, dtype in expected_tensors(cfg).values())
    with torch.device("meta"):
        model = BMojoLM(cfg)
    try:
        state = model.init_state(1, device="meta").nbytes()  # the final sample's prefill
    except (RuntimeError, OverflowError):  # past int64 bytes
        state = 2**63
    seq = 4 * args.pairs - 1
    train, test = ("--batch", args.batch, "a training batch"), (None, EVAL_SEQUENCES, "the test sequences")
    # (copies of the parameters alive alongside: 1 in the first step, 4 once there are gradients
    # and AdamW moments), bytes, what, the flags that size it
    parts = [(4, 0, "", ())]
    for copies, (flag, rows, whose) in ((1, train), (4, test)):
        flags = (flag,) if flag else ()
        parts.append((copies, rows * seq * args.vocab * 4, f"the logits of {whose}", (*flags, "--pairs", "--vocab")))
        perms = rows * (args.vocab // 2) * 8  # recall_batch holds one int64 permutation of the keys per row
        parts.append((copies, perms, f"the key permutations of {whose}", (*flags, "--vocab")))
    parts.append((4, state, "the decode state of the final sample", ("--window", "--d-model")))
    copies, extra, what, flags = max(parts, key=lambda p: p[0] * params + p[1])
    if copies * params >= extra:  # name the larger term
        what, flags = "the parameters, their gradients and AdamW moments", ("--vocab", "--d-model")
    return copies * params + extra, f"{what}: {_size(max(copies * params, extra))}", flags


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PiB"


def _config(args) -> ModelConfig:
    return ModelConfig.preset(
        "bmojo",
        vocab_size=args.vocab,
        d_model=args.d_model,
        n_layers=2,
        window=args.window,
        eidetic_capacity=16,
        n_heads=4,
        ssm_head_dim=16,
        ssm_chunk_size=16,
    ).replace(init_std=0.05)  # 0.02 trains too slowly at this width (see docs/experiments.md)


def run(args) -> int:
    validate_args(args)
    try:
        return _run(args)
    except (RuntimeError, MemoryError) as err:  # sizes under memory_floor's bound that still do not fit
        if not isinstance(err, MemoryError) and "can't allocate memory" not in str(err):  # torch's CPU allocator's
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"--batch/--pairs/--vocab/--d-model/--window: expected sizes that fit in memory, "
            f"got an allocation failure ({first})"
        ) from None


def _run(args) -> int:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = _config(args)
    model = BMojoLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"B'MOJO LM: {cfg.n_layers} layers, d_model {cfg.d_model}, window {args.window}, fading {args.window}, "
        f"eidetic {cfg.layers[0].eidetic_capacity} slots, {n_params:,} parameters"
    )
    print(
        f"task: recall {args.pairs} key-value pairs; sequence length {4 * args.pairs - 1}; "
        f"the first query is {2 * args.pairs - 1} tokens after the first pair, the window holds {args.window}"
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = optim.OneCycle(3e-3, args.steps)  # = torch's OneCycleLR(max_lr=3e-3, total_steps=steps)
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="training", unit="step")
    for step in bar:
        x, y = recall_batch(args.batch, args.pairs, args.vocab, generator=gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.apply(opt, schedule, step)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % max(1, args.steps // 6) == 0 or step == args.steps - 1:
            tqdm.write(f"step {step:4d}  loss {loss.item():.3f}")
    model.eval()
    x, y = recall_batch(EVAL_SEQUENCES, args.pairs, args.vocab, generator=gen)
    with torch.no_grad():
        pred = model(x).argmax(-1)
    mask = y != -100
    acc = (pred[mask] == y[mask]).float().mean().item()
    print(f"trained in {time.time() - t0:.0f} s; recall accuracy on {EVAL_SEQUENCES} fresh sequences: {acc:.3f}")
    sample = x[0, : 2 * args.pairs + 1]
    answer = model.generate(sample[None], 1)[0, 0].item()
    pairs = " ".join(f"{int(sample[i])}→{int(sample[i + 1])}" for i in range(0, 2 * args.pairs, 2))
    print(f"sample: context {pairs}; query {int(sample[-1])} → model says {answer}")
    return 0
