"""pytest plugin of the conformance suite (entry point ``pytest11: bmojo-conformance``).

Loaded by every pytest run in an environment with bmojo-core, so it imports nothing heavy (no
torch, no backends) at import time and acts only on conformance tests: its options default to
off, and its hooks ignore items that are not part of a :class:`ConformanceSuite`.

What it adds:

* ``--bmojo-backend=NAME`` (default ``BMOJO_BACKEND``, else ``reference``), ``--bmojo-device``,
  ``--bmojo-dtypes``, ``--bmojo-seed``, ``--bmojo-partial``;
* the ``backend`` fixture (a :class:`BackendUnderTest`) and the ``bmojo_dtype`` parameter;
* outcome ``not provided`` for ops the backend does not implement (never counted as passed);
* the backend's ``known_deviations`` applied as xfail with their reasons, listed in the summary;
* a per-op summary, and a failing exit status when standard tests were deselected without
  ``--bmojo-partial`` or a suite subclass overrode/removed one without a declared reason;
* no vacuous pass: the run fails when the backend provides no op on the device, when nothing was
  actually checked (every test not provided, skipped or xfailed), or when ``known_deviations``
  cover every test of an op;
* ``--bmojo-skip-large``: the reduced set for slow backends — leaves out the ``bmojo_large`` cases
  (every op keeps its small cases) without counting as a deselection.
"""

from __future__ import annotations

import os
import re
import secrets
import zlib
from dataclasses import dataclass, field

import pytest

NOT_PROVIDED = "not provided"


class NotProvided(pytest.skip.Exception):  # type: ignore[misc,name-defined]
    """Raised by a conformance test when the backend does not implement the op under test."""


@dataclass
class BackendUnderTest:
    """What the ``backend`` fixture gives a test: the backend's name, record and the device."""

    name: str
    device: str
    status: object  # bmojo.backends.BackendStatus

    @property
    def framework(self) -> str:
        """The array framework of the backend's ops: ``"torch"``, or e.g. ``"mlx"`` (then inputs
        cross through its declared converters, see :mod:`.arrays`)."""
        backend = self.status.backend
        return "torch" if backend is None else backend.framework

    @property
    def tensor_device(self) -> str:
        """Where the torch inputs are built: the device under test for torch backends, else the
        CPU (they go through numpy into the framework, which computes on ``device``)."""
        return self.device if self.framework == "torch" else "cpu"

    def provides(self, op: str) -> bool:
        backend = self.status.backend
        impl = backend.ops.get(op) if backend is not None else None
        return impl is not None and impl.runs_on(self.device, self.framework)

    def require(self, *ops: str) -> None:
        """Stop the test as ``not provided`` unless the backend implements one of ``ops`` here."""
        if not any(self.provides(op) for op in ops):
            raise NotProvided(f"{NOT_PROVIDED}: backend {self.name!r} has no {'/'.join(ops)} for {self.device!r}")

    def use(self):
        from bmojo.backends import use_backend

        return use_backend(self.name)


@dataclass
class _Run:
    backend: str
    device: str
    dtypes: tuple[str, ...]
    seed: int
    partial: bool
    active: bool = False
    deviations: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    skip_large: bool = False
    large_skipped: set[str] = field(default_factory=set)
    tested: set[str] = field(default_factory=set)  # ops with at least one test that really ran
    provided: list[str] = field(default_factory=list)  # ops the backend implements on the device
    per_op: dict[str, dict[str, int]] = field(default_factory=dict)
    op_of: dict[str, str] = field(default_factory=dict)
    deviation_hits: dict[str, str] = field(default_factory=dict)


_KEY = pytest.StashKey[_Run]()


