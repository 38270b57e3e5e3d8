"""Timing, machine description, result rows and the printed table shared by every section."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from bmojo.argcheck import check_out_dir

RESULTS_DIR = Path(__file__).resolve().parent / "results"


SCALES = ("full", "quick", "tiny")


# ----- argument checks: "--flag: expected <what>, got <value>", raised before anything is measured -----
def expect(ok: bool, flag: str, what: str, got) -> None:
    """Raise ``ValueError("<flag>: expected <what>, got <got>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{flag}: expected {what}, got {got!r}")


def check_int(value: int, flag: str, minimum: int) -> int:
    expect(isinstance(value, int) and value >= minimum, flag, f"an int >= {minimum}", value)
    return value


def check_out_path(path: Path | str, flag: str = "--out") -> Path:
    """``path`` as a file to write at the end of a run: not a directory, its folder created (as
    ``write_json`` does) and writable, the file itself writable if it exists. Called before any
    measuring, so that a bad path fails in a second, not after the run."""
    path = Path(path)
    expect(str(path) not in ("", "."), flag, "a file path", str(path))
    if path.is_dir():
        raise ValueError(f"{flag}: expected a file path, got the directory '{path}'")
    check_out_dir(path.parent, flag)
    if path.exists():
        try:
            with open(path, "a"):
                pass
        except OSError as err:
            raise ValueError(f"{flag}: expected a writable file path, got '{path}' ({err})") from None
    return path


def parse_names(text: str, flag: str, allowed: tuple[str, ...]) -> list[str]:
    """Comma-separated names from ``allowed``, in the order given: none empty, none repeated."""
    items = [x.strip() for x in text.split(",")]
    expect(any(items), flag, f"comma-separated names from {','.join(allowed)}", text)
    expect(all(items), flag, "comma-separated names without empty entries", text)
    unknown = [x for x in items if x not in allowed]
    expect(not unknown, flag, f"names from {','.join(allowed)}", ",".join(unknown))
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        raise ValueError(f"{flag}: expected each name once, got {','.join(dup)!r} more than once in {text!r}")
    return items


@dataclass
class Settings:
    """Knobs every section reads. ``scale`` picks the problem sizes: "full", "quick" or "tiny".

    Checked on construction (the CLI flags they come from are named in the errors)."""

    scale: str = "full"
    repeats: int = 5  #: timed runs per case (>= 1; a slow case gets fewer, see ``case_budget_s``)
    warmup: int = 1  #: untimed runs before the timed ones (0: the first timed run is also the checked one)
    flex_compile: bool = True
    dense_budget_gib: float = 4.0  #: skip dense peers whose mask/score tensors would exceed this (0: all)
    case_budget_s: float = 20.0  #: repeat a slow case only as often as fits in this many seconds (min 1)

    def __post_init__(self):
        expect(self.scale in SCALES, "scale", f"one of {SCALES}", self.scale)
        check_int(self.repeats, "--repeats", 1)
        check_int(self.warmup, "--warmup", 0)
        gib = self.dense_budget_gib
        expect(not math.isnan(gib) and gib >= 0, "--dense-budget-gib", "GiB >= 0 (0 skips every dense peer)", gib)
        s = self.case_budget_s
        expect(math.isfinite(s) and s >= 0, "--case-budget", "finite seconds >= 0 (0: one timed run per case)", s)

    @property
    def tiny(self) -> bool:
        return self.scale == "tiny"

    @property
    def quick(self) -> bool:
        return self.scale in ("quick", "tiny")


@dataclass
class Row:
    """One comparison: our time (or memory) and a named peer's, measured in the same run."""

    section: str
    case: str
    metric: str  #: "time_s" or "rss_mib" etc.
    ours_name: str
    ours: float | None
    peer_name: str
    peer: float | None
    note: str = ""
    target: float | None = None  #: the ratio ours/peer must be at or below this (None: no target)
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.peer is None or self.peer == 0:
            return None
        return self.ours / self.peer

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["met"] = self.met
        return d


