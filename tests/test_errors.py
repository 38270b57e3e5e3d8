"""Bad input fails early with a message that names the offending argument (one test each)."""

from __future__ import annotations

import pytest
import torch
from bmojo import BMojoMixer, ConfigError, LayerConfig
from bmojo.ops.bmojo_attention import bmojo_attention
from bmojo.ops.causal_conv1d import causal_conv1d
from bmojo.ops.eidetic import eidetic_select
from bmojo.ops.rmsnorm import rmsnorm
from bmojo.ops.ssm_scan import ssm_scan, ssm_step
from conftest import randn, small_model


@pytest.fixture(scope="module")
def model():
    return small_model("bmojo", eidetic_capacity=4, eidetic_per_chunk=2)


def ids(model, b=2, T=5):
    return torch.randint(0, model.config.vocab_size, (b, T))


# ----- model inputs -----


def test_float_ids(model):
    with pytest.raises(ValueError, match=r"^input_ids: expected an integer tensor"):
        model(ids(model).float())


def test_wrong_rank_ids(model):
    with pytest.raises(ValueError, match=r"^input_ids: expected a 2-d tensor"):
        model(ids(model)[0])
    with pytest.raises(ValueError, match=r"^token_ids: expected a 1-d tensor"):
        model.step(ids(model, T=1), model.init_state(2))


def test_batch_mismatch_between_ids_and_state(model):
    _, state = model.prefill(ids(model, b=2))
    with pytest.raises(ValueError, match=r"^state: expected batch size 3"):
        model.prefill(ids(model, b=3), state)
    with pytest.raises(ValueError, match=r"^state: expected batch size 1"):
        model.step(ids(model, b=1, T=1)[:, 0], state)


def test_ids_out_of_vocab(model):
    bad = ids(model)
    bad[1, 2] = model.config.vocab_size
    with pytest.raises(ValueError, match=r"^input_ids: expected ids in \[0, vocab_size=61\)"):
        model(bad)


def test_negative_ids(model):
    bad = ids(model)
    bad[0, 0] = -1
    with pytest.raises(ValueError, match=r"^input_ids: .*got id -1"):
        model(bad)


def test_empty_sequence(model):
    with pytest.raises(ValueError, match=r"^input_ids: expected a non-empty"):
        model(ids(model, T=0))


def test_step_without_state(model):
    with pytest.raises(ValueError, match=r"^state: expected a DecodeState"):
        model.step(ids(model, T=1)[:, 0], None)


def test_mixer_wrong_width_and_start():
    mixer = BMojoMixer(LayerConfig.preset("swa", d_model=32, window=4))
    with pytest.raises(ValueError, match=r"^x: expected last axis d_model=32"):
        mixer(torch.randn(1, 3, 16))
    with pytest.raises(ValueError, match=r"^start: expected 0 when no state"):
        mixer(torch.randn(1, 3, 32), None, 5)


# ----- config -----


def test_negative_window():
    with pytest.raises(ConfigError, match=r"^window: expected an int >= 0, got -1"):
        LayerConfig(window=-1)


def test_eidetic_per_chunk_above_capacity():
    with pytest.raises(ConfigError, match=r"^eidetic_per_chunk: expected <= eidetic_capacity=2"):
        LayerConfig(window=8, eidetic_capacity=2, eidetic_per_chunk=3)


def test_eidetic_chunk_above_window():
    with pytest.raises(ConfigError, match=r"^eidetic_chunk: expected <= window=8"):
        LayerConfig(window=8, eidetic_capacity=4, eidetic_per_chunk=2, eidetic_chunk=9)


def test_fading_without_window():
    with pytest.raises(ConfigError, match=r"^window: expected > 0 when fading_window"):
        LayerConfig(window=0, fading_window=8, eidetic_capacity=0)


def test_kv_heads_not_dividing_heads():
    with pytest.raises(ConfigError, match=r"^n_kv_heads: expected a divisor of n_heads=4"):
        LayerConfig(n_heads=4, n_kv_heads=3)


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match=r"^window: expected an int"):
        LayerConfig(window=True)


# ----- ops -----


def scan_args(dtype=torch.float64):
    b, T, H, P, G, N = 2, 5, 4, 3, 2, 4
    return [randn(b, T, H, P), randn(b, T, H).abs(), -randn(H).abs(), randn(b, T, G, N), randn(b, T, G, N)]


