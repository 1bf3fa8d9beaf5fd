"""Ground-truth bundles of a session and AICL's deduplication rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The rule of :func:`dedup_bundles`, in words, for the dataset card.
DEDUP_RULE = (
    "per session: of bundles with identical item sets keep the one with the longest "
    "raw intent (lowest bundle id on ties); then drop every bundle that is a strict "
    "superset of another bundle of the session"
)


@dataclass(frozen=True)
class Bundle:
    """One annotated bundle (raw ids); ``items`` in ``bundle_item.csv`` order."""

    bundle_id: int
    session_id: int
    items: tuple[int, ...]
    intent: str


@dataclass(frozen=True)
class DedupResult:
    """The bundles one session keeps, and how many each step of the rule removed."""

    kept: list[Bundle]
    identical_removed: int
    superset_removed: int


def dedup_bundles(bundles: Sequence[Bundle]) -> DedupResult:
    """AICL ground-truth deduplication of one session's bundles.

    1. Bundles with identical item sets: keep one. AICL's electronic file keeps the copy with
       the longest raw intent string (this reproduces all 19 cases); ties go to the lowest
       bundle id.
    2. Drop every bundle that is a strict superset of another remaining bundle.
    The kept bundles stay in bundle-id order, which is AICL's list order.
    """
    best: dict[frozenset[int], Bundle] = {}
    for bundle in sorted(bundles, key=lambda b: b.bundle_id):
        key = frozenset(bundle.items)
        held = best.get(key)
        if held is None or len(bundle.intent) > len(held.intent):
            best[key] = bundle
    unique = sorted(best.values(), key=lambda b: b.bundle_id)
    sets = [frozenset(b.items) for b in unique]
    kept = [b for b, s in zip(unique, sets) if not any(o < s for o in sets)]
    return DedupResult(
        kept=kept,
        identical_removed=len(bundles) - len(unique),
        superset_removed=len(unique) - len(kept),
    )
