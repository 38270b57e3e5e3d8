"""nox sessions. ``nox`` with no arguments runs every test that works on a CPU-only machine: lint,
core's tests, the transformers integration, and per backend the conformance suite followed by that
backend's own tests (the sessions ``mlx``, ``neuron`` and ``triton`` run those alone).

Each session builds its own virtualenv and installs only what it needs, with torch pinned by
``constraints/ci.txt`` (see docs/development.md for what each session requires). A session that
passed deletes its virtualenv unless nox reuses them (``-r``): see :func:`release`.
"""

from __future__ import annotations

import os
import shutil

import nox
from nox.command import CommandFailed

nox.options.sessions = [
    "lint",
    "tests",
    "hf",
    "conformance(backend='reference')",
    "conformance(backend='mlx')",
    "conformance(backend='neuron')",
    "conformance(backend='triton')",
]
nox.options.error_on_missing_interpreters = True

CONSTRAINTS = ("-c", "constraints/ci.txt")
CORE = "packages/bmojo-core"
HF = "packages/bmojo-hf"
MLX = "packages/bmojo-mlx"
NEURON = "packages/bmojo-neuron"
#: The neuron kernels run in bmojo-neuron's NumPy emulator of NKI on CPU-only machines; on a
#: Trainium/Inferentia host with the Neuron SDK pass BMOJO_NEURON_EMULATE=0 (docs/backends/neuron.md).
NEURON_EMULATE = {"BMOJO_NEURON_EMULATE": os.environ.get("BMOJO_NEURON_EMULATE", "1")}
TRITON = "packages/bmojo-triton"
#: On a CPU the triton backend runs under Triton's interpreter, asked for explicitly; its extra
#: ``interpreter`` pins numpy < 2.4 (triton 3.6's interpreter converts 1-element arrays to loop
#: bounds, which numpy 2.4 rejects).
TRITON_CPU = f"{TRITON}[interpreter]"
TRITON_ENV = {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
#: The interpreter's numpy deprecation warning, once per loop bound (thousands per run).
QUIET = ("-W", "ignore:Conversion of an array with ndim:DeprecationWarning")
ROOT = os.path.dirname(os.path.abspath(__file__))


def release(session: nox.Session) -> None:
    """Delete the session's virtualenv once its tests have passed, unless nox reuses them.

    Each one holds about 1.2 GB (torch; triton adds 0.6 GB), about 8 GB for the six of the default
    run (11 GB when it built nine, which once outgrew a CI disk). Without ``-r`` nox recreates
    every virtualenv on the next run anyway, so deleting loses nothing; with ``-r`` (or
    BMOJO_NOX_KEEP_VENVS=1) they stay, and so do those ``--install-only`` builds. A failed session
    never gets here and keeps its virtualenv for inspection.
    """
    venv = session.virtualenv
    if getattr(venv, "reuse_existing", True) or os.environ.get("BMOJO_NOX_KEEP_VENVS") == "1":
        return
    # --install-only: the virtualenv was built to be used by a later run (nox has no public flag;
    # when its runner's config cannot be read, keep the virtualenv)
    config = getattr(getattr(session, "_runner", None), "global_config", None)
    if config is None or getattr(config, "install_only", False):
        return
    session.chdir(ROOT)  # the conformance session runs from a folder inside its virtualenv
    session.log(f"removing {venv.location} (nox -r or BMOJO_NOX_KEEP_VENVS=1 keeps it)")
    shutil.rmtree(venv.location)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff over the whole repository (installed into the running interpreter if missing)."""
    session.run("python", "-m", "pip", "install", "--quiet", "ruff>=0.6")
    session.run("python", "-m", "ruff", "check", ".")
    session.run("python", "-m", "ruff", "format", "--check", ".")


#: pytest-xdist, one worker per core (at most 8): the CPU runs whose tests take minutes (``tests``
#: and triton's under the interpreter) spend them in single-threaded work, subprocesses and the
#: Triton interpreter, so on CI's 2 cores two workers cut each by 35-40 %;
#: ``nox -s <session> -- -n 0`` runs one in a single process (pytest takes the last ``-n``).
XDIST = ("-n", "auto", "--maxprocesses", "8")


@nox.session
def tests(session: nox.Session) -> None:
    """bmojo-core's unit and property tests, plus the benchmark smoke test (transformers is its peer,
    installed here so the smoke test runs in CI instead of skipping), on pytest-xdist workers (which
    also lets the test of the conformance suite under ``-n`` run instead of skipping)."""
    session.install(*CONSTRAINTS, "-e", f"{CORE}[test]", "transformers", "pytest-xdist")
    session.run("pytest", "tests", "-q", *XDIST, *session.posargs, env={"PYTHONHASHSEED": "0"})
    release(session)


@nox.session
def hf(session: nox.Session) -> None:
    """bmojo-hf (the transformers integration) against bmojo-core; CPU only, no hub access."""
    session.install(*CONSTRAINTS, "-e", CORE, "-e", HF, "pytest")
    env = {"PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    session.run("pytest", "tests/hf", "-q", *session.posargs, env=env)
    release(session)


#: Each backend's own tests: what the conformance suite cannot see (its kernels' tile edges, its
#: plugin's registry behaviour, its model, its benchmark script). The default run has them in that
#: backend's conformance session, right after the suite and in the same virtualenv (one torch
#: install instead of two, about a minute each on CI); the session named after the backend runs
#: them alone, against editable installs.
BACKEND_TESTS = {"mlx": "tests/mlx_backend", "neuron": "tests/neuron", "triton": "tests/triton_backend"}


def suite_env(backend: str) -> dict[str, str]:
    """The environment of the conformance suite's run against ``backend``."""
    if backend == "triton":
        # TRITON_INTERPRET=0 from the caller (a GPU machine) wins over the CPU default
        return {k: os.environ.get(k, v) for k, v in TRITON_ENV.items()}
    if backend == "neuron":
        return dict(NEURON_EMULATE)
    return {}