def pytest_addoption(parser):
    group = parser.getgroup("bmojo", "bmojo backend conformance suite")
    group.addoption("--bmojo-backend", default=None, help="backend under test (default: $BMOJO_BACKEND or reference)")
    group.addoption(
        "--bmojo-device",
        default="cpu",
        help="device type under test (default cpu): a torch device, or the backend's framework device (mlx: cpu, gpu)",
    )
    group.addoption(
        "--bmojo-dtypes",
        default=None,
        help="comma-separated dtypes (default float32,float64; also bfloat16, float16)",
    )
    group.addoption("--bmojo-seed", type=int, default=None, help="seed for the random inputs (default: fresh)")
    group.addoption(
        "--bmojo-skip-large",
        action="store_true",
        help="reduced set for slow backends (interpreters, emulators): leave out the large cases "
        "(marker bmojo_large); every op is still tested on its small cases",
    )
    group.addoption(
        "--bmojo-partial",
        action="store_true",
        help="allow running a subset of the standard tests (-k, --deselect) without failing the suite",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "bmojo_conformance: a standard test of the bmojo backend conformance suite")
    config.addinivalue_line(
        "markers", "bmojo_large: a large conformance case (T > block, batch > 2, far q_start, strided inputs)"
    )
    from bmojo.testing.conformance.tolerances import DEFAULT_DTYPES, DTYPES

    dtypes = tuple(d.strip() for d in (config.getoption("--bmojo-dtypes") or ",".join(DEFAULT_DTYPES)).split(","))
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise pytest.UsageError(f"--bmojo-dtypes: expected names from {list(DTYPES)}, got {bad}")
    seed = config.getoption("--bmojo-seed")
    if seed is None:  # a pytest-xdist worker runs with its controller's seed (the one the header shows)
        seed = getattr(config, "workerinput", {}).get("bmojo_seed")
    config.stash[_KEY] = _Run(
        backend=config.getoption("--bmojo-backend") or os.environ.get("BMOJO_BACKEND", "").strip() or "reference",
        device=config.getoption("--bmojo-device"),
        dtypes=dtypes,
        seed=secrets.randbelow(2**31) if seed is None else seed,
        partial=config.getoption("--bmojo-partial"),
        skip_large=config.getoption("--bmojo-skip-large"),
    )


#: dtypes by precision (mantissa bits), most precise first
_BY_PRECISION = ("float64", "float32", "float16", "bfloat16")


def most_precise_dtype(config) -> str:
    """The most precise of the run's ``--bmojo-dtypes``: where a check does not depend on the
    dtype, it runs once, where its tolerance is tightest."""
    dtypes = _run(config).dtypes
    return next((d for d in _BY_PRECISION if d in dtypes), dtypes[0])


def _run(config) -> _Run:
    return config.stash[_KEY]


def _is_conformance(item) -> bool:
    return item.get_closest_marker("bmojo_conformance") is not None


def pytest_report_header(config):
    run = _run(config)
    if config.getoption("--bmojo-backend") is None and not _collecting_suite(config):
        return None
    return (
        f"bmojo conformance: backend={run.backend} device={run.device} dtypes={','.join(run.dtypes)} "
        f"seed={run.seed} (rerun with --bmojo-seed={run.seed})"
    )


def _collecting_suite(config) -> bool:
    return any("conformance" in str(a) for a in config.args)


def pytest_generate_tests(metafunc):
    if "bmojo_dtype" in metafunc.fixturenames:
        run = _run(metafunc.config)
        dtypes = run.dtypes
        if getattr(metafunc.function, "_bmojo_layer_dtypes", False):
            from bmojo.testing.conformance.tolerances import TOLERANCES

            dtypes = tuple(d for d in dtypes if TOLERANCES[d].layer is not None) or ("float64",)
        metafunc.parametrize("bmojo_dtype", dtypes)


@pytest.fixture(scope="session")
def backend(pytestconfig) -> BackendUnderTest:
    """The backend under test (``--bmojo-backend``), checked available."""
    from bmojo.backends import State, get_registry

    run = _run(pytestconfig)
    status = get_registry().status(run.backend)
    if status.state is not State.AVAILABLE:
        pytest.fail(f"bmojo backend {run.backend!r} is {status.state}: {status.reason}", pytrace=False)
    return BackendUnderTest(run.backend, run.device, status)


@pytest.fixture
def bmojo_seed(request) -> int:
    """A seed for this test's inputs: the run's seed mixed with the test id."""
    return zlib.crc32(f"{_run(request.config).seed}:{request.node.nodeid}".encode()) & 0x7FFFFFFF


