"""A backend's op given as a lazy ``"module:attr"`` string whose import fails (a missing compiled
extension, a rename that forgot the string) is that backend's failure for that op, attributed like
a failing call: implicit selection falls back to the next provider with a warning naming the
backend, the op and the target; an explicit request raises ``BackendOpError`` saying the same,
chained to the import error. Also: an entry point not named like its backend is flagged."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from bmojo.backends import Backend, BackendOpError, OpImpl, State, dispatch, use_backend
from bmojo.ops.rmsnorm.reference import gated_rmsnorm as gated_ref
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

from .helpers import EP, Plugin, install, run_python

MISSING_MODULE = "bmojo_test_no_such_module:rmsnorm"
MISSING_ATTR = "bmojo.ops.rmsnorm.reference:renamed_rmsnorm"


def _lazy(target=MISSING_MODULE, **kw):
    ops = {"rmsnorm": OpImpl(target, devices=("cpu",), **kw), "gated_rmsnorm": OpImpl(gated_ref, devices=("cpu",))}
    return Backend(name="lazy", version="1", ops=ops, priority=10)


def _inputs():
    torch.manual_seed(0)
    return torch.randn(2, 3, 8), torch.rand(8) + 0.5


@pytest.mark.parametrize("target, error", [(MISSING_MODULE, "ModuleNotFoundError"), (MISSING_ATTR, "AttributeError")])
@pytest.mark.parametrize("path", ["eager", "custom_op"])
def test_implicit_selection_falls_back_with_a_warning(registry, caplog, target, error, path):
    reg = registry(EP("lazy", Plugin(_lazy(target))))
    x, w = _inputs()
    with caplog.at_level(logging.WARNING, logger="bmojo.backends"):
        if path == "eager":
            y = dispatch.rmsnorm(x, w)
        else:
            y = torch.ops.bmojo.rmsnorm(x, w, 1e-6)
    torch.testing.assert_close(y, rmsnorm_ref(x, w))
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"backend 'lazy' cannot load rmsnorm from {target!r}: {error}" in m for m in msgs), msgs
    assert reg.resolve("rmsnorm", "cpu")[0] == "reference"
    # Its other ops are unaffected; the failure is shown in its status.
    assert reg.resolve("gated_rmsnorm", "cpu")[0] == "lazy"
    st = reg.status("lazy")
    assert st.state is State.AVAILABLE and f"cannot load rmsnorm from {target!r}: {error}" in st.reason
    assert set(st.op_errors) == {"rmsnorm"} and error in st.error  # the traceback, for -v
    assert reg.selection("cpu")["rmsnorm"] == "reference"


@pytest.mark.parametrize("how", ["use_backend", "env"])
def test_explicit_selection_raises_naming_backend_op_and_target(registry, monkeypatch, how):
    registry(EP("lazy", Plugin(_lazy())))
    x, w = _inputs()
    source = "use_backend('lazy')" if how == "use_backend" else "BMOJO_BACKEND=lazy"
    if how == "env":
        monkeypatch.setenv("BMOJO_BACKEND", "lazy")
    for _ in range(2):  # the second call too: never a silent fallback
        with use_backend("lazy") if how == "use_backend" else _nothing():
            with pytest.raises(BackendOpError) as info:
                dispatch.rmsnorm(x, w)
        assert str(info.value).startswith(
            f"bmojo backend 'lazy' (requested by {source}) cannot load rmsnorm from {MISSING_MODULE!r}: "
            "ModuleNotFoundError"
        ), str(info.value)
        assert isinstance(info.value.__cause__, ModuleNotFoundError)
    with use_backend("lazy") if how == "use_backend" else _nothing():
        torch.testing.assert_close(dispatch.gated_rmsnorm(x, x, w), gated_ref(x, x, w))  # its other op runs


def test_a_backward_target_that_fails_to_import_is_caught_at_the_forward(registry, caplog):
    reg = registry(EP("lazy", Plugin(_lazy(rmsnorm_ref, backward="bmojo_test_no_such_module:rmsnorm_backward"))))
    x, w = _inputs()
    x.requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="bmojo.backends"):
        dispatch.rmsnorm(x, w).sum().backward()  # implicit: the reference serves it, forward and backward
    assert x.grad is not None and reg.resolve("rmsnorm", "cpu")[0] == "reference"
    assert "bmojo_test_no_such_module:rmsnorm_backward" in reg.status("lazy").reason
    with use_backend("lazy"), pytest.raises(BackendOpError, match=r"cannot load rmsnorm from .*rmsnorm_backward"):
        dispatch.rmsnorm(x, w)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


PLUGIN = """
from bmojo.backends import Backend, OpImpl, hookimpl


