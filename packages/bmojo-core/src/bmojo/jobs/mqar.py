"""``bmojo mqar``: multi-query associative recall at matched decode-state budgets.

Five architectures — full-attention Transformer, sliding-window Transformer (SWA), Mamba-2,
B'MOJO-F and B'MOJO — are trained on MQAR generated from a seed (``bmojo.tasks.mqar_batch``) and
evaluated per (number of key-value pairs, sequence length). Queries sit in the second half of the
sequence, beyond the attention window of the bounded models at the smaller default budget, so
those models must carry the pairs in their state. Results and how the defaults were calibrated:
``docs/experiments.md``.

State budgets are fractions of the full Transformer's decode state (its KV cache for the longest
sequence). For each budget every bounded architecture gets the largest configuration whose
``model.init_state(1).nbytes()`` fits:

* SWA: the window ``w``;
* Mamba-2: the SSM state size ``N``;
* B'MOJO-F: the window ``w`` (with fading window ``f = w``; the SSM is fixed);
* B'MOJO: the eidetic capacity ``M`` (window ``--window``, ``f = w``; the SSM is fixed).

Every run (one architecture at one budget) is cached as JSON under ``--out/runs`` and skipped
when present (its key holds the settings, the config, the op backend and the device); training
checkpoints every ``--ckpt-every`` steps, so an interrupted run resumes. A cached run that lacks
what ``--save-models`` or ``--eval-every`` asks for (no saved model; no curve at that interval) is
trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bmojo._checks import check_device, check_flag, check_seed, check_threads
from bmojo.config import ModelConfig
from bmojo.jobs import checkpoint as C
from bmojo.jobs import optim
from bmojo.jobs.checkpoint import write_atomic
from bmojo.jobs.distributed import World
from bmojo.model import WEIGHTS_NAME, BMojoLM
from bmojo.tasks import check_mqar, mqar_batch, mqar_query_start

ARCHS = ("transformer", "swa", "mamba2", "bmojo_f", "bmojo")
#: Variants of the hybrids (layer v2, spec §2.1 — this project's extension — and the innovation
#: loss): base architecture and the layer fields they set. The budget buys the base's knob.
VARIANTS = {
    "bmojo_f_d0": ("bmojo_f", {"fading_offset": 0}),
    "bmojo_d0": ("bmojo", {"fading_offset": 0}),
    "bmojo_f_gated": ("bmojo_f", {"ssm_bypass": "gated"}),
    "bmojo_gated": ("bmojo", {"ssm_bypass": "gated"}),
    "bmojo_il": ("bmojo", {"innovation_loss_weight": 1.0}),
}
ALL_ARCHS = ARCHS + tuple(VARIANTS)
LABELS = {
    "transformer": "Transformer",
    "swa": "SWA Transformer",
    "mamba2": "Mamba-2",
    "bmojo_f": "B'MOJO-F",
    "bmojo": "B'MOJO",
    "bmojo_f_d0": "B'MOJO-F δ=0 (ext.)",
    "bmojo_d0": "B'MOJO δ=0 (ext.)",
    "bmojo_f_gated": "B'MOJO-F gated (ext.)",
    "bmojo_gated": "B'MOJO gated (ext.)",
    "bmojo_il": "B'MOJO + innov. loss",
}
#: Bumped whenever the training or evaluation protocol changes, so cached runs are not reused.
PROTOCOL = 1


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that determines one experiment's results (besides architecture and budget)."""

    seq_lens: tuple[int, ...] = (32, 64)
    kv_pairs: tuple[int, ...] = (4, 8)
    vocab: int = 32
    d_model: int = 64
    n_heads: int = 4
    steps: int = 300
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    eval_sequences: int = 256
    window: int = 2  #: B'MOJO's attention window w (and chunk); f = w
    hybrid_state: int = 4  #: SSM state size N inside B'MOJO / B'MOJO-F
    ssm_head_dim: int = 32
    tie_embeddings: bool = False  #: a separate LM head (see docs/experiments.md, calibration)
    init_std: float = 0.05  #: weight init std; the core default 0.02 stalls at this width
    seed: int = 0
    innovation_loss: float = 0.0  #: λ of the innovation loss in every B'MOJO(-F) layer (0: off)

    @property
    def grid(self) -> list[tuple[int, int]]:
        """(seq_len, kv_pairs) cells, shortest first; invalid combinations are left out."""
        cells = []
        for T, n in itertools.product(sorted(self.seq_lens), sorted(self.kv_pairs)):
            try:
                check_mqar(T, n, self.vocab)
            except ValueError:
                continue
            cells.append((T, n))
        return cells

    @property
    def max_len(self) -> int:
        return max(T for T, _ in self.grid)


# ----------------------------------------------------------------------------- model configs


