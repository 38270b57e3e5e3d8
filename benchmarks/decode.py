"""Section d: decoding — per-token latency and peak RSS at positions 1k, 8k, 32k for B'MOJO
(``BMojoLM.prefill``/``step`` with a ``DecodeState``) against a transformers Llama with a full
KV cache (``DynamicCache``), both with the same width, depth, heads, MLP and vocabulary.

Each (model, position) runs in a fresh subprocess (``python -m benchmarks.decode --worker``): it
prefills ``position`` tokens in chunks, frees what prefill left behind (``gc`` and
``malloc_trim``), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), then decodes.
``decode peak RSS`` is the high-water mark of the decode phase alone (``VmHWM``); the JSON also
keeps the process's peak up to the end of prefill and the state/cache size in bytes.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from bmojo._checks import check_threads

from benchmarks.common import SCALES, Row, Settings, expect, require_transformers

SECTION = "d. decode"
TARGET = 1.1
MODELS = ("bmojo", "llama")
#: what a worker process measures (``--worker KIND``)
KINDS = ("rss", "latency")


def shapes(settings: Settings) -> dict:
    if settings.tiny:
        return dict(positions=(64, 256), D=32, L=1, H=2, w=16, M=4, steps=8, chunk=128)
    if settings.quick:
        return dict(positions=(1024, 8192), D=256, L=2, H=4, w=256, M=64, steps=16, chunk=1024)
    return dict(positions=(1024, 8192, 32768), D=256, L=2, H=4, w=256, M=64, steps=32, chunk=1024)


def _mem_status() -> dict:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024  # MiB
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def build(model: str, s: dict):
    from bmojo.config import LayerConfig, ModelConfig
    from bmojo.model import BMojoLM

    cfg = ModelConfig.preset(
        "bmojo",
        vocab_size=256,
        d_model=s["D"],
        n_layers=s["L"],
        window=s["w"],
        eidetic_capacity=s["M"],
        n_heads=s["H"],
    )
    if model == "bmojo":
        return BMojoLM(cfg).eval()
    from benchmarks.peers import hf_llama_lm

    d_ff = LayerConfig(d_model=s["D"]).ffn_dim
    return hf_llama_lm(
        vocab_size=256,
        d_model=s["D"],
        n_layers=s["L"],
        n_heads=s["H"],
        d_ff=d_ff,
        max_positions=max(s["positions"]) + 4 * s["steps"] + 16,
    )


def worker(model: str, position: int, s: dict) -> dict:
    """Prefill ``position`` tokens, then time ``steps`` decode steps and take the decode phase's
    peak RSS; runs in its own process so that the peak belongs to this position alone."""
    # Both workers import the same libraries, so their RSS baselines match (transformers alone
    # adds ~100 MiB); the difference is the model and its state/cache.
    require_transformers()
    import transformers.models.llama.modeling_llama  # noqa: F401

    torch.manual_seed(0)
    net = build(model, s)
    stream = _Stream(model, net, torch.randint(0, 256, (1, position)), s["chunk"])
    t0 = time.perf_counter()
    with torch.no_grad():
        stream.advance(position)
    return _decode(stream, time.perf_counter() - t0, s)


class _Stream:
    """One decoding stream of ``model`` that can be advanced to a position and stepped."""

    def __init__(self, model: str, net, ids: torch.Tensor, chunk: int):
        self.model, self.net, self.ids, self.chunk = model, net, ids, chunk
        self.pos, self.state, self.last = 0, None, None
        if model != "bmojo":
            from transformers import DynamicCache

            self.state = DynamicCache(config=net.config)

    def advance(self, position: int) -> None:
        """Prefill (in chunks) up to ``position`` tokens."""
        while self.pos < position:
            piece = self.ids[:, self.pos : min(position, self.pos + self.chunk)]
            if self.model == "bmojo":
                logits, self.state = self.net.prefill(piece, self.state)
            else:
                logits = self.net(input_ids=piece, cache=self.state, use_cache=True).logits
            self.pos += piece.shape[1]
            self.last = logits[:, -1]

    def fork(self) -> _Stream:
        other = copy.copy(self)
        # B'MOJO's DecodeState is never mutated (step returns a new one); DynamicCache is.
        other.state = self.state if self.model == "bmojo" else copy.deepcopy(self.state)
        return other

    def step(self) -> None:
        tok = self.last.argmax(-1)
        if self.model == "bmojo":
            self.last, self.state = self.net.step(tok, self.state)
        else:
            self.last = self.net(input_ids=tok[:, None], cache=self.state, use_cache=True).logits[:, -1]

    def state_bytes(self) -> int:
        if self.model == "bmojo":
            return self.state.nbytes()
        return sum(t.numel() * t.element_size() for layer in self.state.layers for t in (layer.keys, layer.values))


def latency_worker(model: str, positions: list[int], s: dict) -> dict:
    """Per-token latency at every position, measured *interleaved* in one process: one stream is
    forked at each position and the streams are stepped round-robin, so load on a shared machine
    hits all positions alike (the RSS figures come from the fresh per-position processes)."""
    require_transformers()
    torch.manual_seed(0)
    net = build(model, s)
    stream = _Stream(model, net, torch.randint(0, 256, (1, max(positions))), s["chunk"])
    streams = {}
    with torch.no_grad():
        for p in sorted(positions):
            stream.advance(p)
            streams[p] = stream.fork()
        times: dict[int, list[float]] = {p: [] for p in streams}
        order = sorted(streams)
        for r in range(s["steps"] + 4):
            for p in order[r % len(order) :] + order[: r % len(order)]:
                t0 = time.perf_counter()
                streams[p].step()
                if r >= 4:  # warm-up rounds excluded
                    times[p].append(time.perf_counter() - t0)
    return {str(p): statistics.median(t) for p, t in times.items()}


def _decode(stream: _Stream, prefill_s: float, s: dict) -> dict:
    _trim()
    status = _mem_status()
    before, process_peak = status.get("VmRSS"), status.get("VmHWM")
    reset = _reset_peak()
    times = []
    with torch.no_grad():
        for i in range(s["steps"] + 4):
            t0 = time.perf_counter()
            stream.step()
            if i >= 4:  # warm-up steps excluded
                times.append(time.perf_counter() - t0)
    mem = _mem_status()
    return {
        "latency_s": statistics.median(times),
        "decode_peak_rss_mib": mem.get("VmHWM") if reset else None,
        "rss_after_prefill_mib": before,
        # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's peak.
        "prefill_peak_rss_mib": process_peak,
        "state_bytes": stream.state_bytes(),
        "prefill_s": prefill_s,
        "peak_reset": reset,
    }


def _spawn(kind: str, model: str, positions, settings: Settings, threads: int | None) -> dict:
    where = ",".join(str(p) for p in positions)
    cmd = [sys.executable, "-m", "benchmarks.decode", "--worker", kind, model, where, "--scale", settings.scale]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"decode worker {kind} {model}@{where} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(settings: Settings, threads: int | None = None) -> list[Row]:
    s = shapes(settings)
    positions, models = s["positions"], MODELS
    if settings.tiny:
        # Smoke-test sizes: in-process (no per-position RSS isolation; it only checks the code runs).
        rss = {(m, p): worker(m, p, s) for p in positions for m in models}
        lat = {m: latency_worker(m, positions, s) for m in models}
        rss_note = "in-process (tiny: no fresh process per position)"
    else:
        rss = {(m, p): _spawn("rss", m, [p], settings, threads) for p in positions for m in models}
        lat = {m: _spawn("latency", m, positions, settings, threads) for m in models}
        rss_note = "fresh process"
    value = {}
    for m in models:
        for p in positions:
            value[(m, p, "time_s")] = lat[m][str(p)]
            value[(m, p, "rss_mib")] = rss[(m, p)]["decode_peak_rss_mib"]
    lo, hi = min(positions), max(positions)
    peer = "Llama + DynamicCache (full KV)"
    bm = f"B'MOJO (w={s['w']}, M={s['M']})"
    rows = []
    for p in positions:
        extra = {"bmojo": rss[("bmojo", p)], "llama": rss[("llama", p)]}
        rows.append(
            Row(
                SECTION,
                f"pos {p}: per-token latency",
                "time_s",
                bm,
                value[("bmojo", p, "time_s")],
                peer,
                value[("llama", p, "time_s")],
                "interleaved positions",
                None,
                extra,
            )
        )
        rows.append(
            Row(
                SECTION,
                f"pos {p}: decode peak RSS",
                "rss_mib",
                bm,
                value[("bmojo", p, "rss_mib")],
                peer,
                value[("llama", p, "rss_mib")],
                rss_note,
                None,
                extra,
            )
        )
    # Scaling with position: each model against itself at the shortest position.
    for model, name in (("bmojo", bm), ("llama", peer)):
        for metric, label in (("time_s", "latency"), ("rss_mib", "peak RSS")):
            rows.append(
                Row(
                    SECTION,
                    f"{label} at pos {hi} vs pos {lo}",
                    metric,
                    f"{name} @ {hi}",
                    value[(model, hi, metric)],
                    f"same @ {lo}",
                    value[(model, lo, metric)],
                    "",
                    TARGET if model == "bmojo" else None,
                )
            )
    return rows


def parse_worker_args(argv=None) -> argparse.Namespace:
    """The worker's command line, checked: ``args.kind``, ``args.model``, ``args.positions`` set."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decode")
    ap.add_argument(
        "--worker",
        nargs=3,
        metavar=("KIND", "MODEL", "POSITIONS"),
        required=True,
        help="KIND rss (one position) or latency (comma-separated positions); MODEL bmojo or llama",
    )
    ap.add_argument("--scale", default="full", choices=SCALES)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    args.kind, args.model, where = args.worker
    try:
        expect(args.kind in KINDS, "--worker KIND", f"one of {KINDS}", args.kind)
        expect(args.model in MODELS, "--worker MODEL", f"one of {MODELS}", args.model)
        try:
            args.positions = [int(p) for p in where.split(",")]
        except ValueError:
            raise ValueError(f"--worker POSITIONS: expected comma-separated ints, got {where!r}") from None
        expect(all(p >= 1 for p in args.positions), "--worker POSITIONS", "positions >= 1", where)
        expect(len(set(args.positions)) == len(args.positions), "--worker POSITIONS", "each position once", where)
        if args.kind == "rss":
            expect(len(args.positions) == 1, "--worker POSITIONS", "one position for KIND rss", where)
        if args.threads is not None:
            check_threads("--threads", args.threads)
    except ValueError as err:
        ap.error(str(err))
    return args


def main(argv=None) -> int:
    args = parse_worker_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = shapes(Settings(scale=args.scale))
    if args.kind == "rss":
        result = worker(args.model, args.positions[0], s)
    else:
        result = latency_worker(args.model, args.positions, s)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
