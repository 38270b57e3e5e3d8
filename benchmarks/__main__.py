"""``python -m benchmarks``: run the sections, print the ratio table, write JSON to benchmarks/results/.

Examples::

    python -m benchmarks                     # everything at full size (~10-15 min on 2 cores)
    python -m benchmarks --quick             # smaller sizes, a couple of minutes
    python -m benchmarks --sections attention,layer --threads 1

The JSON is written (atomically) after every section; Ctrl-C keeps the sections measured so far.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

import torch
from bmojo._checks import MAX_THREADS, check_threads

from benchmarks.common import (
    RESULTS_DIR,
    Settings,
    check_out_dir,
    check_out_path,
    format_table,
    machine_info,
    parse_names,
    require_transformers,
    write_json,
)

SECTIONS = ("ssm", "attention", "layer", "decode")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes (attention 1k/4k, ssm and layer 2k, decode 1k/8k; no 16k/32k)",
    )
    size.add_argument("--tiny", action="store_true", help="toy sizes: checks the script runs (smoke test)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (>= 1); the median is reported")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones (>= 0)")
    ap.add_argument(
        "--threads", type=int, default=None, help=f"torch intra-op threads, 1 to {MAX_THREADS} (default: torch's)"
    )
    ap.add_argument("--no-flex-compile", action="store_true", help="skip the torch.compile'd FlexAttention peer")
    ap.add_argument(
        "--case-budget",
        type=float,
        default=20.0,
        help="seconds a slow case may take, all its contenders together (min 1 round; 0: one round)",
    )
    ap.add_argument(
        "--dense-budget-gib", type=float, default=4.0, help="skip dense peers above this many GiB (0: skip them all)"
    )
    ap.add_argument(
        "--profile", action="store_true", help="also print the profile of one B'MOJO layer fwd+bwd (needs layer)"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/<stamp>.json)")
    args = ap.parse_args(argv)
    try:
        _check(args)
    except ValueError as err:
        ap.error(str(err))
    return args


def _check(args: argparse.Namespace) -> None:
    """Every flag checked (and ``args.sections``, ``args.settings`` set) before anything is measured."""
    args.sections = parse_names(args.sections, "--sections", SECTIONS)
    if args.profile and "layer" not in args.sections:
        raise ValueError(f"--profile: expected the layer section in --sections, got {','.join(args.sections)!r}")
    if args.threads is not None:
        check_threads("--threads", args.threads)
    args.settings = Settings(
        scale="tiny" if args.tiny else "quick" if args.quick else "full",
        repeats=args.repeats,
        warmup=args.warmup,
        flex_compile=not args.no_flex_compile,
        dense_budget_gib=args.dense_budget_gib,
        case_budget_s=args.case_budget,
    )
    if args.out is not None:
        check_out_path(args.out)
    else:
        check_out_dir(RESULTS_DIR, "--out (default folder)")


def main(argv=None) -> int:
    args = parse_args(argv)
    sections, settings = args.sections, args.settings
    require_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    scale = settings.scale
    info_start = machine_info()
    print(
        f"benchmarks: scale={scale}, float32, threads={torch.get_num_threads()}, "
        f"load average {info_start['loadavg']}, torch {info_start['torch']}, "
        f"transformers {info_start['transformers']}",
        flush=True,
    )
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS_DIR / f"{scale}-{stamp}.json"
    rows, timings, profile = [], {}, None

    def payload(info_end: dict) -> dict:
        return {
            "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
            "scale": scale,
            "dtype": "float32",
            "settings": vars(settings) | {"threads": torch.get_num_threads()},
            "machine_at_start": info_start,
            "machine_at_end": info_end,
            "section_seconds": timings,
            "rows": [r.to_dict() for r in rows],
            "profile_layer": profile,
        }

    try:
        for name in sections:
            t0 = time.perf_counter()
            module = __import__(f"benchmarks.{name}", fromlist=["run"])
            print(f"[{name}] running ...", flush=True)
            new = module.run(settings, args.threads) if name == "decode" else module.run(settings)
            timings[name] = time.perf_counter() - t0
            print(format_table(new), flush=True)
            rows += new
            if name == "layer" and args.profile:
                profile = module.profile(settings)
            if len(timings) < len(sections):  # the sections so far, kept if a later one fails or is stopped
                write_json(out, payload(machine_info()) | {"partial": True})
    except KeyboardInterrupt:
        done = ",".join(timings) or "none"
        if timings:
            write_json(out, payload(machine_info()) | {"partial": True, "interrupted": True})
        where = f"; their {len(rows)} rows are in {out}" if timings else "; nothing written"
        print(f"\npython -m benchmarks: interrupted (sections finished: {done}){where}", file=sys.stderr)
        return 130
    info_end = machine_info()
    print("\n=== ratios: ours / peer (below 1: ours is faster or smaller), float32, median of repeats ===")
    print(format_table(rows))
    print(
        f"load average at start {info_start['loadavg']}, at end {info_end['loadavg']}; "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    if profile:
        print("\n=== profile: one B'MOJO layer fwd+bwd ===\n" + profile)
    print(f"wrote {write_json(out, payload(info_end))}")
    missed = [r for r in rows if r.met is False]
    if missed:
        print(f"targets missed: {len(missed)} (see docs/benchmarks.md for the profile that explains them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
