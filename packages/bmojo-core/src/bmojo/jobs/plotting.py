"""Line plots for the jobs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path


def line_plot(
    series: dict[str, tuple[list[float], list[float]]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    vline: float | None = None,
    vline_label: str | None = None,
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] | None = None,
) -> None:
    """One line per entry of ``series`` (label → (xs, ys)); with ``panels`` (panel title → series),
    one panel each, sharing axes labels. ``vline`` marks an x value (say the training length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = panels if panels is not None else {title: series}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.8), squeeze=False)
    for ax, (name, lines) in zip(axes[0], groups.items()):
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, "o-", label=label, ms=4)
        if vline is not None:
            ax.axvline(vline, color="grey", ls="--", lw=1, label=vline_label)
        if logx:
            ax.set_xscale("log", base=2)
            xs_all = sorted({x for xs, _ in lines.values() for x in xs})
            ax.set_xticks(xs_all, [str(int(x)) if float(x).is_integer() else str(x) for x in xs_all])
            ax.minorticks_off()
        if logy:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Save and close ``fig`` as ``path`` through a temporary file in the same folder and
    ``os.replace``: a reader, or another process writing the same file, sees the old figure or the
    new one, never half of one."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