def _common(s: Settings) -> dict:
    return dict(
        vocab_size=s.vocab,
        d_model=s.d_model,
        n_layers=2,
        n_heads=s.n_heads,
        ssm_head_dim=s.ssm_head_dim,
        ssm_chunk_size=32,
        attn_block_size=64,
    )


def state_bytes(cfg: ModelConfig) -> int:
    """Decode-state bytes for one sequence (float32), as ``DecodeState.nbytes()`` reports them."""
    with torch.device("meta"):
        model = BMojoLM(cfg)
    return model.init_state(1, device="cpu", dtype=torch.float32).nbytes()


def _fit(make, lo: int, hi: int, budget: int):
    """Largest knob in [lo, hi] whose config fits ``budget`` bytes (state grows with the knob)."""
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        try:
            cfg = make(mid)
        except ValueError:
            hi = mid - 1
            continue
        if state_bytes(cfg) <= budget:
            best, lo = (mid, cfg), mid + 1
        else:
            hi = mid - 1
    return best


def full_attention_bytes(s: Settings) -> int:
    return state_bytes(ModelConfig.preset("transformer", context=s.max_len, **_common(s)))


def arch_config(arch: str, s: Settings, budget: int | None, eidetic_capacity: int | None = None):
    """(ModelConfig, knobs) for ``arch`` within ``budget`` bytes (None: the transformer, or a
    B'MOJO with a fixed ``eidetic_capacity`` for the ablation). Returns None when nothing fits."""
    extra = {}
    if arch in VARIANTS:
        arch, extra = VARIANTS[arch]
    if s.innovation_loss > 0 and arch in ("bmojo_f", "bmojo"):
        extra = {"innovation_loss_weight": s.innovation_loss, **extra}
    got = _arch_config(arch, s, budget, eidetic_capacity, extra)
    if got is None:
        return None
    return got[0].replace(tie_embeddings=s.tie_embeddings, init_std=s.init_std), got[1]


def _arch_config(arch: str, s: Settings, budget: int | None, eidetic_capacity: int | None, extra: dict):
    c = {**_common(s), **extra}
    w = s.window
    hybrid = dict(ssm_state_size=s.hybrid_state, window=w)
    if arch == "transformer":
        return ModelConfig.preset("transformer", context=s.max_len, **c), {"w": s.max_len}
    if eidetic_capacity is not None:
        if eidetic_capacity == 0:
            cfg = ModelConfig.preset("bmojo_f", **hybrid, **c)
        else:
            cfg = ModelConfig.preset("bmojo", eidetic_capacity=eidetic_capacity, **hybrid, **c)
        return cfg, {"w": w, "f": w, "M": eidetic_capacity, "N": s.hybrid_state}
    if arch == "swa":
        fit = _fit(lambda k: ModelConfig.preset("swa", window=k, **c), 1, s.max_len, budget)
        return None if fit is None else (fit[1], {"w": fit[0]})
    if arch == "mamba2":
        fit = _fit(lambda k: ModelConfig.preset("mamba2", ssm_state_size=k, **c), 1, 1024, budget)
        return None if fit is None else (fit[1], {"N": fit[0]})
    if arch == "bmojo_f":
        fit = _fit(
            lambda k: ModelConfig.preset("bmojo_f", window=k, ssm_state_size=s.hybrid_state, **c), 1, s.max_len, budget
        )
        return None if fit is None else (fit[1], {"w": fit[0], "f": fit[0], "N": s.hybrid_state})
    if arch == "bmojo":
        fit = _fit(lambda k: ModelConfig.preset("bmojo", eidetic_capacity=k, **hybrid, **c), 1, 4 * s.max_len, budget)
        return None if fit is None else (fit[1], {"w": w, "f": w, "M": fit[0], "N": s.hybrid_state})
    raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")


# ----------------------------------------------------------------------------- train / evaluate


def _data_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


#: Data seeds of the evaluation sets: cell i of seed s draws from ``base + 1000·s + i``. HELD_OUT is
#: the reported set; CHECK is --full's early-stopping set, disjoint from it (cells < 500).
HELD_OUT, CHECK = 10_000, 10_500


def evaluate(model: BMojoLM, s: Settings, device, *, base: int = HELD_OUT) -> dict[str, float]:
    """Accuracy on the answers, per grid cell, on a fixed evaluation set seeded apart from
    training: the held-out set (default) or, with ``base=CHECK``, --full's stopping set."""
    model.eval()
    out = {}
    with torch.no_grad():
        for i, (T, n) in enumerate(s.grid):
            gen = _data_generator(base + 1_000 * s.seed + i)
            correct = total = 0
            left = s.eval_sequences
            while left > 0:
                b = min(left, 128)
                x, y = mqar_batch(b, T, n, s.vocab, generator=gen)
                x, y = x.to(device), y.to(device)
                mask = y != -100
                pred = model(x).argmax(-1)
                correct += int((pred[mask] == y[mask]).sum())
                total += int(mask.sum())
                left -= b
            out[cell_key(T, n)] = correct / total
    model.train()
    return out


