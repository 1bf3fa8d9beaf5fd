"""AICL feedback: a teacher's answer judged against a session's ground truth, bundle by bundle.

Each predicted bundle is compared with the ground-truth bundle it overlaps best (highest Jaccard;
the first one on ties) and gets one or more labels:

* ``correct`` — equal to that ground-truth bundle;
* ``single_product`` — fewer than two distinct products;
* ``invalid`` — refers to a product that does not exist (a number outside the session, or an
  entry that is no product reference at all);
* ``missing_products`` — overlaps its ground-truth bundle but lacks some of its products;
* ``irrelevant_products`` — contains products outside its ground-truth bundle (a bundle that
  overlaps no ground-truth bundle is all irrelevant). A bundle can be missing *and* irrelevant.

An answer that yields no bundle at all is ``invalid`` as a whole. Ground-truth bundles that no
valid predicted bundle overlaps are reported too. Positions are 0-based everywhere; the rendered
message numbers products from 1, as the prompt does (``product1`` is position 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.evaluation.bundle_metrics import session_exact_f1
from recbole_bundlellm.generation import parser as _parser
from recbole_bundlellm.generation.parser import select_raw_bundles

Label = Literal["correct", "single_product", "invalid", "missing_products", "irrelevant_products"]
#: A predicted bundle as written: 0-based positions (possibly out of range), or the text of an
#: entry that is no product reference.
RawBundle = tuple[int | str, ...]


@dataclass(frozen=True)
class BundleFeedback:
    """The verdict on one predicted bundle (``number`` is its 1-based place in the answer)."""

    number: int
    products: RawBundle
    labels: tuple[Label, ...]
    truth_index: int | None = None  # the best-overlapping ground-truth bundle (0-based)
    jaccard: float = 0.0
    missing: tuple[int, ...] = ()  # positions of its ground-truth bundle it lacks
    irrelevant: tuple[int, ...] = ()  # its positions outside that ground-truth bundle
    invalid: RawBundle = ()  # its entries that are no product of the session


@dataclass
class SessionFeedback:
    """Feedback on one answer: ``parsed`` is False when no bundle could be read at all."""

    parsed: bool
    bundles: list[BundleFeedback] = field(default_factory=list)
    unmatched_truth: list[tuple[int, ...]] = field(default_factory=list)  # no prediction overlaps them

    @property
    def all_correct(self) -> bool:
        return self.parsed and not self.unmatched_truth and all(b.labels == ("correct",) for b in self.bundles)

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for bundle in self.bundles:
            for label in bundle.labels:
                counts[label] = counts.get(label, 0) + 1
        if not self.parsed:
            counts["invalid"] = counts.get("invalid", 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (tuples as lists), so a record's content equals what the store reads back."""
        out = json.loads(json.dumps(asdict(self)))
        out["all_correct"] = self.all_correct
        return out


def truth_positions(session: Session) -> list[tuple[int, ...]]:
    """The ground-truth bundles of ``session`` as sorted 0-based positions (as in ``answer_dict``)."""
    return [tuple(sorted(session.positions[i] for i in bundle)) for bundle in session.bundles]


