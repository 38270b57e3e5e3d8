"""pytest plugin of the conformance suite (entry point ``pytest11: bmojo-conformance``).

Loaded by every pytest run in an environment with bmojo-core, so it imports nothing heavy (no
torch, no backends) at import time and acts only on conformance tests: its options default to
off, and its hooks ignore items that are not part of a :class:`ConformanceSuite`.

What it adds:

* ``--bmojo-backend=NAME`` (default ``BMOJO_BACKEND``, else ``reference``), ``--bmojo-device``,
  ``--bmojo-dtypes``, ``--bmojo-seed``, ``--bmojo-partial``; bad values (an unknown, empty or
  repeated dtype, an empty backend name, a device that does not exist here) are usage errors,
  under pytest-xdist too;
* the ``backend`` fixture (a :class:`BackendUnderTest`) and the ``bmojo_dtype`` parameter; the
  ``bmojo_seed`` fixture derives each test's seed from the run's seed and the test's name and
  parameters only (not its path or class), so a seed reproduces from any directory;
* outcome ``not provided`` for ops the backend does not implement (never counted as passed);
* the backend's ``known_deviations`` applied as xfail with their reasons, listed in the summary;
* a per-op summary (with the seed), and a failing exit status when fewer than the full standard
  set was selected (``-k``, ``-m``, ``--deselect`` or node ids) without ``--bmojo-partial``, or a
  suite subclass overrode/removed one without a declared reason;
* no vacuous pass: the run fails when the backend provides no op on the device, when nothing was
  actually checked (every test not provided, skipped or xfailed), when ``known_deviations``
  cover every test of an op that can run for the backend, or when a provided op had selected
  tests that can run but none ran to a pass or a failure;
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
    removed: list[str] = field(default_factory=list)  # standard tests of the run not selected
    deselected: set[str] = field(default_factory=set)  # removed through pytest_deselected (-k, -m, ...)
    skip_large: bool = False
    large_skipped: set[str] = field(default_factory=set)
    tested: set[str] = field(default_factory=set)  # ops with at least one test that really ran
    provided: list[str] = field(default_factory=list)  # ops the backend implements on the device
    op_of: dict[str, str] = field(default_factory=dict)
    deviation_of: dict[str, str] = field(default_factory=dict)  # node id -> the first matching pattern
    excused: set[str] = field(default_factory=set)  # node ids that ran as xfail of a known deviation
    can_run: set[str] = field(default_factory=set)  # node ids that can run for this backend here
    expected_ops: set[str] = field(default_factory=set)  # ops with a selected test that can run
    full: dict[str, object] = field(default_factory=dict)  # every standard test collected (node id -> item)
    usage_error: str | None = None  # raised on a pytest-xdist worker, re-raised by the controller


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
        help="allow running a subset of the standard tests (-k, --deselect, node ids) without failing the suite",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "bmojo_conformance: a standard test of the bmojo backend conformance suite")
    config.addinivalue_line(
        "markers", "bmojo_large: a large conformance case (T > block, batch > 2, far q_start, strided inputs)"
    )
    from bmojo.testing.conformance.tolerances import DEFAULT_DTYPES, DTYPES

    raw = config.getoption("--bmojo-dtypes")
    dtypes = DEFAULT_DTYPES if raw is None else tuple(d.strip() for d in raw.split(","))
    if not all(dtypes):
        raise pytest.UsageError(f"--bmojo-dtypes: expected comma-separated dtypes from {list(DTYPES)}, got {raw!r}")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise pytest.UsageError(f"--bmojo-dtypes: expected names from {list(DTYPES)}, got {bad}")
    repeated = sorted({d for d in dtypes if dtypes.count(d) > 1})
    if repeated:
        raise pytest.UsageError(
            f"--bmojo-dtypes: expected distinct dtypes, got {raw!r} ({', '.join(repeated)} repeated)"
        )
    backend = config.getoption("--bmojo-backend")
    if backend is not None and not backend.strip():
        raise pytest.UsageError(f"--bmojo-backend: expected a backend name, got {backend!r}")
    seed = config.getoption("--bmojo-seed")
    if seed is None:  # a pytest-xdist worker runs with its controller's seed (the one the header shows)
        seed = getattr(config, "workerinput", {}).get("bmojo_seed")
    config.stash[_KEY] = _Run(
        backend=(backend or "").strip() or os.environ.get("BMOJO_BACKEND", "").strip() or "reference",
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


def _is_large(item) -> bool:
    return item.get_closest_marker("bmojo_large") is not None


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


def _check_usage(run: _Run):
    """The backend's record, after checking the run can test it: the backend is available,
    ``--bmojo-device`` is a device its framework has here, and it provides an op there."""
    from bmojo.backends import State, get_registry

    status = get_registry().status(run.backend)
    if status.state is not State.AVAILABLE:
        raise pytest.UsageError(
            f"bmojo conformance: backend {run.backend!r} is {status.state}: {status.reason or 'no reason given'}"
        )
    here = BackendUnderTest(run.backend, run.device, status)
    problem = _device_problem(run.device, here.framework)
    if problem is not None:
        raise pytest.UsageError(f"--bmojo-device: expected {problem}")
    from bmojo.backends.spec import OPS

    if not any(here.provides(op) for op in OPS):
        declared = {op: list(impl.devices) for op, impl in status.backend.ops.items()}
        raise pytest.UsageError(
            f"bmojo conformance: backend {run.backend!r} provides no op on device {run.device!r} "
            f"(it declares {declared or 'no ops'}); nothing would be tested"
        )
    return status


def _device_problem(device: str, framework: str) -> str | None:
    """What is wrong with ``device`` for a backend of ``framework`` here (None: nothing)."""
    if framework != "torch":
        # Inputs are built on the CPU and cross through the framework's converters; it computes on
        # its own current device, which is the only one the suite can test (see suite._bridge).
        from bmojo.backends import arrays

        try:
            now = arrays.device_type(framework)
        except Exception as err:  # converters that fail to load: say so here, not in every test
            return f"a device of {framework}, got {device!r} (cannot ask {framework} for its device: {err})"
        if device != now:
            return (
                f"the device {framework} computes on here ({now!r}), got {device!r} "
                f"(to test another, change {framework}'s default device)"
            )
        return None
    import torch

    wanted = f"a torch device available here (e.g. cpu), got {device!r}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        return f"{wanted} ({err})"
    if dev.type in ("cpu", "meta"):
        return None
    # Device types whose torch module tells availability (cuda, xpu, mps, ...); others (e.g. xla,
    # registered by their own package) are left to the backend.
    module = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    available = getattr(module, "is_available", None)
    if callable(available) and not available():
        return f"{wanted} (torch: {dev.type} is not available)"
    count = getattr(module, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        return f"{wanted} (torch: {count()} {dev.type} devices)"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Under pytest-xdist the controller collects nothing: check the backend and device here,
    before the workers start, so a usage error reads as in a serial run (not an INTERNALERROR).
    Only where the run names the suite (``--bmojo-backend``, or the package as an argument); the
    workers check again when they collect conformance tests, and pass a refusal back."""
    config = session.config
    if hasattr(config, "workerinput") or not config.pluginmanager.has_plugin("dsession"):
        return
    args = [str(a).replace(os.sep, "/") for a in config.args]
    names_suite = any(p in a for a in args for p in ("bmojo.testing.conformance", "testing/conformance"))
    if config.getoption("--bmojo-backend") is None and not names_suite:
        return
    _check_usage(_run(config))


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
    """A seed for this test's inputs: the run's seed mixed with the test's name and parameters
    (``test_forward[float32-rmsnorm-base]``), never its path or class, so the same
    ``--bmojo-seed`` gives the same inputs from any directory and in an embedded suite."""
    return zlib.crc32(f"{_run(request.config).seed}:{request.node.name}".encode()) & 0x7FFFFFFF


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """Every standard test a suite class collects, before any narrowing (node ids select among
    them without a ``pytest_deselected``): the full set the run is compared with."""
    report = yield
    if isinstance(collector, pytest.Class) and report.passed:
        run = collector.config.stash.get(_KEY, None)
        if run is not None:
            for it in report.result:
                if isinstance(it, pytest.Item) and _is_conformance(it):
                    run.full[it.nodeid] = it
    return report


