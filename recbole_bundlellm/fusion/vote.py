"""Inference-time enhancement: a bundle-level vote over K answers for one session.

K answers (sampled at a temperature, or one per expert) disagree where the student is unsure; a
bundle that many of them give exactly is more likely right than any one answer. The vote keeps
the bundles that at least ``threshold`` of the K answers contain, resolving overlaps (an item
belongs to one bundle) deterministically.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from recbole_bundlellm.settings import check_row

Bundle = frozenset[Hashable]
#: One parsed answer: its bundles (any iterables of item ids), or ``None`` when it did not parse.
Answer = Sequence[Iterable[Hashable]] | None


@dataclass(frozen=True)
class VoteResult:
    """The outcome of :func:`vote`: ``bundles`` (``None``: no answer parsed); ``support`` how
    many answers contain each kept bundle exactly; ``fallback`` the index of the answer taken
    whole when no bundle passed the threshold (else ``None``); ``parsed`` the answers that parsed."""

    bundles: list[Bundle] | None
    support: tuple[int, ...] = ()
    fallback: int | None = None
    parsed: int = 0


def _key(bundle: Bundle) -> tuple[str, ...]:
    # Item ids are strings in this project; str() keeps any hashable id sortable.
    return tuple(sorted(map(str, bundle)))


def _pairs(bundles: set[Bundle]) -> set[tuple[str, str]]:
    """The item pairs an answer puts in one bundle (its partial agreement with another answer)."""
    return {pair for bundle in bundles for pair in combinations(_key(bundle), 2)}


def vote(answers: Sequence[Answer], threshold: float = 0.5) -> VoteResult:
    """The bundles at least ``threshold`` (0 < threshold <= 1) of ``answers`` contain.

    - Support counts exact matches: a bundle counts for an answer that has exactly its items
      (order free; a bundle repeated in one answer counts once). The share is over all K answers,
      unparsable ones (``None``) included: they voted for nothing.
    - Overlaps: candidates are taken by higher support, then larger bundle, then sorted item ids;
      a candidate sharing an item with a bundle already kept is dropped.
    - Fallback: when no bundle passes, the parsed answer that agrees most with the others is
      taken whole: most bundles shared exactly with the other answers, then most item pairs
      bundled together in both, then the earliest answer.
    - No parsed answer: ``bundles`` is ``None`` (the session failed).
    """
    check_row("vote_threshold", threshold)  # the key's ranges.yaml row: a caller may pass any number
    sets = [None if a is None else {frozenset(b) for b in a} for a in answers]
    parsed = [(i, s) for i, s in enumerate(sets) if s is not None]
    if not parsed:
        return VoteResult(None)
    support = Counter(b for _, s in parsed for b in s)
    # A tolerance so that e.g. 0.6 of 5 answers needs 3, whatever 0.6 * 5 rounds to in floats.
    needed = threshold * len(answers) - 1e-9
    candidates = sorted((b for b, n in support.items() if n >= needed),
                        key=lambda b: (-support[b], -len(b), _key(b)))
    kept: list[Bundle] = []
    used: set[Hashable] = set()
    for bundle in candidates:
        if used.isdisjoint(bundle):
            kept.append(bundle)
            used |= bundle
    if kept:
        return VoteResult(kept, tuple(support[b] for b in kept), None, len(parsed))

    def agreement(entry: tuple[int, set[Bundle]]) -> tuple[int, int, int]:
        index, own = entry
        others = [s for j, s in parsed if j != index]
        shared = sum(len(own & s) for s in others)
        pairs = _pairs(own)
        return shared, sum(len(pairs & _pairs(s)) for s in others), -index

    index, _ = max(parsed, key=agreement)
    chosen = [frozenset(b) for b in answers[index] or ()]
    # An answer's own repeats and overlaps are kept as it gave them: the fallback is one answer.
    return VoteResult(chosen, tuple(support[b] for b in chosen), index, len(parsed))


__all__ = ["Answer", "Bundle", "VoteResult", "vote"]
