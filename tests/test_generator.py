"""BatchGenerator on a tiny random Llama: batching, ordering, sampling, stats, limits."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

from recbole_bundlellm.generation.generator import BatchGenerator, GenerationConfig
from recbole_bundlellm.llm import LoadedLLM, load_llm


def _chat(words: int) -> list[dict[str, str]]:
    body = " ".join(["phone case charger cable shirt"] * words)
    return [
        {"role": "system", "content": "you are a helpful assistant"},
        {"role": "user", "content": f"group these items {body}"},
    ]


# Lengths deliberately unsorted so sorting and restoring order are exercised.
PROMPTS = [_chat(k) for k in (1, 6, 2, 9, 3, 1, 5)]


@pytest.fixture(scope="module")
def tiny(tiny_llm_path: Path) -> LoadedLLM:
    return load_llm(tiny_llm_path, device="cpu", dtype="float32", use_cache=False)


def _gen(tiny: LoadedLLM, **kwargs) -> BatchGenerator:
    kwargs.setdefault("max_new_tokens", 8)
    return BatchGenerator(tiny.model, tiny.tokenizer, GenerationConfig(**kwargs))


def test_batched_greedy_equals_one_by_one(tiny):
    batched = _gen(tiny, batch_size=4).generate(PROMPTS)
    single = _gen(tiny, batch_size=1).generate(PROMPTS)
    assert batched == single
    assert all(len(out) == 1 and out[0] for out in batched)


def test_order_is_restored_after_length_sorting(tiny):
    generator = _gen(tiny, batch_size=3)
    forward = generator.generate(PROMPTS)
    backward = generator.generate(PROMPTS[::-1])
    assert backward == forward[::-1]
    # Prompts of different length give different completions, so a mix-up would show.
    assert len({out[0] for out in forward}) > 1


def test_left_padding_with_pad_token_missing(tmp_path):
    from tiny_llm import make_tiny_llm

    loaded = load_llm(make_tiny_llm(tmp_path / "nopad", with_pad=False), use_cache=False)
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    batched = _gen(loaded, batch_size=4).generate(PROMPTS)
    assert batched == _gen(loaded, batch_size=1).generate(PROMPTS)


def test_greedy_num_return_sequences(tiny):
    outputs = _gen(tiny, num_return_sequences=3).generate(PROMPTS[:2])
    assert [len(out) for out in outputs] == [3, 3]
    assert all(len(set(out)) == 1 for out in outputs)  # greedy: identical copies


def test_sampling_is_seeded_and_batch_independent(tiny):
    config = dict(do_sample=True, temperature=1.0, top_p=0.95, num_return_sequences=2, seed=7)
    first = _gen(tiny, batch_size=4, **config).generate(PROMPTS)
    again = _gen(tiny, batch_size=4, **config).generate(PROMPTS)
    assert first == again
    assert [len(out) for out in first] == [2] * len(PROMPTS)
    # The same prompt samples the same text whatever batch it lands in and in any order.
    unique = PROMPTS[:5]
    reordered = _gen(tiny, batch_size=1, **config).generate(unique[::-1])
    assert reordered == first[:5][::-1]
    # A repeated prompt is a new draw, not a copy (PROMPTS[5] repeats PROMPTS[0]).
    assert PROMPTS[5] == PROMPTS[0] and first[5] != first[0]
    other_seed = _gen(tiny, batch_size=4, **{**config, "seed": 8}).generate(PROMPTS)
    assert other_seed != first
    assert any(out[0] != out[1] for out in first)  # the sequences of one prompt differ


def test_unseeded_sampling_follows_torch_manual_seed(tiny):
    torch.manual_seed(3)
    first = _gen(tiny, do_sample=True).generate(PROMPTS[:3])
    torch.manual_seed(3)
    assert _gen(tiny, do_sample=True).generate(PROMPTS[:3]) == first


def test_stats_and_max_new_tokens(tiny):
    generator = _gen(tiny, batch_size=3, max_new_tokens=5)
    outputs = generator.generate(PROMPTS)
    stats = generator.stats
    assert stats["prompts"] == len(PROMPTS) and stats["sequences"] == len(PROMPTS)
    assert stats["batches"] == 3
    assert stats["seconds"] > 0
    assert 0 < stats["new_tokens"] <= 5 * len(PROMPTS)
    assert stats["prompt_tokens"] > stats["padding_tokens"] > 0
    # Word-level tokenizer: one generated (non-special) token is one word.
    assert all(len(out[0].split()) <= 5 for out in outputs)
    generator.generate(PROMPTS[:1])
    assert generator.stats["prompts"] == len(PROMPTS) + 1  # accumulates
    generator.reset_stats()
    assert generator.stats["prompts"] == 0 and generator.stats["seconds"] == 0.0


def test_stops_at_eos(tiny):
    first = _gen(tiny, max_new_tokens=1).generate(PROMPTS[:1])[0][0]
    model = copy.copy(tiny.model)  # shallow: shares weights, own generation config
    model.generation_config = copy.deepcopy(tiny.model.generation_config)
    model.generation_config.eos_token_id = tiny.tokenizer.convert_tokens_to_ids(first)
    generator = BatchGenerator(model, tiny.tokenizer, GenerationConfig(max_new_tokens=10))
    assert generator.generate(PROMPTS[:1]) == [[first]]
    assert generator.stats["new_tokens"] == 1


def test_truncates_long_prompts_from_the_left(tiny, caplog):
    render = _gen(tiny).render
    full = [len(tiny.tokenizer(render(p), add_special_tokens=False).input_ids) for p in PROMPTS]
    limit = sorted(full)[len(full) // 2]
    generator = _gen(tiny, max_prompt_tokens=limit)
    with caplog.at_level(logging.WARNING):
        outputs = generator.generate(PROMPTS)
    assert len(outputs) == len(PROMPTS)
    assert generator.stats["truncated_prompts"] == sum(n > limit for n in full) > 0
    assert generator.stats["prompt_tokens"] == sum(min(n, limit) for n in full)
    assert "truncated" in caplog.text


def test_render_uses_chat_template_or_plain_join(tiny, tmp_path):
    text = _gen(tiny).render(PROMPTS[0])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    from tiny_llm import make_tiny_llm

    plain = load_llm(make_tiny_llm(tmp_path / "plain", chat_template=False), use_cache=False)
    generator = _gen(plain, batch_size=2)
    assert generator.render(PROMPTS[0]) == (
        f"system: {PROMPTS[0][0]['content']}\nuser: {PROMPTS[0][1]['content']}\nassistant:"
    )
    assert len(generator.generate(PROMPTS[:3], progress=True)) == 3


def test_training_mode_is_restored(tiny):
    tiny.model.train()
    try:
        _gen(tiny).generate(PROMPTS[:1])
        assert tiny.model.training
    finally:
        tiny.model.eval()


def test_empty_input_and_bad_config(tiny):
    assert _gen(tiny).generate([]) == []
    with pytest.raises(ValueError):
        GenerationConfig(batch_size=0)
    with pytest.raises(ValueError):
        GenerationConfig(do_sample=True, temperature=0)
    with pytest.raises(TypeError, match="messages"):
        _gen(tiny).generate(["a bare string"])


def test_a_bad_generation_config_is_a_settings_error_naming_the_config_key():
    from recbole_bundlellm.settings import SettingsError

    with pytest.raises(SettingsError, match="temperature must be > 0 when sampling .*do_sample"):
        GenerationConfig(do_sample=True, temperature=0)
    with pytest.raises(SettingsError, match="generation_batch_size"):
        GenerationConfig(batch_size=0)


def test_a_final_assistant_message_is_continued_not_repeated(tiny):
    generator = _gen(tiny)
    started = [*PROMPTS[0], {"role": "assistant", "content": "phone case"}]
    text = generator.render(started)
    assert text.rstrip().endswith("phone case")
    assert text.count("assistant") == generator.render(PROMPTS[0]).count("assistant")
    (completions,) = generator.generate([started])
    assert not completions[0].startswith("phone case")


def test_stop_strings_end_a_row_at_the_first_match(tiny):
    full = _gen(tiny, max_new_tokens=16).generate(PROMPTS[:3])
    words = [t[0].split() for t in full]
    row = next(i for i, w in enumerate(words) if len(w) >= 3)
    stop = words[row][1]
    cut = _gen(tiny, max_new_tokens=16, stop_strings=(stop,)).generate(PROMPTS[:3])
    original = full[row][0]
    assert cut[row][0] == original[: original.index(stop) + len(stop)]


def test_k_samples_share_one_prefill_of_their_prompt(tiny):
    """With num_return_sequences K, each prompt runs through the model once (its key/value cache
    is repeated for the K samples) and the samples are those of K separate prompt passes."""
    config = dict(do_sample=True, temperature=1.0, num_return_sequences=4, seed=3, batch_size=3)
    passes: list[tuple[int, int]] = []
    hook = tiny.model.register_forward_pre_hook(
        lambda module, args, kwargs: passes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        shared = _gen(tiny, **config)
        first = shared.generate(PROMPTS)
        shared_passes, passes[:] = list(passes), []
        unshared = _gen(tiny, shared_prefill=False, **config).generate(PROMPTS)
        unshared_passes = list(passes)
    finally:
        hook.remove()
    assert first == unshared
    batches = [PROMPTS[:3], PROMPTS[3:6], PROMPTS[6:]]
    # Prompt-length passes: one row per prompt when shared, K rows per prompt when not.
    assert sum(rows for rows, width in shared_passes if width > 1) == len(PROMPTS)
    assert sum(rows for rows, width in unshared_passes if width > 1) == 4 * len(PROMPTS)
    assert shared.stats["shared_prefills"] == len(PROMPTS) and len(batches) == shared.stats["batches"]
