"""Config, Auto* registration, and the forward pass against bmojo-core itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bmojo import BMojoLM, ConfigError, ModelConfig
from bmojo_hf import BMojoConfig, BMojoForCausalLM, BMojoModel
from bmojo_hf.modeling import BMojoCausalLMOutput, BMojoModelOutput
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .hf_helpers import VOCAB, left_pad, rel_err, tiny_core_config, tiny_model

PRESETS = ["transformer", "swa", "mamba2", "bmojo_f", "bmojo", ["swa", "mamba2"]]


def test_config_carries_the_core_config_and_round_trips(tmp_path):
    core = tiny_core_config("bmojo", eidetic_capacity=2)
    cfg = BMojoConfig.from_core(core, eos_token_id=3, pad_token_id=0)
    assert cfg.model_type == "bmojo"
    assert cfg.core_config == core
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (VOCAB, 32, 2)
    assert cfg.tie_word_embeddings is True
    cfg.save_pretrained(tmp_path)
    back = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(back, BMojoConfig)
    assert back.core_config == core and back.eos_token_id == 3
    assert BMojoConfig.from_dict(cfg.to_dict()).core_config == core


DERIVED = {
    "vocab_size": (VOCAB, 999, "bmojo_config['vocab_size']"),
    "hidden_size": (32, 64, "bmojo_config['d_model']"),
    "num_hidden_layers": (2, 7, "len(bmojo_config['layers'])"),
    "tie_word_embeddings": (True, False, "bmojo_config['tie_embeddings']"),
}


@pytest.mark.parametrize("name", list(DERIVED))
def test_derived_attributes_that_conflict_with_the_core_config_are_refused(tmp_path, name):
    """vocab_size, hidden_size, num_hidden_layers, tie_word_embeddings are views of the core config:
    the derived value itself is accepted (an older config.json may hold it), anything else is refused
    by name with the expected value and where it comes from, never dropped or cast."""
    same, other, where = DERIVED[name]
    core = tiny_core_config("swa").to_dict()
    assert getattr(BMojoConfig(bmojo_config=core, **{name: same}), name) == same
    message = rf"{name}: expected {same!r} \(a read-only view of the core config, {re.escape(where)}\), got "
    for bad in (other, float(same)):  # another value, or the same value of another type
        with pytest.raises(ConfigError, match=message + re.escape(repr(bad))):
            BMojoConfig(bmojo_config=core, **{name: bad})
    cfg = BMojoConfig(bmojo_config=core)
    with pytest.raises(ConfigError, match=message + re.escape(repr(other))):
        setattr(cfg, name, other)
    assert getattr(cfg, name) == same
    # through config.json (older files held the derived keys) and from_pretrained's keyword arguments
    cfg.save_pretrained(tmp_path)
    assert name not in json.loads((tmp_path / "config.json").read_text())
    for value, ok in ((same, True), (other, False)):
        saved = json.loads((tmp_path / "config.json").read_text()) | {name: value}
        (tmp_path / "config.json").write_text(json.dumps(saved))
        if ok:
            assert getattr(AutoConfig.from_pretrained(tmp_path), name) == same
            assert getattr(AutoConfig.from_pretrained(tmp_path, **{name: same}), name) == same
        else:
            with pytest.raises(ConfigError, match=message + re.escape(repr(other))):
                AutoConfig.from_pretrained(tmp_path)
    saved.pop(name)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=message + re.escape(repr(other))):
        AutoModelForCausalLM.from_pretrained(tmp_path, **{name: other})


def test_core_config_is_a_read_only_view_too():
    core = tiny_core_config("swa")
    assert BMojoConfig(bmojo_config=core.to_dict(), core_config=core).core_config == core
    refused = r"core_config: expected the ModelConfig in bmojo_config .*differing in vocab_size"
    with pytest.raises(ConfigError, match=refused):
        BMojoConfig(bmojo_config=core.to_dict(), core_config=core.replace(vocab_size=VOCAB + 1))


def test_config_validation_errors_come_from_core():
    bad = ModelConfig().to_dict()
    bad["layers"][0]["window"] = -1
    with pytest.raises(ConfigError, match="window"):
        BMojoConfig(bmojo_config=bad)
    with pytest.raises(ConfigError, match="only known fields"):
        BMojoConfig(bmojo_config={"not_a_field": 1})


def test_auto_classes_are_registered():
    cfg = BMojoConfig.from_core(tiny_core_config("swa"))
    assert isinstance(AutoConfig.for_model("bmojo"), BMojoConfig)
    assert type(AutoModel.from_config(cfg)) is BMojoModel
    assert type(AutoModelForCausalLM.from_config(cfg)) is BMojoForCausalLM


@pytest.mark.parametrize("preset", PRESETS, ids=str)
@pytest.mark.parametrize("tie", [True, False])
def test_logits_are_core_logits(preset, tie):
    model = tiny_model(preset, tie=tie)
    assert isinstance(model.core, BMojoLM)
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        logits = model(ids).logits
        assert torch.equal(logits, model.core(ids))
        hidden = BMojoModel.forward(model.model, ids).last_hidden_state
    assert hidden.shape == (2, 13, 32)


def test_from_core_copies_a_trained_core_model():
    core = BMojoLM(tiny_core_config("bmojo_f")).eval()
    model = BMojoForCausalLM.from_core(core, eos_token_id=5)
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, core(ids))
    assert model.config.eos_token_id == 5


def test_left_padded_forward_equals_each_row_alone():
    model = tiny_model("bmojo", eidetic_capacity=2)
    rows = [torch.randint(1, VOCAB, (n,)) for n in (5, 11, 11, 3)]
    ids, mask = left_pad(rows)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, use_cache=False).logits
        for i, r in enumerate(rows):
            alone = model(r[None]).logits[0]
            assert rel_err(padded[i, ids.shape[1] - len(r) :], alone) < 1e-5
            assert padded[i, : ids.shape[1] - len(r)].abs().sum() == 0  # pad positions: zeros


def test_right_padding_is_fine_without_a_cache_and_rejected_with_one():
    model = tiny_model("swa")
    ids = torch.randint(1, VOCAB, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=False).logits
        assert rel_err(out[0, :5], model(ids[:1, :5]).logits[0]) < 1e-6
        # trailing pads are not zeroed: the pad tokens' own logits, as if they were ordinary tokens
        assert rel_err(out[0], model(ids[:1]).logits[0]) < 1e-6 and out[0, 5:].abs().amax() > 0
        with pytest.raises(ValueError, match="left"):
            model(ids, attention_mask=mask, use_cache=True)
        hole = torch.tensor([[1, 0, 1, 1, 1, 1, 1], [1] * 7])
        with pytest.raises(ValueError, match="hole"):
            model(ids, attention_mask=hole, use_cache=False)
        # eval mode, no use_cache given: the default cache (config.use_cache) is left out for a
        # right-padded batch instead of refusing a cache nobody asked for (an evaluation loop)
        model.eval()
        default = model(ids, attention_mask=mask)
        assert default.past_key_values is None and rel_err(default.logits, out) < 1e-6
        assert model(ids, attention_mask=torch.ones_like(mask)).past_key_values is not None
        for bad in (mask * 2, mask.float() * 0.5):
            with pytest.raises(ValueError, match=r"attention_mask: expected values 0 \(pad\) or 1 \(real token\)"):
                model(ids, attention_mask=bad, use_cache=False)


def test_loss_is_shifted_cross_entropy():
    model = tiny_model("bmojo", eidetic_capacity=2)
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        out = model(ids, labels=ids)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert abs(out.loss.item() - expected.item()) < 1e-5


def test_gradients_flow_through_the_core_model():
    model = tiny_model("bmojo", eidetic_capacity=2).train()
    ids = torch.randint(0, VOCAB, (2, 10))
    model(ids, labels=ids).loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.core.embed.weight.grad.abs().sum() > 0


def test_bad_inputs_name_the_argument():
    model = tiny_model("swa")
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 3, 32))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[VOCAB]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(1, 3))


@pytest.mark.parametrize("ids", [None, [[1, 2, 3]]], ids=["missing", "list"])
@pytest.mark.parametrize("use_cache", [None, True, False])
def test_missing_or_non_tensor_input_ids_are_named_on_every_cache_path(ids, use_cache):
    """In eval mode the default cache (config.use_cache) path read input_ids.shape first."""
    model = tiny_model("swa")
    assert not model.training and model.config.use_cache
    for run in (model, model.model):
        with pytest.raises(ValueError, match=r"input_ids: expected a torch\.Tensor of token ids, got"):
            run(ids, attention_mask=torch.ones(1, 3, dtype=torch.long), use_cache=use_cache)
        with pytest.raises(ValueError, match=r"input_ids: expected a torch\.Tensor of token ids, got"):
            run(input_ids=ids, use_cache=use_cache)


@pytest.mark.parametrize("use_cache", [False, True])
def test_hidden_states_follow_transformers_last_entry_is_the_normed_output(use_cache):
    """transformers' convention (LlamaModel, its output capturing): num_hidden_layers + 1 entries,
    the embeddings, then each layer's output, the last one replaced by last_hidden_state (normed)."""
    model = tiny_model("bmojo", eidetic_capacity=2)
    core = model.core
    ids, mask = left_pad([torch.randint(1, VOCAB, (n,)) for n in (5, 9)])
    with torch.no_grad():
        out = model.model(ids, attention_mask=mask, use_cache=use_cache, output_hidden_states=True)
        lm = model(ids, attention_mask=mask, use_cache=use_cache, output_hidden_states=True)
        hs = out.hidden_states
        assert len(hs) == model.config.num_hidden_layers + 1
        assert torch.equal(hs[-1], out.last_hidden_state)
        assert all(torch.equal(a, b) for a, b in zip(lm.hidden_states, hs, strict=True))
        assert torch.equal(lm.logits, F.linear(hs[-1], core.embed.weight))
        for i in range(2):  # each row alone: embeddings, block 0, norm_f(block 1)
            r = ids[i, mask[i].bool()][None]
            h = core.embed(r)
            want = [h]
            for block in core.blocks:
                h, _ = block(h, None, 0)
                want.append(h)
            want[-1] = core.norm_f(h)
            for got, w in zip(hs, want, strict=True):
                assert rel_err(got[i, mask[i].bool()], w[0]) < 1e-5
                assert (got[i, ~mask[i].bool()] == 0).all()  # leading pads hold zeros


