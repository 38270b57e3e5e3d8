"""Messages and docs a backend author reads: a misspelt op name, the install hints of the
published backends, ``bmojo backends -v``, and the docs' pointers (where each reference op lives,
the spec sections, embedding the suite)."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import bmojo.ops
import pytest
from bmojo.backends import KNOWN_BACKENDS, OPS, Backend, State, hookimpl
from bmojo.backends import cli as backends_cli
from bmojo.backends.reference import REFERENCE_TARGETS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


class _BrokenEP:
    name, value, dist = "broken", "fake_broken", None

    def load(self):
        raise ImportError("no module named 'broken_ext'")


def test_unknown_op_is_quoted_once_and_a_close_match_suggested():
    with pytest.raises(ValueError) as info:
        Backend(name="x", version="1", ops={"rms_norm": lambda: None})
    assert str(info.value).startswith("backend 'x': unknown ops ['rms_norm'] (did you mean 'rmsnorm'?); the op set is")
    with pytest.raises(ValueError, match=r"unknown ops \['zzz'\]; the op set"):  # nothing close: no suggestion
        Backend(name="x", version="1", ops={"zzz": lambda: None})


def test_not_installed_hints_are_true_for_a_checkout(registry):
    reg = registry()  # no entry points: every published backend is "not installed"
    for name, package in KNOWN_BACKENDS.items():
        st = reg.status(name)
        assert st.state is State.NOT_INSTALLED and st.reason == f"pip install -e packages/{package}"
        assert (ROOT / "packages" / package / "pyproject.toml").is_file()


@pytest.mark.parametrize("verbose", [False, True])
def test_cli_suggests_minus_v_only_without_it(registry, capsys, verbose):
    registry(_BrokenEP())
    args = argparse.Namespace(json=False, device="cpu", verbose=verbose)
    assert backends_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "1 plugin(s) failed to load" in out
    assert ("run with -v for tracebacks" in out) is not verbose
    assert ("--- broken: import failed ---\nTraceback" in out) is verbose


def _reference_table() -> dict[str, str]:
    text = (DOCS / "backends.md").read_text()
    table = text[text.index("| ops | reference functions in |") :].split("\n\n", 1)[0]
    rows = re.findall(r"^\s*\| (`.+?`) \| `([\w.]+)` \|$", table, re.M)
    return {op: module for ops, module in rows for op in re.findall(r"`(\w+)`", ops)}


def test_docs_say_where_each_reference_op_lives():
    table = _reference_table()
    assert sorted(table) == sorted(OPS)
    for op, module in table.items():
        fn = getattr(importlib.import_module(module), op)
        assert REFERENCE_TARGETS[op] == f"{module}:{op}" and fn is getattr(bmojo.ops, op)
        assert f"``{op}``" in bmojo.ops.__doc__ and f"``{module}``" in bmojo.ops.__doc__
    for doc in ("backends.md", "architecture.md"):
        assert "bmojo.ops.<op>.reference" not in (DOCS / doc).read_text()
    assert "bmojo.ops.<op>" not in bmojo.ops.__doc__


def test_docs_do_not_cite_spec_sections_that_are_not_in_the_repository():
    for doc in ("backends.md", "architecture.md"):
        assert "spec §" not in (DOCS / doc).read_text(), doc
    layer = (DOCS / "layer.md").read_text()
    assert "not in this repository" in layer.split("##", 1)[0]


def test_docs_embedding_the_suite_and_small_snippets():
    text = (DOCS / "backends.md").read_text()
    assert 'addopts = "--bmojo-backend=mykernels"' in text and "--bmojo-partial" in text
    assert "import bmojo.backends.dispatch\n\nwith bmojo.backends.dispatch.custom_ops_always():" in text
    assert "pip install -c <checkout>/constraints/ci.txt -e <checkout>/packages/bmojo-core" in text
    readme = (ROOT / "examples" / "third_party_backend" / "README.md").read_text()
    assert "From the repository root" in readme and "-e packages/bmojo-core -e examples/third_party_backend" in readme


class _Plugin:
    @hookimpl
    def bmojo_backends(self):
        return [Backend(name="mykernels", version="1", ops={})]


class _EP:
    def __init__(self, name):
        self.name, self.value, self.dist = name, f"fake_{name}", None

    def load(self):
        return _Plugin()


def test_cli_shows_an_entry_point_named_unlike_its_backend(registry, capsys):
    registry(_EP("example"))
    assert backends_cli.run(argparse.Namespace(json=False, device="cpu", verbose=False)) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("mykernels"))
    assert "available" in row and "entry point 'example' is not named like the backend 'mykernels'" in row
