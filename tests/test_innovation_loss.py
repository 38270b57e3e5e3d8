"""The auxiliary innovation loss (spec §3, ``innovation_loss_weight``): its value, where its
gradient goes, and that weight 0 costs nothing."""

from __future__ import annotations

import pytest
import torch
from bmojo import BMojoLM
from bmojo.layer import BMojoMixer
from bmojo.ops.eidetic import innovation_scores
from conftest import assert_close, small_model

KW = dict(eidetic_capacity=4, eidetic_per_chunk=2, innovation_loss_weight=0.5)


def manual_loss(mixer: BMojoMixer, x: torch.Tensor) -> torch.Tensor:
    """mean_{t >= 1} score_t with the prediction Wk̃ s_{t-1}: the innovation score op itself."""
    cfg = mixer.cfg
    b, T, _ = x.shape
    s, _ = mixer.fading(x)
    k = mixer.k_proj(x).view(b, T, cfg.kv_heads, cfg.dh)
    kf = getattr(mixer, "kf_proj", mixer.k_proj)(s).view(b, T, cfg.kv_heads, cfg.dh)
    if cfg.qk_norm:
        k, kf = mixer.k_norm(k), mixer.k_norm(kf)
    return innovation_scores(k[:, 1:], kf[:, :-1]).mean()


@pytest.mark.parametrize("extra", [{}, dict(qk_norm=True), dict(tie_fading_projections=False, n_kv_heads=2)])
def test_value_is_the_mean_innovation_score(extra):
    model = small_model("bmojo", **KW, **extra)
    ids = torch.randint(0, model.config.vocab_size, (2, 29))
    logits, aux = model(ids, return_aux=True)
    assert torch.equal(logits, model(ids))  # the loss changes nothing in the forward pass
    # recompute each layer's input to check the layer's loss against the score op
    h, expected = model.embed(ids), 0.0
    for block in model.blocks:
        expected = expected + block.mixer.cfg.innovation_loss_weight * manual_loss(block.mixer, block.norm(h))
        h, _ = block(h)
    assert_close(aux, expected, 1e-12, "innovation loss")


@pytest.mark.parametrize("tied", [True, False])
def test_gradient_reaches_the_fading_path_and_not_the_keys(tied):
    model = small_model("bmojo", **KW, qk_norm=True, tie_fading_projections=tied)
    ids = torch.randint(0, model.config.vocab_size, (2, 29))
    _, aux = model(ids, return_aux=True)
    aux.backward()
    mixer = model.blocks[1].mixer
    names = [name for name, _ in mixer.named_parameters()]
    assert ("kf_proj.weight" in names) == (not tied)
    for name, p in mixer.named_parameters():
        reaches = p.grad is not None and bool(p.grad.abs().max() > 0)
        if name.startswith(("fading.", "kf_proj.")):  # the SSM and an untied Wk̃
            assert reaches, f"{name}: no gradient from the innovation loss"
        else:  # Wk (also Wk̃ when tied), k_norm, and everything else of attention
            assert not reaches, f"{name}: the innovation loss must not train it"
    # and block 0's output feeds block 1's fading path: earlier layers do get gradients
    assert model.embed.weight.grad is not None


def test_weight_zero_computes_nothing(monkeypatch):
    model = small_model("bmojo", eidetic_capacity=4, eidetic_per_chunk=2)
    assert all(b.mixer.cfg.innovation_loss_weight == 0 for b in model.blocks)

    def boom(*a, **k):
        raise AssertionError("innovation_loss computed at weight 0")

    monkeypatch.setattr(BMojoMixer, "innovation_loss", boom)
    ids = torch.randint(0, model.config.vocab_size, (2, 17))
    logits, aux = model(ids, return_aux=True)
    assert aux.item() == 0.0 and not aux.requires_grad
    assert torch.equal(logits, model(ids))


def test_left_pads_are_left_out():
    model = small_model("bmojo_f", innovation_loss_weight=1.0)
    row = torch.randint(1, model.config.vocab_size, (1, 15))
    padded = torch.cat([torch.zeros(1, 6, dtype=torch.long), row], 1)
    _, alone = model(row, return_aux=True)
    _, with_pads = model(padded, pad=torch.tensor([6]), return_aux=True)
    assert_close(with_pads, alone, 1e-10, "padded row")


def test_mixed_weights_sum_over_layers():
    """A per-layer list: only layers with a weight contribute."""
    from bmojo import LayerConfig, ModelConfig

    base = dict(d_model=32, window=8, ssm_head_dim=16, ssm_chunk_size=8, attn_block_size=4, eidetic_capacity=0)
    cfg = ModelConfig(
        vocab_size=61,
        d_model=32,
        layers=(LayerConfig(**base, innovation_loss_weight=2.0), LayerConfig(**base)),
    )
    model = BMojoLM(cfg).double()
    ids = torch.randint(0, 61, (2, 19))
    _, aux = model(ids, return_aux=True)
    x = model.blocks[0].norm(model.embed(ids))
    assert_close(aux, 2.0 * manual_loss(model.blocks[0].mixer, x), 1e-12, "layer 0 only")
