"""Parse an LLM's answer into bundles of session positions.

The expected answer (AICL format) is a dict from a bundle name to a list of product names,
products numbered from 1::

    {'bundle1': ['product1', 'product3'], 'bundle2': ['product2', 'product4']}

Real answers stray from it, so the parser is tolerant: prose and markdown code fences around the
dict, single or double quotes, trailing commas, ``productK`` / ``Product K`` / plain ints / numeric
strings, a string value such as ``'product1, product2'``, lists given directly, a top-level list
of lists, nested dicts, and an answer cut off in the middle (the complete ``[...]`` lists before
the cut are recovered). Nothing is ever evaluated as code: only ``ast.literal_eval`` and
``json.loads`` are applied, and only to extracted spans.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

#: Written before the answer of a reasoning answer (``prompt.ANSWER_MARK`` is the same text).
ANSWER_MARK = "Answer:"
#: Only the first characters of an answer are processed, to stay fast on runaway generations.
MAX_CHARS = 20_000
#: At most this many top-level brace/bracket spans are tried as literals (largest first).
MAX_CANDIDATES = 20
#: Nested containers deeper than this are ignored.
MAX_DEPTH = 6

# One product reference: "product3", "Product 3", "product_3", "#3", "item 3", or "3".
_TOKEN_RE = re.compile(r"\s*(?:(?:product|item)\s*[_#-]?\s*|#\s*)?(\d+)\s*", re.IGNORECASE)
# How a string value lists its products: "product1, product2", "1; 2", "product1 and product2".
_SPLIT_RE = re.compile(r"\s*(?:,|;|\+|&|\band\b)\s*", re.IGNORECASE)
# Fallbacks for answers no literal parser accepts (cut off, unquoted names...).
_LIST_RE = re.compile(r"\[([^\[\]{}]*)\]")
_STRING_VALUE_RE = re.compile(r"""[:=]\s*(['"])([^'"\[\]{}]*?)\1""")
# More digits than this is out of range for any session (and int() refuses huge strings).
_MAX_DIGITS = 9


@dataclass
class ParseResult:
    """The bundles found in one answer.

    ``bundles`` are 0-based product positions, each bundle sorted with its items deduplicated,
    in answer order, identical bundles kept once, bundles of fewer than 2 items removed.
    ``failed`` is True when nothing could be parsed or no bundle of >= 2 products remains;
    ``reason`` then says why. The counters report what was dropped on the way.
    """

    bundles: list[tuple[int, ...]] = field(default_factory=list)
    failed: bool = False
    reason: str | None = None
    dropped_out_of_range: int = 0
    dropped_duplicates: int = 0
    dropped_invalid: int = 0  # entries that are no product reference (e.g. "a cable")


class _NotABundle(Exception):
    """A string value that is not a list of product references (an intent, say)."""


def _token_number(token: object) -> int | None:
    """The product number a token refers to, or None when it is no product reference."""
    if isinstance(token, bool):  # bool is an int subclass; True is not product 1
        return None
    if isinstance(token, int):
        return token
    if isinstance(token, float):
        return int(token) if token.is_integer() else None
    if isinstance(token, str):
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            return None
        digits = match.group(1)
        # Python refuses int() of > 4300 digits; any long number is out of range anyway.
        return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS
    return None


def _split_string(value: str) -> list[str]:
    """Split a string value into product tokens; raise when it is not such a list."""
    parts = [part for part in _SPLIT_RE.split(value.strip()) if part]
    if not parts or any(_TOKEN_RE.fullmatch(part) is None for part in parts):
        raise _NotABundle(value)
    return parts


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _collect(obj: object, depth: int = 0) -> list[list[object]]:
    """The raw bundles (lists of tokens) in a parsed literal, in order.

    Keys of dicts are bundle names and are ignored; a list of scalars is one bundle; a string
    value is one bundle when it lists product references; containers of containers recurse.
    """
    if depth > MAX_DEPTH:
        return []
    if isinstance(obj, dict):
        found: list[list[object]] = []
        for value in obj.values():
            if isinstance(value, str):
                try:
                    found.append(list(_split_string(value)))
                except _NotABundle:
                    continue
            elif _is_scalar(value):
                continue  # a lone number is no bundle (e.g. {"count": 2})
            else:
                found.extend(_collect(value, depth + 1))
        return found
    if isinstance(obj, (list, tuple, set, frozenset)):
        # A set literal's iteration order depends on PYTHONHASHSEED; sort it so the same answer
        # reads the same in every process (feedback prompts, and so teacher call keys, use it).
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else list(obj)
        if items and all(_is_scalar(item) for item in items):
            return [items]
        found = []
        for item in items:
            if isinstance(item, (dict, list, tuple, set, frozenset)):
                found.extend(_collect(item, depth + 1))
            elif isinstance(item, str):
                try:
                    found.append(list(_split_string(item)))
                except _NotABundle:
                    continue
        return found
    if isinstance(obj, str):
        try:
            return [list(_split_string(obj))]
        except _NotABundle:
            return []
    return []


def _finalize(raw_bundles: list[list[object]], n_items: int) -> ParseResult:
    """Map tokens to positions, drop invalid / out-of-range / duplicate entries and small or
    repeated bundles."""
    result = ParseResult()
    seen: set[tuple[int, ...]] = set()
    for raw in raw_bundles:
        positions: list[int] = []
        for token in raw:
            number = _token_number(token)
            if number is None:
                result.dropped_invalid += 1
            elif not 1 <= number <= n_items:
                result.dropped_out_of_range += 1
            elif number - 1 in positions:
                result.dropped_duplicates += 1
            else:
                positions.append(number - 1)
        bundle = tuple(sorted(positions))
        if len(bundle) >= 2 and bundle not in seen:
            seen.add(bundle)
            result.bundles.append(bundle)
    if not result.bundles:
        result.failed = True
        result.reason = "no bundle with >= 2 products"
    return result


def _top_level_spans(text: str) -> list[tuple[int, int]]:
    """The balanced ``{...}`` / ``[...]`` spans not nested in any other bracket, as (start, end).

    A span inside an opener that never closes (a cut-off answer) is not top-level: taking the
    first complete inner list alone would lose the other complete bundles, which the regex
    fallback recovers.
    """
    spans: list[tuple[int, int]] = []
    stack: list[tuple[str, int]] = []
    closing = {"}": "{", "]": "["}
    for index, char in enumerate(text):
        if char in "{[":
            stack.append((char, index))
        elif char in closing:
            if stack and stack[-1][0] == closing[char]:
                _, start = stack.pop()
                if not stack:
                    spans.append((start, index + 1))
            else:
                stack.clear()  # mismatched: restart rather than pair across the damage
    return spans


_TRAILING_COMMA_RE = re.compile(r",\s*([}\]])")


def _parse_literal(span: str) -> object:
    """``span`` as a Python or JSON literal; raise ValueError when it is neither."""
    attempts = (span, _TRAILING_COMMA_RE.sub(r"\1", span))
    for attempt in attempts:
        for loader in (ast.literal_eval, json.loads):
            try:
                return loader(attempt)
            # literal_eval raises ValueError/SyntaxError/TypeError/MemoryError/RecursionError
            # on hostile input; none of it is executed.
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    raise ValueError("not a literal")


def select_raw_bundles(text: str, n_items: int) -> list[list[object]] | None:
    """The bundles of an answer *as written* (token lists, nothing dropped), as the parser picks them.

    Tries the top-level balanced ``{...}`` / ``[...]`` spans of the answer as literals, largest
    first, and takes the first that yields a bundle of >= 2 in-range products. When none does,
    falls back to a regex over the complete ``[...]`` lists (and quoted string values) of the
    answer, which recovers the complete bundles of a cut-off answer. ``None`` when the answer
    holds no candidate at all. :func:`parse_bundles` cleans these up for the metrics; the rules
    feedback uses them raw, to name one-product bundles and products that do not exist.
    """
    text = text[:MAX_CHARS]
    spans = sorted(_top_level_spans(text), key=lambda s: (s[0] - s[1], s[0]))[:MAX_CANDIDATES]
    first: list[list[object]] | None = None
    for start, end in spans:
        try:
            obj = _parse_literal(text[start:end])
        except ValueError:
            continue
        raw = _collect(obj)
        if not _finalize(raw, n_items).failed:
            return raw
        if first is None and raw:  # an empty literal names nothing; a failing fallback may
            first = raw

    # Regex fallback: complete [...] lists, then quoted string values such as 'product1, product2'.
    fallback: list[list[object]] = []
    for match in _LIST_RE.finditer(text):
        tokens = [tok.strip().strip("'\"").strip() for tok in match.group(1).split(",")]
        fallback.append([tok for tok in tokens if tok])
    for match in _STRING_VALUE_RE.finditer(text):
        try:
            fallback.append(list(_split_string(match.group(2))))
        except _NotABundle:
            continue
    fallback = [raw for raw in fallback if raw]
    if fallback and (not _finalize(fallback, n_items).failed or first is None):
        return fallback
    return first


def parse_bundles(text: str, n_items: int) -> ParseResult:
    """Parse an LLM answer into bundles of 0-based positions in a session of ``n_items``
    (the bundles :func:`select_raw_bundles` picks, cleaned up)."""
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if not isinstance(text, str) or not text.strip():
        return ParseResult(failed=True, reason="empty answer")
    # A reasoning answer ("Reasoning: ... Answer: [[1, 2]]"): product numbers in the reasoning are
    # not the answer, so only what follows the last answer mark is read.
    mark = text.rfind(ANSWER_MARK)
    if mark >= 0:
        text = text[mark + len(ANSWER_MARK):]
    raw = select_raw_bundles(text, n_items)
    if raw is None:
        return ParseResult(failed=True, reason="no JSON/dict found")
    return _finalize(raw, n_items)


_TAG_RE = re.compile(r"(\d{1,3})\s*:\s*([A-Za-z]|-)")


def parse_tags(text: str, n_items: int) -> ParseResult:
    """Parse a tags answer (``1:A 2:A 3:- 4:B``): products sharing a letter form a bundle.

    Only what follows the last answer mark is read (a reasoning answer). A product labelled twice
    keeps its first label; numbers outside the session are dropped and counted.
    """
    if not isinstance(text, str) or not text.strip():
        return ParseResult(failed=True, reason="empty answer")
    mark = text.rfind(ANSWER_MARK)
    if mark >= 0:
        text = text[mark + len(ANSWER_MARK):]
    labels: dict[int, str] = {}
    out_of_range = duplicates = 0
    for number, label in _TAG_RE.findall(text[:MAX_CHARS]):
        position = int(number) - 1
        if not 0 <= position < n_items:
            out_of_range += 1
        elif position in labels:
            duplicates += 1
        elif label != "-":
            labels[position] = label.upper()
    if not labels and not _TAG_RE.search(text[:MAX_CHARS]):
        return ParseResult(failed=True, reason="no product labels found")
    groups: dict[str, list[int]] = {}
    for position, label in sorted(labels.items()):
        groups.setdefault(label, []).append(position)
    result = _finalize([[p + 1 for p in g] for g in groups.values()], n_items)  # _finalize reads 1-based numbers
    result.dropped_out_of_range += out_of_range
    result.dropped_duplicates += duplicates
    return result


def parse_answer(text: str, n_items: int, answer_format: str = "aicl") -> ParseResult:
    """Parse an answer in the given prompt format (``tags``, or the dict/list formats)."""
    return parse_tags(text, n_items) if answer_format == "tags" else parse_bundles(text, n_items)