def pytest_collection_modifyitems(session, config, items):
    run = _run(config)
    suite_items = [it for it in items if _is_conformance(it)]
    if not suite_items:
        return
    try:
        _prepare(run, config, items, suite_items)
    except pytest.UsageError as err:
        if not hasattr(config, "workerinput"):
            raise
        # A pytest-xdist worker: an exception here is an INTERNALERROR on the controller, without
        # this message. Run nothing; the controller raises it (pytest_testnodedown).
        run.usage_error = str(err)
        items[:] = []


def _prepare(run: _Run, config, items, suite_items) -> None:
    """Check the run (usage errors), leave out the large cases for ``--bmojo-skip-large``, mark
    known deviations xfail and record what the summary needs."""
    status = _check_usage(run)
    run.deviations = dict(status.backend.known_deviations)
    from bmojo.backends.spec import OPS

    here = BackendUnderTest(run.backend, run.device, status)
    provided = run.provided = [op for op in OPS if here.provides(op)]
    if run.skip_large:
        large = [it for it in suite_items if _is_large(it)]
        run.large_skipped = {it.nodeid for it in large}
        if large:
            items[:] = [it for it in items if it.nodeid not in run.large_skipped]
            config.hook.pytest_deselected(items=large)
        suite_items = [it for it in suite_items if it.nodeid not in run.large_skipped]
    for it in suite_items:
        cls = getattr(it, "cls", None)
        for name, reason in (getattr(cls, "_bmojo_overrides", None) or {}).items():
            run.overrides[f"{cls.__name__}.{name}"] = reason
        run.op_of[it.nodeid] = _op_of(it, provided)
        if _can_run(it, here):
            run.can_run.add(it.nodeid)
        pattern = _deviation(run, it.name)
        if pattern is not None:
            run.deviation_of[it.nodeid] = pattern
            reason = run.deviations[pattern]
            it.add_marker(pytest.mark.xfail(reason=f"known deviation of {run.backend!r}: {reason}", strict=False))
    # Deviations may excuse some tests of an op, never all that can run for this backend (tests of
    # ops it does not provide, and torch-specific ones for another framework, never run). Checked
    # on the full set (a narrower selection is the runtime check's business, see _not_tested).
    full = [it for it in run.full.values() if not (run.skip_large and _is_large(it))] or suite_items
    by_op: dict[str, list] = {}
    for it in full:
        if _can_run(it, here):
            by_op.setdefault(_op_of(it, provided), []).append(it)
    covered = [
        op
        for op, its in by_op.items()
        if (op in provided or op == "layer") and its and all(_deviation(run, it.name) is not None for it in its)
    ]
    if covered:
        raise pytest.UsageError(
            f"bmojo conformance: the known_deviations of {run.backend!r} cover every test of {', '.join(covered)}; "
            "a deviation may excuse some tests of an op, never all of them (declare fewer, or do not provide the op)"
        )
    run.active = True


