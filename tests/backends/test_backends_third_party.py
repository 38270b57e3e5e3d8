"""The out-of-tree example (examples/third_party_backend/) made importable by a ``.dist-info``
fixture on ``sys.path`` (what ``pip install`` would leave): listed by ``bmojo backends``, selected
by ``BMOJO_BACKEND``, and run through the conformance suite (issue point 6). Also: a broken
installed plugin never breaks ``import bmojo`` or the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bmojo.backends import Registry, State, get_registry, set_registry
from bmojo.testing.conformance.cases import CASES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "third_party_backend"


def _install(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, Path | str]):
    """Lay out what an installed wheel leaves in site-packages: the modules and a .dist-info."""
    for name, src in modules.items():
        if isinstance(src, Path):
            shutil.copytree(src, site / name)
        else:
            (site / f"{name}.py").write_text(src)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[bmojo]\n{lines}")


def _example_entry_points() -> dict[str, str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return {"example": "bmojo_example_backend"}
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    return meta["project"]["entry-points"]["bmojo"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    _install(
        site,
        "bmojo-example-backend",
        "0.1.0",
        _example_entry_points(),
        {"bmojo_example_backend": EXAMPLE / "src" / "bmojo_example_backend"},
    )
    return site


def _env(site: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMOJO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _run(site, *args, cwd=None, **env):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=_env(site, **env), cwd=cwd, timeout=600
    )


@pytest.fixture
def on_path(site, monkeypatch):
    """The example installed in this process: importable, its entry point visible to a fresh registry."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("BMOJO_BACKEND", raising=False)
    old = get_registry()
    set_registry(Registry())
    yield
    set_registry(old)
    sys.modules.pop("bmojo_example_backend", None)
    sys.modules.pop("bmojo_example_backend.kernels", None)


def test_listed_with_version_state_and_ops(on_path):
    st = {s.name: s for s in get_registry().statuses()}["example"]
    assert (st.state, st.version, st.priority) == (State.AVAILABLE, "0.1.0", 10)
    assert st.ops == {"rmsnorm": ("cpu",)}
    assert st.origin == "bmojo-example-backend 0.1.0"


def test_selected_by_env_and_implicitly_preferred(on_path, monkeypatch):
    from bmojo.backends import dispatch

    assert dispatch.resolve("rmsnorm", "cpu")[0] == "example"  # priority 10 > reference
    assert dispatch.resolve("rmsnorm", "cuda")[0] == "reference"  # it declares cpu only
    monkeypatch.setenv("BMOJO_BACKEND", "example")
    name, fn = dispatch.resolve("rmsnorm", "cpu")
    assert name == "example" and fn.__module__ == "bmojo_example_backend.kernels"
    assert dispatch.resolve("ssm_scan", "cpu")[0] == "reference"  # not implemented by it


def test_cli_lists_it_and_reports_probe_reason(site):
    out = _run(site, "-m", "bmojo.cli", "backends")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("example"))
    assert re.search(r"example\s+0\.1\.0\s+available\s+10\s+-\s+rmsnorm \[cpu\]", line), line
    data = json.loads(_run(site, "-m", "bmojo.cli", "doctor", "--json", BMOJO_BACKEND="example").stdout)
    assert data["requested"] == "example" and data["selection"]["rmsnorm"] == "example"
    assert data["selection"]["ssm_scan"] == "reference"
    down = json.loads(_run(site, "-m", "bmojo.cli", "backends", "--json", BMOJO_EXAMPLE_UNAVAILABLE="1").stdout)
    ex = next(b for b in down["backends"] if b["name"] == "example")
    assert (ex["state"], ex["reason"]) == ("unavailable", "BMOJO_EXAMPLE_UNAVAILABLE is set")
    explicit = _run(site, "-m", "bmojo.cli", "backends", BMOJO_BACKEND="example", BMOJO_EXAMPLE_UNAVAILABLE="1")
    assert explicit.returncode == 1
    assert "requested by BMOJO_BACKEND=example but is unavailable: BMOJO_EXAMPLE_UNAVAILABLE is set" in explicit.stdout
    disabled = _run(site, "-m", "bmojo.cli", "backends", "--json", BMOJO_DISABLE="example")
    assert next(b for b in json.loads(disabled.stdout)["backends"] if b["name"] == "example")["state"] == "disabled"