def cell_key(T: int, n: int) -> str:
    return f"T={T},kv={n}"


def train_run(
    cfg: ModelConfig,
    s: Settings,
    device,
    ckpt: Path | None,
    desc: str,
    ckpt_every: int,
    eval_every: int = 0,
    save_to: Path | None = None,
) -> dict:
    """Train one model on the grid (cells in turn, one per step) and evaluate it; with
    ``eval_every`` > 0 also record the held-out accuracy every that many steps. ``ckpt``: this
    run's checkpoint directory (``bmojo.jobs.checkpoint``'s format), resumed from when present and
    removed when the run ends."""
    torch.manual_seed(s.seed)
    model = BMojoLM(cfg).to(device)
    opt = optim.adamw(model, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    schedule = optim.OneCycle(s.lr, s.steps, pct_start=0.1)
    gen = _data_generator(s.seed)
    start, losses, elapsed, curve = 0, [], 0.0, []
    if ckpt is not None:
        start, losses, elapsed, curve = resume(ckpt, model, opt, gen, s, device)
    grid = s.grid
    t0 = time.perf_counter() - elapsed
    bar = tqdm(range(start, s.steps), desc=desc, unit="step", initial=start, total=s.steps, leave=False)
    for step in bar:
        T, n = grid[step % len(grid)]
        x, y = mqar_batch(s.batch, T, n, s.vocab, generator=gen)
        x, y = x.to(device), y.to(device)
        logits, aux = model(x, return_aux=True)  # aux: the innovation loss (0 unless enabled)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.apply(opt, schedule, step)
        opt.step()
        losses.append(round(loss.item(), 4))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        done = step + 1
        if eval_every > 0 and done % eval_every == 0 and done < s.steps:
            small = dataclasses.replace(s, eval_sequences=min(128, s.eval_sequences))
            curve.append([done, round(time.perf_counter() - t0, 1), evaluate(model, small, device)])
            tqdm.write(f"{desc} step {done}: {curve[-1][2]}")
        if ckpt is not None and ckpt_every > 0 and done % ckpt_every == 0 and done < s.steps:
            trainer = {"job": "mqar", "settings": _settings_json(s), "losses": losses, "curve": curve}
            trainer["elapsed"] = time.perf_counter() - t0
            C.save(ckpt, done, model, model, opt, trainer=trainer, world=World(), device=torch.device(device),
                   keep=1, generators={"data": gen})  # fmt: skip
    bar.close()
    train_s = time.perf_counter() - t0
    acc = evaluate(model, s, device)
    if save_to is not None:
        model.save_pretrained(save_to)
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)
    return {
        "accuracy": acc,
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "loss_curve": losses[:: max(1, len(losses) // 50)],
        "train_seconds": round(train_s, 1),
        "accuracy_curve": curve,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# ----------------------------------------------------------------------------- checkpoints
#
# One directory per run, ``OUT/ckpt/<run key>/``, in bmojo.jobs.checkpoint's format (the one
# ``bmojo train`` writes: safetensors tensors + JSON, written atomically, every name, shape and
# dtype checked before a tensor is read; nothing is unpickled). Its ``trainer.json`` holds this
# job's settings, the loss history, the held-out curve and the elapsed time; the data generator's
# state travels in ``rng.safetensors``; the schedule is a function of the step.


def _settings_json(s: Settings) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(s)))


def resume(ckpt: Path, model, opt, gen, s: Settings, device) -> tuple[int, list, float, list]:
    """Restore the newest checkpoint in ``ckpt`` (if any) into fresh ``model``/``opt``/``gen``;
    returns (step, losses, elapsed, curve), (0, [], 0.0, []) without one. A checkpoint that does not
    match the run raises ``ValueError`` naming it."""
    try:
        step_dir = C.latest(ckpt)
        if step_dir is None:
            return 0, [], 0.0, []
        trainer = C.read_trainer(step_dir)
        if trainer is None or trainer.get("job") != "mqar":
            raise C.CheckpointError(f"expected a bmojo mqar checkpoint in {step_dir}")
        if trainer.get("settings") != _settings_json(s):
            raise C.CheckpointError("settings: written by a run with other settings")
        step, losses, elapsed, curve = (trainer.get(k) for k in ("step", "losses", "elapsed", "curve"))
        if isinstance(step, bool) or not isinstance(step, int) or not 0 < step < s.steps:
            raise C.CheckpointError(f"step: expected an int in [1, {s.steps}), got {step!r}")
        if not (isinstance(losses, list) and len(losses) == step and all(isinstance(x, (int, float)) for x in losses)):
            raise C.CheckpointError(f"losses: expected {step} numbers")
        if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not elapsed >= 0:
            raise C.CheckpointError(f"elapsed: expected seconds >= 0, got {elapsed!r}")
        if not isinstance(curve, list):
            raise C.CheckpointError("curve: expected a list")
        C.load_for_resume(step_dir, model, model, opt, world=World(), device=torch.device(device),
                          generators={"data": gen})  # fmt: skip
    except C.CheckpointError as err:
        raise ValueError(
            f"{ckpt}: not a valid checkpoint of this run ({err}); delete it to start the run over"
        ) from None
    return step, losses, float(elapsed), curve


# ----------------------------------------------------------------------------- the experiment


def _run_key(arch: str, cfg: ModelConfig, s: Settings, backend: str = "reference", device="cpu") -> str:
    """The cache key of one run: everything its numbers depend on, the op backend selected
    (``backend_label``) and the device included (defaults: the command's defaults)."""
    blob = {"protocol": PROTOCOL, "arch": arch, "config": cfg.to_dict(), "settings": dataclasses.asdict(s)}
    blob |= {"backend": backend, "device": str(device)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def backend_label() -> str:
    """The op backend selected now, as the run keys and records hold it: the name chosen by
    ``--backend`` (or ``BMOJO_BACKEND`` with ``--backend auto``), else ``implicit``."""
    from bmojo.backends import requested

    return requested()[0] or "implicit"


def plan(
    s: Settings,
    archs: list[str],
    budgets: list[float],
    capacities: list[int] | None,
    *,
    backend: str = "reference",
    device="cpu",
) -> list[dict]:
    """The runs of one experiment: (arch, budget label, config, knobs, state bytes, cache key)."""
    full = full_attention_bytes(s)
    runs = []
    if capacities is not None:  # the eidetic-memory ablation: B'MOJO at fixed w, f, N, varying M
        for M in capacities:
            cfg, knobs = arch_config("bmojo", s, None, eidetic_capacity=M)
            arch = "bmojo" if M > 0 else "bmojo_f"
            runs.append(dict(arch=arch, budget=f"M={M}", config=cfg, knobs=knobs))
    else:
        if "transformer" in archs:
            cfg, knobs = arch_config("transformer", s, None)
            runs.append(dict(arch="transformer", budget="full", config=cfg, knobs=knobs))
        for frac in budgets:
            budget = int(frac * full)
            for arch in archs:
                if arch == "transformer":
                    continue
                got = arch_config(arch, s, budget)
                if got is None:
                    tqdm.write(f"note: {LABELS[arch]} has no configuration within {budget} bytes; skipped")
                    continue
                runs.append(dict(arch=arch, budget=f"{frac:g}", config=got[0], knobs=got[1]))
    for run in runs:
        run["state_bytes"] = state_bytes(run["config"])
        run["fraction_of_full"] = run["state_bytes"] / full
        run["key"] = _run_key(run["arch"], run["config"], s, backend, device)
    return runs


def select_backend(name: str) -> None:
    """``auto``: the registry's implicit choice per op; any other name is selected explicitly and
    must be available (the registry's error says why not; never a silent fallback)."""
    from bmojo.backends import BackendUnavailableError, set_backend

    if name == "auto":
        return
    try:
        set_backend(name)
    except BackendUnavailableError as err:
        raise ValueError(f"--backend: cannot select {name!r}: {err}") from err


def _fmt_bytes(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _knobs(k: dict) -> str:
    return " ".join(f"{a}={b}" for a, b in k.items())


def table(results: list[dict], s: Settings) -> str:
    cells = [cell_key(T, n) for T, n in s.grid]
    head = ["architecture", "budget", "config", "params", "state bytes/seq", "vs full", *cells]
    rows = [head]
    for r in results:
        acc = r.get("accuracy", {})
        rows.append(
            [
                LABELS[r["arch"]],
                r["budget"],
                _knobs(r["knobs"]),
                f"{r['parameters']:,}" if "parameters" in r else "-",
                f"{r['state_bytes']:,}",
                f"{r['fraction_of_full']:.2f}",
                *(f"{acc[c]:.3f}" if c in acc else "-" for c in cells),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def ordering(results: list[dict], s: Settings) -> list[str]:
    """The expected ordering at the longest setting, checked per budget: True/False per claim."""
    T, n = s.grid[-1]
    key = cell_key(T, n)
    notes = []
    by_budget: dict[str, dict[str, float]] = {}
    for r in results:
        if "accuracy" in r:
            by_budget.setdefault(r["budget"], {})[r["arch"]] = r["accuracy"][key]
    for budget, acc in by_budget.items():
        claims = [("bmojo", "bmojo_f"), ("bmojo_f", "mamba2"), ("bmojo", "swa")]
        parts = []
        for a, b in claims:
            if a in acc and b in acc:
                ok = acc[a] >= acc[b]
                parts.append(f"{LABELS[a]} {acc[a]:.3f} {'>=' if ok else '<'} {LABELS[b]} {acc[b]:.3f}")
        if parts:
            notes.append(f"budget {budget} ({key}): " + "; ".join(parts))
    return notes


def plot(results: list[dict], s: Settings, path: Path, ablation: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = s.grid
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.6), squeeze=False, sharey=True)
    for ax, (T, n) in zip(axes[0], cells):
        key = cell_key(T, n)
        if ablation:
            pts = sorted((r["knobs"]["M"], r["accuracy"][key]) for r in results if "accuracy" in r)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"B'MOJO (w={s.window})")
            ax.set_xlabel("eidetic capacity M (tokens per layer)")
        else:
            for arch in ALL_ARCHS:
                pts = sorted((r["state_bytes"], r["accuracy"][key]) for r in results if r["arch"] == arch)
                if pts:
                    style = "*" if len(pts) == 1 else "o-"
                    ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], style, label=LABELS[arch], ms=8)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("decode-state size per sequence (KiB)")
        ax.set_title(f"MQAR: {n} pairs, T={T}")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def register(sub) -> None:
    d = Settings()
    p = sub.add_parser(
        "mqar",
        help="multi-query associative recall: 5 architectures at matched decode-state budgets (CPU, <10 min)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--seq-len", type=int, nargs="+", default=list(d.seq_lens), help="sequence lengths (default 32 64)")
    p.add_argument("--kv-pairs", type=int, nargs="+", default=list(d.kv_pairs), help="pairs per sequence (default 4 8)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps per model (default {d.steps})")
    p.add_argument("--d-model", type=int, default=d.d_model, help=f"model width (default {d.d_model})")
    p.add_argument("--vocab", type=int, default=d.vocab, help=f"vocabulary size (default {d.vocab})")
    p.add_argument("--batch", type=int, default=d.batch, help=f"batch size (default {d.batch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate, one-cycle (default {d.lr})")
    p.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=BUDGETS,
        help="decode-state budgets as fractions of the full Transformer's KV cache (default 0.25 0.5)",
    )
    p.add_argument("--window", type=int, default=d.window, help=f"B'MOJO's attention window w (default {d.window})")
    p.add_argument(
        "--hybrid-state",
        type=int,
        default=d.hybrid_state,
        help=f"SSM state size N inside B'MOJO and B'MOJO-F (default {d.hybrid_state})",
    )
    p.add_argument(
        "--eidetic-capacity",
        type=int,
        nargs="+",
        default=None,
        metavar="M",
        help="ablation: B'MOJO at window --window with these eidetic capacities (0 = B'MOJO-F) instead of budgets",
    )
    p.add_argument(
        "--arch",
        nargs="+",
        choices=ALL_ARCHS,
        default=None,
        help="architectures (default: all five; with --quick: transformer bmojo; with --full: all ten, "
        "the five plus the variants " + " ".join(VARIANTS) + ")",
    )
    p.add_argument(
        "--innovation-loss",
        type=float,
        default=d.innovation_loss,
        metavar="λ",
        help="train every B'MOJO(-F) layer with the innovation loss at weight λ (default 0: off)",
    )
    p.add_argument(
        "--tie-embeddings",
        action=argparse.BooleanOptionalAction,
        default=d.tie_embeddings,
        help="tie the LM head to the embedding (default: untied)",
    )
    p.add_argument("--init-std", type=float, default=d.init_std, help=f"weight init std (default {d.init_std})")
    p.add_argument("--eval-sequences", type=int, default=d.eval_sequences, help="held-out sequences per setting")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of weights and data (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--backend", default="reference", help="op backend, or 'auto' for the registry's choice (default reference)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default 1: faster for models this small)"
    )
    p.add_argument("--out", default="runs/mqar", help="results directory; finished runs there are reused (resume)")
    p.add_argument(
        "--ckpt-every", type=int, default=RUN_FLAGS["ckpt_every"], help="checkpoint interval in steps (0: never)"
    )
    p.add_argument(
        "--eval-every", type=int, default=RUN_FLAGS["eval_every"], help="also record held-out accuracy every N steps"
    )
    p.add_argument("--save-models", action="store_true", help="keep each trained model under --out/models")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny instance (<1 min): T=32, 4 pairs, vocabulary 32, 250 steps, Transformer and B'MOJO "
        "(the size, training and --budgets flags are refused with it)",
    )
    from bmojo.jobs import mqar_full

    mqar_full.register_flags(p)
    p.set_defaults(func=run)