def test_config_carries_the_v2_fields(tmp_path):
    """fading_offset, ssm_bypass and innovation_loss_weight travel through config.json."""
    model = tiny_model("bmojo", eidetic_capacity=2, fading_offset=1, ssm_bypass="gated", innovation_loss_weight=0.5)
    layer = model.config.core_config.layers[0]
    assert (layer.fading_offset, layer.ssm_bypass, layer.innovation_loss_weight) == (1, "gated", 0.5)
    model.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert '"fading_offset": 1' in text and '"ssm_bypass": "gated"' in text
    loaded = BMojoForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.core_config == model.config.core_config
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)
        assert torch.equal(model(ids).logits, model.core(ids))


def test_loss_includes_the_weighted_innovation_loss():
    model = tiny_model("bmojo", eidetic_capacity=2, innovation_loss_weight=0.5).train()
    ids = torch.randint(0, VOCAB, (2, 13))
    out = model(ids, labels=ids)
    logits, aux = model.core(ids, return_aux=True)
    assert out.aux_loss is not None and torch.allclose(out.aux_loss, aux, rtol=1e-6, atol=0)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert torch.allclose(out.loss, ce + aux, rtol=1e-5, atol=0)
    assert tiny_model("bmojo", eidetic_capacity=2)(ids, labels=ids).aux_loss is None