def pytest_collection_modifyitems(session, config, items):
    run = _run(config)
    suite_items = [it for it in items if _is_conformance(it)]
    if not suite_items:
        return
    from bmojo.backends import State, get_registry

    status = get_registry().status(run.backend)
    if status.state is not State.AVAILABLE:
        raise pytest.UsageError(
            f"bmojo conformance: backend {run.backend!r} is {status.state}: {status.reason or 'no reason given'}"
        )
    run.deviations = dict(status.backend.known_deviations)
    from bmojo.backends.spec import OPS

    here = BackendUnderTest(run.backend, run.device, status)
    provided = run.provided = [op for op in OPS if here.provides(op)]
    if not provided:
        declared = {op: list(impl.devices) for op, impl in status.backend.ops.items()}
        raise pytest.UsageError(
            f"bmojo conformance: backend {run.backend!r} provides no op on device {run.device!r} "
            f"(it declares {declared or 'no ops'}); nothing would be tested"
        )
    if run.skip_large:
        large = [it for it in items if _is_conformance(it) and it.get_closest_marker("bmojo_large") is not None]
        run.large_skipped = {it.nodeid for it in large}
        if large:
            items[:] = [it for it in items if it.nodeid not in run.large_skipped]
            config.hook.pytest_deselected(items=large)
        suite_items = [it for it in suite_items if it.nodeid not in run.large_skipped]
    by_op: dict[str, list] = {}
    for it in suite_items:
        cls = getattr(it, "cls", None)
        for name, reason in (getattr(cls, "_bmojo_overrides", None) or {}).items():
            run.overrides[f"{cls.__name__}.{name}"] = reason
        run.op_of[it.nodeid] = _op_of(it)
        by_op.setdefault(run.op_of[it.nodeid], []).append(it)
        for pattern, reason in run.deviations.items():
            if _glob(pattern, it.name):
                run.deviation_hits[it.name] = reason
                it.add_marker(pytest.mark.xfail(reason=f"known deviation of {run.backend!r}: {reason}", strict=False))
                break
    covered = [
        op
        for op, its in by_op.items()
        if (op in provided or op == "layer") and its and all(it.name in run.deviation_hits for it in its)
    ]
    if covered:
        raise pytest.UsageError(
            f"bmojo conformance: the known_deviations of {run.backend!r} cover every test of {', '.join(covered)}; "
            "a deviation may excuse some tests of an op, never all of them (declare fewer, or do not provide the op)"
        )
    run.active = True


