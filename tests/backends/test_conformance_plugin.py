"""The conformance suite's pytest plugin and its ``ConformanceSuite`` guard cannot be talked into
a partial, vacuous or irreproducible pass: selection by node id, mixins, deviations over tests
that never run, path-dependent seeds, xdist usage errors, bad ``--bmojo-*`` values, ``--co``, and
what the per-op summary credits and counts. Each backend is a tiny installed plugin (a
``.dist-info`` on ``PYTHONPATH``, as in ``test_backends_third_party.py``) run in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bmojo.testing.conformance.cases import CASES
from test_backends_third_party import _install  # this folder's test module: one way to lay out a plugin

SUITE = "bmojo.testing.conformance"
NODE = f"{SUITE}.test_conformance::TestConformance"

HEADER = """
import os

import torch
from bmojo.backends import Backend, OpImpl, hookimpl
from bmojo.ops.rmsnorm.reference import rmsnorm as _rmsnorm, gated_rmsnorm as _gated
from bmojo.ops.ssm_scan.reference import ssm_scan as _scan
from bmojo.ops.bmojo_attention.reference import bmojo_attention as _attention
"""

# rmsnorm, gated_rmsnorm and ssm_scan, all correct; TINY_RECORD=path appends the sum of each
# rmsnorm input there (what the seed gave).
TINY = (
    HEADER
    + """
