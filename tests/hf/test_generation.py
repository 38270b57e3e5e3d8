"""generate(): greedy, sampling, beam search, left padding, and the bounded cache."""

from __future__ import annotations

import pytest
import torch
from bmojo_hf import BMojoCache

from .hf_helpers import PAD, VOCAB, left_pad, rel_err, tiny_model

PRESETS = ["bmojo", "bmojo_f", "swa", "mamba2", ["swa", "mamba2"]]


def eidetic(preset) -> dict:
    """Two eidetic slots where the preset has an eidetic memory (the others fix M = 0)."""
    return {"eidetic_capacity": 2} if preset == "bmojo" else {}


LENGTHS = (3, 9, 9, 14)  # two rows share a length (one batched group), windows crossed many times


def prompts(lengths=LENGTHS):
    return [torch.randint(1, VOCAB, (n,)) for n in lengths]


def greedy(model, ids, mask=None, n=12, **kw):
    return model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=PAD,
        eos_token_id=None,
        output_logits=True,
        return_dict_in_generate=True,
        **kw,
    )


@pytest.mark.parametrize("preset", PRESETS, ids=str)
def test_left_padded_batch_equals_each_row_alone(preset):
    model = tiny_model(preset, **eidetic(preset))
    rows = prompts()
    ids, mask = left_pad(rows)
    batch = greedy(model, ids, mask)
    new = batch.sequences[:, ids.shape[1] :]
    for i, r in enumerate(rows):
        alone = greedy(model, r[None])
        assert torch.equal(new[i], alone.sequences[0, len(r) :]), f"row {i}"
        for step, (lb, la) in enumerate(zip(batch.logits, alone.logits)):
            assert rel_err(lb[i], la[0]) < 1e-5, f"row {i} step {step}"


