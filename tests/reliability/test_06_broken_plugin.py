"""Issue 10, item 6: a broken plugin never breaks the CLI or the process. Records are validated
field by field (a bad one is the plugin's failure, not a TypeError in ``bmojo backends``), and a
plugin raising ``SystemExit`` (or any ``BaseException`` but ``KeyboardInterrupt``) at import or
in its hook is recorded as ``import failed``."""

from __future__ import annotations

import json

import pytest
from bmojo.backends import Backend, OpImpl, State
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

from .helpers import EP, Plugin, install, run_python

BAD_VERSION = """
from bmojo.backends import Backend, hookimpl
from bmojo.ops.rmsnorm.reference import rmsnorm


@hookimpl
def bmojo_backends():
    return [Backend(name="badversion", version=1, ops={"rmsnorm": rmsnorm})]
"""

EXITS = "import sys\nsys.exit(3)\n"


class Oops(BaseException):
    pass


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("version", 1, "version must be a str"),
        ("description", None, "description must be a str"),
        ("probe", "yes", "probe must be callable"),
        ("known_deviations", {"test_*": 3}, "known_deviations must map"),
        ("ops", ["rmsnorm"], "ops must be a mapping"),
        ("ops", {"rmsnorm": 42}, r"ops\['rmsnorm'\]: OpImpl.fn: expected a callable"),
        ("ops", {"rmsnorm": "no_colon"}, r"OpImpl.fn: expected a callable or a 'package.module:attr'"),
    ],
)
def test_record_fields_are_validated(field, value, match):
    kw = dict(name="x", version="1", ops={"rmsnorm": rmsnorm_ref})
    kw[field] = value
    with pytest.raises(ValueError, match=match):
        Backend(**kw)


def test_opimpl_fields_are_validated():
    with pytest.raises(ValueError, match=r"OpImpl\.differentiable: expected a bool"):
        OpImpl(rmsnorm_ref, differentiable="yes")
    with pytest.raises(ValueError, match=r"OpImpl\.backward: expected a callable"):
        OpImpl(rmsnorm_ref, backward=3)


def test_base_exceptions_from_plugins_are_contained(registry):
    def exits():
        raise SystemExit(3)

    def oops():
        raise Oops("custom BaseException")

    class HookExits:
        from bmojo.backends import hookimpl

        @hookimpl
        def bmojo_backends(self):
            raise SystemExit(4)

    reg = registry(EP("exits", load=exits), EP("oops", load=oops), EP("hookexits", HookExits()))
    states = {s.name: s for s in reg.statuses()}
    assert states["exits"].state is State.IMPORT_FAILED and "SystemExit: 3" in states["exits"].reason
    assert states["oops"].state is State.IMPORT_FAILED and "Oops" in states["oops"].reason
    assert states["hookexits"].state is State.IMPORT_FAILED and "SystemExit: 4" in states["hookexits"].reason
    assert reg.resolve("rmsnorm", "cpu")[0] == "reference"


def test_keyboard_interrupt_is_not_swallowed(registry):
    def interrupted():
        raise KeyboardInterrupt

    reg = registry(EP("ctrlc", load=interrupted))
    with pytest.raises(KeyboardInterrupt):
        reg.statuses()


def test_bad_record_from_a_hook_is_that_plugins_failure(registry):
    def make():
        return [Backend(name="badversion", version=1, ops={"rmsnorm": rmsnorm_ref})]

    reg = registry(EP("badversion", Plugin(make=make)))
    st = reg.status("badversion")
    assert st.state is State.IMPORT_FAILED and "version must be a str" in st.reason


def test_cli_and_forward_survive_sys_exit_and_bad_records(tmp_path):
    site = install(
        tmp_path / "site",
        "bmojo-broken",
        "1.0",
        {"exits": "bmojo_exits", "badversion": "bmojo_badversion"},
        {"bmojo_exits": EXITS, "bmojo_badversion": BAD_VERSION},
    )
    out = run_python(site, "-m", "bmojo.cli", "backends", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    states = {b["name"]: b for b in json.loads(out.stdout)["backends"]}
    assert states["exits"]["state"] == "import failed" and "SystemExit: 3" in states["exits"]["reason"]
    bad = states["badversion"]
    assert bad["state"] == "import failed" and "version must be a str" in bad["reason"]
    script = (
        "import torch\nfrom bmojo import BMojoLM, ModelConfig\n"
        "m = BMojoLM(ModelConfig.preset('bmojo', vocab_size=11, d_model=16, n_layers=1, window=4, n_heads=2,"
        " ssm_head_dim=8, ssm_chunk_size=4))\n"
        "print(tuple(m(torch.zeros(1, 5, dtype=torch.long)).shape))\n"
    )
    fwd = run_python(site, "-c", script)
    assert fwd.returncode == 0 and fwd.stdout.strip() == "(1, 5, 11)", fwd.stdout + fwd.stderr