def test_conformance_suite_runs_against_it(site, tmp_path):
    out = _run(
        site, "-m", "pytest", "--pyargs", "bmojo.testing.conformance", "--bmojo-backend=example",
        "-p", "no:cacheprovider", "-q", cwd=tmp_path,
    )  # fmt: skip
    text = out.stdout
    assert out.returncode == 0, text[-3000:]
    row = re.search(r"^rmsnorm\s+(\d+)\s+(\d+)", text, re.M)
    assert row and int(row.group(1)) > 0 and int(row.group(2)) == 0, text[-3000:]
    assert re.search(r"^ops tested: rmsnorm$", text, re.M)
    assert "ops not provided (not counted as passed): ssm_scan, ssm_step" in text
    summary = text.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and re.search(r"\d+ not provided", summary), summary
    assert "failed" not in summary


def test_deselecting_standard_tests_fails_unless_partial(site, tmp_path):
    base = ["-m", "pytest", "--pyargs", "bmojo.testing.conformance", "--bmojo-backend=example"]
    base += ["-p", "no:cacheprovider", "-q", "-k", "test_forward and rmsnorm-base and float64"]
    strict = _run(site, *base, cwd=tmp_path)
    assert strict.returncode == 1 and "INCOMPLETE" in strict.stdout, strict.stdout[-2000:]
    partial = _run(site, *base, "--bmojo-partial", cwd=tmp_path)
    assert partial.returncode == 0, partial.stdout[-2000:]


def test_overriding_a_standard_test_needs_a_declared_reason():
    from bmojo.testing.conformance.suite import ConformanceSuite

    with pytest.raises(TypeError, match=r"overrides or removes standard conformance tests \['test_backward'\]"):

        class Sneaky(ConformanceSuite):
            test_backward = None

    class Declared(ConformanceSuite):
        deviations = {"test_backward": "forward-only backend (inference kernels)"}  # noqa: RUF012

        def test_backward(self):
            pytest.skip("forward only")

    assert Declared._bmojo_overrides == {"test_backward": "forward-only backend (inference kernels)"}


def test_broken_plugin_never_breaks_import_or_cli(tmp_path):
    _install(
        tmp_path,
        "bmojo-broken",
        "9.9",
        {"broken": "bmojo_broken_backend"},
        {"bmojo_broken_backend": "raise ImportError('libfancy.so: cannot open shared object file')\n"},
    )
    imp = _run(tmp_path, "-c", "import bmojo, bmojo.backends; from bmojo import BMojoLM; print('ok')")
    assert imp.returncode == 0 and imp.stdout.strip() == "ok", imp.stderr
    out = _run(tmp_path, "-m", "bmojo.cli", "backends")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("broken"))
    assert "9.9" in line and "import failed" in line and "libfancy.so" in line
    verbose = _run(tmp_path, "-m", "bmojo.cli", "backends", "-v")
    assert "Traceback" in verbose.stdout
    demo = _run(tmp_path, "-m", "bmojo.cli", "--help")
    assert demo.returncode == 0


DEVIANT = """
import torch
from bmojo.backends import Backend, hookimpl
from bmojo.ops.rmsnorm.reference import rmsnorm as _ref


def rmsnorm(x, weight, eps=1e-6):
    out = _ref(x, weight, eps)
    return out + 1e-3 if x.dtype == torch.float32 else out  # a float32-only bug


DEVIATIONS = {
    "test_forward[float32-rmsnorm-*]": "float32 path adds 1e-3 (tracked upstream)",
    "test_layer_parallel_equals_recurrent[float32-*]": "same float32 rmsnorm offset",
}


@hookimpl
def bmojo_backends():
    import os

    declared = DEVIATIONS if os.environ.get("DEVIANT_DECLARE") else {}
    return [Backend(name="deviant", version="0.0.1", ops={"rmsnorm": rmsnorm}, priority=1, known_deviations=declared)]
"""


