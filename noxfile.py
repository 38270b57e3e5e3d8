"""nox sessions. ``nox`` with no arguments runs every session that works on a CPU-only machine.

Each session builds its own virtualenv and installs only what it needs, with torch pinned by
``constraints/ci.txt`` (see docs/development.md for what each session requires).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = True

CONSTRAINTS = ("-c", "constraints/ci.txt")
CORE = "packages/bmojo-core"


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff over the whole repository (installed into the running interpreter if missing)."""
    session.run("python", "-m", "pip", "install", "--quiet", "ruff>=0.6")
    session.run("python", "-m", "ruff", "check", ".")
    session.run("python", "-m", "ruff", "format", "--check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """bmojo-core's unit and property tests."""
    session.install(*CONSTRAINTS, "-e", f"{CORE}[test]")
    session.run("pytest", "tests", "-q", *session.posargs, env={"PYTHONHASHSEED": "0"})
