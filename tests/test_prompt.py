"""AICL prompts and worked-example retrieval."""

from __future__ import annotations

import ast

import pytest

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.generation.examples import NearestSessions
from recbole_bundlellm.generation.parser import parse_bundles
from recbole_bundlellm.generation.prompt import answer_dict, build_messages, products_dict

LAPTOP = Session("1", ("a", "b", "c"), ("Dell laptop 15 inch", "Laptop sleeve 15 inch", "Coffee mug"),
                 bundles=(frozenset({"a", "b"}),))
CAMERA = Session("2", ("d", "e", "f"), ("Canon camera body", "Canon camera battery", "SD card 64GB"),
                 bundles=(frozenset({"d", "e", "f"}),))


def test_products_are_listed_as_an_aicl_dict_in_session_order():
    listed = ast.literal_eval(products_dict(LAPTOP))
    assert list(listed) == ["product1", "product2", "product3"]
    assert listed["product3"] == "Coffee mug"
    assert ast.literal_eval(products_dict(LAPTOP, max_title_words=2))["product1"] == "Dell laptop"


def test_answer_dict_round_trips_through_the_parser():
    text = answer_dict(CAMERA)
    assert text == "{'bundle1': ['product1', 'product2', 'product3']}"
    assert parse_bundles(text, 3).bundles == [(0, 1, 2)]


def test_one_shot_prompt_is_a_solved_exchange_before_the_question():
    messages = build_messages(LAPTOP, [CAMERA])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == answer_dict(CAMERA)
    assert "Dell laptop" in messages[3]["content"] and "Canon" in messages[1]["content"]
    assert [m["role"] for m in build_messages(LAPTOP)] == ["system", "user"]


def test_an_example_without_bundles_is_refused():
    with pytest.raises(ValueError, match="no ground-truth bundles"):
        build_messages(LAPTOP, [Session("3", ("x",), ("y",))])


def test_nearest_session_is_the_most_similar_and_never_itself():
    pool = [LAPTOP, CAMERA, Session("4", ("g", "h"), ("Garden hose", "Hose nozzle"), bundles=(frozenset("gh"),))]
    index = NearestSessions(pool)
    query = Session("9", ("x", "y"), ("Canon camera strap", "Canon lens cap"))
    assert index.nearest([query])[0][0].session_id == "2"
    assert index.nearest([CAMERA])[0][0].session_id != "2"
    assert [s.session_id for s in index.nearest([query], k=2)[0]][0] == "2"
