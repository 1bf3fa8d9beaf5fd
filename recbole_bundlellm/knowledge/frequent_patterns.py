"""Frequent category patterns of bundles: Apriori mining and greedy matching.

Mining: each bundle is a transaction of its items' leaf categories; mlxtend Apriori finds the
frequent category patterns (sizes ``min_size``..``max_size``), ranked best first.
Matching: patterns are tried from the most supported down (larger first on ties); a pattern
whose every category is carried by a still-unassigned session item turns all those items into
one bundle. Bundles are therefore disjoint, which is how most ground-truth bundles look.

Used by the Freq model, the ``patterns`` extractor and the difficulty fallback of sampling, so
this module sits low in the import graph (it imports only :mod:`recbole_bundlellm.data`), and
pandas and mlxtend are imported only when mining.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from recbole_bundlellm.data.sessions import Session


@dataclass(frozen=True)
class CategoryPattern:
    """A frequent set of leaf categories, with its support and its best rule's confidence."""

    categories: frozenset[str]
    support: float
    confidence: float


@dataclass(frozen=True)
class MiningSettings:
    """The arguments of :func:`mine_patterns` (see there)."""

    min_support: float
    min_confidence: float
    min_size: int
    max_size: int


#: Freq's defaults. ``models/baselines/Freq.yaml`` states the same values as ``freq_*`` keys (a test checks
#: they agree); the difficulty fallback of sampling mines with them without reading the YAML.
FREQ_DEFAULTS = MiningSettings(min_support=0.001, min_confidence=0.001, min_size=2, max_size=5)


def mine_patterns(
    transactions: Sequence[Sequence[str]],
    *,
    min_support: float,
    min_confidence: float,
    min_size: int,
    max_size: int,
) -> list[CategoryPattern]:
    """Frequent category patterns, best first (support desc, then size desc, then name)."""
    rows = [sorted(set(t)) for t in transactions if t]
    if not rows:
        return []
    import pandas as pd

    with warnings.catch_warnings():
        # mlxtend's fpcommon calls warnings.simplefilter("always", DeprecationWarning) at import,
        # which would flood every later run with other libraries' deprecation notices.
        from mlxtend.frequent_patterns import apriori
        from mlxtend.preprocessing import TransactionEncoder

    encoder = TransactionEncoder()
    onehot = pd.DataFrame(encoder.fit(rows).transform(rows), columns=encoder.columns_)
    frequent = apriori(onehot, min_support=min_support, use_colnames=True, max_len=max_size)
    support = {frozenset(s): float(v) for s, v in zip(frequent["itemsets"], frequent["support"])}
    patterns = []
    for items, sup in support.items():
        if len(items) < min_size:
            continue
        # The most confident rule A -> P\A has the least supported antecedent, which (support
        # being anti-monotone) is one of the (|P|-1)-subsets, all frequent by Apriori.
        conf = max(sup / support[items - {c}] for c in items)
        if conf >= min_confidence:
            patterns.append(CategoryPattern(items, sup, conf))
    patterns.sort(key=lambda p: (-p.support, -len(p.categories), sorted(p.categories)))
    return patterns


def bundle_transactions(session: Session) -> list[list[str]]:
    """The leaf categories of each ground-truth bundle of ``session`` (items in session order,
    so the result does not depend on set iteration). Needs ``session.categories``."""
    category_of = dict(zip(session.item_ids, session.categories))
    return [[category_of[i] for i in session.in_session_order(bundle)] for bundle in session.bundles]


def predict_bundles(session: Session, patterns: Sequence[CategoryPattern]) -> list[tuple[str, ...]]:
    """The bundles ``patterns`` form in ``session``, as item ids (empty when none matches)."""
    return [tuple(session.item_ids[i] for i in b) for b in bundle_by_patterns(session.categories, patterns)]


def bundle_by_patterns(categories: Sequence[str], patterns: Sequence[CategoryPattern]) -> list[tuple[int, ...]]:
    """Disjoint bundles (session positions) formed greedily by the given patterns."""
    free = set(range(len(categories)))
    present = set(categories)
    bundles = []
    for pattern in patterns:
        if not pattern.categories <= present:
            continue
        members = tuple(i for i in sorted(free) if categories[i] in pattern.categories)
        if {categories[i] for i in members} == pattern.categories:
            bundles.append(members)
            free -= set(members)
            present = {categories[i] for i in free}
    return bundles


__all__ = ["FREQ_DEFAULTS", "CategoryPattern", "MiningSettings", "bundle_by_patterns", "bundle_transactions",
           "mine_patterns", "predict_bundles"]
