"""Parsing LLM answers into bundles: the AICL format and many malformed variants."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recbole_bundlellm.generation.parser import MAX_CHARS, ParseResult, parse_bundles

AICL = "{'bundle1': ['product1', 'product3'], 'bundle2': ['product2', 'product4']}"


def ok(text: str, n_items: int = 6) -> ParseResult:
    result = parse_bundles(text, n_items)
    assert not result.failed, result
    assert result.reason is None
    return result


def failed(text: str, n_items: int = 6) -> ParseResult:
    result = parse_bundles(text, n_items)
    assert result.failed, result
    assert result.bundles == []
    assert result.reason
    return result


def test_aicl_format():
    result = ok(AICL)
    assert result.bundles == [(0, 2), (1, 3)]
    assert (result.dropped_out_of_range, result.dropped_duplicates) == (0, 0)


@pytest.mark.parametrize(
    "text",
    [
        '{"bundle1": ["product1", "product3"], "bundle2": ["product2", "product4"]}',  # JSON
        "```json\n" + AICL + "\n```",  # code fence
        "```\n" + AICL + "\n```\nThese bundles group related items.",
        "Here are the bundles: " + AICL + " Let me know if you need more.",  # prose around
        "{'bundle1': ['product1', 'product3',], 'bundle2': ['product2', 'product4',],}",
        '{"bundle1": ["product1", "product3",], "bundle2": ["product2", "product4",],}',
        "{'bundle1': ['Product 1', 'PRODUCT 3'], 'bundle2': ['product_2', 'product 4']}",
        "{'bundle1': [1, 3], 'bundle2': [2, 4]}",  # plain ints
        "{'bundle1': ['1', '3'], 'bundle2': ['2', '4']}",  # numeric strings
        "{'bundle1': 'product1, product3', 'bundle2': 'product2 and product4'}",  # string values
        "[['product1', 'product3'], ['product2', 'product4']]",  # top-level list of lists
        "[[1, 3], [2, 4]]",
        "{'bundles': [['product1', 'product3'], ['product2', 'product4']]}",  # nested
        "{'answer': {'bundle1': {'products': ['product1', 'product3'], 'intent': 'Cables 3'},"
        " 'bundle2': {'products': ['product2', 'product4'], 'intent': 'Cases'}}}",
        "{bundle1: [product1, product3], bundle2: [product2, product4]}",  # unquoted names
        '{"bundle1": ["product1", "product3"], "bundle2": ["product2", "product4"], "ok": true}',
        "Example: [x]. Answer: " + AICL,  # a smaller bracket span in the prose
    ],
)
def test_tolerated_variants(text):
    assert ok(text).bundles == [(0, 2), (1, 3)]


def test_truncated_answer_keeps_complete_bundles():
    text = AICL[:-1] + ", 'bundle3': ['product5', 'prod"
    assert ok(text).bundles == [(0, 2), (1, 3)]
    text = "```json\n{\"bundle1\": [\"product1\", \"product3\"], \"bundle2\": [\"product2\", \"prod"
    assert ok(text).bundles == [(0, 2)]
    text = "{'bundle1': 'product1, product2', 'bundle2': 'product3, product4', 'bundle3': 'produ"
    assert ok(text).bundles == [(0, 1), (2, 3)]


def test_product_numbers_parsed_in_full():
    # The reference code read only the last character: "product10" must be item 10.
    assert ok("{'bundle1': ['product10', 'product2']}", n_items=10).bundles == [(1, 9)]


def test_out_of_range_and_duplicates():
    text = "{'b1': ['product0', 'product1', 'product2', 'product7', 'product2'], 'b2': [3, 4, 4]}"
    result = ok(text)
    assert result.bundles == [(0, 1), (2, 3)]
    assert result.dropped_out_of_range == 2  # product0 and product7 of 6
    assert result.dropped_duplicates == 2


def test_small_and_identical_bundles_removed_without_failure():
    text = "{'b1': ['product1'], 'b2': ['product3', 'product2'], 'b3': ['product2', 'product3']}"
    result = ok(text)
    assert result.bundles == [(1, 2)]


def test_bundles_sorted_in_answer_order():
    assert ok("{'b1': [6, 5, 4], 'b2': [2, 1]}").bundles == [(3, 4, 5), (0, 1)]


def test_non_product_entries_counted_invalid():
    result = ok("{'b1': ['product1', 'a charger', 'product2', True]}")
    assert result.bundles == [(0, 1)]
    assert result.dropped_invalid == 2


def test_intent_strings_are_not_bundles():
    # A free-text string with numbers in it is not a list of products.
    failed("{'bundle1': 'USB 3 hub and 2 cables'}")


def test_huge_numbers():
    digits = "9" * 5000
    result = ok("{'b1': ['product" + digits + "', 'product1', 'product2']}")
    assert result.bundles == [(0, 1)] and result.dropped_out_of_range == 1
    result = ok("{'b1': [" + digits + ", 1, 2]}")
    assert result.bundles == [(0, 1)] and result.dropped_out_of_range == 1
    failed("{'b1': [" + digits + ", 1" + digits + "]}")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n ",
        "garbage",
        "I cannot find any bundles in this session.",
        "{}",
        "[]",
        "{'bundle1': []}",
        "{'bundle1': ['product1']}",  # only a size-1 bundle
        "{'bundle1': ['product7', 'product8']}",  # all out of range
        "{'bundle1': ['product1', 'product1']}",  # one item after dedup
        "{'count': 2, 'total': 3}",
        "{" * 5000 + "}" * 5000,  # deeply nested
        "[" * 20000,
        "{'bundle1': ['product1', 'prod",  # cut inside the only bundle
    ],
)
def test_failures(text):
    failed(text)


def test_failure_reasons():
    assert failed("").reason == "empty answer"
    assert failed("no dict here").reason == "no JSON/dict found"
    assert failed("{'bundle1': ['product1']}").reason == "no bundle with >= 2 products"


def test_eval_is_never_used():
    marker = Path("pwned")  # the test runs in its own tmp dir
    for text in (
        "__import__('os').system('touch pwned')",
        "{'b': __import__('os').system('touch pwned')}",
        "{'b': [__import__('os').system('touch pwned'), 1]}",
    ):
        assert parse_bundles(text, 6).failed, text
        assert not marker.exists()
    # The regex fallback may still read the plain numbers of such a list, never run it.
    result = parse_bundles("[open('pwned', 'w').write('x'), 1, 2]", 6)
    assert not marker.exists()
    assert result.bundles == [(0, 1)] and result.dropped_invalid == 2


def test_n_items_zero_and_negative():
    failed(AICL, n_items=0)
    with pytest.raises(ValueError):
        parse_bundles(AICL, -1)


def test_non_string_input_fails():
    assert parse_bundles(None, 5).failed  # type: ignore[arg-type]


def test_long_input_is_capped_and_fast():
    # A runaway generation: the answer, then megabytes of repetition.
    text = AICL + " and also [" * 200_000
    start = time.perf_counter()
    result = parse_bundles(text, 6)
    assert time.perf_counter() - start < 1.0
    assert result.bundles == [(0, 2), (1, 3)]
    # Beyond the cap nothing is looked at.
    assert parse_bundles("x" * MAX_CHARS + AICL, 6).failed


def test_largest_dict_wins():
    text = "For example {'bundle1': ['product1', 'product2']}. My answer: " + AICL.replace(
        "}", ", 'bundle3': ['product5', 'product6']}"
    )
    assert ok(text).bundles == [(0, 2), (1, 3), (4, 5)]


def test_set_literals_read_the_same_in_every_process():
    """A set literal answer must not depend on PYTHONHASHSEED (feedback prompts are hashed)."""
    import os
    import subprocess
    import sys

    answer = "{'bundle1': {'product6', 'product5', 'product12', 'product1'}}"
    code = f"from bundlellm_builtin.knowledge.feedback import answer_bundles; print(answer_bundles({answer!r}, 4))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(outs) == 1, outs
    assert parse_bundles(answer, 6).bundles == [(0, 4, 5)]