def test_ssm_scan_mismatched_B_shape():
    x, dt, A, B, C = scan_args()
    with pytest.raises(ValueError, match=r"^B: expected shape .*got shape \(2, 4, 2, 4\)"):
        ssm_scan(x, dt, A, B[:, :4], C)
    with pytest.raises(ValueError, match=r"^C: expected shape"):
        ssm_scan(x, dt, A, B, C[..., :3])


def test_ssm_scan_groups_not_dividing_heads():
    x, dt, A, _, _ = scan_args()
    with pytest.raises(ValueError, match=r"^B: expected a group count dividing the head count 4"):
        ssm_scan(x, dt, A, randn(2, 5, 3, 4), randn(2, 5, 3, 4))


def test_ssm_scan_mixed_dtypes():
    x, dt, A, B, C = scan_args()
    with pytest.raises(ValueError, match=r"^dt: expected dtype torch.float64 \(same as x\)"):
        ssm_scan(x, dt.float(), A, B, C)


def test_ssm_step_bad_state():
    x, dt, A, B, C = scan_args()
    with pytest.raises(ValueError, match=r"^state: expected shape"):
        ssm_step(randn(2, 4, 3, 5), x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0])


def test_bmojo_attention_kv_heads_not_dividing():
    q, k = randn(1, 4, 4, 8), randn(1, 4, 3, 8)
    with pytest.raises(ValueError, match=r"^k: expected a kv-head count dividing the query heads 4"):
        bmojo_attention(q, k, k, window=2)


def test_bmojo_attention_mixed_dtypes():
    q, k = randn(1, 4, 4, 8), randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match=r"^k: expected dtype torch.float64"):
        bmojo_attention(q, k.float(), k, window=2)


def test_bmojo_attention_fewer_keys_than_queries():
    q, k = randn(1, 4, 4, 8), randn(1, 3, 2, 8)
    with pytest.raises(ValueError, match=r"^k: expected at least as many keys as queries"):
        bmojo_attention(q, k, k, window=2)


def test_bmojo_attention_fading_window_without_keys():
    q, k = randn(1, 4, 4, 8), randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match=r"^kf: expected fading keys"):
        bmojo_attention(q, k, k, window=2, fading_window=2)


def test_bmojo_attention_window_zero():
    q, k = randn(1, 4, 4, 8), randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match=r"^window: expected an int >= 1"):
        bmojo_attention(q, k, k, window=0)


def test_bmojo_attention_wrong_snapshot_count():
    q, k = randn(1, 8, 4, 8), randn(1, 8, 2, 8)
    ek = randn(1, 1, 3, 2, 8)  # 8 queries with chunk 4 need 2 snapshots
    epos = torch.zeros(1, 1, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"^ek: expected shape \(1, 2, .*got shape \(1, 1, 3, 2, 8\)"):
        bmojo_attention(q, k, k, ek=ek, ev=ek, epos=epos, window=2, eidetic_chunk=4)


def test_bmojo_attention_positions_on_another_device():
    q, k = randn(1, 8, 4, 8), randn(1, 8, 2, 8)
    ek, epos = randn(1, 2, 3, 2, 8), torch.zeros(1, 2, 3, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match=r"^epos: expected device cpu \(same as q\), got meta"):
        bmojo_attention(q, k, k, ek=ek, ev=ek, epos=epos, window=2, eidetic_chunk=4)


def test_innovation_scores_mixed_dtypes_and_devices():
    from bmojo.ops.eidetic import innovation_scores

    k = randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match=r"^k_pred: expected dtype torch.float64 \(same as k\), got torch.float32"):
        innovation_scores(k, k.float())
    with pytest.raises(ValueError, match=r"^k_pred: expected device cpu \(same as k\), got meta"):
        innovation_scores(k, k.to("meta"))


def test_causal_conv1d_wrong_weight():
    with pytest.raises(ValueError, match=r"^weight: expected shape \(5, .*got shape \(4, 3\)"):
        causal_conv1d(randn(1, 4, 5), randn(4, 3))


def test_eidetic_select_wrong_pending():
    scores = randn(2, 6)
    pos, score = torch.full((2, 3), -1), torch.full((2, 3), float("-inf"), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^pending: expected shape \(2, 1\)"):
        eidetic_select(scores, pos, score, scores.new_zeros(2, 0), start=5, chunk=4, per_chunk=2)
    with pytest.raises(ValueError, match=r"^per_chunk: expected at most min"):
        eidetic_select(scores, pos, score, scores.new_zeros(2, 0), start=0, chunk=4, per_chunk=4)


def test_rmsnorm_wrong_weight():
    with pytest.raises(ValueError, match=r"^weight: expected shape \(6,\)"):
        rmsnorm(randn(2, 6), randn(5))