@pytest.mark.parametrize("preset", ["bmojo", "mamba2"])
def test_cached_generation_logits_equal_an_uncached_full_forward(preset):
    model = tiny_model(preset, **eidetic(preset))
    ids, mask = left_pad(prompts())
    out = greedy(model, ids, mask, n=10)
    full_mask = torch.cat([mask, torch.ones(len(mask), 10, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        full = model(out.sequences, attention_mask=full_mask, use_cache=False).logits
    for step, logits in enumerate(out.logits):
        assert rel_err(logits, full[:, ids.shape[1] - 1 + step]) < 1e-5, f"step {step}"
    # and generate() without a cache agrees token for token
    nocache = greedy(model, ids, mask, n=10, use_cache=False)
    assert torch.equal(nocache.sequences, out.sequences)


def test_cache_memory_is_flat_far_past_the_state_bound():
    # state bound: the last w + f = 8 tokens of K/V, M = 2 eidetic slots, the SSM and conv state
    model = tiny_model("bmojo", eidetic_capacity=2)
    bound = model.core.config.layers[0].window + model.core.config.layers[0].fading_window
    ids, mask = left_pad(prompts((3, 6)))
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
        cache = out.cache
        assert isinstance(cache, BMojoCache)
        after_prefill = cache.nbytes()
        shapes = _shapes(cache)
        tok = out.logits[:, -1].argmax(-1)
        for _ in range(4 * bound + 5):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
            out = model(tok[:, None], attention_mask=mask, cache=cache)
            assert out.cache is cache and cache.nbytes() == after_prefill and _shapes(cache) == shapes
            tok = out.logits[:, -1].argmax(-1)
    assert cache.row_positions() == [3 + 4 * bound + 5, 6 + 4 * bound + 5]
    # one core DecodeState of the same two rows takes exactly as much
    assert after_prefill == model.core.init_state(2).nbytes()
    # generate() hands back the same bounded cache
    ids, mask = left_pad(prompts((3, 6)))
    gen = model.generate(ids, attention_mask=mask, max_new_tokens=4 * bound, return_dict_in_generate=True)
    assert gen.cache.nbytes() == after_prefill


def _shapes(cache):
    return [{k: tuple(v.shape) for k, v in lay.items()} for lay in cache.state.layers]


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    model = tiny_model("bmojo", eidetic_capacity=2)
    ids, mask = left_pad(prompts())
    kw = dict(attention_mask=mask, max_new_tokens=8, do_sample=True, pad_token_id=PAD, eos_token_id=None)
    torch.manual_seed(1)
    a = model.generate(ids, **kw)
    torch.manual_seed(1)
    b = model.generate(ids, **kw)
    assert torch.equal(a, b) and a.shape == (4, ids.shape[1] + 8)
    assert int(a.min()) >= 0 and int(a.max()) < VOCAB
    top1 = model.generate(ids, top_k=1, **kw)
    assert torch.equal(top1, greedy(model, ids, mask, n=8).sequences)


def test_beam_search_with_the_cache_equals_beam_search_without():
    model = tiny_model("bmojo", eidetic_capacity=2)
    ids, mask = left_pad(prompts((4, 9)))
    kw = dict(attention_mask=mask, max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    cached = model.generate(ids, **kw)
    uncached = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("do_sample", [False, True], ids=["beam_search", "beam_sample"])
def test_a_cache_left_by_beam_search_is_refused_by_name(do_sample):
    """The cache holds the last running beams, the sequences are the best finished hypotheses in
    score order: continuing would silently decode from other beams' states."""
    model = tiny_model("bmojo", eidetic_capacity=2)
    ids, mask = left_pad(prompts((4, 9)))
    kw = dict(do_sample=do_sample, pad_token_id=PAD, eos_token_id=None)
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=5,
        num_beams=3,
        num_return_sequences=3,
        return_dict_in_generate=True,
        **kw,
    )
    assert isinstance(out.cache, BMojoCache) and out.cache.not_continuable is not None
    n = out.sequences.shape[1] - ids.shape[1]
    mask2 = torch.cat([mask.repeat_interleave(3, 0), torch.ones(6, n, dtype=mask.dtype)], dim=1)
    state = out.cache.state
    refused = r"cache: expected a cache that continues the returned sequences, got one left by beam search"
    for key in ("cache", "past_key_values"):
        with pytest.raises(ValueError, match=refused):
            model.generate(out.sequences, attention_mask=mask2, max_new_tokens=2, **kw, **{key: out.cache})
    with pytest.raises(ValueError, match=refused), torch.no_grad():
        model(out.sequences[:, -1:], cache=out.cache)
    assert out.cache.state is state  # refused before anything changed
    # without the cache the sequences continue (prefilled again), as each row does alone
    greedy_kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    resumed = model.generate(out.sequences, attention_mask=mask2, **greedy_kw)
    for i in range(6):  # (a generated token may equal PAD: the mask is given, not inferred)
        row = out.sequences[i, mask2[i].bool()][None]
        alone = model.generate(row, attention_mask=torch.ones_like(row), **greedy_kw)
        assert torch.equal(resumed[i, -3:], alone[0, -3:])
    # a cache the caller hands to beam search is marked too
    mine = BMojoCache(2 * 3, model.config.num_hidden_layers)
    model.generate(ids, attention_mask=mask, max_new_tokens=3, num_beams=3, cache=mine, **kw)
    assert mine.not_continuable is not None


def test_reorder_cache_moves_whole_rows():
    model = tiny_model("bmojo", eidetic_capacity=2)
    ids, mask = left_pad(prompts((3, 7, 5)))
    with torch.no_grad():
        cache = model(ids, attention_mask=mask, use_cache=True).cache
        nxt = torch.randint(1, VOCAB, (3, 1))
        reference = model(nxt, cache=_clone(cache)).logits[:, -1]
        perm = torch.tensor([2, 0, 0])
        cache.reorder_cache(perm)
        moved = model(nxt[perm], cache=cache).logits[:, -1]
    assert rel_err(moved, reference[perm]) < 1e-6


def _clone(cache):
    import copy

    return copy.deepcopy(cache)


@pytest.mark.parametrize("how", ["assistant_model", "prompt_lookup_num_tokens", "generation_config"])
def test_assisted_generation_is_refused_with_a_clear_error(how):
    """Refused by the model itself, naming the argument: transformers 5.25 no longer checks
    ``_is_stateful`` and fails later with an unrelated error."""
    from transformers import GenerationConfig

    model = tiny_model("swa")
    ids = torch.randint(1, VOCAB, (1, 5))
    kw = dict(max_new_tokens=3, pad_token_id=PAD)
    if how == "assistant_model":
        kw["assistant_model"], where = tiny_model("swa"), r"generate\(assistant_model=\.\.\.\)"
    elif how == "prompt_lookup_num_tokens":
        kw["prompt_lookup_num_tokens"], where = 3, r"generate\(prompt_lookup_num_tokens=\.\.\.\)"
    else:
        kw["generation_config"] = GenerationConfig(assistant_early_exit=1, max_new_tokens=3, pad_token_id=PAD)
        del kw["max_new_tokens"], kw["pad_token_id"]
        where = r"generation_config\.assistant_early_exit"
    with pytest.raises(ValueError, match=where + ".*stateful.*cannot be rolled back"):
        model.generate(ids, **kw)


def test_generation_continues_from_a_returned_cache():
    model = tiny_model("bmojo", eidetic_capacity=2)
    ids, mask = left_pad(prompts((4, 7)))
    kw = dict(do_sample=False, pad_token_id=PAD, eos_token_id=None)
    first = model.generate(ids, attention_mask=mask, max_new_tokens=5, return_dict_in_generate=True, **kw)
    assert first.cache.get_seq_length() == ids.shape[1] + 4  # the last new token is not fed yet
    mask2 = torch.cat([mask, torch.ones(2, 5, dtype=mask.dtype)], dim=1)
    resumed = model.generate(first.sequences, attention_mask=mask2, cache=first.cache, max_new_tokens=5, **kw)
    straight = model.generate(ids, attention_mask=mask, max_new_tokens=10, **kw)
    assert torch.equal(resumed, straight)


@pytest.mark.parametrize(
    "preset, kw", [("bmojo", dict(eidetic_capacity=2)), ("bmojo", dict(fading_offset=1, ssm_bypass="gated"))]
)
def test_four_prompt_lengths_decode_in_one_core_step_per_token(monkeypatch, preset, kw):
    """One cache state for the whole batch: a left-padded batch of 4 different prompt lengths is
    prefilled in one core call per block and then decodes in one core ``step`` per block and
    token, each row equal to the row alone (float64)."""
    from bmojo.model import Block

    model = tiny_model(preset, dtype=torch.float64, **kw)
    rows = prompts((3, 8, 13, 5))
    ids, mask = left_pad(rows)
    calls = {"forward": 0, "step": 0}
    for name in calls:
        original = getattr(Block, name)

        def counted(self, *a, _orig=original, _name=name, **k):
            calls[_name] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(Block, name, counted)
    n = 9
    batch = greedy(model, ids, mask, n=n)
    n_blocks = model.config.num_hidden_layers
    assert calls == {"forward": n_blocks, "step": n_blocks * (n - 1)}  # the last new token is not fed
    assert batch.cache.state.positions.tolist() == [len(r) + n - 1 for r in rows]
    new = batch.sequences[:, ids.shape[1] :]
    for i, r in enumerate(rows):
        alone = greedy(model, r[None], n=n)
        assert torch.equal(new[i], alone.sequences[0, len(r) :]), f"row {i}"
        for step, (lb, la) in enumerate(zip(batch.logits, alone.logits)):
            assert rel_err(lb[i], la[0]) < 1e-10, f"row {i} step {step}"


def test_a_cache_from_another_model_is_refused_and_left_as_it_was():
    model = tiny_model("bmojo", eidetic_capacity=2)  # window 4, 2 layers
    ids = torch.randint(1, VOCAB, (1, 12))
    others = [
        (tiny_model("bmojo", eidetic_capacity=2, window=8), r"cache: state\.layers\[0\]\..*expected"),
        (tiny_model("bmojo", eidetic_capacity=2, n_layers=3), r"cache: expected a BMojoCache of 2 layers .*got 3"),
    ]
    with torch.no_grad():
        for other, match in others:
            cache = other(ids[:, :11], use_cache=True).cache
            state, seen = cache.state, cache.seen
            with pytest.raises(ValueError, match=match):
                model(ids[:, 11:], cache=cache)
            assert cache.state is state and cache.seen == seen
        with pytest.raises(ValueError, match=r"cache: expected a BMojoCache of 2 layers .*got 3"):
            model(ids, cache=BMojoCache(1, 3))
        own = model(ids[:, :11], use_cache=True).cache  # this model's own cache still continues
        assert model(ids[:, 11:], cache=own).logits.shape == (1, 1, VOCAB)


def test_continuing_a_cache_with_too_few_columns_says_what_the_cache_consumed():
    model = tiny_model("swa")
    ids = torch.randint(1, VOCAB, (1, 6))
    out = greedy(model, ids, n=5)
    seen = out.cache.get_seq_length()
    assert seen == 10
    with pytest.raises(
        ValueError, match=r"input_ids: expected more than the 10 columns the cache has already consumed"
    ):
        model.generate(
            out.sequences[:, :-4],
            cache=out.cache,
            max_new_tokens=3,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=None,
        )


@pytest.mark.parametrize("batch", [1, 2])
def test_generate_refuses_an_empty_prompt_by_name(batch):
    """transformers fails inside its loop (an IndexError for batch > 1, an error from the model's forward
    for batch 1): refused up front, naming input_ids, whichever way the prompt is passed."""
    model = tiny_model("swa")
    empty = torch.zeros(batch, 0, dtype=torch.long)
    refused = rf"input_ids: expected a prompt of at least one token per row .*got shape \({batch}, 0\)"
    for kw in (dict(), dict(use_cache=False), dict(num_beams=2)):
        with pytest.raises(ValueError, match=refused):
            model.generate(empty, max_new_tokens=2, **kw)
    for key in ("inputs", "input_ids"):
        with pytest.raises(ValueError, match=refused):
            model.generate(**{key: empty}, attention_mask=torch.zeros(batch, 0, dtype=torch.long), max_new_tokens=2)


def test_generate_refuses_a_row_of_only_pads():
    """A row with no real token is an empty prompt too: its first token would be drawn from the zero
    logits of pads (greedy: token 0), silently."""
    model = tiny_model("bmojo", eidetic_capacity=2)
    ids, mask = left_pad(prompts((5, 3)))
    mask[1] = 0
    for kw in (dict(), dict(use_cache=False), dict(num_beams=2)):
        with pytest.raises(ValueError, match=r"attention_mask: expected at least one real token .*got row 1 all pads"):
            model.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False, **kw)
    # without a mask transformers derives one from pad_token_id: a prompt of pad ids is empty as well
    with pytest.raises(
        ValueError, match=r"attention_mask: .*got row 0 of generate.s batch .*all pads .*derives it from pad_token_id"
    ):
        model.generate(torch.full((1, 3), PAD), max_new_tokens=2, pad_token_id=PAD, eos_token_id=None)
