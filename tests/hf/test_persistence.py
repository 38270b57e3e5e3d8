"""save_pretrained / from_pretrained through safetensors, and pipeline("text-generation") with
tokenizers built offline."""

from __future__ import annotations

import pytest
import torch
from bmojo_hf import BMojoForCausalLM, BMojoModel, byte_level_tokenizer, train_byte_level_tokenizer
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, pipeline

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
