"""Issue 10, item 12: the small items, one test each."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from bmojo import BMojoLM, ModelConfig
from bmojo.backends import Backend, OpImpl, Probe, State
from bmojo.ops import ssm_scan
from bmojo.ops.rmsnorm.reference import rmsnorm as rmsnorm_ref

from .helpers import EP, Plugin

DOCS = Path(__file__).resolve().parents[2] / "docs"
SIZES = dict(vocab_size=17, d_model=16, n_layers=1, n_heads=2, ssm_head_dim=8, ssm_chunk_size=4, window=4)


# --- NaN at token t: documented bound ----------------------------------------------------------
def test_nan_poisons_at_most_its_own_chunk_and_it_is_documented():
    torch.manual_seed(0)
    b, T, H, P, G, N, chunk = 1, 12, 2, 4, 1, 4, 4
    x = torch.randn(b, T, H, P, dtype=torch.float64)
    dt = torch.rand(b, T, H, dtype=torch.float64) * 0.2 + 0.01
    A = -torch.rand(H, dtype=torch.float64) - 0.5
    B, C = torch.randn(b, T, G, N, dtype=torch.float64), torch.randn(b, T, G, N, dtype=torch.float64)
    t = 9  # in the third chunk [8, 12)
    x[:, t] = float("nan")
    y, _ = ssm_scan(x, dt, A, B, C, chunk_size=chunk)
    assert torch.isfinite(y[:, : t - t % chunk]).all(), "a NaN reached an earlier chunk"
    assert not torch.isfinite(y[:, t:]).all()
    # Attention: a NaN key at t reaches at most the queries of its own block.
    from bmojo.ops import bmojo_attention

    q, k, v = (torch.randn(1, 32, 2, 8, dtype=torch.float64) for _ in range(3))
    k[:, 21] = float("nan")
    o, _ = bmojo_attention(q, k, v, window=6, block_size=8)
    assert torch.isfinite(o[:, :16]).all(), "a NaN reached an earlier block"
    text = (DOCS / "backends.md").read_text()
    assert "Non-finite inputs" in text and "earlier tokens of the same chunk" in text


# --- ids of a dtype the embedding cannot take -------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.uint8])
def test_small_integer_ids_are_refused_with_a_clear_error(dtype):
    m = BMojoLM(ModelConfig.preset("bmojo", **SIZES))
    with pytest.raises(
        ValueError, match=rf"input_ids: expected an integer tensor of token ids \(int64 or int32\), got {dtype}"
    ):
        m(torch.zeros(1, 3, dtype=dtype))
    m(torch.zeros(1, 3, dtype=torch.int32))  # int32 works


# --- generate(temperature) ----------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [-1.0, math.nan, math.inf, "0.5", True])
def test_generate_refuses_bad_temperatures(temperature):
    m = BMojoLM(ModelConfig.preset("bmojo", **SIZES)).eval()
    with pytest.raises(ValueError, match=r"temperature: expected a (finite )?number >= 0"):
        m.generate(torch.zeros(1, 3, dtype=torch.long), 2, temperature=temperature)


# --- BMOJO_DISABLE with unknown names -------------------------------------------------------------
def test_disable_names_that_match_nothing_are_reported(registry, monkeypatch, caplog):
    monkeypatch.setenv("BMOJO_DISABLE", "tritn,reference")
    reg = registry()
    with caplog.at_level(logging.WARNING, logger="bmojo.backends"):
        reg.resolve("rmsnorm", "cpu")
    assert any("tritn" in r.getMessage() and "names no installed backend" in r.getMessage() for r in caplog.records)
    assert reg.unknown_disabled() == ["tritn"]


# --- probe answers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", ["no", 1, None, (1, "x"), ("yes", "x"), Probe("no")])
def test_probe_answers_other_than_bool_or_probe_mean_unavailable(registry, answer):
    rec = Backend(name="odd", version="1", ops={"rmsnorm": rmsnorm_ref}, priority=5, probe=lambda: answer)
    reg = registry(EP("odd", Plugin(rec)))
    st = reg.status("odd")
    assert st.state is State.UNAVAILABLE and "expected a Probe, a bool or (bool, reason)" in st.reason
    assert reg.resolve("rmsnorm", "cpu")[0] == "reference"


def test_probe_tuple_and_bool_still_work(registry):
    recs = [
        Backend(name="t", version="1", ops={"rmsnorm": rmsnorm_ref}, probe=lambda: (False, "no GPU")),
        Backend(name="b", version="1", ops={"rmsnorm": rmsnorm_ref}, probe=lambda: True),
    ]
    reg = registry(EP("both", Plugin(*recs)))
    assert reg.status("t").reason == "no GPU" and reg.status("b").state is State.AVAILABLE


# --- OpImpl.devices as a str --------------------------------------------------------------------------
def test_devices_as_a_str_is_refused_not_matched_by_substring():
    with pytest.raises(ValueError, match=r"OpImpl\.devices: expected a non-empty tuple .*got 'cuda'"):
        OpImpl(rmsnorm_ref, devices="cuda")
    assert not OpImpl(rmsnorm_ref, devices=("cuda",)).runs_on("cu")
    assert OpImpl(rmsnorm_ref, devices=["cpu"]).devices == ("cpu",)


# --- several bad records ---------------------------------------------------------------------------
def test_every_bad_record_of_a_plugin_is_reported(registry):
    reg = registry(EP("multi", Plugin("not a backend", 42, None)))
    st = reg.status("multi")
    assert st.state is State.INVALID
    assert "returned str" in st.reason and "returned int" in st.reason and "returned NoneType" in st.reason


# --- mqar/demo errors name the flags ------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["demo", "--pairs", "0"], "--pairs"),
        (["demo", "--pairs", "20", "--vocab", "32"], "--pairs"),
        (["demo", "--d-model", "10"], "--d-model"),
        (["demo", "--window", "0"], "--window"),
        (["demo", "--steps", "0"], "--steps"),
        (["mqar", "--d-model", "8", "--steps", "1"], "--d-model"),
    ],
)
def test_cli_errors_name_the_flag(tmp_path, capsys, argv, flag, monkeypatch):
    from bmojo.cli import main
    from bmojo.jobs import mqar

    monkeypatch.setattr(mqar, "train_run", lambda *a, **k: pytest.fail("trained before checking flags"))
    rc = main([*argv, *(["--out", str(tmp_path)] if argv[0] == "mqar" else [])])
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {flag}" in err, err