def answer_bundles(text: str, n_items: int) -> list[RawBundle] | None:
    """The bundles of an answer *as written*, for feedback; ``None`` when it holds none at all.

    The parser's own choice of bundles (:func:`~recbole_bundlellm.generation.parser.select_raw_bundles`),
    so feedback reads an answer exactly as the metrics do, but keeping what the metrics drop:
    bundles of one product, numbers outside the session (as out-of-range positions) and entries
    that are no product reference (as their text), so the feedback can name them.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    raw = select_raw_bundles(text, n_items)
    return _as_raw(raw) if raw else None


def _as_raw(raw_bundles: list[list[object]]) -> list[RawBundle]:
    out: list[RawBundle] = []
    for raw in raw_bundles:
        entries: list[int | str] = []
        for token in raw:
            number = _parser._token_number(token)
            entry: int | str = number - 1 if number is not None else str(token)[:40]
            if entry not in entries:  # a product listed twice is still one product
                entries.append(entry)
        if entries:
            out.append(tuple(entries))
    return out


def compute_feedback(pred: Sequence[Sequence[int | str]] | None, truth: Sequence[Sequence[int]],
                     n_items: int) -> SessionFeedback:
    """Judge predicted bundles (0-based positions, as written) against the ground truth.

    ``pred`` is ``None`` for an answer in which no bundle could be read (the whole answer is
    invalid). ``truth`` holds the ground-truth bundles as 0-based positions.
    """
    truth_sets = [frozenset(g) for g in truth]
    if pred is None:
        return SessionFeedback(False, [], [tuple(sorted(g)) for g in truth_sets])
    verdicts: list[BundleFeedback] = []
    overlapped: set[int] = set()
    for number, raw in enumerate(pred, start=1):
        products = tuple(raw)
        invalid = tuple(p for p in products if not (isinstance(p, int) and 0 <= p < n_items))
        if invalid:
            verdicts.append(BundleFeedback(number, products, ("invalid",), invalid=invalid))
            continue
        p = frozenset(products)  # only ints in range from here on
        if len(p) < 2:
            verdicts.append(BundleFeedback(number, products, ("single_product",)))
            continue
        best, best_j = None, 0.0
        for index, g in enumerate(truth_sets):
            j = len(p & g) / len(p | g)
            if j > best_j:  # strict: the first best on ties
                best, best_j = index, j
        if best is None:  # overlaps no ground-truth bundle: every product is irrelevant
            verdicts.append(BundleFeedback(number, products, ("irrelevant_products",),
                                           irrelevant=tuple(sorted(p))))
            continue
        overlapped.update(i for i, g in enumerate(truth_sets) if p & g)
        g = truth_sets[best]
        missing, irrelevant = tuple(sorted(g - p)), tuple(sorted(p - g))
        labels: tuple[Label, ...] = tuple(
            label for label, present in (("missing_products", missing), ("irrelevant_products", irrelevant)) if present
        ) or ("correct",)
        verdicts.append(BundleFeedback(number, products, labels, best, best_j, missing, irrelevant))
    unmatched = [tuple(sorted(g)) for i, g in enumerate(truth_sets) if i not in overlapped]
    return SessionFeedback(True, verdicts, unmatched)


def feedback_for_answer(text: str, session: Session) -> SessionFeedback:
    """:func:`compute_feedback` of a raw answer text against ``session``'s ground truth."""
    n_items = len(session.item_ids)
    return compute_feedback(answer_bundles(text, n_items), truth_positions(session), n_items)


def _name(entry: int | str) -> str:
    return f"product{entry + 1}" if isinstance(entry, int) else repr(entry)


def _names(entries: Sequence[int | str]) -> str:
    return ", ".join(_name(e) for e in entries)


def render_feedback(feedback: SessionFeedback, *, closing: str = "Please revise your answer.") -> str:
    """The feedback as a short natural-language user message (products numbered from 1)."""
    if not feedback.parsed:
        lines = ["Your answer is invalid: no bundle of listed products could be read from it."]
    elif not feedback.bundles:
        lines = ["Your answer contains no bundle."]
    else:
        lines = []
        for b in feedback.bundles:
            head = f"Bundle {b.number}"
            if b.labels == ("correct",):
                lines.append(f"{head} is correct.")
            elif "invalid" in b.labels:
                lines.append(f"{head} is invalid: it refers to products that do not exist: {_names(b.invalid)}.")
            elif "single_product" in b.labels:
                lines.append(f"{head} has only one product; a bundle needs at least two.")
            else:
                parts = []
                if b.missing:
                    parts.append(f"misses products: {_names(b.missing)}")
                if b.irrelevant:
                    parts.append(f"contains irrelevant products: {_names(b.irrelevant)}")
                lines.append(f"{head} {' and '.join(parts)}.")
    if feedback.all_correct:
        return " ".join(lines + ["All bundles are correct."])
    for g in feedback.unmatched_truth:
        lines.append(f"You missed a bundle of these products: {_names(g)}.")
    if closing:
        lines.append(closing)
    return " ".join(lines)


exact_f1 = session_exact_f1  # one session's exact F1, as the metrics compute it
