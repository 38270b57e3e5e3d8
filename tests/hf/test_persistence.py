"""save_pretrained / from_pretrained through safetensors, and pipeline("text-generation") with
tokenizers built offline."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers
from bmojo_hf import BMojoForCausalLM, BMojoModel, byte_level_tokenizer, train_byte_level_tokenizer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, pipeline

from .hf_helpers import VOCAB, tiny_model

TEXT = (
    "B'MOJO mixes a sliding window of raw tokens, fading tokens from a state-space model and "
    "eidetic tokens chosen by innovation, all in one softmax. "
) * 4


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_load_round_trip_through_safetensors_only(tmp_path, tie):
    model = tiny_model("bmojo", eidetic_capacity=2, tie=tie)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    ids = torch.randint(0, VOCAB, (2, 11))
    for loaded in (
        BMojoForCausalLM.from_pretrained(tmp_path, use_safetensors=True),
        AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True),
    ):
        assert type(loaded) is BMojoForCausalLM
        assert loaded.config.core_config == model.config.core_config
        for name, p in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], p), name
        with torch.no_grad():
            assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)
    base = AutoModel.from_pretrained(tmp_path, use_safetensors=True)
    assert type(base) is BMojoModel
    with torch.no_grad():
        assert torch.equal(base.eval()(ids).last_hidden_state, model.model(ids).last_hidden_state)


def test_byte_level_tokenizer_is_lossless_and_pads_left():
    tok = byte_level_tokenizer()
    text = "héllo, wörld ✓"
    ids = tok(text)["input_ids"]
    assert ids == list(text.encode("utf-8")) and tok.decode(ids) == text
    assert (len(tok), tok.eos_token_id, tok.pad_token_id, tok.padding_side) == (258, 256, 257, "left")


def test_text_generation_pipeline_with_the_byte_tokenizer_saved_and_reloaded(tmp_path):
    tok = byte_level_tokenizer()
    model = tiny_model("bmojo", eidetic_capacity=2, vocab=len(tok))
    model.config.pad_token_id, model.config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), type(tok))

    gen = pipeline("text-generation", model=str(tmp_path), device="cpu")
    assert isinstance(gen.model, BMojoForCausalLM)
    prompts = ["B'MOJO mixes", "a"]
    outs = gen(prompts, max_new_tokens=6, do_sample=False, batch_size=2)
    for prompt, out in zip(prompts, outs):
        text = out[0]["generated_text"]
        assert text.startswith(prompt)
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        expected = model.generate(ids, max_new_tokens=6, do_sample=False)
        assert text == tok.decode(expected[0], skip_special_tokens=True)


def test_pipeline_with_a_bpe_tokenizer_trained_at_test_time():
    tok = train_byte_level_tokenizer([TEXT], vocab_size=300)
    model = tiny_model("swa", vocab=len(tok))
    gen = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    out = gen("fading tokens", max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out[0]["generated_text"].startswith("fading tokens")


# ----- strict loading: leftover weights, dtypes -----


def _edit_config(directory, edit) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    edit(data["bmojo_config"])
    path.write_text(json.dumps(data))


def _edit_weights(directory, edit) -> None:
    path = directory / "model.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata=meta)


Q = "model.core.blocks.0.mixer.q_proj.weight"


@pytest.mark.parametrize(
    "edit, leftover",
    [
        (lambda c: c.__setitem__("layers", c["layers"][:1]), "model.core.blocks.1."),
        (lambda c: c.__setitem__("tie_embeddings", True), "model.core.lm_head.weight"),
    ],
    ids=["fewer_layers", "tied"],
)
def test_a_checkpoint_with_weights_its_config_does_not_use_is_refused(tmp_path, edit, leftover):
    tiny_model("bmojo", eidetic_capacity=2, tie=False).save_pretrained(tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(ValueError, match=r"unexpected \[.*" + re.escape(leftover)):
        BMojoForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"unexpected \[.*" + re.escape(leftover)):
        AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)


@pytest.mark.parametrize("cls", [BMojoForCausalLM, BMojoModel, AutoModelForCausalLM])
def test_a_weight_stored_under_two_names_is_refused_naming_both(tmp_path, cls):
    """A stray prefix-less copy (``core.embed.weight`` beside ``model.core.embed.weight``) maps to the
    same weight; loading it would let one copy silently win."""
    tiny_model("swa").save_pretrained(tmp_path)
    embed = "model.core.embed.weight"
    _edit_weights(tmp_path, lambda t: t.__setitem__("core.embed.weight", torch.zeros_like(t[embed])))
    refused = r"expected each weight stored once, got 'core\.embed\.weight' and 'model\.core\.embed\.weight'"
    with pytest.raises(ValueError, match=refused):
        cls.from_pretrained(tmp_path)


def test_a_tensor_stored_in_another_dtype_is_refused_unless_a_dtype_is_passed(tmp_path, monkeypatch):
    model = tiny_model("swa")
    model.save_pretrained(tmp_path)
    _edit_weights(tmp_path, lambda t: t.__setitem__(Q, t[Q].half()))
    import transformers.modeling_utils as mu

    real = mu.convert_and_load_state_dict_in_model
    with monkeypatch.context() as m:  # refused from the header, before any weight is read
        m.setattr(mu, "convert_and_load_state_dict_in_model", lambda *a, **k: pytest.fail("weights were loaded"))
        with pytest.raises(ValueError, match=re.escape(Q) + r": expected torch\.float32.*got torch\.float16"):
            BMojoForCausalLM.from_pretrained(tmp_path)
    assert mu.convert_and_load_state_dict_in_model is real
    for kw in (dict(dtype=torch.float32), dict(torch_dtype=torch.float32)):  # an explicit cast is the user's call
        loaded = BMojoForCausalLM.from_pretrained(tmp_path, **kw)
        q = loaded.core.blocks[0].mixer.q_proj.weight
        assert q.dtype == torch.float32
        assert torch.equal(q, model.core.blocks[0].mixer.q_proj.weight.half().float())


def test_a_float64_checkpoint_under_a_float32_config_is_refused(tmp_path):
    model = tiny_model("bmojo", eidetic_capacity=2)
    model.save_pretrained(tmp_path)
    _edit_weights(tmp_path, lambda t: t.update({k: v.double() for k, v in t.items()}))
    with pytest.raises(ValueError, match=r"expected torch\.float32 .*got torch\.float64"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded = BMojoForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    for name, p in model.double().state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name


def test_integer_weights_are_refused_even_with_a_dtype(tmp_path):
    tiny_model("swa").save_pretrained(tmp_path)
    _edit_weights(tmp_path, lambda t: t.__setitem__(Q, (t[Q] * 1000).long()))
    for kw in ({}, dict(dtype=torch.float32)):
        with pytest.raises(ValueError, match=re.escape(Q) + r": expected torch\.float32.*got torch\.int64"):
            BMojoForCausalLM.from_pretrained(tmp_path, **kw)


def test_a_pickled_checkpoint_is_refused_not_unpickled(tmp_path, monkeypatch):
    """pytorch_model.bin is a pickle: refused before transformers would unpickle it."""
    model = tiny_model("swa")
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(weights, tmp_path / "pytorch_model.bin")
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or {})
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: expected a \.safetensors checkpoint"):
        BMojoForCausalLM.from_pretrained(tmp_path)
    assert calls == []


# ----- resize_token_embeddings -----


@pytest.mark.parametrize("tie", [True, False])
def test_resize_token_embeddings_keeps_old_tokens_and_round_trips(tmp_path, tie):
    model = tiny_model("swa", tie=tie)
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    embed = model.resize_token_embeddings(VOCAB + 7)
    assert embed is model.get_input_embeddings() and tuple(embed.weight.shape) == (VOCAB + 7, 32)
    assert model.config.vocab_size == model.core.config.vocab_size == VOCAB + 7
    assert model.config.core_config == model.core.config
    if not tie:
        assert tuple(model.core.lm_head.weight.shape) == (VOCAB + 7, 32)
    with torch.no_grad():
        after = model(ids).logits
        assert after.shape == (2, 9, VOCAB + 7)
        assert (after[..., :VOCAB] - before).abs().max() <= 1e-6 * before.abs().max()
        model(torch.tensor([[VOCAB + 6]]))  # a new id is accepted
    model.save_pretrained(tmp_path)
    again = BMojoForCausalLM.from_pretrained(tmp_path)
    assert again.config.core_config == model.config.core_config
    with torch.no_grad():
        assert torch.equal(again(ids).logits, after)

    small = VOCAB - 10  # shrinking keeps the first ``small`` tokens
    model.resize_token_embeddings(small)
    low = ids % small
    with torch.no_grad():
        full = again(low).logits
        assert (model(low).logits - full[..., :small]).abs().max() <= 1e-6 * full.abs().max()


def test_resize_token_embeddings_refuses_a_bad_size_before_changing_anything():
    model = tiny_model("swa", tie=False)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"new_num_tokens: expected an int >= 1"):
            model.resize_token_embeddings(bad)
    assert model.config.vocab_size == model.core.config.vocab_size == VOCAB
    for name, p in model.state_dict().items():
        assert torch.equal(p, weights[name]), name


# ----- tokenizer -----


@pytest.mark.parametrize("size", [256, 257])
def test_trained_tokenizer_needs_room_for_the_bytes_and_the_special_tokens(size):
    with pytest.raises(ValueError, match=rf"vocab_size: expected an int >= 258 .*got {size}"):
        train_byte_level_tokenizer([TEXT], vocab_size=size)
    assert len(train_byte_level_tokenizer([TEXT], vocab_size=258)) == 258


# ----- strict loading hooks into transformers' private _load_pretrained_model -----


def _renamed(model, state_dict, files, load_config, expected_keys=None):  # a drifted private signature
    return _REAL_STEP(model, state_dict, files, load_config, expected_keys)


_REAL_STEP = PreTrainedModel._load_pretrained_model


@pytest.mark.parametrize(
    "step, got",
    [
        (staticmethod(_renamed), r"got a staticmethod \(model, state_dict, files, load_config, expected_keys\)"),
        (classmethod(lambda cls, *a, **k: _REAL_STEP(*a, **k)), "got a classmethod"),
    ],
    ids=["renamed", "classmethod"],
)
def test_strict_loading_refuses_another_private_loading_step_naming_the_version(tmp_path, monkeypatch, step, got):
    """The check lives in transformers' private ``_load_pretrained_model``: a transformers whose step has
    another signature is refused by version, before anything loads, instead of loading unchecked."""
    tiny_model("swa").save_pretrained(tmp_path)
    monkeypatch.setattr(PreTrainedModel, "_load_pretrained_model", step)
    version = re.escape(f"transformers {transformers.__version__}: expected PreTrainedModel._load_pretrained_model")
    with pytest.raises(RuntimeError, match=version + ".*" + got):
        BMojoForCausalLM.from_pretrained(tmp_path)


def test_strict_loading_refuses_a_loading_path_it_cannot_check_naming_the_version(tmp_path, monkeypatch):
    """transformers skipping the step, calling it with other arguments, or reporting no loading info:
    each refused with the installed version named (a silent pass before, for the last two)."""
    tiny_model("swa").save_pretrained(tmp_path)
    real = PreTrainedModel.from_pretrained.__func__
    version = re.escape(f"transformers {transformers.__version__}")

    def skipped(cls, *a, **k):
        return cls(BMojoForCausalLM.config_class.from_pretrained(tmp_path)), {}

    def other_arguments(cls, *a, **k):
        model = cls(BMojoForCausalLM.config_class.from_pretrained(tmp_path))
        return cls._load_pretrained_model(model, object(), str(tmp_path / "model.safetensors"), None)

    def no_report(cls, *a, **k):
        return real(cls, *a, **k)[0], {"error_msgs": []}

    for fake, refused in [
        (skipped, "loaded the weights without calling BMojoForCausalLM._load_pretrained_model"),
        (other_arguments, "expected _load_pretrained_model to get a state_dict .* got state_dict of type object"),
        (no_report, "expected output_loading_info to report missing_keys, unexpected_keys and mismatched_keys"),
    ]:
        with monkeypatch.context() as m:
            m.setattr(PreTrainedModel, "from_pretrained", classmethod(fake))
            with pytest.raises(RuntimeError, match=version + ".*" + refused):
                BMojoForCausalLM.from_pretrained(tmp_path)