def settings_from_args(args) -> Settings:
    if args.quick:
        return Settings(
            seq_lens=(32,),
            kv_pairs=(4,),
            vocab=32,
            d_model=64,
            steps=250,
            batch=32,
            eval_sequences=256,
            seed=args.seed,
        )
    return Settings(
        seq_lens=tuple(args.seq_len),
        kv_pairs=tuple(args.kv_pairs),
        vocab=args.vocab,
        d_model=args.d_model,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        eval_sequences=args.eval_sequences,
        window=args.window,
        hybrid_state=args.hybrid_state,
        tie_embeddings=args.tie_embeddings,
        init_std=args.init_std,
        seed=args.seed,
        innovation_loss=args.innovation_loss,
    )


def check_out_dir(flag: str, path: Path) -> None:
    """Create the results directory, or a ValueError naming ``flag``."""
    try:
        (path / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag}: expected a directory we can create and write, got {str(path)!r} ({err})") from None


#: what --quick replaces (it runs one fixed tiny instance): argparse dest -> Settings field
QUICK_FIXED = {
    "seq_len": "seq_lens",
    "kv_pairs": "kv_pairs",
    **{name: name for name in ("vocab", "d_model", "steps", "batch", "eval_sequences", "lr", "window")},
    **{name: name for name in ("hybrid_state", "tie_embeddings", "init_std", "innovation_loss")},
}
BUDGETS = [0.25, 0.5]
#: the largest --budgets fraction: far above any knob's search range (the largest configurations
#: fit well under 100x the full Transformer's cache), and a product with the cache size stays finite
MAX_BUDGET = 1000.0
#: defaults of the default run's bookkeeping flags, which --full/--scale do not read
RUN_FLAGS = {"ckpt_every": 100, "eval_every": 0, "save_models": False}