def test_known_deviations_are_xfailed_and_listed_undeclared_ones_fail(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "bmojo-deviant", "0.0.1", {"deviant": "bmojo_deviant"}, {"bmojo_deviant": DEVIANT})
    args = ["-m", "pytest", "--pyargs", "bmojo.testing.conformance", "--bmojo-backend=deviant", "-q"]
    args += ["-p", "no:cacheprovider", "--bmojo-seed=1"]
    undeclared = _run(site, *args, cwd=tmp_path)
    assert undeclared.returncode == 1 and "failed" in undeclared.stdout.strip().splitlines()[-1]
    declared = _run(site, *args, cwd=tmp_path, DEVIANT_DECLARE="1")
    text = declared.stdout
    assert declared.returncode == 0, text[-3000:]
    assert "known deviations (xfail, declared in the backend's known_deviations):" in text
    n = sum(c.op == "rmsnorm" for c in CASES)  # the pattern's matches, listed with their count
    assert f"test_forward[float32-rmsnorm-*]  [{n} tests]  float32 path adds 1e-3 (tracked upstream)" in text
    assert re.search(r"\d+ xfailed", text.strip().splitlines()[-1])


def test_suite_refuses_an_unavailable_backend(tmp_path):
    args = ["-m", "pytest", "--pyargs", "bmojo.testing.conformance", "--bmojo-backend=triton"]
    out = _run(tmp_path, *args, cwd=tmp_path)
    assert out.returncode == 4
    text = out.stderr + out.stdout
    # bmojo-triton absent (the `tests` session) or installed without a GPU/interpreter: refused either way
    assert (
        "backend 'triton' is not installed: pip install -e packages/bmojo-triton" in text
        or "backend 'triton' is unavailable: no CUDA device" in text
    ), text[-2000:]


LAX = """
import torch
import torch.nn.functional as F
from bmojo.backends import Backend, hookimpl


def rmsnorm(x, weight, eps=1e-6):
    # no argument checks: eps <= 0 is accepted, a wrong weight size fails inside torch
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    return F.rms_norm(x.to(cd), (x.shape[-1],), weight.to(cd), eps).to(x.dtype)


@hookimpl
def bmojo_backends():
    return [Backend(name="lax", version="0.0.1", ops={"rmsnorm": rmsnorm}, priority=1)]
"""


def test_a_backend_that_does_not_check_its_arguments_fails_the_suite(tmp_path):
    """The shared bad-input cases (``BAD_CASES``) catch a kernel without argument checks: bad input
    accepted silently, or refused by an error that names no argument."""
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "bmojo-lax", "0.0.1", {"lax": "bmojo_lax"}, {"bmojo_lax": LAX})
    args = ["-m", "pytest", "--pyargs", "bmojo.testing.conformance", "--bmojo-backend=lax", "-q", "-rf"]
    args += ["-p", "no:cacheprovider", "--bmojo-partial", "-k", "rejects_bad_input or test_forward"]
    out = _run(site, *args, cwd=tmp_path)
    text = out.stdout
    assert out.returncode == 1, text[-3000:]
    assert "rmsnorm-eps_0 (eager): accepted bad input (eps); the reference refuses it" in text, text[-3000:]
    refused = r"rmsnorm-weight_size \(eager\): expected ValueError or TypeError naming 'weight'.*got BackendOpError: "
    assert re.search(refused + r"bmojo backend 'lax' failed in rmsnorm: RuntimeError", text), text[-3000:]
    # only those two: its forward on valid inputs is right
    assert re.search(r"^rmsnorm\s+\d+\s+2\s", text, re.M), text[-3000:]
