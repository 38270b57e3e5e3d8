"""``bmojo mqar --full`` and ``bmojo mqar --scale zoology``: MQAR trained until solved, over seeds.

The default ``bmojo mqar`` trains every model for a fixed 300 steps, which measures learning speed
as much as capacity. ``--full`` trains every (architecture, budget, seed) until the held-out
accuracy of the *worst* setting (the lowest over the (T, pairs) cells) reaches ``--target`` (0.99) or
``--max-steps``, and reports per
model the final accuracy (mean and range over seeds) and the steps to 0.9, with learning curves
in a second PNG. Models with an eidetic memory also report what it holds after the pairs: the
share of its slots holding pair tokens, per layer (the diagnostic of docs/experiments.md), with
and without the innovation loss (the ``bmojo_il`` row).

Rows: the five architectures of ``bmojo mqar`` plus the variants of ``bmojo.jobs.mqar.VARIANTS`` (layer
v2 — fading offset δ = 0 and the gated SSM bypass, this project's extension — and B'MOJO with the
innovation loss). Every finished run is cached as JSON under ``OUT/runs``, so an interrupted
invocation resumes run by run (a run itself restarts from step 0).

``--scale zoology`` is the GPU protocol: vocabulary 8192, T ∈ {256, 512}, 16–64 pairs, widths
64–256 (as in the Zoology benchmark), one ``--full`` experiment per width.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bmojo.argcheck import check_out_dir
from bmojo.config import ModelConfig
from bmojo.jobs import optim
from bmojo.jobs.checkpoint import write_atomic
from bmojo.jobs.mqar import (
    ALL_ARCHS,
    CHECK,
    LABELS,
    PROTOCOL,
    Settings,
    _data_generator,
    _fmt_bytes,
    _knobs,
    _run_key,
    backend_label,
    cell_key,
    check_archs_fit,
    evaluate,
    full_attention_bytes,
    plan,
    read_run_record,
    select_backend,
    settings_from_args,
)
from bmojo.jobs.plotting import save_figure
from bmojo.model import BMojoLM
from bmojo.tasks import mqar_batch, mqar_query_start

#: Zoology-scale settings (one experiment per width); see docs/experiments.md for the runtime.
ZOOLOGY = dict(
    seq_lens=(256, 512),
    kv_pairs=(16, 32, 64),
    vocab=8192,
    n_heads=4,
    batch=64,
    lr=1e-3,
    eval_sequences=256,
    window=32,
    hybrid_state=16,
)
ZOOLOGY_WIDTHS = (64, 128, 256)
ZOOLOGY_MAX_STEPS = 6000
#: the published orderings checked at equal bytes (a >= b)
CLAIMS = (("bmojo", "bmojo_f"), ("bmojo_f", "mamba2"), ("bmojo", "mamba2"), ("bmojo", "swa"), ("bmojo_f", "swa"))


#: --full's own protocol version, in its cached run names: 2 checks the stopping rule on a set
#: disjoint from the reported held-out one (1 checked on the first 128 of those 256 sequences)
FULL_PROTOCOL = 2
#: the flags only --full/--scale read, with their defaults (bmojo mqar refuses them otherwise)
FULL_ONLY = {"seeds": [0, 1, 2], "max_steps": None, "target": 0.99, "full_eval_every": None, "estimate": False}


def register_flags(p) -> None:
    g = p.add_argument_group("--full: train until solved, over seeds (docs/experiments.md)")
    g.add_argument(
        "--full",
        action="store_true",
        help="train every architecture and variant at each budget until the worst (T, pairs) setting reaches --target "
        "held-out accuracy or --max-steps, over --seeds (hours on 2 CPU cores; resumable per run)",
    )
    g.add_argument("--seeds", type=int, nargs="+", default=FULL_ONLY["seeds"], help="--full: seeds (default 0 1 2)")
    g.add_argument("--max-steps", type=int, default=None, help="--full: step cap (default 2000; zoology 6000)")
    g.add_argument(
        "--target",
        type=float,
        default=FULL_ONLY["target"],
        help="--full: stop at this held-out accuracy (default 0.99)",
    )
    g.add_argument(
        "--full-eval-every", type=int, default=None, help="--full: held-out check interval (default 50; zoology 250)"
    )
    g.add_argument(
        "--scale",
        choices=["default", "zoology"],
        default="default",
        help="zoology: vocabulary 8192, T 256/512, 16-64 pairs, widths 64-256, with --full's protocol (use a GPU)",
    )
    g.add_argument("--widths", type=int, nargs="+", default=None, help="--scale zoology: widths (default 64 128 256)")
    g.add_argument(
        "--estimate",
        action="store_true",
        help="--full/--scale: train nothing to the end; time a few steps and one evaluation per model on this "
        "device and print the expected runtime (every run to the step cap: an upper bound)",
    )


# ----------------------------------------------------------------------------- diagnostics


def eidetic_share(model: BMojoLM, s: Settings, device, sequences: int = 128) -> dict[str, list[dict] | None]:
    """What each layer's eidetic memory holds when the first query may arrive: prefill held-out
    sequences up to ``mqar_query_start`` (past the pairs and the gap) and count, per layer, the
    slots holding pair tokens (positions < 2n; keys even, values odd). ``pair_share`` is the mean
    fraction of the M slots holding a pair token (at most min(M, 2n)/M)."""
    model.eval()
    out: dict[str, list[dict] | None] = {}
    with torch.no_grad():
        for i, (T, n) in enumerate(s.grid):
            gen = _data_generator(20_000 + 1_000 * s.seed + i)
            x, _ = mqar_batch(sequences, T, n, s.vocab, generator=gen)
            _, state = model.prefill(x[:, : mqar_query_start(T, n)].to(device))
            layers = []
            for layer in state.layers:
                pos = layer.get("eidetic.pos")
                if pos is None:
                    layers.append(None)
                    continue
                pair = (pos >= 0) & (pos < 2 * n)
                layers.append(
                    {
                        "slots": pos.shape[1],
                        "pair_share": round(pair.float().mean().item(), 4),
                        "pair_keys": round((pair & (pos % 2 == 0)).sum(1).float().mean().item(), 2),
                        "pair_values": round((pair & (pos % 2 == 1)).sum(1).float().mean().item(), 2),
                        "filled": round((pos >= 0).sum(1).float().mean().item(), 2),
                    }
                )
            out[cell_key(T, n)] = layers if any(v is not None for v in layers) else None
    model.train()
    return out


# ----------------------------------------------------------------------------- training


def train_until(
    cfg: ModelConfig, s: Settings, device, desc: str, max_steps: int, eval_every: int, target: float
) -> dict:
    """Train on the grid (cells in turn, one per step) until the worst cell's held-out accuracy
    (128 sequences per cell of the CHECK set, every ``eval_every`` steps) reaches ``target`` or
    ``max_steps``; then evaluate on ``s.eval_sequences`` per cell of the held-out set, which the
    stopping rule never saw."""
    torch.manual_seed(s.seed)
    model = BMojoLM(cfg).to(device)
    opt = optim.adamw(model, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    schedule = optim.CosineToZero(s.lr, max(1, min(100, max_steps // 10)), max_steps)
    gen = _data_generator(s.seed)
    small = dataclasses.replace(s, eval_sequences=min(128, s.eval_sequences))
    grid, losses, curve = s.grid, [], []
    steps_to_09 = None
    trained = max_steps
    t0 = time.perf_counter()
    bar = tqdm(range(max_steps), desc=desc, unit="step", leave=False)
    for step in bar:
        T, n = grid[step % len(grid)]
        x, y = mqar_batch(s.batch, T, n, s.vocab, generator=gen)
        x, y = x.to(device), y.to(device)
        logits, aux = model(x, return_aux=True)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.apply(opt, schedule, step)
        opt.step()
        losses.append(round(loss.item(), 4))
        done = step + 1
        if done % eval_every == 0 or done == max_steps:
            acc = evaluate(model, small, device, base=CHECK)  # not the reported held-out set
            hard = min(acc.values())
            curve.append([done, round(time.perf_counter() - t0, 1), acc])
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}", worst=f"{hard:.3f}")
            if steps_to_09 is None and hard >= 0.9:
                steps_to_09 = done
            if hard >= target:
                trained = done
                break
    bar.close()
    train_s = time.perf_counter() - t0
    record = {
        "accuracy": evaluate(model, s, device),
        "steps": trained,
        "reached_target": bool(curve and min(curve[-1][2].values()) >= target),
        "steps_to_0.9": steps_to_09,
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "loss_curve": losses[:: max(1, len(losses) // 100)],
        "accuracy_curve": curve,
        "train_seconds": round(train_s, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if any(layer.eidetic_capacity > 0 for layer in cfg.layers):
        record["eidetic"] = eidetic_share(model, s, device)
    return record


# ----------------------------------------------------------------------------- the experiment


def _write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=1))


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.3f} [{min(values):.3f}, {max(values):.3f}]" if len(values) > 1 else f"{mean:.3f}"


def aggregate(records: list[dict], s: Settings) -> list[dict]:
    """One row per (arch, budget): final accuracy over seeds (worst cell and mean over cells),
    steps to 0.9 and steps trained per seed, eidetic pair share per layer (mean over seeds, largest
    cell)."""
    hardest = cell_key(*s.grid[-1])
    rows: dict[tuple[str, str], dict] = {}
    for r in records:
        row = rows.setdefault(
            (r["arch"], r["budget"]),
            {k: r[k] for k in ("arch", "budget", "knobs", "state_bytes", "fraction_of_full")}
            | {"hard": [], "mean": [], "to_09": [], "steps": [], "seeds": [], "share": []},
        )
        acc = r["accuracy"]
        row["seeds"].append(r["seed"])
        row["hard"].append(min(acc.values()))
        row["mean"].append(statistics.fmean(acc.values()))
        row["to_09"].append(r["steps_to_0.9"])
        row["steps"].append(r["steps"])
        if r.get("eidetic") and r["eidetic"].get(hardest):
            row["share"].append([None if v is None else v["pair_share"] for v in r["eidetic"][hardest]])
    out = list(rows.values())
    for row in out:
        if row["share"]:
            n_layers = len(row["share"][0])
            row["share_mean"] = [
                None if row["share"][0][i] is None else round(statistics.fmean(x[i] for x in row["share"]), 3)
                for i in range(n_layers)
            ]
    return out


def table(rows: list[dict], s: Settings, target: float) -> str:
    hardest = cell_key(*s.grid[-1])
    head = [
        "architecture",
        "budget",
        "config",
        "state bytes/seq",
        "vs full",
        "final acc, worst setting: mean [min, max]",
        "final acc, all cells: mean",
        "steps to 0.9 (per seed)",
        f"steps trained (cap or >= {target:g})",
        f"eidetic pair share per layer ({hardest})",
    ]
    lines = [head]
    for r in rows:
        to09 = ", ".join("-" if v is None else str(v) for v in r["to_09"])
        share = " / ".join("-" if v is None else f"{v:.2f}" for v in r.get("share_mean", [])) or "-"
        lines.append(
            [
                LABELS[r["arch"]],
                r["budget"],
                _knobs(r["knobs"]),
                f"{r['state_bytes']:,}",
                f"{r['fraction_of_full']:.2f}",
                _spread(r["hard"]),
                f"{statistics.fmean(r['mean']):.3f}",
                to09,
                ", ".join(str(v) for v in r["steps"]),
                share,
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def orderings(rows: list[dict], s: Settings) -> list[str]:
    """The published orderings at equal bytes, per budget, on the mean final accuracy of the
    worst setting over seeds: each claim with the numbers and holds / does not hold."""
    notes = []
    by_budget: dict[str, dict[str, float]] = {}
    for r in rows:
        by_budget.setdefault(r["budget"], {})[r["arch"]] = statistics.fmean(r["hard"])
    for budget, acc in by_budget.items():
        parts = []
        for a, b in CLAIMS:
            if a in acc and b in acc:
                verdict = "holds" if acc[a] >= acc[b] else "does not hold"
                parts.append(f"{LABELS[a]} {acc[a]:.3f} >= {LABELS[b]} {acc[b]:.3f}: {verdict}")
        if parts:
            notes.append(f"budget {budget} (worst setting): " + "; ".join(parts))
    return notes


def plot_full(rows: list[dict], records: list[dict], s: Settings, out: Path, max_steps: int) -> list[Path]:
    """``mqar_full.png``: final worst-setting accuracy (mean, min-max bars) against state bytes;
    ``mqar_full_curves.png``: held-out worst-setting accuracy against steps, one panel per budget,
    mean over seeds (a stopped run keeps its last value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {a: plt.cm.tab10(i % 10) for i, a in enumerate(ALL_ARCHS)}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for arch in ALL_ARCHS:
        pts = sorted((r["state_bytes"], statistics.fmean(r["hard"]), min(r["hard"]), max(r["hard"])) for r in rows
                     if r["arch"] == arch)  # fmt: skip
        if not pts:
            continue
        xs = [p[0] / 1024 for p in pts]
        ys = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt="*" if len(pts) == 1 else "o-", capsize=3, label=LABELS[arch],
                    color=colors[arch], ms=7)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("decode-state size per sequence (KiB)")
    ax.set_ylabel("final accuracy, worst (T, pairs) setting")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.set_title(f"MQAR --full: mean and range over seeds {sorted({r['seed'] for r in records})}")
    fig.tight_layout()
    first = out / "mqar_full.png"
    save_figure(fig, first)

    budgets = sorted({r["budget"] for r in records if r["budget"] != "full"}, key=float)
    fig, axes = plt.subplots(1, max(1, len(budgets)), figsize=(5.5 * max(1, len(budgets)), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets or ["full"]):
        for arch in ALL_ARCHS:
            runs = [r for r in records if r["arch"] == arch and r["budget"] in (budget, "full")]
            if not runs:
                continue
            grid_steps = sorted({c[0] for r in runs for c in r["accuracy_curve"]})
            if not grid_steps:
                continue
            means = []
            for step in grid_steps:
                vals = []
                for r in runs:
                    upto = [min(c[2].values()) for c in r["accuracy_curve"] if c[0] <= step]
                    vals.append(upto[-1] if upto else 0.0)
                means.append(statistics.fmean(vals))
            ax.plot(grid_steps, means, "-", label=LABELS[arch], color=colors[arch], lw=1.4)
        ax.set_title(f"budget {budget} (Transformer: full cache)")
        ax.set_xlabel("training step")
        ax.set_xlim(0, max_steps)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy, worst setting (mean over seeds)")
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    second = out / "mqar_full_curves.png"
    save_figure(fig, second)
    return [first, second]


def estimate(plans: list[dict], s: Settings, device, cap: int, every: int, n_seeds: int, steps: int = 6) -> dict:
    """Seconds per training step (median of ``steps`` timed steps after one untimed pass over the
    cells) and per held-out check (128 sequences per cell), per planned model; the upper bound
    runs every model to the cap with a check every ``every`` steps, for ``n_seeds`` seeds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for p in tqdm(plans, desc="timing", unit="model"):
        torch.manual_seed(s.seed)
        model = BMojoLM(p["config"]).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr)
        gen = _data_generator(s.seed)
        times = []
        for step in range(len(s.grid) + steps):
            T, n = s.grid[step % len(s.grid)]
            x, y = mqar_batch(s.batch, T, n, s.vocab, generator=gen)
            x, y = x.to(device), y.to(device)
            sync()
            t = time.perf_counter()
            logits, aux = model(x, return_aux=True)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100) + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            times.append(time.perf_counter() - t)
        timed = sorted(times[len(s.grid) :])
        t = time.perf_counter()
        evaluate(model, dataclasses.replace(s, eval_sequences=min(128, s.eval_sequences)), device, base=CHECK)
        sync()
        check = time.perf_counter() - t
        step_s = timed[len(timed) // 2]
        rows.append(
            {
                "arch": p["arch"],
                "budget": p["budget"],
                "knobs": p["knobs"],
                "step_s": round(step_s, 4),
                "check_s": round(check, 3),
                "run_to_cap_s": round(cap * step_s + (cap // every) * check, 1),
            }
        )
        del model, opt
    total = n_seeds * sum(r["run_to_cap_s"] for r in rows)
    return {"rows": rows, "upper_bound_s": round(total, 1)}


def _experiments(args) -> list[tuple[Settings, Path, int, int]]:
    """(settings, output folder, step cap, eval interval) per experiment."""
    out = Path(args.out)
    if args.scale == "zoology":
        widths = args.widths or list(ZOOLOGY_WIDTHS)
        cap = args.max_steps or ZOOLOGY_MAX_STEPS
        every = args.full_eval_every or 250
        return [(Settings(**ZOOLOGY, d_model=w, steps=cap, seed=0), out / f"zoology-d{w}", cap, every) for w in widths]
    base = settings_from_args(args)
    cap = args.max_steps or 2000
    return [(dataclasses.replace(base, steps=cap), out / "full", cap, args.full_eval_every or 50)]


def check_widths(flag: str, widths: list[int]) -> None:
    """--scale zoology's widths: ints >= 1 that build the protocol's models, or a ValueError
    naming ``flag`` (not the model's own field names)."""
    from bmojo._checks import check_flag
    from bmojo.jobs.mqar import arch_config

    check_flag(flag, widths, minimum=1)
    for w in widths:
        s = Settings(**ZOOLOGY, d_model=w)
        try:
            arch_config("transformer", s, None)
            arch_config("bmojo", s, None, eidetic_capacity=1)  # attention heads and SSM heads both
        except ValueError as err:
            raise ValueError(f"{flag}: expected widths the protocol's models can take, got {w} ({err})") from None


def _check_args(args) -> None:
    if not args.seeds:
        raise ValueError("--seeds: expected at least one seed, got none")
    for name in ("max_steps", "full_eval_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected an int >= 1, got {value}")
    if not 0 < args.target <= 1:
        raise ValueError(f"--target: expected an accuracy in (0, 1], got {args.target}")
    if args.eidetic_capacity is not None:
        raise ValueError("--eidetic-capacity: expected no ablation with --full/--scale (run it without them)")
    if not args.innovation_loss >= 0:
        raise ValueError(f"--innovation-loss: expected a weight >= 0, got {args.innovation_loss}")


def run_full(args) -> int:
    _check_args(args)
    for _, folder, _, _ in _experiments(args):  # before any work, not at the first write
        check_out_dir(folder if args.estimate else folder / "runs", "--out")
    select_backend(args.backend)
    backend = backend_label()
    torch.set_num_threads(max(1, args.threads or 1))
    device = torch.device(args.device)
    archs = list(dict.fromkeys(args.arch)) if args.arch else list(ALL_ARCHS)
    if args.scale == "zoology" and device.type == "cpu":
        tqdm.write("note: --scale zoology on a CPU takes days (docs/experiments.md); use --device cuda")
    for s0, out, cap, every in _experiments(args):
        budgets = args.budgets
        plans = plan(s0, archs, budgets, None, backend=backend, device=device)
        check_archs_fit(args, archs, plans, budgets)
        n_runs = len(plans) * len(args.seeds)
        if args.estimate:
            est = estimate(plans, s0, device, cap, every, len(args.seeds))
            for r in est["rows"]:
                print(
                    f"{LABELS[r['arch']]:24} {r['budget']:>5} {_knobs(r['knobs']):20} {r['step_s']:.4f} s/step, "
                    f"check {r['check_s']:.2f} s, to the cap {r['run_to_cap_s'] / 60:.1f} min"
                )
            print(
                f"{n_runs} runs ({len(args.seeds)} seeds), every one to the {cap}-step cap: "
                f"{est['upper_bound_s'] / 3600:.2f} h on this device and thread count (an upper bound: runs that reach "
                f"{args.target:g} stop early)"
            )
            info = {"backend": backend, "device": str(device), "threads": torch.get_num_threads()}
            _write_json(out / "estimate.json", info | est)
            continue
        (out / "runs").mkdir(parents=True, exist_ok=True)
        print(
            f"MQAR --full{' (zoology scale)' if args.scale == 'zoology' else ''}: vocab {s0.vocab}, "
            f"T {list(s0.seq_lens)}, pairs {list(s0.kv_pairs)}, width {s0.d_model}; {len(plans)} models x "
            f"{len(args.seeds)} seeds = {n_runs} runs, each until the worst setting reaches {args.target:g} "
            f"(checked every {every} steps) or {cap} steps; device {device}, {torch.get_num_threads()} threads; "
            f"full-attention state {_fmt_bytes(full_attention_bytes(s0))}"
        )
        t0 = time.perf_counter()
        records = []
        jobs = [(p, seed) for seed in args.seeds for p in plans]
        for p, seed in tqdm(jobs, desc="runs", unit="run"):
            s = dataclasses.replace(s0, seed=seed)
            key = _run_key(p["arch"], p["config"], s, backend, device)
            key += f"-full{PROTOCOL}.{FULL_PROTOCOL}-{cap}-{every}-{args.target:g}"
            path = out / "runs" / f"{p['arch']}-{p['budget']}-s{seed}-{key}.json"
            record = {k: v for k, v in p.items() if k != "config"} | {"seed": seed, "config": p["config"].to_dict()}
            record |= {"backend": backend, "device": str(device)}
            if path.is_file():
                cells = [cell_key(T, n) for T, n in s.grid]
                record.update(read_run_record(path, cells, {"steps": False, "steps_to_0.9": True}))
            else:
                desc = f"{LABELS[p['arch']]} {p['budget']} seed {seed}"
                record.update(train_until(p["config"], s, device, desc, cap, every, args.target))
                _write_json(path, record)
                tqdm.write(
                    f"{desc} ({_knobs(p['knobs'])}): worst setting {min(record['accuracy'].values()):.3f} after "
                    f"{record['steps']} steps, 0.9 at {record['steps_to_0.9']} [{record['train_seconds']:.0f} s]"
                )
            records.append(record)
        rows = aggregate(records, s0)
        text = table(rows, s0, args.target)
        notes = orderings(rows, s0)
        print()
        print(text)
        for note in notes:
            print(note)
        figures = plot_full(rows, records, s0, out, cap)
        wall = time.perf_counter() - t0
        _write_json(
            out / "results.json",
            {
                "settings": dataclasses.asdict(s0),
                "full_protocol": FULL_PROTOCOL,
                "seeds": args.seeds,
                "budgets": budgets,
                "max_steps": cap,
                "eval_every": every,
                "target": args.target,
                "backend": backend,
                "device": str(device),
                "full_attention_bytes": full_attention_bytes(s0),
                "wall_seconds": round(wall, 1),
                "train_seconds_total": round(sum(r.get("train_seconds", 0.0) for r in records), 1),
                "rows": rows,
                "orderings": notes,
                "table": text,
                "results": records,
            },
        )
        print(f"\nwrote {out / 'results.json'}, {figures[0]} and {figures[1]} ({wall:.0f} s)")
    return 0