def _ignored_flags(args) -> None:
    """A flag the chosen mode does not read is an error, not silently ignored."""
    from bmojo.jobs.mqar_full import FULL_ONLY

    d = Settings()
    ignored = {}  # dest -> (default, why it is not read)
    if args.quick:
        why = "--quick runs one fixed tiny instance; drop --quick to set it"
        ignored |= {dest: (getattr(d, field), why) for dest, field in QUICK_FIXED.items()}
        ignored["budgets"] = (BUDGETS, why)
    full = args.full or args.scale != "default"
    if args.eidetic_capacity is not None and not full:  # with --full/--scale it is refused itself
        why = "--eidetic-capacity runs B'MOJO at --window with those capacities, not --arch at --budgets"
        ignored |= {"arch": (None, why), "budgets": (BUDGETS, why)}
    if not full:
        ignored |= {dest: (default, "only --full/--scale read it") for dest, default in FULL_ONLY.items()}
    else:
        if args.quick:
            raise ValueError("--quick: expected no --quick with --full/--scale (it is a mode of its own)")
        why = "--full/--scale train to --target or --max-steps over --seeds, checked every --full-eval-every"
        ignored["steps"] = (d.steps, why)
        ignored["seed"] = (d.seed, why)
        ignored |= {dest: (default, why) for dest, default in RUN_FLAGS.items()}
    if args.scale == "zoology":
        why = "--scale zoology fixes the task and model; its widths are --widths"
        ignored |= {dest: (getattr(d, field), why) for dest, field in QUICK_FIXED.items()}
    elif args.widths is not None:
        ignored["widths"] = (None, "only --scale zoology reads it")
    for dest, (default, why) in ignored.items():
        value = getattr(args, dest)
        if value != (list(default) if isinstance(default, tuple) else default):
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"{flag}: expected no {flag} here ({why}), got {value!r}")