def pytest_collection_finish(session):
    """After every plugin narrowed the items: which standard tests of the run were left out, and
    which ops have a selected test that can run (each must then run one to a result)."""
    run = session.config.stash.get(_KEY, None)
    if run is None or not run.active:
        return
    selected = {it.nodeid for it in session.items if _is_conformance(it)}
    expected = {n for n, it in run.full.items() if not (run.skip_large and _is_large(it))}
    run.removed = sorted((expected - selected) | run.deselected)
    run.expected_ops = {run.op_of[n] for n in selected & run.can_run if n in run.op_of}


def _deviation(run: _Run, name: str) -> str | None:
    """The first known-deviation pattern matching test ``name``."""
    return next((pattern for pattern in run.deviations if _glob(pattern, name)), None)


def _glob(pattern: str, name: str) -> bool:
    """``*`` and ``?`` are wildcards; brackets are literal (test names contain ``[params]``)."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name) is not None


def _params(item) -> dict:
    spec = getattr(item, "callspec", None)
    return spec.params if spec is not None else {}


def _op_of(item, provided) -> str:
    params = _params(item)
    case = params.get("case") or params.get("bad")
    if case is not None and hasattr(case, "op"):  # a Case, or a BadCase of test_rejects_bad_input
        return case.op
    kind = params.get("kind")
    if kind is not None:  # test_step_chain: the step op is what it adds over test_forward...
        seq_op, step_op = _STEP_CHAIN[kind]
        # ...but it tests whichever of the two the backend provides (the other is the reference's)
        return seq_op if step_op not in provided and seq_op in provided else step_op
    return "layer" if "layer" in item.name else item.originalname


#: test_step_chain's kind -> (sequence op, step op)
_STEP_CHAIN = {"ssm": ("ssm_scan", "ssm_step"), "conv": ("causal_conv1d", "causal_conv1d_step")}


def _can_run(item, here: BackendUnderTest) -> bool:
    """Whether a standard test can run to a result for this backend: it needs one of its ops
    provided, and the torch-specific tests skip for another framework."""
    if getattr(getattr(item, "function", None), "_bmojo_torch_only", False) and here.framework != "torch":
        return False
    params = _params(item)
    case = params.get("case") or params.get("bad")
    if case is not None and hasattr(case, "op"):
        ops = (case.op,)
    elif params.get("kind") in _STEP_CHAIN:
        ops = _STEP_CHAIN[params["kind"]]
    elif "preset" in params:
        from bmojo.testing.conformance.suite import LAYER_OPS

        ops = LAYER_OPS.get(params["preset"], ())
    else:  # a test this plugin does not know: assume it runs
        return True
    return any(here.provides(op) for op in ops)


def pytest_deselected(items):
    for it in items:
        if _is_conformance(it):
            run = _run(it.config)
            if it.nodeid not in run.large_skipped:  # --bmojo-skip-large is not a removal
                run.deselected.add(it.nodeid)


def pytest_report_teststatus(report, config):
    if getattr(report, "bmojo_not_provided", False) and report.skipped:
        return NOT_PROVIDED, "n", "NOT PROVIDED"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(NotProvided):
        report.bmojo_not_provided = True
    run = item.config.stash.get(_KEY, None)
    if run is not None and item.nodeid in run.op_of:
        # Which ops were really checked: a test that ran to a pass or a failure (not skipped, not
        # provided, not an expected failure).
        if report.when == "call" and not report.skipped and not hasattr(report, "wasxfail"):
            run.tested.add(run.op_of[item.nodeid])
        # Which tests ran under a known deviation (xfailed, or xpassed): none of them counts.
        if hasattr(report, "wasxfail") and item.nodeid in run.deviation_of:
            run.excused.add(item.nodeid)
    return report


def _not_tested(run: _Run) -> list[str]:
    """Provided ops (and the block tests) with a selected test that can run, none of which ran to
    a pass or a failure: all excused by known deviations, skipped or errored."""
    from bmojo.backends.spec import OPS

    return [op for op in (*OPS, "layer") if op in run.expected_ops and op not in run.tested]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    run = _run(config)
    if not run.active:
        return
    tr = terminalreporter
    tr.section(f"bmojo conformance: backend {run.backend!r} on {run.device}")
    tr.write_line(f"seed {run.seed} (rerun with --bmojo-seed={run.seed}), dtypes {','.join(run.dtypes)}")
    if config.option.collectonly:
        return
    counts: dict[str, dict[str, int]] = {}
    for category, reports in terminalreporter.stats.items():
        for rep in reports:
            nodeid = getattr(rep, "nodeid", None)
            if nodeid not in run.op_of or category == "":
                continue
            when = getattr(rep, "when", "call")
            if when == "teardown" and category != "error":  # a teardown counts only when it errs
                continue
            if category == "passed" and when != "call":
                continue
            op = run.op_of[nodeid]
            counts.setdefault(op, {}).setdefault(category, 0)
            counts[op][category] += 1
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
    if run.deviations:
        # per pattern, the tests that ran under it (xfailed or xpassed); a test counts for its first match
        hits: dict[str, int] = {}
        for nodeid in run.excused:
            pattern = run.deviation_of.get(nodeid)
            if pattern is not None:
                hits[pattern] = hits.get(pattern, 0) + 1
        tr.write_line("known deviations (xfail, declared in the backend's known_deviations):")
        for pattern, reason in run.deviations.items():
            tr.write_line(f"  {pattern}  [{hits.get(pattern, 0)} tests]  {reason}")
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
    elif _not_tested(run):
        tr.write_line(
            f"NOT TESTED: {', '.join(_not_tested(run))}: provided by {run.backend!r}, yet none of the selected "
            "tests that can run for it ran to a pass or a failure (all xfailed by known deviations, skipped "
            "or errored); the suite fails",
            red=True,
        )
    if run.removed and not run.partial:
        tr.write_line(
            f"INCOMPLETE: {len(run.removed)} standard conformance tests were deselected or not selected "
            "(-k, -m, --deselect, node ids); the suite fails (pass --bmojo-partial to run a subset on purpose)",
            red=True,
        )


# ----- pytest-xdist: workers collect and run, the controller reports and decides ------------------
# Under ``-n`` the controller collects nothing, so what the hooks above record on each worker
# (which test checks which op, what was left out, which ops really ran) travels back in
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
    if got.get("usage_error"):  # the worker's collection refused the run: a usage error here too
        raise pytest.UsageError(got["usage_error"])
    run = _run(node.config)
    run.active = run.active or got["active"]
    run.op_of.update(got["op_of"])
    run.tested.update(got["tested"])
    run.removed = sorted(set(run.removed) | set(got["removed"]))
    run.large_skipped.update(got["large_skipped"])
    run.provided = run.provided or got["provided"]
    run.deviations.update(got["deviations"])
    run.deviation_of.update(got["deviation_of"])
    run.excused.update(got["excused"])
    run.expected_ops.update(got["expected_ops"])
    run.overrides.update(got["overrides"])


def _send_to_controller(config) -> None:
    """On a pytest-xdist worker: what the controller's summary and exit status need."""
    run = config.stash.get(_KEY, None)
    if run is None or not hasattr(config, "workeroutput"):
        return
    config.workeroutput["bmojo_conformance"] = dict(
        usage_error=run.usage_error,
        active=run.active,
        op_of=run.op_of,
        tested=sorted(run.tested),
        removed=run.removed,
        large_skipped=sorted(run.large_skipped),
        provided=run.provided,
        deviations=run.deviations,
        deviation_of=run.deviation_of,
        excused=sorted(run.excused),
        expected_ops=sorted(run.expected_ops),
        overrides=run.overrides,
    )


def pytest_sessionfinish(session, exitstatus):
    _send_to_controller(session.config)
    run = session.config.stash.get(_KEY, None)
    if run is None or not run.active or exitstatus != 0 or session.config.option.collectonly:
        return
    if (run.removed and not run.partial) or not run.tested or _not_tested(run):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