def _glob(pattern: str, name: str) -> bool:
    """``*`` and ``?`` are wildcards; brackets are literal (test names contain ``[params]``)."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name) is not None


def _op_of(item) -> str:
    spec = getattr(item, "callspec", None)
    case = (spec.params.get("case") or spec.params.get("bad")) if spec is not None else None
    if case is not None and hasattr(case, "op"):  # a Case, or a BadCase of test_rejects_bad_input
        return case.op
    kind = spec.params.get("kind") if spec is not None else None
    if kind is not None:  # test_step_chain: the step op is what it adds over test_forward
        return {"ssm": "ssm_step", "conv": "causal_conv1d_step"}[kind]
    return "layer" if "layer" in item.name else item.originalname


def pytest_deselected(items):
    for it in items:
        if _is_conformance(it):
            run = _run(it.config)
            if it.nodeid not in run.large_skipped:  # --bmojo-skip-large is not a removal
                run.removed.append(it.nodeid)


def pytest_report_teststatus(report, config):
    if getattr(report, "bmojo_not_provided", False) and report.skipped:
        return NOT_PROVIDED, "n", "NOT PROVIDED"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(NotProvided):
        report.bmojo_not_provided = True
    # Which ops were really checked: a test that ran to a pass or a failure (not skipped, not
    # provided, not an expected failure).
    if report.when == "call" and not report.skipped and not hasattr(report, "wasxfail"):
        run = item.config.stash.get(_KEY, None)
        if run is not None and item.nodeid in run.op_of:
            run.tested.add(run.op_of[item.nodeid])
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    run = _run(config)
    if not run.active:
        return
    counts: dict[str, dict[str, int]] = {}
    for category, reports in terminalreporter.stats.items():
        for rep in reports:
            nodeid = getattr(rep, "nodeid", None)
            if nodeid not in run.op_of:
                continue
            if category == "" or getattr(rep, "when", "call") not in ("call", "setup"):
                continue
            if category == "passed" and rep.when != "call":
                continue
            op = run.op_of[nodeid]
            counts.setdefault(op, {}).setdefault(category, 0)
            counts[op][category] += 1
    tr = terminalreporter
    tr.section(f"bmojo conformance: backend {run.backend!r} on {run.device}")
    from bmojo.backends.spec import OPS

    cols = ("passed", "failed", "error", "xfailed", "xpassed", NOT_PROVIDED, "skipped")
    tr.write_line(f"{'op':<20}" + "".join(f"{c:>14}" for c in cols))
    for op in (*OPS, "layer"):
        row = counts.get(op, {})
        tr.write_line(f"{op:<20}" + "".join(f"{row.get(c, 0):>14}" for c in cols))
    provided = [op for op in run.provided if counts.get(op, {}).get("passed") or counts.get(op, {}).get("failed")]
    missing = [op for op in OPS if op not in run.provided]
    tr.write_line(f"ops tested: {', '.join(provided) or 'none'}")
    tr.write_line(f"ops not provided (not counted as passed): {', '.join(missing) or 'none'}")
    if run.deviation_hits or run.deviations:
        tr.write_line("known deviations (xfail, declared in the backend's known_deviations):")
        for pattern, reason in run.deviations.items():
            hits = sum(_glob(pattern, name) for name in run.deviation_hits)
            tr.write_line(f"  {pattern}  [{hits} tests]  {reason}")
    if run.overrides:
        tr.write_line("standard tests overridden by a suite subclass (declared):")
        for name, reason in run.overrides.items():
            tr.write_line(f"  {name}: {reason}")
    if run.large_skipped:
        tr.write_line(f"reduced set (--bmojo-skip-large): {len(run.large_skipped)} large-case tests not run")
    if not run.tested:
        tr.write_line(
            f"NOTHING TESTED: no conformance test of {run.backend!r} on {run.device} ran to a result "
            "(all not provided, skipped or xfailed); the suite fails",
            red=True,
        )
    if run.removed and not run.partial:
        tr.write_line(
            f"INCOMPLETE: {len(run.removed)} standard conformance tests were deselected; the suite fails "
            "(pass --bmojo-partial to run a subset on purpose)",
            red=True,
        )


# ----- pytest-xdist: workers collect and run, the controller reports and decides ------------------
# Under ``-n`` the controller collects nothing, so what the hooks above record on each worker
# (which test checks which op, what was deselected, which ops really ran) travels back in
# ``workeroutput``; without this the controller printed no summary and passed a partial or
# vacuous run that fails without ``-n``.


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["bmojo_seed"] = _run(node.config).seed


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    got = getattr(node, "workeroutput", {}).get("bmojo_conformance")
    if not got:
        return
    run = _run(node.config)
    run.active = run.active or got["active"]
    run.op_of.update(got["op_of"])
    run.tested.update(got["tested"])
    run.removed = sorted(set(run.removed) | set(got["removed"]))
    run.large_skipped.update(got["large_skipped"])
    run.provided = run.provided or got["provided"]
    run.deviations.update(got["deviations"])
    run.deviation_hits.update(got["deviation_hits"])
    run.overrides.update(got["overrides"])


def _send_to_controller(config) -> None:
    """On a pytest-xdist worker: what the controller's summary and exit status need."""
    run = config.stash.get(_KEY, None)
    if run is None or not hasattr(config, "workeroutput"):
        return
    config.workeroutput["bmojo_conformance"] = dict(
        active=run.active,
        op_of=run.op_of,
        tested=sorted(run.tested),
        removed=run.removed,
        large_skipped=sorted(run.large_skipped),
        provided=run.provided,
        deviations=run.deviations,
        deviation_hits=run.deviation_hits,
        overrides=run.overrides,
    )


def pytest_sessionfinish(session, exitstatus):
    _send_to_controller(session.config)
    run = session.config.stash.get(_KEY, None)
    if run is None or not run.active or exitstatus != 0:
        return
    if (run.removed and not run.partial) or not run.tested:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