def timeit(fn: Callable[[], object], settings: Settings, repeats: int | None = None) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs after ``settings.warmup`` runs.

    A slow case (a dense peer at long T) is repeated only as often as ``settings.case_budget_s``
    allows, at least once; the warm-up runs are never counted (with ``warmup=0`` there are none:
    the first timed run sets the budget).
    """
    return timeit_out(fn, settings, repeats)[0]


def _budgeted(repeats: int, budget_s: float, first_s: float) -> int:
    """``repeats`` cut to what fits in ``budget_s`` at ``first_s`` a run, at least one."""
    return min(repeats, max(1, int(budget_s / first_s))) if first_s > 0 else repeats


def timeit_out(fn: Callable[[], object], settings: Settings, repeats: int | None = None) -> tuple[float, object]:
    """``timeit`` that also returns the output of the first run (the first warm-up run; the first
    timed run with ``warmup=0``), for correctness checks."""
    repeats = check_int(settings.repeats if repeats is None else repeats, "repeats", 1)
    first = None
    output = None
    for i in range(settings.warmup):
        t0 = time.perf_counter()
        out = fn()
        first = time.perf_counter() - t0
        if i == 0:
            output = out
        del out
    if first is not None:
        repeats = _budgeted(repeats, settings.case_budget_s, first)
    times = []
    while len(times) < repeats:
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if first is None:  # no warm-up: the first timed run gives the output and the budget
            first, output = times[0], out
            repeats = _budgeted(repeats, settings.case_budget_s, first)
        del out
    return statistics.median(times), output


def timeit_many(
    fns: dict[str, Callable[[], object]],
    settings: Settings,
    repeats: int | None = None,
    *,
    compiled: Collection[str] = (),
) -> tuple[dict[str, float], dict[str, object]]:
    """Median times of several functions measured *interleaved*: each is warmed up, then every
    round runs each function once (the order rotating between rounds). On a shared machine a
    burst of load then hits ours and the peers alike, so their ratio stays meaningful.

    Returns the medians and the outputs of the first runs (for correctness checks: the first
    warm-up run, or with ``warmup=0`` the first timed round). A function whose first run raises is
    left out of both (the error is in ``errors`` of the outputs dict); ``repeats`` of the outputs
    dict is the number of timed rounds that ran (``repeats`` or fewer: the rounds of a case fit in
    ``settings.case_budget_s``, all its contenders together, at least one). The contenders named in
    ``compiled`` (their first call compiles) get one untimed call even with ``warmup=0``.
    """
    repeats = check_int(settings.repeats if repeats is None else repeats, "repeats", 1)
    outputs, first, errors = {}, {}, {}
    times: dict[str, list[float]] = {n: [] for n in fns}
    for name, fn in fns.items():
        # with warmup=0 the last run here is timed: it is the first round (the order of round 0)
        runs = max(1, settings.warmup) + (settings.warmup == 0 and name in compiled)
        for i in range(runs):
            if settings.warmup == 0 and i == runs - 1:
                gc.collect()
            t0 = time.perf_counter()
            try:
                out = fn()
            except Exception as err:  # e.g. a peer's compiler toolchain missing
                errors[name] = f"{type(err).__name__}: {err}"[:200]
                break
            first[name] = time.perf_counter() - t0
            if i == 0:
                outputs[name] = out
            del out
        if settings.warmup == 0 and name in first:
            times[name].append(first[name])
    live = [n for n in fns if n not in errors]
    times = {n: times[n] for n in live}
    round_s = sum(first[n] for n in live)
    if round_s > 0:
        repeats = min(repeats, max(1, int(settings.case_budget_s / round_s)))
    done = 1 if settings.warmup == 0 else 0
    for r in range(done, repeats):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    outputs["errors"] = errors
    outputs["repeats"] = max(repeats, done)
    return {n: statistics.median(t) for n, t in times.items()}, outputs


def fwd_bwd(fn: Callable[[], torch.Tensor | tuple], params: list[torch.Tensor]) -> Callable[[], None]:
    """A closure running ``fn`` forward then backward of the sum of its (first) output."""

    def run():
        for p in params:
            p.grad = None
        out = fn()
        if isinstance(out, tuple):
            out = out[0]
        out.float().sum().backward()

    return run


def machine_info() -> dict:
    """What the numbers were measured on, including the load at the time."""
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return info


def fmt_value(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    if metric == "time_s":
        return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.3f} s"
    if metric == "rss_mib":
        return f"{value:.1f} MiB"
    return f"{value:.4g}"


def format_table(rows: list[Row]) -> str:
    """A plain-text table: one line per comparison, ratio = ours / peer (below 1 means we are faster/smaller)."""
    header = ("section", "case", "ours (impl)", "peer (impl)", "ours", "peer", "ours/peer", "target")
    lines = []
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.3f}"
        if r.target is None:
            target = ""
        else:
            target = f"≤{r.target:g} " + ("MET" if r.met else ("MISSED" if r.met is False else "n/a"))
        lines.append(
            (
                r.section,
                r.case,
                r.ours_name,
                r.peer_name + (f" ({r.note})" if r.note else ""),
                fmt_value(r.ours, r.metric),
                fmt_value(r.peer, r.metric),
                ratio,
                target,
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def write_json(path: Path, payload: dict, indent: int = 1) -> Path:
    """Write ``payload`` as JSON atomically: a temporary file in the same folder, then
    ``os.replace``, so an interrupted write leaves the previous file (or none), never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=indent, sort_keys=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def require_transformers():
    """Import transformers (a benchmark peer, not a core dependency) with hub access off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - exercised only without transformers
        raise SystemExit(
            "benchmarks: the peers come from transformers; install it with "
            "`pip install transformers -c constraints/ci.txt`"
        ) from err
    return transformers
