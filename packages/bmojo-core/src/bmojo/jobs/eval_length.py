"""``bmojo eval-length``: validation perplexity at 1×, 2×, 4×, 8×, 16× the training context.

Every evaluated length ``L`` sees the *same* validation tokens (when ``L`` divides the largest
length, as with the default powers of two): the first ``--windows`` × (largest L) tokens of the
checkpoint's validation split, cut into windows of ``L`` tokens, each evaluated from position 0
with no state carried between windows. Two numbers per length:

* ``ppl``: perplexity over every token of every window (the usual "perplexity at length L");
* ``tail ppl``: perplexity over a *fixed* set of target tokens — the last ``context`` tokens of
  each window of the largest length — each predicted from a window of ``L`` tokens ending at its
  block. Only the amount of preceding context changes with ``L``, so this isolates what longer
  context does to a model (at 1× it is the 1× perplexity of those tokens, at 16× they sit
  15 training contexts deep).

Full-attention layers (no SSM, window ≥ the training context: the ``transformer`` preset) are
evaluated with their window widened to the evaluated length (``--extend-attention``, on by
default): a Transformer attends to its whole input, and its config's window is only the size of
its decode KV cache. Weights do not depend on the window. ``--no-extend-attention`` evaluates the
config as stored (a sliding window of the training context).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bmojo._checks import check_device, check_flag
from bmojo.jobs import checkpoint as ckpt
from bmojo.jobs.data import load_corpus
from bmojo.jobs.plotting import line_plot
from bmojo.model import BMojoLM

DEFAULT_FACTORS = (1, 2, 4, 8, 16)


def widen_attention(model: BMojoLM, context: int, length: int) -> tuple[BMojoLM, int]:
    """A copy of ``model`` whose full-attention layers (no SSM, window >= context) attend over
    ``length`` tokens; returns it and the number of layers changed (0: ``model`` itself)."""
    cfg = model.config
    layers, changed = [], 0
    for layer in cfg.layers:
        if layer.kind == "attention" and layer.window >= context and layer.window < length:
            layers.append(layer.replace(window=length))
            changed += 1
        else:
            layers.append(layer)
    if not changed:
        return model, 0
    wide = BMojoLM(cfg.replace(layers=tuple(layers)))
    wide.load_state_dict(model.state_dict())
    p = next(model.parameters())
    return wide.to(device=p.device, dtype=p.dtype).eval(), changed


def _nll(model, tokens: torch.Tensor, starts: torch.Tensor, length: int, batch_tokens: int):
    """Per-token NLL (len(starts), length) of the windows ``tokens[s : s + length + 1]``."""
    device = next(model.parameters()).device
    per = max(1, batch_tokens // length)
    out = []
    for i in range(0, starts.numel(), per):
        idx = starts[i : i + per, None] + torch.arange(length + 1)
        w = tokens[idx].long().to(device)
        x, y = w[:, :-1], w[:, 1:]
        out.append(F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(), reduction="none").view(y.shape).cpu())
    return torch.cat(out)


@torch.no_grad()
def length_nll(
    model: BMojoLM, tokens: torch.Tensor, length: int, longest: int, context: int, windows: int, batch_tokens: int
):
    """(mean NLL over all tokens, mean NLL over the fixed tail targets) at one evaluated ``length``.

    All tokens: ``windows · longest / length`` windows of ``length`` tiling the first
    ``windows · longest`` tokens. Tail: for each window of ``longest`` tokens, the window of
    ``length`` tokens that ends where it ends; only its last ``context`` tokens count.
    """
    n = windows * longest // length  # windows of `length` tiling the evaluated tokens
    nll = _nll(model, tokens, torch.arange(n) * length, length, batch_tokens)
    if longest % length == 0:  # the tiling already has a window ending where each long one ends
        k = longest // length
        tail = nll[k - 1 :: k, -context:]
    else:
        tail_starts = torch.arange(windows) * longest + (longest - length)
        tail = _nll(model, tokens, tail_starts, length, batch_tokens)[:, -context:]
    return float(nll.mean()), float(tail.mean())


def _settings(step_dir: Path, trainer: dict) -> dict:
    """trainer.json's ``settings`` (empty without one), checked to be a dict."""
    settings = trainer.get("settings", {})
    if not isinstance(settings, dict):
        raise ckpt.CheckpointError(
            f"{Path(step_dir) / ckpt.TRAINER}: settings: expected a dict, got {type(settings).__name__}"
        )
    return settings


