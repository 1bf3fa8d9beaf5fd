"""The built-in knowledge extractors (patterns, rules, thoughts) and the AICL feedback.

The teacher here is a scripted stand-in implementing the ``Teacher`` protocol (canned answers,
calls recorded): it tests the extractors' own logic. The real OpenAI-compatible teacher is
exercised by the teacher tests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from bundlellm_builtin.knowledge.feedback import (
    answer_bundles,
    compute_feedback,
    exact_f1,
    feedback_for_answer,
    render_feedback,
    truth_positions,
)
from bundlellm_builtin.knowledge.patterns import (
    PatternsExtractor,
    PatternsSettings,
    render_pattern,
)
from bundlellm_builtin.knowledge.rules import RulesExtractor, RulesSettings, parse_rules
from bundlellm_builtin.knowledge.thoughts import (
    ThoughtsExtractor,
    ThoughtsSettings,
    check_thought,
)

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.prompt import answer_dict
from recbole_bundlellm.knowledge.extractor import (
    Extraction,
    extractor_fingerprint,
    provides_difficulty,
)
from recbole_bundlellm.knowledge.records import KnowledgeRecord
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.errors import TeacherRequestError

# Positions: product1..3 = a trip with a camera, product4..5 = charging, product6..7 belong to none.
SESSION = Session(
    session_id="s1",
    item_ids=("a", "b", "c", "d", "e", "f", "g"),
    titles=("Nikon Coolpix camera", "SanDisk 32GB SD card", "Camera bag", "HDMI cable",
            "USB wall charger", "Phone case", "Desk lamp"),
    categories=("Cameras", "SD Cards", "Camera Cases", "HDMI Cables", "Chargers", "Cases", "Lamps"),
    bundles=(frozenset({"a", "b", "c"}), frozenset({"d", "e"})),
    intents=("Taking photos on a trip", "Charging and connecting devices"),
)
TRUTH = [(0, 1, 2), (3, 4)]

FIRST = "{'bundle1': ['product1', 'product2'], 'bundle2': ['product4', 'product5']}"
REVISED = "{'bundle1': ['product1', 'product2', 'product3'], 'bundle2': ['product4', 'product5']}"
RULES = (
    "Here are the rules:\n"
    "1. Products used for the same activity form one bundle.\n"
    "2. **Accessories go with the main device they fit.**\n"
    "3. product1 goes with product2.\n"
    "4. Ok\n"
    "5. Products used for the same activity form one bundle."
)


class ScriptedTeacher:
    """A Teacher that returns canned answers in order (an exception instance is raised)."""

    model = "scripted"

    def __init__(self, answers: list[str | Exception]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
             temperature: float | None = None, schema: Any = None) -> str:
        self.calls.append({"messages": [dict(m) for m in messages], "max_tokens": max_tokens, "schema": schema})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def as_record(kind: str, session_id: str, extraction: Extraction, domain: str = "electronic") -> KnowledgeRecord:
    return KnowledgeRecord(kind=kind, domain=domain, unit=session_id, fingerprint="f", status=extraction.status,
                           content=extraction.content, text=extraction.text, reason=extraction.reason,
                           session_id=session_id)


# -- feedback ------------------------------------------------------------------------------------
def test_truth_positions_follow_the_answer_dict():
    assert truth_positions(SESSION) == TRUTH
    assert answer_dict(SESSION) == ("{'bundle1': ['product1', 'product2', 'product3'], "
                                    "'bundle2': ['product4', 'product5']}")


@pytest.mark.parametrize("pred, labels, missing, irrelevant", [
    ((0, 1, 2), ("correct",), (), ()),
    ((0, 1), ("missing_products",), (2,), ()),
    ((3, 4, 5), ("irrelevant_products",), (), (5,)),
    ((0, 1, 5), ("missing_products", "irrelevant_products"), (2,), (5,)),
    ((5, 6), ("irrelevant_products",), (), (5, 6)),  # overlaps no ground-truth bundle
    ((2,), ("single_product",), (), ()),
    ((0, 9), ("invalid",), (), ()),  # product10 does not exist
    ((0, "a cable"), ("invalid",), (), ()),  # no product reference at all
])
def test_each_bundle_is_classified_against_its_best_overlap(pred, labels, missing, irrelevant):
    feedback = compute_feedback([pred], TRUTH, n_items=7)
    assert feedback.parsed
    (verdict,) = feedback.bundles
    assert verdict.labels == labels
    assert verdict.missing == missing and verdict.irrelevant == irrelevant
    if labels == ("invalid",):
        assert verdict.invalid == tuple(p for p in pred if not isinstance(p, int) or p >= 7)


def test_best_overlap_picks_the_highest_jaccard():
    # {product3, product4, product5}: 1/5 with bundle1, 2/3 with bundle2
    (verdict,) = compute_feedback([(2, 3, 4)], TRUTH, 7).bundles
    assert verdict.truth_index == 1 and verdict.jaccard == pytest.approx(2 / 3)
    assert verdict.labels == ("irrelevant_products",) and verdict.irrelevant == (2,)


def test_unmatched_truth_and_all_correct():
    partial = compute_feedback([(0, 1, 2)], TRUTH, 7)
    assert partial.unmatched_truth == [(3, 4)] and not partial.all_correct
    perfect = compute_feedback([(0, 1, 2), (3, 4)], TRUTH, 7)
    assert perfect.all_correct and perfect.unmatched_truth == []
    assert render_feedback(perfect) == "Bundle 1 is correct. Bundle 2 is correct. All bundles are correct."


def test_unparsable_answer_is_invalid_as_a_whole():
    assert answer_bundles("I think the camera goes with the card.", 7) is None
    feedback = feedback_for_answer("I think the camera goes with the card.", SESSION)
    assert not feedback.parsed and feedback.bundles == []
    assert feedback.unmatched_truth == TRUTH
    assert feedback.label_counts() == {"invalid": 1}
    text = render_feedback(feedback)
    assert text.startswith("Your answer is invalid")
    assert "product4, product5" in text and text.endswith("Please revise your answer.")


def test_answer_bundles_keep_what_the_parser_drops():
    answer = ("Sure! {'bundle1': ['product1'], 'bundle2': ['product4', 'product12'], "
              "'bundle3': ['product1', 'product2', 'product3']}")
    assert answer_bundles(answer, 7) == [(0,), (3, 11), (0, 1, 2)]
    feedback = feedback_for_answer(answer, SESSION)
    assert [b.labels for b in feedback.bundles] == [("single_product",), ("invalid",), ("correct",)]
    text = render_feedback(feedback)
    assert text == ("Bundle 1 has only one product; a bundle needs at least two. "
                    "Bundle 2 is invalid: it refers to products that do not exist: product12. "
                    "Bundle 3 is correct. You missed a bundle of these products: product4, product5. "
                    "Please revise your answer.")


def test_render_names_missing_and_irrelevant_products():
    feedback = compute_feedback([(0, 1, 5), (3, 4)], TRUTH, 7)
    assert render_feedback(feedback, closing="") == (
        "Bundle 1 misses products: product3 and contains irrelevant products: product6. Bundle 2 is correct.")
    assert feedback.to_json()["bundles"][0]["labels"] == ["missing_products", "irrelevant_products"]
    assert feedback.to_json()["bundles"][0]["missing"] == [2]


def test_exact_f1_per_session():
    assert exact_f1([(0, 1, 2), (3, 4)], TRUTH) == 1.0
    assert exact_f1([(0, 1, 2)], TRUTH) == pytest.approx(2 / 3)
    assert exact_f1([(0, 1), (3, 4)], TRUTH) == pytest.approx(0.5)
    assert exact_f1(None, TRUTH) == 0.0


# -- patterns ------------------------------------------------------------------------------------
TRANSACTIONS = [
    ["Shirts", "Ties"], ["Shirts", "Ties"], ["Shirts", "Ties", "Cufflinks"],
    ["Shoes", "Socks"], ["Shoes", "Socks"], ["Hats", "Scarves"],
]


def _pattern_records() -> list[KnowledgeRecord]:
    records = [as_record("patterns", f"s{i}", Extraction("ok", {"transactions": [t]}))
               for i, t in enumerate(TRANSACTIONS)]
    records.append(as_record("patterns", "bad", Extraction.failed("no categories")))
    return records


def test_patterns_extract_session_stores_category_transactions():
    extraction = PatternsExtractor().extract_session(SESSION, None)
    assert extraction.status == "ok"
    assert extraction.content == {"transactions": [["Cameras", "SD Cards", "Camera Cases"],
                                                   ["HDMI Cables", "Chargers"]]}
    assert not PatternsExtractor.needs_teacher


def test_patterns_need_categories_and_bundles():
    no_categories = Session("s2", ("a", "b"), ("A", "B"), (), (frozenset({"a", "b"}),))
    assert PatternsExtractor().extract_session(no_categories, None).status == "failed"
    no_bundles = Session("s3", ("a", "b"), ("A", "B"), ("X", "Y"))
    assert PatternsExtractor().extract_session(no_bundles, None).reason == "session has no ground-truth bundle"


def test_patterns_are_mined_and_rendered():
    extractor = PatternsExtractor(PatternsSettings(min_support=0.3, min_confidence=0.0))
    items = extractor.aggregate(_pattern_records(), "electronic")
    assert [item.data["categories"] for item in items] == [["Shirts", "Ties"], ["Shoes", "Socks"]]
    first = items[0]
    assert first.kind == "patterns" and first.domain == "electronic"
    assert first.text == ("Products of the categories 'Shirts' and 'Ties' are often bought together in one "
                          "bundle (support 50.0%, confidence 100%).")
    assert first.support == pytest.approx(0.5)
    assert first.data["confidence"] == pytest.approx(1.0) and first.data["count"] == 3
    assert first.data["n_transactions"] == 6  # the failed record adds nothing


def test_patterns_min_count_max_items_and_sizes():
    records = _pattern_records()
    # 10 % of 6 transactions is a single bundle: min_count=2 keeps only patterns seen twice
    loose = PatternsExtractor(PatternsSettings(min_support=0.1, min_confidence=0.0, min_count=1))
    assert frozenset({"Hats", "Scarves"}) in {frozenset(i.data["categories"]) for i in loose.aggregate(records, "d")}
    guarded = PatternsExtractor(PatternsSettings(min_support=0.1, min_confidence=0.0, min_count=2))
    assert {frozenset(i.data["categories"]) for i in guarded.aggregate(records, "d")} == {
        frozenset({"Shirts", "Ties"}), frozenset({"Shoes", "Socks"})}
    capped = PatternsExtractor(PatternsSettings(min_support=0.1, min_confidence=0.0, min_count=1, max_items=1))
    assert len(capped.aggregate(records, "d")) == 1
    triples = PatternsExtractor(PatternsSettings(min_support=0.1, min_confidence=0.0, min_count=1, min_size=3))
    assert [i.data["categories"] for i in triples.aggregate(records, "d")] == [["Cufflinks", "Shirts", "Ties"]]
    assert PatternsExtractor().aggregate([], "d") == []


def test_render_pattern_of_three_categories():
    assert render_pattern(["A", "B", "C"], 0.032, 0.45) == (
        "Products of the categories 'A', 'B' and 'C' are often bought together in one bundle "
        "(support 3.2%, confidence 45%).")


# -- rules ---------------------------------------------------------------------------------------
def test_parse_rules_is_tolerant():
    assert parse_rules(RULES, 5) == ["Products used for the same activity form one bundle.",
                                     "Accessories go with the main device they fit."]
    inline = "1. Match each device with its accessories. 2) Cables go with the device they connect"
    assert parse_rules(inline, 5) == ["Match each device with its accessories.",
                                      "Cables go with the device they connect."]
    prose = "Products for one purpose belong together. Too short. Chargers go with phones and tablets!"
    assert parse_rules(prose, 5) == ["Products for one purpose belong together.",
                                     "Chargers go with phones and tablets!"]
    bullets = "- Rule one is about cameras and bags\n* Rule two is about cables and TVs\n- " + "word " * 50
    assert parse_rules(bullets, 1) == ["Rule one is about cameras and bags."]
    assert parse_rules("{'bundle1': ['product1', 'product2']}", 5) == []
    assert parse_rules("", 5) == [] and parse_rules(None, 5) == []  # type: ignore[arg-type]


def test_rules_loop_happy_path():
    teacher = ScriptedTeacher([FIRST, REVISED, RULES])
    extraction = RulesExtractor().extract_session(SESSION, teacher)
    assert extraction.status == "ok"
    c = extraction.content
    assert c["answers"] == {"initial": FIRST, "revised": REVISED, "rules": RULES}
    assert json.loads(json.dumps(c)) == c  # stored as JSON unchanged
    assert c["initial_bundles"] == [[0, 1], [3, 4]] and c["revised_bundles"] == [[0, 1, 2], [3, 4]]
    assert c["initial_f1"] == pytest.approx(0.5) and c["difficulty"] == pytest.approx(0.5)
    assert c["revised_f1"] == 1.0 and c["revised_feedback"]["all_correct"]
    assert c["rules"] == ["Products used for the same activity form one bundle.",
                          "Accessories go with the main device they fit."]
    assert extraction.text == ("1. Products used for the same activity form one bundle.\n"
                               "2. Accessories go with the main device they fit.")
    # the three turns: propose, revise after feedback, state rules after seeing the answer
    assert len(teacher.calls) == 3
    first_call, revise_call, rules_call = (call["messages"] for call in teacher.calls)
    assert [m["role"] for m in first_call] == ["system", "user"]
    assert "'product1': 'Nikon Coolpix camera'" in first_call[-1]["content"]
    assert revise_call[-2] == {"role": "assistant", "content": FIRST}
    assert revise_call[-1]["content"] == c["feedback_text"]
    assert "Bundle 1 misses products: product3." in c["feedback_text"]
    assert c["feedback_text"].endswith("Please revise your answer. Answer only with the dict.")
    assert rules_call[-2] == {"role": "assistant", "content": REVISED}
    assert "general rules" in rules_call[-1]["content"] and answer_dict(SESSION) in rules_call[-1]["content"]
    settings = RulesSettings()
    assert [call["max_tokens"] for call in teacher.calls] == [
        settings.max_tokens_answer, settings.max_tokens_answer, settings.max_tokens_rules]


def test_rules_loop_continues_after_an_unparsable_first_answer():
    teacher = ScriptedTeacher(["I think the camera goes with the card.", REVISED,
                               "1. Keep accessories with their main device."])
    extraction = RulesExtractor().extract_session(SESSION, teacher)
    assert extraction.status == "ok" and len(teacher.calls) == 3
    c = extraction.content
    assert c["initial_bundles"] is None and c["difficulty"] == 1.0
    assert c["feedback"]["parsed"] is False and c["feedback_text"].startswith("Your answer is invalid")
    assert c["rules"] == ["Keep accessories with their main device."]


def test_rules_without_parsable_rules_fail_with_raw_answers():
    teacher = ScriptedTeacher([FIRST, REVISED, "Sure!\n1. product1 and product2\n"])
    extraction = RulesExtractor().extract_session(SESSION, teacher)
    assert extraction.status == "failed" and extraction.text == ""
    assert "no rule" in extraction.reason
    assert extraction.content["answers"] == {"initial": FIRST, "revised": REVISED,
                                             "rules": "Sure!\n1. product1 and product2\n"}
    assert extraction.content["difficulty"] == pytest.approx(0.5)  # samplers still get it


def test_rules_difficulty_is_the_first_answers_on_ok_and_failed_records():
    rules = RulesExtractor()
    ok = as_record("rules", "s1", rules.extract_session(SESSION, ScriptedTeacher([FIRST, REVISED, RULES])))
    failed = as_record("rules", "s2", rules.extract_session(SESSION, ScriptedTeacher([FIRST, REVISED, "Sure!"])))
    assert ok.ok and not failed.ok
    assert rules.difficulty(ok) == rules.difficulty(failed) == pytest.approx(0.5)  # 1 - F1 of FIRST
    for content in ({}, {"difficulty": None}, {"difficulty": "hard"}, {"difficulty": True}):
        assert rules.difficulty(as_record("rules", "s3", Extraction.failed("x", **content))) is None
    # only the rules extractor tells the difficulty sampler anything
    assert provides_difficulty(rules)
    assert not provides_difficulty(PatternsExtractor()) and not provides_difficulty(ThoughtsExtractor())


def test_rules_without_revision_or_when_already_correct():
    teacher = ScriptedTeacher([FIRST, RULES])
    extraction = RulesExtractor(RulesSettings(revise=False)).extract_session(SESSION, teacher)
    assert extraction.status == "ok" and len(teacher.calls) == 2
    last = teacher.calls[1]["messages"][-1]["content"]
    assert "Bundle 1 misses products: product3." in last and "general rules" in last
    assert "revise" not in last and extraction.content["answers"]["revised"] is None

    teacher = ScriptedTeacher([REVISED, RULES])  # a perfect first answer needs no revision
    extraction = RulesExtractor().extract_session(SESSION, teacher)
    assert len(teacher.calls) == 2 and extraction.content["difficulty"] == 0.0
    assert "All bundles are correct." in teacher.calls[1]["messages"][-1]["content"]


def test_teacher_request_errors_propagate():
    with pytest.raises(TeacherRequestError):
        RulesExtractor().extract_session(SESSION, ScriptedTeacher([TeacherRequestError("400: prompt too long")]))
    with pytest.raises(TeacherRequestError) as info:
        RulesExtractor().extract_session(SESSION, ScriptedTeacher([FIRST, TeacherRequestError("400")]))
    # the first answer and its difficulty stay reachable for the distiller
    assert info.value.partial["difficulty"] == pytest.approx(0.5)
    with pytest.raises(TeacherRequestError):
        ThoughtsExtractor().extract_session(SESSION, ScriptedTeacher([TeacherRequestError("400")]))


def test_rules_session_without_ground_truth_fails_without_asking():
    teacher = ScriptedTeacher([])
    empty = Session("s9", ("a", "b"), ("A", "B"))
    assert RulesExtractor().extract_session(empty, teacher).status == "failed" and teacher.calls == []


def _rules_record(session_id: str, rules: list[str], status: str = "ok") -> KnowledgeRecord:
    return as_record("rules", session_id, Extraction(status, {"rules": rules}, "x" if status == "ok" else ""))


def test_rules_aggregate_merges_near_duplicates_and_counts_sessions():
    records = [
        _rules_record("s1", ["Products used for the same activity form one bundle.",
                             "Accessories go with the device they fit."]),
        _rules_record("s2", ["Products that are used for the same activity form a bundle."]),
        _rules_record("s3", ["Group products used for the same activity into one bundle.",
                             "Cables go with the device they connect."]),
        _rules_record("s4", ["Products used for the same activity form one bundle."]),
        _rules_record("s5", ["Accessories go with the device they fit."]),
        _rules_record("s6", ["Products used for the same activity form one bundle."], status="failed"),
    ]
    extractor = RulesExtractor(RulesSettings(top_k=2))
    items = extractor.aggregate(records, "electronic")
    assert [(i.text, i.support) for i in items] == [
        ("Products used for the same activity form one bundle.", 4.0),
        ("Accessories go with the device they fit.", 2.0),
    ]
    assert items[0].data["sessions"] == ["s1", "s2", "s3", "s4"] and items[0].data["share"] == pytest.approx(0.8)
    assert len(items[0].data["variants"]) == 3
    assert all(i.kind == "rules" and i.domain == "electronic" for i in items)
    # deterministic whatever the record order; nothing merges at a threshold of 1
    assert [i.to_json() for i in extractor.aggregate(records[::-1], "electronic")] == [i.to_json() for i in items]
    strict = RulesExtractor(RulesSettings(top_k=10, merge_jaccard=1.0)).aggregate(records, "electronic")
    assert len(strict) == 4 and strict[0].support == 3.0  # the two exact wordings of s1/s4 and s2 merge


# -- thoughts ------------------------------------------------------------------------------------
REASONING = ("The user is going on a trip and wants to take photos, so product1 (the camera), product2 "
             "(the SD card) and product3 (the bag) form bundle1. The user also needs charging for the "
             "devices: product4 and product5 form bundle2.")


def test_thoughts_ok():
    teacher = ScriptedTeacher([f"```\n{REASONING}\n```"])
    extraction = ThoughtsExtractor().extract_session(SESSION, teacher)
    assert extraction.status == "ok", extraction.reason
    assert extraction.text == f"{REASONING}\nAnswer: {answer_dict(SESSION)}"
    assert extraction.content["references"] == ["intent", "intent"]
    assert extraction.content["mentioned_products"] == [1, 2, 3, 4, 5]
    assert json.loads(json.dumps(extraction.content)) == extraction.content
    prompt = teacher.calls[0]["messages"][-1]["content"]
    assert "bundle1 (intent: Taking photos on a trip): product1, product2, product3" in prompt
    assert teacher.calls[0]["max_tokens"] == ThoughtsSettings().max_tokens
    items = ThoughtsExtractor().aggregate([as_record("thoughts", "s1", extraction),
                                           as_record("thoughts", "s2", Extraction.failed("x"))], "electronic")
    assert len(items) == 1 and items[0].session_id == "s1" and items[0].text == extraction.text


def test_thoughts_refer_by_products_when_intents_are_empty():
    session = Session("s2", SESSION.item_ids, SESSION.titles, SESSION.categories, SESSION.bundles, ("", ""))
    check = check_thought(REASONING.replace("take photos", "go out").replace("charging", "power"), session, 5)
    assert check.ok and check.references == ["products", "products"]


@pytest.mark.parametrize("answer, problem", [
    ("Camera and card go together.", "words"),
    (REASONING + " Also product9 could fit.", "do not exist: product9"),
    (("The user is going on a trip and wants to take photos, so product1, product2 and product3 form "
      "one bundle for the trip, and the other items are unrelated to it."), "bundle(s) 2"),
    (REASONING + " So the answer is [product1, product4].", "not in the ground truth"),
])
def test_thoughts_inconsistent(answer, problem):
    extraction = ThoughtsExtractor().extract_session(SESSION, ScriptedTeacher([answer]))
    assert extraction.status == "failed" and problem in extraction.reason
    assert extraction.content["raw"] == answer and extraction.text == ""


def test_thoughts_may_write_out_ground_truth_bundles():
    answer = REASONING + " In short: [product1, product2, product3] and [product4, product5]."
    assert ThoughtsExtractor().extract_session(SESSION, ScriptedTeacher([answer])).status == "ok"


# -- settings and registration ------------------------------------------------------------------
@pytest.mark.parametrize("cls, key, data, message", [
    (PatternsSettings, "patterns", {"min_size": 3, "max_size": 2}, "min_size <= max_size"),
    (PatternsSettings, "patterns", {"max_size": 6}, "max_size <= 5"),
    (PatternsSettings, "patterns", {"min_size": 1}, "2 <= min_size"),
    (PatternsSettings, "patterns", {"min_support": 0}, "min_support"),
    (PatternsSettings, "patterns", {"min_support": "high"}, "must be a number"),
    (PatternsSettings, "patterns", {"min_suport": 0.1}, "did you mean 'min_support'"),
    (RulesSettings, "rules", {"max_rules": 0}, "max_rules"),
    (RulesSettings, "rules", {"revise": "yes"}, "true or false"),
    (RulesSettings, "rules", {"merge_jaccard": 1.5}, "merge_jaccard"),
    (ThoughtsSettings, "thoughts", {"min_words": 0}, "min_words"),
])
def test_settings_are_validated(cls, key, data, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(cls, data, key)


def test_settings_defaults_and_fingerprints():
    assert load_settings(PatternsSettings, {"max_size": 4, "min_size": 4}, "patterns").max_size == 4
    a = extractor_fingerprint(RulesExtractor(), {"model": "m"})
    assert a == extractor_fingerprint(RulesExtractor(), {"model": "m"})
    assert a != extractor_fingerprint(RulesExtractor(RulesSettings(max_rules=3)), {"model": "m"})
    assert a != extractor_fingerprint(RulesExtractor(), {"model": "other"})
    p = PatternsExtractor()
    assert extractor_fingerprint(p, {"model": "m"}) == extractor_fingerprint(p, {"model": "other"})


def test_host_registers_the_three_extractors():
    from recbole_bundlellm.extension.host import PluginHost

    host = PluginHost()
    try:
        assert {"patterns", "rules", "thoughts"} <= set(host.names("extractor"))
        patterns = host.create("extractor", "patterns", {"patterns": {"max_size": 4}})
        assert isinstance(patterns, PatternsExtractor) and patterns.settings.max_size == 4
        assert isinstance(host.create("extractor", "rules", {}), RulesExtractor)
        assert host.create("extractor", "thoughts", {"thoughts": {"min_words": 5}}).settings.min_words == 5
        with pytest.raises(SettingsError, match="did you mean 'max_size'"):
            host.create("extractor", "patterns", {"patterns": {"max_sise": 4}})
        assert {host.get("extractor", n).version for n in ("patterns", "rules", "thoughts")} == {
            "patterns-v1", "rules-v1", "thoughts-v1"}
    finally:
        host.close()