@pytest.mark.parametrize("bad", ["abc", [["vocab_size", 300]], 5, ("ab", "cd")], ids=repr)
def test_config_bmojo_config_must_be_a_dict_or_model_config(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"bmojo_config: expected a dict .*, got " + type(bad).__name__):
        BMojoConfig(bmojo_config=bad)
    BMojoConfig.from_core(tiny_core_config("swa")).save_pretrained(tmp_path)  # and from a config.json
    path = tmp_path / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"bmojo_config": bad}))
    with pytest.raises(ConfigError, match=r"bmojo_config: expected a dict"):
        AutoConfig.from_pretrained(tmp_path)


def test_config_accepts_a_core_model_config():
    core = tiny_core_config("swa")
    cfg = BMojoConfig(bmojo_config=core)
    assert cfg.core_config == core and cfg.bmojo_config == core.to_dict()


def test_the_docs_say_what_padding_gives():
    """Only leading pads are zeroed (tested above, with the trailing pads' ordinary logits)."""
    doc = " ".join((Path(__file__).resolve().parents[2] / "docs" / "hf.md").read_text().split())
    assert "leading pad positions get zero hidden states and logits" in doc
    assert "the trailing pad positions get ordinary logits" in doc
    for cls in (BMojoCausalLMOutput, BMojoModelOutput):
        assert "leading" in cls.__doc__, cls.__name__