def _check_trainer(step_dir: Path, trainer: dict) -> dict:
    """trainer.json's fields this command reads, checked (``read_trainer`` has checked ``step``):
    ``settings`` a dict, ``settings.data`` a path or null, ``data`` a dict whose ``fingerprint`` is
    a string or null, ``label`` a string. Returns ``settings``."""
    settings = _settings(step_dir, trainer)
    data, fp = trainer.get("data", {}), None
    if isinstance(data, dict):
        fp = data.get("fingerprint")
    checks = [
        ("settings.data", settings.get("data"), "a corpus path or null", (str, type(None))),
        ("data", data, "a dict", dict),
        ("data.fingerprint", fp, "a corpus fingerprint (a string) or null", (str, type(None))),
        ("label", trainer.get("label", ""), "a string", str),
    ]
    for name, value, expected, types in checks:
        if not isinstance(value, types):
            raise ckpt.CheckpointError(
                f"{Path(step_dir) / ckpt.TRAINER}: {name}: expected {expected}, got {value!r:.80} "
                f"({type(value).__name__})"
            )
    return settings


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_cached(path: Path, factors: list[int], context: int, extend_attention: bool) -> dict:
    """A cached evaluation (``evaluate_checkpoint``'s result), or a ValueError naming the file and
    the field (a truncated or hand-edited file): every field this command reads or writes on,
    with the factors, context and --extend-attention it is cached under."""

    def bad(field: str, expected: str, value, got: str | None = None) -> ValueError:
        if got is None:
            got = f"a list of {len(value)}" if isinstance(value, list) else f"{value!r:.80} ({type(value).__name__})"
        where = f"{path}: {field}" if field else f"{path}"
        return ValueError(f"{where}: expected {expected}, got {got}; delete the file to re-evaluate")

    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise bad("", "JSON (a cached evaluation)", None, f"unreadable text ({err})") from None
    if not isinstance(res, dict):
        raise bad("", "a JSON object (a cached evaluation)", res)
    fields = [
        ("label", isinstance(res.get("label"), str), "a string"),
        ("checkpoint", isinstance(res.get("checkpoint"), str), "a string"),
        ("step", res.get("step") is None or _is_int(res.get("step"), 1), "an int >= 1 or null"),
        ("parameters", _is_int(res.get("parameters"), 1), "an int >= 1"),
        ("context", _is_int(res.get("context"), 1) and res["context"] == context, f"{context} (an int)"),
        ("tokens_per_length", _is_int(res.get("tokens_per_length"), 1), "an int >= 1"),
        ("extend_attention", res.get("extend_attention") is extend_attention, f"{extend_attention}"),
        ("seconds", _is_number(res.get("seconds")), "a number"),
        ("results", isinstance(res.get("results"), list) and len(res["results"]) == len(factors), "a list"),
    ]
    for name, ok, expected in fields:
        if not ok:
            if name == "results":
                expected = f"a list of {len(factors)} (one row per factor)"
            raise bad(name, expected, res.get(name))
    for i, (factor, row) in enumerate(zip(factors, res["results"])):
        if not isinstance(row, dict):
            raise bad(f"results[{i}]", "a dict", row)
        checks = [
            ("factor", _is_int(row.get("factor"), 1) and row["factor"] == factor, f"{factor} (an int)"),
            ("length", _is_int(row.get("length"), 1) and row["length"] == factor * context, f"{factor * context}"),
            ("widened_layers", _is_int(row.get("widened_layers"), 0), "an int >= 0"),
            *((key, _is_number(row.get(key)), "a number") for key in ("nll", "ppl", "tail_nll", "tail_ppl")),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise bad(f"results[{i}].{name}", expected, row.get(name))
    return res


def _context(step_dir: Path, trainer: dict, context: int | None) -> int:
    """--context, or the training context recorded in the checkpoint (checked as --context is)."""
    if context is not None:
        return context
    context = _settings(step_dir, trainer).get("seq_len")
    if context is None:
        missing = f"{ckpt.TRAINER} has no settings.seq_len" if trainer else f"has no {ckpt.TRAINER}"
        raise ValueError(f"--context: expected the training context ({str(step_dir)!r} {missing})")
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ckpt.CheckpointError(
            f"{Path(step_dir) / ckpt.TRAINER}: settings.seq_len: expected an int >= 1 (the training context), "
            f"got {context!r}"
        )
    return context


def evaluate_checkpoint(
    path: str,
    *,
    factors: list[int],
    windows: int,
    context: int | None,
    data: str | None,
    extend_attention: bool,
    batch_tokens: int,
    device: str,
    corpus=None,
) -> dict:
    """``corpus``: the loaded ``--data`` corpus when the caller has it (``bmojo eval-length`` loads
    each corpus once, for its cache key); loaded here otherwise."""
    model, step_dir = ckpt.load_model(path, device=device)
    trainer = ckpt.read_trainer(step_dir) or {}
    settings = _check_trainer(step_dir, trainer)
    context = _context(step_dir, trainer, context)
    data = data if data is not None else settings.get("data")
    corpus = load_corpus(data) if corpus is None else corpus
    saved_fp = trainer.get("data", {}).get("fingerprint")
    if saved_fp is not None and data == settings.get("data") and saved_fp != corpus.fingerprint:
        raise ValueError(
            f"--data: the corpus now differs from the one {str(step_dir)!r} was trained on "
            f"(fingerprint {corpus.fingerprint}, trained on {saved_fp}); its validation split is not held out any more"
        )
    longest = max(factors) * context
    need = windows * longest + 1
    if corpus.val.numel() < need:
        raise ValueError(
            f"--windows: {windows} windows of {longest} tokens need {need} validation tokens, "
            f"the split has {corpus.val.numel()}"
        )
    if corpus.vocab_size > model.config.vocab_size:
        raise ValueError(f"--data: ids up to {corpus.vocab_size - 1} exceed the model's vocab_size")
    label = trainer.get("label", Path(path).name)
    rows = []
    t0 = time.perf_counter()
    for factor in tqdm(factors, desc=f"eval {label}", unit="length", leave=False):
        L = factor * context
        m, widened = widen_attention(model, context, L) if extend_attention else (model, 0)
        nll, tail = length_nll(m, corpus.val, L, longest, context, windows, batch_tokens)
        rows.append(
            {
                "factor": factor,
                "length": L,
                "nll": nll,
                "ppl": math.exp(nll),
                "tail_nll": tail,
                "tail_ppl": math.exp(tail),
                "widened_layers": widened,
            }
        )
    return {
        "label": label,
        "checkpoint": str(step_dir),
        "step": trainer.get("step"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "context": context,
        "tokens_per_length": windows * longest,
        "extend_attention": extend_attention,
        "seconds": round(time.perf_counter() - t0, 1),
        "results": rows,
    }


def table(results: list[dict], key: str = "ppl") -> str:
    factors = [r["factor"] for r in results[0]["results"]]
    head = ["model", "params", *[f"{f}× ({r['length']})" for f, r in zip(factors, results[0]["results"])]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        cells = [res["label"], f"{res['parameters']:,}", *(f"{r[key]:.3f}" for r in res["results"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    panels = {
        "all tokens of each window": {
            r["label"]: ([x["length"] for x in r["results"]], [x["ppl"] for x in r["results"]]) for r in results
        },
        "tail: fixed targets, L tokens of context": {
            r["label"]: ([x["length"] for x in r["results"]], [x["tail_ppl"] for x in r["results"]]) for r in results
        },
    }
    context = results[0]["context"]
    line_plot(
        {},
        path,
        xlabel="evaluated length (tokens)",
        ylabel="validation perplexity",
        logx=True,
        logy=True,
        vline=context,
        vline_label=f"training context ({context})",
        panels=panels,
    )


def register(sub) -> None:
    p = sub.add_parser(
        "eval-length",
        help="validation perplexity at 1x..16x the training context; table + PNG, one line per model",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--checkpoint", nargs="+", required=True, help="run or checkpoint directories (one line each)")
    p.add_argument("--label", nargs="+", default=None, help="names for the models (default: from the checkpoint)")
    p.add_argument("--factors", type=int, nargs="+", default=list(DEFAULT_FACTORS), help="multiples of the context")
    p.add_argument("--context", type=int, default=None, help="training context (default: from the checkpoint)")
    p.add_argument("--windows", type=int, default=8, help="windows at the longest length (default 8)")
    p.add_argument("--data", default=None, help="corpus (default: the one the checkpoint was trained on)")
    p.add_argument(
        "--extend-attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="widen full-attention layers to the evaluated length (default on)",
    )
    p.add_argument("--batch-tokens", type=int, default=16384, help="tokens per forward batch (default 16384)")
    p.add_argument(
        "--out", default="runs/eval-length", help="writes length.json, length.md, length.png (and a cache/) here"
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.label is not None and len(args.label) != len(args.checkpoint):
        raise ValueError(f"--label: expected one per --checkpoint ({len(args.checkpoint)}), got {len(args.label)}")
    if not args.factors or min(args.factors) < 1:
        raise ValueError(f"--factors: expected positive integers, got {args.factors}")
    for name in ("windows", "batch_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if args.context is not None and args.context < 1:
        raise ValueError(f"--context: expected an int >= 1, got {args.context}")
    if args.threads is not None:
        check_flag("--threads", args.threads, minimum=1)
        torch.set_num_threads(args.threads)
    check_device("--device", args.device)
    factors = sorted(set(args.factors))
    out = Path(args.out)
    # Every checkpoint's context and corpus first: models of different contexts are refused
    # before anything is evaluated, and each corpus is loaded once.
    step_dirs = [ckpt.resolve(path) for path in args.checkpoint]
    trainers = [ckpt.read_trainer(d) or {} for d in step_dirs]
    for d, t in zip(step_dirs, trainers):
        _check_trainer(d, t)
    contexts = [_context(d, t, args.context) for d, t in zip(step_dirs, trainers)]
    if len(set(contexts)) > 1:
        raise ValueError(f"--checkpoint: expected models trained at one context, got {contexts}")
    corpora = {}
    results = []
    for i, (path, step_dir, trainer) in enumerate(zip(args.checkpoint, step_dirs, trainers)):
        data = args.data if args.data is not None else _settings(step_dir, trainer).get("data")
        if data not in corpora:
            corpora[data] = load_corpus(data)
        kw = dict(
            factors=factors,
            windows=args.windows,
            context=args.context,
            data=args.data,
            extend_attention=args.extend_attention,
        )
        # Finished evaluations are cached under --out/cache, keyed by the checkpoint's files, the
        # corpus's content (its fingerprint: an edited --data file is a new key) and every setting
        # that changes the numbers, so models can be evaluated one command at a time.
        stamp = {f.name: f.stat().st_mtime_ns for f in sorted(step_dir.iterdir())}
        identity = [str(step_dir.resolve()), stamp, kw, corpora[data].fingerprint]
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        cached = out / "cache" / f"{key[:16]}.json"
        if cached.is_file():
            res = read_cached(cached, factors, contexts[i], args.extend_attention)
        else:
            res = evaluate_checkpoint(
                path, **kw, batch_tokens=args.batch_tokens, device=args.device, corpus=corpora[data]
            )
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(res, indent=1))
        if args.label is not None:
            res["label"] = args.label[i]
        results.append(res)
        tqdm.write(f"{res['label']}: " + ", ".join(f"{r['length']}: {r['ppl']:.3f}" for r in res["results"]))
    out.mkdir(parents=True, exist_ok=True)
    text = (
        "perplexity over all tokens of each window\n\n"
        + table(results, "ppl")
        + "\n\ntail perplexity: the same target tokens at every length, preceded by L - context tokens\n\n"
        + table(results, "tail_ppl")
    )
    print(text)
    (out / "length.md").write_text(text + "\n")
    (out / "length.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "length.png")
    print(f"\nwrote {out / 'length.json'}, {out / 'length.md'} and {out / 'length.png'}")
    return 0
