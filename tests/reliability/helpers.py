"""Shared stand-ins for the reliability tests (issue 10): in-memory plugins and entry points, a
registry fixture that restores the real one, and a ``.dist-info`` installer for subprocess tests
(what ``pip install`` of a plugin leaves on ``PYTHONPATH``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bmojo.backends import hookimpl


class Plugin:
    def __init__(self, *records, make=None):
        self.records, self.make = records, make

    @hookimpl
    def bmojo_backends(self):
        return self.make() if self.make is not None else list(self.records)


class LastPlugin(Plugin):
    """A plugin whose hook pluggy calls last (``trylast``)."""

    @hookimpl(trylast=True)
    def bmojo_backends(self):
        return self.make() if self.make is not None else list(self.records)


class EP:
    """Stands in for an importlib.metadata.EntryPoint."""

    def __init__(self, name, plugin=None, load=None):
        self.name, self.value, self.dist = name, f"fake_{name}", None
        self._plugin, self._load = plugin, load

    def load(self):
        if self._load is not None:
            return self._load()
        return self._plugin


def install(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Lay out an installed plugin: its modules and a ``.dist-info`` with ``[bmojo]`` entry points."""
    site.mkdir(parents=True, exist_ok=True)
    for name, src in modules.items():
        (site / f"{name}.py").write_text(src)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[bmojo]\n{lines}")
    return site


def run_python(site: Path | None, *args, cwd=None, timeout=300, **env) -> subprocess.CompletedProcess:
    """``python *args`` with ``site`` first on PYTHONPATH and no inherited ``BMOJO_*`` variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("BMOJO_")}
    full["OMP_NUM_THREADS"] = "1"
    if site is not None:
        full["PYTHONPATH"] = os.pathsep.join([str(site), full.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout)
