"""Plugin ``patterns``: frequent category patterns of training bundles (no teacher).

Per session the extractor stores each ground-truth bundle as a transaction of its items' leaf
categories; ``aggregate`` mines the transactions of the selected sessions with mlxtend Apriori
(:func:`~recbole_bundlellm.knowledge.frequent_patterns.mine_patterns`, as the Freq baseline does) and
renders each pattern as one sentence a prompt can carry, e.g.::

    Products of the categories 'Cases' and 'Screen Protectors' are often bought together in one
    bundle (support 2.9%, confidence 50%).

Support is the share of transactions (bundles) holding every category of the pattern;
confidence that of the pattern's best rule ``A -> pattern \\ A``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.frequent_patterns import bundle_transactions, mine_patterns
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.knowledge.extractor import (
    Extraction,
    KnowledgeExtractor,
    Teacher,
)
from recbole_bundlellm.knowledge.records import KnowledgeItem, KnowledgeRecord
from recbole_bundlellm.settings import ranged

PROMPT_VERSION = "patterns-v1"


@dataclass(frozen=True)
class PatternsSettings:
    """Settings of the ``patterns`` YAML key.

    ``min_support`` 0.01 keeps the 11 best patterns of Electronic's 949 training bundles (0.005:
    47, 0.02: 1). ``min_count`` guards small samples: a pattern needs at least that many
    transactions whatever the ratio (at a 10 % sample, 1 % support is a single bundle).
    """

    min_support: float = ranged(0.01, above=0, max=1)  # (float) minimum share of bundles holding the pattern
    min_count: int = ranged(2, min=1)  # (int) minimum number of bundles holding the pattern
    min_confidence: float = ranged(0.3, min=0, max=1)  # (float) minimum confidence of the pattern's best rule
    min_size: int = 2  # (int) fewest categories in a pattern (>= 2)
    max_size: int = 5  # (int) most categories in a pattern (<= 5)
    max_items: int = ranged(20, min=1)  # (int) how many statements aggregate returns, best first

    def validate(self) -> None:
        """The sizes together (one message for the chain); the ranged fields are checked before."""
        if not 2 <= self.min_size <= self.max_size <= 5:
            raise ValueError(f"pattern sizes must satisfy 2 <= min_size <= max_size <= 5, "
                             f"got min_size={self.min_size}, max_size={self.max_size}")


def _quoted_list(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def render_pattern(categories: Sequence[str], support: float, confidence: float) -> str:
    """One pattern as a sentence (categories in the given order)."""
    return (f"Products of the categories {_quoted_list(categories)} are often bought together in one bundle "
            f"(support {support:.1%}, confidence {confidence:.0%}).")


class PatternsExtractor(KnowledgeExtractor):
    """Frequent leaf-category patterns of ground-truth bundles, as prompt statements."""

    name: ClassVar[str] = "patterns"
    description: ClassVar[str] = "frequent category patterns of training bundles (mlxtend Apriori)"
    version: ClassVar[str] = PROMPT_VERSION
    Settings: ClassVar[type] = PatternsSettings
    needs_teacher: ClassVar[bool] = False

    def extract_session(self, session: Session, teacher: Teacher | None = None) -> Extraction:
        """``{"transactions": [[leaf category of each item of a bundle], ...]}`` (bundle order)."""
        if not session.bundles:
            return Extraction.failed("session has no ground-truth bundle")
        if len(session.categories) != len(session.item_ids):
            return Extraction.failed("session has no item categories (add `category` to load_col['item'])")
        transactions = bundle_transactions(session)
        text = "; ".join(" + ".join(t) for t in transactions)
        return Extraction("ok", {"transactions": transactions}, text)

    def aggregate(self, records: Sequence[KnowledgeRecord], domain: str) -> list[KnowledgeItem]:
        """Mine the transactions of the ``ok`` records; the ``max_items`` best patterns as items."""
        s = self.settings
        transactions = [list(t) for r in records if r.ok for t in r.content.get("transactions", []) if t]
        if not transactions:
            return []
        n = len(transactions)
        patterns = mine_patterns(transactions, min_support=max(s.min_support, s.min_count / n),
                                 min_confidence=s.min_confidence, min_size=s.min_size, max_size=s.max_size)
        items = []
        for pattern in patterns[: s.max_items]:
            categories = sorted(pattern.categories)
            items.append(KnowledgeItem(
                kind=self.name,
                domain=domain,
                text=render_pattern(categories, pattern.support, pattern.confidence),
                support=pattern.support,
                data={"categories": categories, "support": pattern.support, "confidence": pattern.confidence,
                      "count": round(pattern.support * n), "n_transactions": n},
                scope="categories",  # shown to a session holding all its categories
                heading="Frequent patterns",
            ))
        return items


@hookimpl
def register_knowledge_extractors(register: Callable[[type[KnowledgeExtractor]], None]) -> None:
    register(PatternsExtractor)
