"""The student with distilled knowledge, end to end on the tiny data: icl prompts carry each
knowledge type within the token budget; sft and icl_sft train on knowledge-augmented examples;
knowledge that is missing or misused is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recbole_bundlellm.adaptation import EXAMPLE, Retrieved, StudentView, fit_budget
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.generation.prompt import PromptStyle, answer_text, view_messages
from recbole_bundlellm.commands.runner import run

EXAMPLE_SESSION = Session("7", ("a", "b", "c"), ("phone case", "charger cable", "shirt"), ("Cases", "Cables", "Shirts"),
                          (frozenset({"a", "b"}),))
SESSION = Session("9", ("x", "y"), ("phone case", "charger"), ("Cases", "Cables"))


def _full_view() -> StudentView:
    return StudentView((
        Retrieved("patterns", "Products of the categories 'Cables' and 'Cases' are often bought together.", 0.9,
                  heading="Frequent patterns"),
        Retrieved("rules", "A phone and its case form a bundle.", 0.6, heading="Rules"),
        Retrieved(EXAMPLE, "", 1.0, EXAMPLE_SESSION),
        Retrieved("thoughts", "The case and the cable serve one phone.", 0.5, EXAMPLE_SESSION),
    ))


@pytest.mark.parametrize("fmt", ["aicl", "compact"])
def test_the_icl_prompt_carries_each_knowledge_type(fmt):
    messages = view_messages(SESSION, _full_view(), PromptStyle(fmt, 6, show_categories=True))
    text = "\n".join(m["content"] for m in messages)
    assert "often bought together" in text and "A phone and its case" in text  # patterns, rules
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]  # the example, solved
    assert messages[2]["content"].startswith("Reasoning: The case and the cable serve one phone.")
    assert messages[-1]["content"].count("Frequent patterns:") == 1 and "Rules:" in messages[-1]["content"]
    if fmt == "compact":
        assert "1. [Cases] phone case" in messages[-1]["content"] and messages[2]["content"].endswith("[[1, 2]]")


def test_the_token_budget_drops_the_least_relevant_items_first(tiny_llm_path):
    from recbole_bundlellm.generation.generator import BatchGenerator
    from recbole_bundlellm.llm import load_llm

    loaded = load_llm(str(tiny_llm_path), device="cpu", dtype="float32")
    generator = BatchGenerator(loaded.model, loaded.tokenizer)
    style = PromptStyle("compact", 6, True)

    def measure(session, view):
        return len(generator.prompt_ids(view_messages(session, view, style)))

    full = measure(SESSION, _full_view())
    bare = measure(SESSION, StudentView())
    view, dropped = fit_budget(SESSION, _full_view(), measure, full - 1)
    assert dropped == 1 and measure(SESSION, view) <= full - 1
    assert [r.kind for r in view.items] == ["patterns", "rules", EXAMPLE]  # the thought (0.5) went first
    view, dropped = fit_budget(SESSION, _full_view(), measure, bare)
    assert view.items == () and measure(SESSION, view) == bare  # everything but the session itself


def test_a_reasoning_target_is_parsed_after_its_answer_mark():
    from recbole_bundlellm.generation.parser import parse_bundles

    text = answer_text(EXAMPLE_SESSION, PromptStyle("compact"), "products 1, 2 and 3 are all electronics")
    assert text.endswith("Answer: [[1, 2]]") and parse_bundles(text, 3).bundles == [(0, 1)]


@pytest.fixture
def store(tiny_data, tmp_path) -> dict:
    from recbole_bundlellm.commands.distill import distill

    keys = {"data_path": str(tiny_data), "knowledge_dir": str(tmp_path / "kn"), "patterns": {"min_count": 1}}
    distill([], {"dataset": "clothing", "knowledge_types": ["patterns"], **keys})
    return keys


def test_icl_and_icl_sft_use_the_patterns_of_the_store(store, tiny_llm_path):
    common = {**store, "llm_model": str(tiny_llm_path), "knowledge_use": ["patterns"], "max_new_tokens": 6,
              "prompt_format": "compact", "icl": {"examples": 2}}
    icl = run("BundleLLM", "clothing", config_dict={**common, "adaptation": "icl"}, output_dir="icl")
    assert icl.info["knowledge"]["counts"]["patterns"] > 0
    records = [json.loads(line) for line in Path("icl/predictions.jsonl").read_text().splitlines()]
    assert all(len(r["example_sessions"]) == 2 for r in records)
    assert any(r.get("knowledge", {}).get("patterns") for r in records)
    both = run("BundleSFT", "clothing", output_dir="icl_sft",
               config_dict={**common, "adaptation": "icl_sft", "epochs": 1, "train_batch_size": 4})
    data = both.info["training"]
    assert data["sessions"] > 0 and data["raw_sessions"] < data["sessions"]
    assert "train on the raw session" in Path("icl_sft/run.log").read_text()


def test_icl_sft_training_drops_knowledge_items_to_fit_max_seq_tokens_instead_of_cutting_the_prompt(store,
                                                                                                  tiny_llm_path):
    common = {**store, "llm_model": str(tiny_llm_path), "knowledge_use": ["patterns"], "max_new_tokens": 6,
              "prompt_format": "compact", "icl": {"examples": 2}, "adaptation": "icl_sft", "epochs": 1,
              "train_batch_size": 4, "eval_step": 0}
    roomy = run("BundleSFT", "clothing", output_dir="roomy", config_dict={**common, "max_seq_tokens": 512})
    assert roomy.info["training_data"]["items_dropped_for_max_seq_tokens"] == 0  # what fits is left alone
    limit = 200
    tight = run("BundleSFT", "clothing", output_dir="tight", config_dict={**common, "max_seq_tokens": limit})
    data = tight.info["training_data"]
    # Retrieved examples and patterns gave way, least relevant first; no prompt lost its start.
    assert data["items_dropped_for_max_seq_tokens"] > 0 and data["cut_to_max_seq_tokens"] == 0
    assert data["raw_sessions"] == roomy.info["training_data"]["raw_sessions"]  # the knowledge was there
    assert data["target_tokens"] == roomy.info["training_data"]["target_tokens"]  # targets are never trimmed
    assert data["tokens"] <= limit * data["sessions"] < roomy.info["training_data"]["tokens"]
    assert "left out of training prompts to fit max_seq_tokens=200" in Path("tight/run.log").read_text()


def test_thoughts_that_were_never_distilled_are_a_clear_error(store, tiny_llm_path):
    with pytest.raises(BundleLLMError, match="thoughts"):
        run("BundleSFT", "clothing", output_dir="t", config_dict={
            **store, "llm_model": str(tiny_llm_path), "knowledge_use": ["thoughts"], "epochs": 1})


def test_a_missing_store_says_how_to_make_one(tiny_data, tiny_llm_path, tmp_path):
    with pytest.raises(BundleLLMError, match="bundlellm distill"):
        run("BundleLLM", "clothing", output_dir="m", config_dict={
            "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "adaptation": "icl",
            "knowledge_use": ["patterns"], "knowledge_dir": str(tmp_path / "nowhere")})


@pytest.mark.parametrize(("model", "adaptation", "hint"), [("BundleLLM", "sft", "model: BundleSFT"),
                                                           ("BundleSFT", "icl", "model: BundleLLM")])
def test_a_strategy_on_the_wrong_model_says_which_model(tiny_data, tiny_llm_path, model, adaptation, hint):
    with pytest.raises(BundleLLMError, match=hint):
        run(model, "clothing", output_dir="w", config_dict={
            "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "adaptation": adaptation})


def test_the_tags_format_round_trips_the_ground_truth():
    from recbole_bundlellm.generation.parser import parse_answer
    from recbole_bundlellm.generation.prompt import tags_answer

    session = Session("1", tuple("abcdef"), ("t",) * 6, (), (frozenset("be"), frozenset("acd")))
    assert tags_answer(session) == "1:A 2:B 3:A 4:A 5:B 6:-"
    parsed = parse_answer(tags_answer(session), 6, "tags")
    assert parsed.bundles == [(0, 2, 3), (1, 4)]
    # A product in two bundles keeps its first; a bundle left with one product is no bundle.
    overlap = Session("2", tuple("abcde"), ("t",) * 5, (), (frozenset("bd"), frozenset("ac"), frozenset("ae")))
    assert tags_answer(overlap) == "1:A 2:B 3:A 4:B 5:-"
    messages = view_messages(session, StudentView(), PromptStyle("tags", 6, True))
    assert "its bundle (A, B, ...) or - for none" in messages[-1]["content"]


def test_a_tags_answer_is_read_after_its_reasoning_and_bad_numbers_are_counted():
    from recbole_bundlellm.generation.parser import parse_tags

    parsed = parse_tags("Reasoning: 1:A 3:A look alike. Answer: 1:A 2:A 3:- 9:B 2:B", 3)
    assert parsed.bundles == [(0, 1)] and parsed.dropped_out_of_range == 1 and parsed.dropped_duplicates == 1
    assert parse_tags("I cannot tell", 3).failed
    assert parse_tags("1:- 2:- 3:-", 3).reason == "no bundle with >= 2 products"


def test_icl_retrieves_by_the_students_own_embeddings(tiny_data, tiny_llm_path):
    result = run("BundleLLM", "clothing", output_dir="emb", config_dict={
        "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), "adaptation": "icl", "max_new_tokens": 4,
        "icl": {"examples": 1, "retrieval": "embedding"}})
    records = [json.loads(line) for line in Path("emb/predictions.jsonl").read_text().splitlines()]
    assert result.info["adaptation"] == "icl" and all(len(r["example_sessions"]) == 1 for r in records)


def test_a_shuffled_tags_target_keeps_the_bundles_and_changes_the_order():
    from recbole_bundlellm.generation.parser import parse_tags
    from recbole_bundlellm.generation.prompt import tags_answer

    session = Session("1", tuple("abcdef"), ("t",) * 6, (), (frozenset("be"), frozenset("acd")))
    shuffled = tags_answer(session, [3, 1, 5, 0, 4, 2])
    assert shuffled == "4:A 2:B 6:- 1:A 5:B 3:A"  # letters in order of first use, as written
    assert parse_tags(shuffled, 6).bundles == parse_tags(tags_answer(session), 6).bundles