def validate_args(args) -> None:
    """Every flag, up front: nothing trains before a bad value is reported, by its flag name."""
    if args.eidetic_capacity is not None:  # its own values first: it decides which flags are read
        check_flag("--eidetic-capacity", args.eidetic_capacity, minimum=0)
    _ignored_flags(args)
    for name in ("--seq-len", "--kv-pairs"):
        check_flag(name, getattr(args, name[2:].replace("-", "_")), minimum=1)
    for name in ("--steps", "--d-model", "--vocab", "--batch", "--window", "--hybrid-state", "--eval-sequences"):
        check_flag(name, getattr(args, name[2:].replace("-", "_")), minimum=1)
    check_seed("--seed", args.seed)
    for seed in args.seeds:
        check_seed("--seeds", seed)
    for name in ("--ckpt-every", "--eval-every"):
        check_flag(name, getattr(args, name[2:].replace("-", "_")), minimum=0)
    if args.threads is not None:
        check_threads("--threads", args.threads)
    if args.widths is not None:
        from bmojo.jobs.mqar_full import check_widths

        check_widths("--widths", args.widths)
    check_flag("--lr", args.lr, positive_float=True)
    check_flag("--init-std", args.init_std, positive_float=True)
    il = getattr(args, "innovation_loss", 0.0)
    if not (isinstance(il, (int, float)) and 0 <= il < float("inf")):
        raise ValueError(f"--innovation-loss: expected a finite weight >= 0, got {il}")
    if not args.budgets:
        raise ValueError("--budgets: expected at least one value, got none")
    for b in args.budgets:
        check_flag("--budgets", b, positive_float=True)
        if b > MAX_BUDGET:
            raise ValueError(f"--budgets: expected fractions of the full KV cache <= {MAX_BUDGET:g}, got {b!r}")
    _check_once("--budgets", [f"{b:g}" for b in args.budgets], args.budgets)  # as the run labels show them
    for name in ("--seq-len", "--kv-pairs", "--seeds", "--eidetic-capacity", "--widths", "--arch"):
        values = getattr(args, name[2:].replace("-", "_"))
        if values is not None:
            _check_once(name, values, values)
    if not args.quick and args.scale == "default":  # every value given must make some (T, pairs) cell
        cells = Settings(seq_lens=tuple(args.seq_len), kv_pairs=tuple(args.kv_pairs), vocab=args.vocab).grid
        for flag, values, i in (("--seq-len", args.seq_len, 0), ("--kv-pairs", args.kv_pairs, 1)):
            unused = sorted({v for v in values if all(c[i] != v for c in cells)})
            if unused:
                raise ValueError(
                    f"{flag}: expected values that each make a valid (--seq-len, --kv-pairs) setting with "
                    f"--vocab {args.vocab}, got {unused} that make none (valid: {cells})"
                )