def rmsnorm(x, weight, eps=1e-6):
    path = os.environ.get("TINY_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(f"{float(x.double().sum())!r}\\n")
    return _rmsnorm(x, weight, eps)


@hookimpl
def bmojo_backends():
    ops = {"rmsnorm": rmsnorm, "gated_rmsnorm": _gated, "ssm_scan": _scan}
    return [Backend(name="tiny", version="0", ops=ops, priority=1)]
"""
)

# rmsnorm off by 1.0 (forward only: its gradients are right), under two overlapping patterns.
OFF = (
    HEADER
    + """
def rmsnorm(x, weight, eps=1e-6):
    return _rmsnorm(x, weight, eps) + 1.0


DEVIATIONS = {
    "test_forward[float64-rmsnorm-*]": "float64 offset",
    "test_forward[*-rmsnorm-*]": "offset in every dtype",
}


@hookimpl
def bmojo_backends():
    ops = {"rmsnorm": rmsnorm, "gated_rmsnorm": _gated}
    return [Backend(name="off", version="0", ops=ops, priority=1, known_deviations=DEVIATIONS)]
"""
)

# Attention only: the mamba2 block test cannot run (none of its ops provided); the deviations
# excuse the three block tests that can.
LAYERS = (
    HEADER
    + """
DEVIATIONS = {
    "test_layer_parallel_equals_recurrent[*-bmojo]": "block drift",
    "test_layer_parallel_equals_recurrent[*-bmojo_f]": "block drift",
    "test_layer_parallel_equals_recurrent[*-swa]": "block drift",
}


@hookimpl
def bmojo_backends():
    ops = {"bmojo_attention": _attention}
    return [Backend(name="layers", version="0", ops=ops, priority=1, known_deviations=DEVIATIONS)]
"""
)

# MLX arrays: every rmsnorm test that can run for it (forward, backward, bad input) excused; its
# opcheck is torch-specific and never runs.
MLXDEV = """
from bmojo.backends import Backend, OpImpl, hookimpl
from bmojo_mlx.plugin import CONVERTERS

DEVIATIONS = {
    "test_forward[*-rmsnorm-*]": "x",
    "test_backward[*-rmsnorm-*]": "x",
    "test_rejects_bad_input[rmsnorm-*]": "x",
}


@hookimpl
def bmojo_backends():
    ops = {"rmsnorm": OpImpl("bmojo_mlx.ops.rmsnorm.array:rmsnorm", devices=("cpu",))}
    return [
        Backend(
            name="mlxdev", version="0", ops=ops, priority=20, framework="mlx", converters=CONVERTERS,
            known_deviations=DEVIATIONS,
        )
    ]
"""  # fmt: skip

EMBEDDED = """
import pytest
from bmojo.testing.conformance.suite import ConformanceSuite


class TestMine(ConformanceSuite):
    pass
"""

TEARDOWN = """
import pytest
from bmojo.testing.conformance.suite import ConformanceSuite


class TestMine(ConformanceSuite):
    @pytest.fixture(autouse=True)
    def _boom(self):
        yield
        raise RuntimeError("teardown boom")
"""


def _run(site: Path, *args, cwd, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMOJO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    for name, src in {"tiny": TINY, "off": OFF, "layers": LAYERS, "mlxdev": MLXDEV}.items():
        _install(site, f"bmojo-{name}", "0.0.1", {name: f"bmojo_{name}"}, {f"bmojo_{name}": src})
    return site


def _suite(site, cwd, *args, target=SUITE, pyargs=True, **env):
    cmd = ["-m", "pytest", *(["--pyargs"] if pyargs else []), target, "-p", "no:cacheprovider", "-q", *args]
    return _run(site, *cmd, cwd=cwd, **env)


def _row(text: str, op: str) -> dict[str, int]:
    cols = ("passed", "failed", "error", "xfailed", "xpassed", "not provided", "skipped")
    m = re.search(rf"^{op}((?:\s+\d+){{7}})$", text, re.M)
    assert m, text[-3000:]
    return dict(zip(cols, map(int, m.group(1).split())))


def test_selecting_by_node_id_is_incomplete_unless_partial(site, tmp_path):
    """Node ids narrow collection before any ``pytest_deselected``: still fewer than the full set."""
    one = f"{NODE}::test_forward[float64-rmsnorm-base]"
    strict = _suite(site, tmp_path, "--bmojo-backend=tiny", target=one)
    assert strict.returncode == 1 and "INCOMPLETE" in strict.stdout, strict.stdout[-3000:]
    strict = _suite(site, tmp_path, "--bmojo-backend=tiny", "--bmojo-dtypes=float64", target=f"{NODE}::test_opcheck")
    assert strict.returncode == 1 and "INCOMPLETE" in strict.stdout, strict.stdout[-3000:]
    partial = _suite(site, tmp_path, "--bmojo-backend=tiny", "--bmojo-partial", target=one)
    assert partial.returncode == 0, partial.stdout[-3000:]
    assert "INCOMPLETE" not in partial.stdout


def test_a_mixin_or_sub_subclass_cannot_replace_standard_tests_silently():
    from bmojo.testing.conformance.suite import ConformanceSuite

    class Mixin:
        def test_backward(self):
            pytest.skip("forward only")

    with pytest.raises(TypeError, match=r"overrides or removes standard conformance tests \['test_backward'\]"):

        class Sneaky(Mixin, ConformanceSuite):
            pass

    class Remover:
        test_opcheck = None

    with pytest.raises(TypeError, match=r"\['test_opcheck'\]"):

        class Sneaky2(Remover, ConformanceSuite):
            pass

    class Declared(ConformanceSuite):
        deviations = {"test_backward": "forward-only backend"}  # noqa: RUF012

        def test_backward(self):
            pytest.skip("forward only")

    class Child(Declared):
        pass

    class Grandchild(Child):
        deviations = {"test_opcheck": "no torch.library"}  # noqa: RUF012
        test_opcheck = None

    assert Child._bmojo_overrides == {"test_backward": "forward-only backend"}
    assert Grandchild._bmojo_overrides == {"test_backward": "forward-only backend", "test_opcheck": "no torch.library"}

    class DeclaredMixin(Mixin, ConformanceSuite):
        deviations = {"test_backward": "forward-only backend"}  # noqa: RUF012

    assert DeclaredMixin._bmojo_overrides == {"test_backward": "forward-only backend"}


def test_deviations_are_counted_against_the_tests_that_can_run(site, tmp_path):
    # The mamba2 block test is not provided: excusing the other three excuses every block test.
    layers = _suite(site, tmp_path, "--bmojo-backend=layers", "--co")
    assert layers.returncode == 4, layers.stdout[-2000:] + layers.stderr[-2000:]
    assert "known_deviations of 'layers' cover every test of layer" in layers.stderr
    pytest.importorskip("mlx.core", reason="mlx is not installed")
    mlx = _suite(site, tmp_path, "--bmojo-backend=mlxdev", "--co")  # its opcheck never runs
    assert mlx.returncode == 4, mlx.stdout[-2000:] + mlx.stderr[-2000:]
    assert "known_deviations of 'mlxdev' cover every test of rmsnorm" in mlx.stderr


def test_a_provided_op_with_no_test_that_ran_fails_the_run(site, tmp_path):
    out = _suite(
        site, tmp_path, "--bmojo-backend=off", "--bmojo-partial", "--bmojo-dtypes=float64",
        "-k", "test_forward and rmsnorm-",
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:]
    assert "NOT TESTED: rmsnorm" in out.stdout, out.stdout[-3000:]
    assert _row(out.stdout, "gated_rmsnorm")["passed"] > 0


def test_the_same_seed_gives_the_same_inputs_from_any_directory(site, tmp_path):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "test_mine.py").write_text(EMBEDDED)
    args = ["--bmojo-backend=tiny", "--bmojo-seed=5", "--bmojo-partial", "-k", "test_forward and float64-rmsnorm-base"]
    seen = []
    for i, (cwd, extra, target, pyargs) in enumerate(
        [
            (tmp_path, [], SUITE, True),
            (tmp_path, ["--rootdir=/"], SUITE, True),
            (tmp_path / "deep", [], "er/test_mine.py", False),
        ]
    ):
        record = tmp_path / f"record{i}"
        out = _suite(site, cwd, *args, *extra, target=target, pyargs=pyargs, TINY_RECORD=str(record))
        assert out.returncode == 0, out.stdout[-3000:]
        seen.append(record.read_text())
    assert seen[0] and seen[0] == seen[1] == seen[2], seen


def test_the_seed_is_printed_in_the_summary_also_with_q(site, tmp_path):
    out = _suite(site, tmp_path, "--bmojo-backend=tiny", "--bmojo-partial", "-k", "test_forward and rmsnorm-base")
    assert out.returncode == 0, out.stdout[-3000:]
    seed = re.search(r"^seed (\d+) \(rerun with --bmojo-seed=(\d+)\)", out.stdout, re.M)
    assert seed and seed.group(1) == seed.group(2), out.stdout[-3000:]


def test_usage_errors_under_xdist_are_usage_errors(site, tmp_path):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed")
    out = _suite(site, tmp_path, "--bmojo-backend=nope", "-n", "2")
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]
    assert "bmojo conformance: backend 'nope' is not installed" in out.stderr, out.stderr[-2000:]
    assert "INTERNALERROR" not in out.stdout + out.stderr
    # Refused by what the workers collect (the controller collects nothing): their error reaches it.
    out = _suite(site, tmp_path, "--bmojo-backend=layers", "-n", "2")
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]
    assert "known_deviations of 'layers' cover every test of layer" in out.stderr, out.stderr[-2000:]
    assert "INTERNALERROR" not in out.stdout + out.stderr
    # An embedded suite the controller cannot recognise: the workers' error reaches it.
    (tmp_path / "test_mine.py").write_text(EMBEDDED)
    out = _suite(site, tmp_path, "-n", "2", target="test_mine.py", pyargs=False, BMOJO_BACKEND="nope")
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]
    assert "bmojo conformance: backend 'nope' is not installed" in out.stderr, out.stderr[-2000:]
    assert "INTERNALERROR" not in out.stdout + out.stderr


def test_bad_device_values_are_usage_errors(site, tmp_path):
    import torch
    from bmojo.testing.conformance.plugin import _device_problem

    bad = ["nonsense", "", "cuda:x", "cpu:"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for device in bad:
        problem = _device_problem(device, "torch")
        assert problem and problem.startswith(f"a torch device available here (e.g. cpu), got {device!r}"), device
    for device in ["cpu", "meta"] + (["cuda", "cuda:0"] if torch.cuda.is_available() else []):
        assert _device_problem(device, "torch") is None, device
    out = _suite(site, tmp_path, "--bmojo-backend=tiny", "--bmojo-device=nonsense", "--co")
    assert out.returncode == 4, out.stdout[-2000:]
    assert "--bmojo-device: expected a torch device available here (e.g. cpu), got 'nonsense'" in out.stderr


def test_mlx_devices_are_checked_against_its_framework(site, tmp_path):
    """MLX's device types are not torch's: the one the suite can test is the one MLX computes on."""
    pytest.importorskip("mlx.core", reason="mlx is not installed")
    from bmojo.backends import arrays

    here = arrays.device_type("mlx")
    other = "gpu" if here == "cpu" else "cpu"
    out = _suite(site, tmp_path, "--bmojo-backend=mlx", f"--bmojo-device={other}", "--co")
    assert out.returncode == 4, out.stdout[-2000:]
    assert f"--bmojo-device: expected the device mlx computes on here ({here!r}), got {other!r}" in out.stderr


def test_collect_only_does_not_fail(site, tmp_path):
    out = _suite(site, tmp_path, "--bmojo-backend=tiny", "--co", "-k", "rmsnorm")  # would be INCOMPLETE if run
    assert out.returncode == 0, out.stdout[-3000:]
    assert "NOTHING TESTED" not in out.stdout and "INCOMPLETE" not in out.stdout


def test_empty_or_duplicate_option_values_are_usage_errors(site, tmp_path):
    cases = {
        "--bmojo-dtypes=float32,float32": "--bmojo-dtypes: expected distinct dtypes, got 'float32,float32'",
        "--bmojo-dtypes=": "--bmojo-dtypes: expected comma-separated dtypes from",
        "--bmojo-dtypes=float32,": "--bmojo-dtypes: expected comma-separated dtypes from",
        "--bmojo-backend=": "--bmojo-backend: expected a backend name, got ''",
    }
    for arg, message in cases.items():
        out = _suite(site, tmp_path, arg, "--co")
        assert out.returncode == 4, (arg, out.stdout[-2000:])
        assert message in out.stderr, (arg, out.stderr[-2000:])


def test_step_chain_is_credited_to_an_op_the_backend_provides(site, tmp_path):
    out = _suite(
        site, tmp_path, "--bmojo-backend=tiny", "--bmojo-partial", "--bmojo-dtypes=float64", "-k", "step_chain"
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert _row(out.stdout, "ssm_scan")["passed"] == 1  # tiny has ssm_scan, not ssm_step
    assert sum(_row(out.stdout, "ssm_step").values()) == 0
    conv = _row(out.stdout, "causal_conv1d_step")  # neither conv op: not provided, under the step op
    assert conv["not provided"] == 1 and sum(_row(out.stdout, "causal_conv1d").values()) == 0
    assert re.search(r"^ops tested: ssm_scan$", out.stdout, re.M), out.stdout[-3000:]


def test_deviation_counts_are_tests_that_ran_and_were_excused(site, tmp_path):
    out = _suite(
        site, tmp_path, "--bmojo-backend=off", "--bmojo-partial",
        "-k", "rmsnorm-base and (test_forward or test_backward)",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert _row(out.stdout, "rmsnorm")["xfailed"] == 2
    # first match wins; deselected tests are not counted
    assert "test_forward[float64-rmsnorm-*]  [1 tests]  float64 offset" in out.stdout, out.stdout[-3000:]
    assert "test_forward[*-rmsnorm-*]  [1 tests]  offset in every dtype" in out.stdout, out.stdout[-3000:]
    full = sum(c.op == "rmsnorm" for c in CASES)
    assert f"[{full} tests]" not in out.stdout


def test_teardown_errors_are_in_the_table(site, tmp_path):
    (tmp_path / "test_mine.py").write_text(TEARDOWN)
    out = _suite(
        site, tmp_path, "--bmojo-backend=tiny", "--bmojo-partial", "-k", "test_forward and float64-rmsnorm-base",
        target="test_mine.py", pyargs=False,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:]
    row = _row(out.stdout, "rmsnorm")
    assert (row["passed"], row["error"]) == (1, 1), out.stdout[-3000:]
