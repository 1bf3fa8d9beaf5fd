"""Freq: the classical frequent-pattern bundle baseline.

Training: each training bundle becomes a transaction of its items' leaf categories; mlxtend
Apriori finds the frequent category patterns (sizes ``freq_min_size``..``freq_max_size``).
Generation: patterns are tried from the most supported down (larger first on ties); a
pattern whose every category is carried by a still-unassigned session item turns all those
items into one bundle. Bundles are therefore disjoint, which is how most ground-truth
bundles look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import warnings

import pandas as pd

with warnings.catch_warnings():
    # mlxtend's fpcommon calls warnings.simplefilter("always", DeprecationWarning) at import,
    # which would flood every later run with other libraries' deprecation notices.
    from mlxtend.frequent_patterns import apriori
    from mlxtend.preprocessing import TransactionEncoder

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction


@dataclass(frozen=True)
class CategoryPattern:
    categories: frozenset[str]
    support: float
    confidence: float


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
    position = {item: i for i, item in enumerate(session.item_ids)}
    return [[category_of[i] for i in sorted(bundle, key=position.__getitem__)] for bundle in session.bundles]


def predict_bundles(session: Session, patterns: Sequence[CategoryPattern]) -> list[tuple[str, ...]]:
    """Freq's bundles for ``session`` as item ids (empty when no pattern matches)."""
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


class Freq(BundleGenerator):
    """Frequent-pattern baseline over leaf categories."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.patterns: list[CategoryPattern] = []

    def fit_bundles(self, train_sessions: Sequence[Session]) -> None:
        transactions = []
        for session in train_sessions:
            if not session.categories:
                raise KeyError("Freq needs item categories: add `category` to load_col['item']")
            transactions += bundle_transactions(session)
        self.patterns = mine_patterns(
            transactions,
            min_support=self.config["freq_min_support"],
            min_confidence=self.config["freq_min_confidence"],
            min_size=self.config["freq_min_size"],
            max_size=self.config["freq_max_size"],
        )

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        out = []
        for session in sessions:
            bundles = predict_bundles(session, self.patterns)
            out.append(
                BundlePrediction(
                    session.session_id,
                    bundles,
                    failure=None if bundles else "no frequent pattern matches the session",
                )
            )
        return out