def test_attention_mask_must_cover_exactly_the_cached_and_new_columns():
    """A longer mask was cut to its last columns silently (a mask of another batch or padding length
    lost its pads), and with a cache a mask of the new columns alone was taken as the whole."""
    model = tiny_model("swa")
    ids, mask = left_pad([torch.randint(1, VOCAB, (n,)) for n in (5, 3)])
    longer = torch.cat([torch.ones(2, 2, dtype=mask.dtype), mask], 1)
    longer[1, :2] = 0
    with torch.no_grad():
        for use_cache in (None, True, False):
            with pytest.raises(ValueError, match=r"attention_mask: expected shape \(batch=2, columns=5: those of"):
                model(ids, attention_mask=longer, use_cache=use_cache)
        cache = model(ids, attention_mask=mask, use_cache=True).cache
        new = torch.randint(1, VOCAB, (2, 1))
        refused = r"attention_mask: expected shape \(batch=2, columns=6: 5 consumed by the cache \+ 1 of input_ids\)"
        for bad in (torch.ones(2, 1, dtype=mask.dtype), torch.ones(2, 7, dtype=mask.dtype)):
            with pytest.raises(ValueError, match=refused):
                model(new, attention_mask=bad, cache=cache)
        assert cache.seen == 5  # refused before the cache moved
        full = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        assert model(new, attention_mask=full, cache=cache).logits.shape == (2, 1, VOCAB)


def test_labels_are_checked_by_name_before_the_model_runs():
    """The loss flattens logits and labels: a transposed or flattened tensor of the same size gave a
    loss paired with the wrong tokens, silently; the others failed inside cross_entropy."""
    model = tiny_model("swa")
    ids = torch.randint(0, VOCAB, (2, 6))
    shape = r"labels: expected shape \(2, 6\) \(batch, logit columns"
    cases = [
        (ids.T.contiguous(), shape),
        (ids.flatten(), shape),
        (ids[:, :5], shape),
        (ids.float(), r"labels: expected an int64 tensor .*got torch\.float32"),
        (ids.int(), r"labels: expected an int64 tensor .*got torch\.int32"),
        (ids.tolist(), r"labels: expected a torch\.Tensor of token ids, got list"),
        (
            torch.full((2, 6), VOCAB),
            rf"labels: expected ids in \[0, vocab_size={VOCAB}\) or ignore_index -100, got {VOCAB}",
        ),
        (torch.full((2, 6), -5), r"labels: expected ids in .* or ignore_index -100, got -5"),
    ]
    with torch.no_grad():
        for labels, refused in cases:
            with pytest.raises(ValueError, match=refused):
                model(ids, labels=labels)
        with pytest.raises(ValueError, match=r"labels: expected shape \(2, 1\)"):
            model(ids, labels=ids, logits_to_keep=1)
        cache = model(ids, use_cache=True).cache
        with pytest.raises(ValueError, match=r"labels: expected shape \(2, 1\)"):
            model(ids[:, :1], labels=ids, cache=cache)
        assert cache.seen == 6  # refused before the cache moved
        ignored = ids.clone()
        ignored[:, :3] = -100
        assert torch.isfinite(model(ids, labels=ignored).loss)
        assert torch.isfinite(model(ids, labels=ids[:, -2:], logits_to_keep=2).loss)
        assert torch.isfinite(
            model(ids, labels=torch.full((2, 6), -1).index_fill(1, torch.tensor([5]), 3), ignore_index=-1).loss
        )
