"""``bmojo backends``: an explicit request that cannot serve another framework's arrays is shown
as the error dispatch raises (and exits 1, as the torch case does); ``--device`` is a device type
as dispatch reads it, "cpu:0" is "cpu", an unknown one is refused naming --device (review of the
core package, items 5 and 6). A toy framework ("toy", numpy arrays) stands in for MLX."""

from __future__ import annotations

import argparse
import json

import pytest
from bmojo.argcheck import check_device_type
from bmojo.backends import Backend, BackendError, OpImpl, Registry, arrays, cli, hookimpl, set_registry
from bmojo.cli import main
from test_backends_frameworks import EP, toy_rmsnorm  # this folder's test module: its toy framework
from test_backends_frameworks import TOY_CONVERTERS as TOY


class Plugin:
    @hookimpl
    def bmojo_backends(self):
        ops = {"rmsnorm": OpImpl(toy_rmsnorm, devices=("cpu", "tpu9"))}
        return [Backend(name="toy", version="1", ops=ops, priority=5, framework="toy", converters=TOY)]


@pytest.fixture
def toy_registry(monkeypatch):
    monkeypatch.delenv("BMOJO_BACKEND", raising=False)
    monkeypatch.delenv("BMOJO_DISABLE", raising=False)
    old = set_registry(Registry(entry_points=[EP("toy", Plugin())]))
    yield
    set_registry(old)


def _cli(capsys, device="cpu", json_out=False):
    rc = cli.run(argparse.Namespace(json=json_out, device=device, verbose=False))
    return rc, capsys.readouterr().out


def test_default_listing_is_unchanged(toy_registry, capsys):
    rc, out = _cli(capsys)
    assert rc == 0 and "selection for toy arrays on cpu: implicit" in out and "  toy: rmsnorm" in out
    rc, out = _cli(capsys, json_out=True)
    data = json.loads(out)
    assert rc == 0 and data["array_selection"] == {"toy": {"rmsnorm": "toy"}} and data["array_selection_error"] == {}


def test_explicit_backend_that_cannot_serve_the_arrays_is_an_error(toy_registry, capsys, monkeypatch):
    monkeypatch.setenv("BMOJO_BACKEND", "reference")
    with pytest.raises(BackendError, match="provides rmsnorm for torch tensors, not toy arrays") as dispatch_err:
        arrays.resolve("rmsnorm", "toy")
    rc, out = _cli(capsys, json_out=True)
    data = json.loads(out)
    assert rc == 1
    assert data["array_selection"] == {}
    assert "for torch tensors, not toy arrays" in data["array_selection_error"]["toy"]
    assert "requested by BMOJO_BACKEND=reference" in str(dispatch_err.value)
    rc, out = _cli(capsys)
    assert rc == 1 and "selection for toy arrays on cpu: explicit: 'reference'" in out
    assert "  error: bmojo backend 'reference' (requested by BMOJO_BACKEND=reference) provides" in out


def test_explicit_framework_backend_still_lists_its_arrays(toy_registry, capsys, monkeypatch):
    """The reverse case: the torch selection is the error (rc 1), the toy arrays are served."""
    monkeypatch.setenv("BMOJO_BACKEND", "toy")
    rc, out = _cli(capsys, json_out=True)
    data = json.loads(out)
    assert rc == 1 and data["selection_error"] and data["array_selection"]["toy"]["rmsnorm"] == "toy"


@pytest.mark.parametrize("given, normalised", [("cpu:0", "cpu"), ("cpu", "cpu"), ("meta", "meta"), ("tpu9", "tpu9")])
def test_device_is_a_device_type(toy_registry, capsys, given, normalised):
    rc, out = _cli(capsys, device=given, json_out=True)
    assert json.loads(out)["device"] == normalised and rc == 0


@pytest.mark.parametrize("device", ["nonsense", "", "cpu:x", "gpu"])
def test_unknown_device_is_refused_naming_the_flag(toy_registry, capsys, device):
    assert main(["backends", "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bmojo backends: error: --device: expected a torch device type (cpu, cuda, mps, ...; ")
    assert err.rstrip().endswith(f"got {device!r}") and "tpu9" in err and err.count("\n") == 1


def test_check_device_type_reads_the_type_as_dispatch_does():
    assert check_device_type("--x", "cuda:1") == "cuda"
    assert check_device_type("--x", "gpu", ["gpu"]) == "gpu"
    with pytest.raises(ValueError, match=r"^--x: expected a torch device type .*, got 'gpu'$"):
        check_device_type("--x", "gpu")