def tests_env(backend: str) -> dict[str, str]:
    """The environment of a backend's own tests (one BLAS thread: they run thousands of tiny ops)."""
    return {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", **suite_env(backend)}


def pytest_opts(backend: str, env: dict[str, str]) -> tuple[str, ...]:
    """Triton under the interpreter: xdist workers (single-threaded Python, minutes of it) and the
    interpreter's numpy warning silenced; on a GPU the runs stay in one process. (Interpreting is
    TRITON_INTERPRET in "1", "true", "on", "yes", "y", any case: Triton's rule, as
    ``bmojo_triton.plugin.interpreting``, which this file cannot import.)"""
    if backend != "triton":
        return ()
    interpreting = env.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes", "y")
    return (*XDIST, *QUIET) if interpreting else QUIET


#: pytest options that narrow a selection: after one of them, a backend's own tests may match
#: nothing (pytest's exit code 5) without that being a failure of the conformance session
SELECTING = ("-k", "-m", "--deselect")


def backend_tests(session: nox.Session, backend: str, *, empty_ok: bool = False) -> None:
    """Run ``BACKEND_TESTS[backend]`` from the repository root, with the arguments after ``--``."""
    env = tests_env(backend)
    session.chdir(ROOT)
    session.run(
        "python",
        "-m",
        "pytest",
        BACKEND_TESTS[backend],
        "-q",
        *pytest_opts(backend, env),
        *session.posargs,
        env=env,
        success_codes=[0, 5] if empty_ok else [0],
    )


@nox.session
def mlx(session: nox.Session) -> None:
    """bmojo-mlx's own tests alone (ops on mx.array, the native MLX model, against bmojo-core and its
    torch reference); the default run has them in ``conformance(backend='mlx')``. Its dependency
    markers install ``mlx[cpu]`` on Linux (the pure-MLX path) and ``mlx`` on macOS."""
    session.install(*CONSTRAINTS, "-e", f"{CORE}[test]", "-e", MLX)
    backend_tests(session, "mlx")
    release(session)


@nox.session
def neuron(session: nox.Session) -> None:
    """bmojo-neuron's own tests alone (NKI kernels against bmojo-core, in its NKI emulator on CPU);
    the default run has them in ``conformance(backend='neuron')``."""
    session.install(*CONSTRAINTS, "-e", f"{CORE}[test]", "-e", NEURON)
    backend_tests(session, "neuron")
    release(session)


@nox.session
def triton(session: nox.Session) -> None:
    """bmojo-triton's kernel tests alone (tests/triton_backend), on CPU under the Triton interpreter;
    the default run has them in ``conformance(backend='triton')``. On a GPU machine run
    ``pytest tests/triton_backend --bmojo-device=cuda`` (see docs/backends/triton.md)."""
    session.install(*CONSTRAINTS, "-e", f"{CORE}[test]", "-e", TRITON_CPU, "pytest-xdist")
    backend_tests(session, "triton")
    release(session)


@nox.session
def bench(session: nox.Session) -> None:
    """CPU benchmarks vs named peers (not in the default sessions): ``nox -s bench -- --quick``.

    Installs core and transformers (the peers) with torch pinned, then runs ``python -m benchmarks``;
    extra arguments go to the script (see docs/benchmarks.md).
    """
    session.install(*CONSTRAINTS, "-e", CORE, "transformers")
    session.run("python", "-m", "benchmarks", *session.posargs)


#: Backends the conformance session knows: name → package directory (None: core's reference).
#: A backend whose package is not in the repository yet is skipped, not failed.
CONFORMANCE_BACKENDS = {
    "reference": None,
    "triton": "packages/bmojo-triton",
    "mlx": "packages/bmojo-mlx",
    "neuron": "packages/bmojo-neuron",
}


@nox.session
@nox.parametrize("backend", list(CONFORMANCE_BACKENDS))
def conformance(session: nox.Session, backend: str) -> None:
    """The backend conformance suite against one backend, then that backend's own tests
    (``BACKEND_TESTS``), with only bmojo-core + that backend installed (from their wheels).
    Arguments after ``--`` go to both runs. ``neuron`` runs its kernels in the NKI emulator unless
    BMOJO_NEURON_EMULATE=0."""
    path = CONFORMANCE_BACKENDS[backend]
    if path is not None and not os.path.exists(os.path.join(path, "pyproject.toml")):
        session.skip(f"{path} is not in this repository yet")
    # triton on a CPU: the interpreter (explicit selection only); pass `-- --bmojo-device=cuda`
    # on a GPU machine, where the interpreter must stay off: TRITON_INTERPRET=0 nox -s ...
    # Under the interpreter both runs use xdist workers: the suite's share the controller's seed
    # and report back, so its summary and verdicts are those of a serial run.
    if backend == "triton":
        path = TRITON_CPU
    env = suite_env(backend)
    extra = ("pytest-xdist",) if backend == "triton" else ()
    session.install(*CONSTRAINTS, f"{CORE}[test]", *([path] if path else []), *extra)
    session.chdir(session.create_tmp())  # outside the repo: tests come from the installed wheel
    suite_failed = False
    try:
        session.run(
            "pytest",
            "--pyargs",
            "bmojo.testing.conformance",
            f"--bmojo-backend={backend}",
            *pytest_opts(backend, env),
            *session.posargs,
            env={"BMOJO_BACKEND": backend, "PYTHONHASHSEED": "0", **env},
        )
    except CommandFailed:  # the backend's own tests still run, so one CI run reports both
        suite_failed = True
    if backend in BACKEND_TESTS:  # then its own tests, against the same installed wheels
        backend_tests(session, backend, empty_ok=any(a.split("=")[0] in SELECTING for a in session.posargs))
    if suite_failed:
        session.error(f"the conformance suite failed against {backend!r} (its report is above)")
    release(session)