def _check_once(flag: str, keys: list, values: list) -> None:
    """Each value of a list flag once: a repeat would be trained, counted or plotted twice."""
    dup = list(dict.fromkeys(k for k in keys if keys.count(k) > 1))
    if dup:
        raise ValueError(f"{flag}: expected each value once, got {' '.join(map(str, dup))} more than once in {values}")


def check_archs_fit(args, archs: list[str], runs: list[dict], budgets: list[float]) -> None:
    """An architecture the user named with --arch that fits none of the budgets is an error, not a
    note: the run would otherwise finish without it."""
    if args.arch is None:
        return
    missing = [a for a in archs if a != "transformer" and not any(r["arch"] == a for r in runs)]
    if missing:
        raise ValueError(
            f"--arch/--budgets: expected every --arch to fit some budget, got {' '.join(missing)} with no "
            f"configuration within {budgets} of the full cache (raise --budgets, or lower --window/--hybrid-state)"
        )


def _model_flags_ok(s: Settings) -> None:
    """The model configs these sizes give are valid; a ConfigError is reported with the flags."""
    from bmojo.config import ConfigError

    try:
        arch_config("transformer", s, None)
        arch_config("bmojo", s, None, eidetic_capacity=1)
    except ConfigError as err:
        raise ValueError(f"--d-model/--window/--hybrid-state/--vocab give an invalid model: {err}") from None


def read_run_record(path: Path, cells: list[str], counts: dict[str, bool] | None = None) -> dict:
    """A cached run's JSON, or a ValueError naming the file (a truncated or edited file). Its
    accuracy table must hold a number for each of ``cells``; each key of ``counts`` must hold a
    number (or null where its value is True)."""

    def bad(why: str):
        return ValueError(f"{path}: not a valid run record ({why}); delete it to rerun")

    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"{type(err).__name__}: {err}") from None
    acc = record.get("accuracy") if isinstance(record, dict) else None
    if not isinstance(acc, dict) or not all(_is_number(v) for v in acc.values()):
        raise bad("no accuracy table")
    missing = [c for c in cells if c not in acc]
    if missing:
        raise bad(f"no accuracy for {missing}")
    for key, nullable in (counts or {}).items():
        value = record.get(key)
        if not (_is_number(value) or (nullable and key in record and value is None)):
            raise bad(f"{key}: expected a number{' or null' if nullable else ''}, got {value!r:.40}")
    return record


def _cache_lacks(record: dict, eval_every: int, save_to: Path | None) -> str | None:
    """What a cached run lacks that this invocation asks for (the flag, in words), or None."""
    if eval_every > 0 and record.get("eval_every") != eval_every:
        return f"a held-out curve every {eval_every} steps (--eval-every)"
    if save_to is not None and not (save_to / WEIGHTS_NAME).is_file():
        return f"a saved model in {save_to} (--save-models)"
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run(args) -> int:
    validate_args(args)
    device = check_device("--device", args.device)
    from bmojo.backends import requested, set_backend

    previous = requested()[0] if requested()[1].startswith("use_backend") else None
    select_backend(args.backend)
    try:
        if args.full or args.scale != "default":
            from bmojo.jobs import mqar_full

            return mqar_full.run_full(args)
        return _run(args, device)
    finally:  # called as a function (tests, notebooks): leave the caller's selection as it was
        if args.backend != "auto":
            set_backend(previous, check=False)