@hookimpl
def bmojo_backends():
    return [Backend(name="lazy", version="1", priority=10,
                    ops={"rmsnorm": OpImpl("bmojo_lazy_kernels:rmsnorm", devices=("cpu",))})]
"""
KERNELS = "import bmojo_lazy_cuda_ext  # the compiled extension is missing\n"


def test_cli_verbose_imports_the_targets_and_reports_failures(tmp_path):
    site = install(
        tmp_path / "site",
        "bmojo-lazy",
        "1.0",
        {"lazy": "bmojo_lazy"},
        {"bmojo_lazy": PLUGIN, "bmojo_lazy_kernels": KERNELS},
    )
    plain = run_python(site, "-m", "bmojo.cli", "backends", "--json")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert json.loads(plain.stdout)["selection"]["rmsnorm"] == "lazy"  # nothing imported: not known yet
    out = run_python(site, "-m", "bmojo.cli", "backends", "-v")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "cannot load rmsnorm from 'bmojo_lazy_kernels:rmsnorm': ModuleNotFoundError" in text, text
    assert "No module named 'bmojo_lazy_cuda_ext'" in text  # the traceback
    assert "reference: all ops" in text and "1 op(s) failed to import" in text
    assert "run with -v" not in text
    js = run_python(site, "-m", "bmojo.cli", "backends", "-v", "--json")
    lazy = {b["name"]: b for b in json.loads(js.stdout)["backends"]}["lazy"]
    assert lazy["state"] == "available" and "bmojo_lazy_cuda_ext" in lazy["op_errors"]["rmsnorm"]
    # A model still runs: the op falls back to the reference, with a warning naming the backend.
    script = (
        "import torch\nfrom bmojo.backends import dispatch\n"
        "print(dispatch.rmsnorm(torch.ones(1, 2, 4), torch.ones(4)).shape)"
    )
    fwd = run_python(site, "-c", script)
    assert fwd.returncode == 0 and "torch.Size([1, 2, 4])" in fwd.stdout, fwd.stdout + fwd.stderr
    assert "backend 'lazy' cannot load rmsnorm from 'bmojo_lazy_kernels:rmsnorm'" in fwd.stderr
    explicit = run_python(site, "-c", script, BMOJO_BACKEND="lazy")
    assert explicit.returncode != 0
    assert "bmojo backend 'lazy' (requested by BMOJO_BACKEND=lazy) cannot load rmsnorm" in explicit.stderr


# --- an entry point named unlike its backend --------------------------------------------------------
def test_entry_point_named_unlike_its_backend_is_flagged(registry, caplog):
    rec = Backend(name="mykernels", version="1", ops={"rmsnorm": rmsnorm_ref})
    with caplog.at_level(logging.WARNING, logger="bmojo.backends"):
        reg = registry(EP("example", Plugin(rec)), EP("good", Plugin(Backend(name="good", version="1", ops={}))))
        st = reg.status("mykernels")
    assert st.state is State.AVAILABLE
    assert "entry point 'example' is not named like the backend 'mykernels'" in st.reason
    assert any("entry point 'example'" in r.getMessage() for r in caplog.records)
    assert reg.status("good").reason == ""


def test_array_framework_op_that_fails_to_import_is_named_when_nothing_else_serves(registry):
    from bmojo.backends import BackendError, Converters, arrays

    conv = Converters(to_numpy="numpy:asarray", from_numpy="numpy:asarray")
    rec = Backend(name="arr", version="1", ops={"rmsnorm": MISSING_MODULE}, framework="fake", converters=conv)
    registry(EP("arr", Plugin(rec)))
    with pytest.raises(BackendError) as info:
        arrays.resolve("rmsnorm", "fake", "cpu")  # the reference serves torch only: no fallback
    assert str(info.value) == (
        "no available backend provides rmsnorm on 'cpu' for fake arrays; backend 'arr' cannot load rmsnorm from "
        f"{MISSING_MODULE!r}: ModuleNotFoundError: No module named 'bmojo_test_no_such_module'"
    )
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    with use_backend("arr"), pytest.raises(BackendOpError, match=r"\(requested by use_backend\('arr'\)\) cannot load"):
        arrays.resolve("rmsnorm", "fake", "cpu")


def test_a_plugin_with_several_backends_names_its_entry_point_freely(registry):
    recs = [Backend(name=n, version="1", ops={"rmsnorm": rmsnorm_ref}) for n in ("fast", "exact")]
    reg = registry(EP("mykernels", Plugin(*recs)))
    assert reg.status("fast").reason == "" and reg.status("exact").reason == ""