def _run(args, device) -> int:
    # These models are small enough that one thread is as fast as several on an idle machine and
    # much faster on a busy one (intra-op threads spin against other processes).
    torch.set_num_threads(max(1, args.threads or 1))
    s = settings_from_args(args)
    if not s.grid:
        raise ValueError(
            f"--seq-len/--kv-pairs: expected at least one valid (T, pairs) cell (T >= 2·pairs + max(2·pairs, T/2)), "
            f"got T={list(s.seq_lens)} pairs={list(s.kv_pairs)}"
        )
    if args.eidetic_capacity is not None:  # the budget search's range for B'MOJO's M
        big = [M for M in args.eidetic_capacity if M > 4 * s.max_len]
        if big:
            raise ValueError(
                f"--eidetic-capacity: expected capacities <= {4 * s.max_len} (4 x the longest --seq-len), got {big}"
            )
    if s.steps < 1:
        raise ValueError(f"--steps: expected >= 1, got {s.steps}")
    if not s.innovation_loss >= 0:
        raise ValueError(f"--innovation-loss: expected a weight >= 0, got {s.innovation_loss}")
    if args.arch is None:
        archs = ["transformer", "bmojo"] if args.quick else list(ARCHS)
    else:
        archs = list(dict.fromkeys(args.arch))
    _model_flags_ok(s)
    out = Path(args.out)
    check_out_dir("--out", out)
    budgets = [0.75] if args.quick else args.budgets
    from bmojo.config import ConfigError

    backend = backend_label()
    try:
        runs = plan(s, archs, budgets, args.eidetic_capacity, backend=backend, device=device)
    except ConfigError as err:
        raise ValueError(f"--eidetic-capacity/--window/--hybrid-state give an invalid model: {err}") from None
    if not runs:
        raise ValueError(f"--budgets/--arch: no architecture has a configuration within budgets {budgets}")
    if args.eidetic_capacity is None:
        check_archs_fit(args, archs, runs, budgets)
    gaps = ", ".join(f"T={T} kv={n}: queries from {mqar_query_start(T, n)}" for T, n in s.grid)
    print(
        f"MQAR: vocab {s.vocab}, {gaps}; {len(runs)} models of 2 layers, width {s.d_model}, "
        f"{s.steps} steps of batch {s.batch}; seed {s.seed}; device {device}, {torch.get_num_threads()} threads"
    )
    t0 = time.perf_counter()
    results = []
    for run_ in tqdm(runs, desc="models", unit="model"):
        path = out / "runs" / f"{run_['arch']}-{run_['budget']}-{run_['key']}.json"
        record = {k: v for k, v in run_.items() if k != "config"}
        record["config"] = run_["config"].to_dict()
        record |= {"backend": backend, "device": str(device), "eval_every": args.eval_every}
        save_to = out / "models" / path.stem if args.save_models else None
        cached = read_run_record(path, [cell_key(T, n) for T, n in s.grid]) if path.is_file() else None
        lacks = None if cached is None else _cache_lacks(cached, args.eval_every, save_to)
        if cached is not None and lacks is None:
            record.update(cached)
            tqdm.write(f"{LABELS[run_['arch']]} ({run_['budget']}): cached in {path}")
        else:
            desc = f"{LABELS[run_['arch']]} {run_['budget']}"
            if lacks is not None:
                tqdm.write(f"{desc}: cached in {path} without {lacks}; training it again")
            ckpt = out / "ckpt" / run_["key"]
            record.update(train_run(run_["config"], s, device, ckpt, desc, args.ckpt_every, args.eval_every, save_to))
            write_atomic(path, json.dumps(record, indent=1))
            accs = " ".join(f"{k}: {v:.3f}" for k, v in record["accuracy"].items())
            tqdm.write(f"{desc} ({_knobs(run_['knobs'])}): {accs}  [{record['train_seconds']:.0f} s]")
        results.append(record)
    wall = time.perf_counter() - t0
    text = table(results, s)
    print()
    print(text)
    notes = ordering(results, s) if args.eidetic_capacity is None else []
    for note in notes:
        print(note)
    summary = {
        "settings": dataclasses.asdict(s),
        "budgets": None if args.eidetic_capacity is not None else budgets,  # the ablation reads none
        "eidetic_capacity": args.eidetic_capacity,
        "backend": backend,
        "device": str(device),
        "full_attention_bytes": full_attention_bytes(s),
        "wall_seconds": round(wall, 1),  # this invocation (cached runs cost nothing)
        "train_seconds_total": round(sum(r.get("train_seconds", 0.0) for r in results), 1),
        "results": results,
        "ordering": notes,
    }
    write_atomic(out / "results.json", json.dumps(summary, indent=1))
    plot(results, s, out / "mqar.png", ablation=args.eidetic_capacity is not None)
    print(f"\nwrote {out / 'results.json'} and {out / 'mqar.png'} ({wall:.0f} s)")
    return 0
