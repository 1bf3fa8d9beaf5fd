"""Freq: the classical frequent-pattern bundle baseline, as a RecBole model.

Training mines the frequent leaf-category patterns of the training bundles; generation matches
them greedily in each session (both in :mod:`recbole_bundlellm.knowledge.frequent_patterns`). The mining
settings are the ``freq_*`` keys of ``Freq.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.frequent_patterns import (
    CategoryPattern,
    MiningSettings,
    bundle_transactions,
    mine_patterns,
    predict_bundles,
)
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction


def mining_settings(config: Any) -> MiningSettings:
    """The mining settings of a Freq configuration: its ``freq_*`` keys (``config`` is a RecBole
    ``Config`` or a dict)."""
    return MiningSettings(
        min_support=config["freq_min_support"],
        min_confidence=config["freq_min_confidence"],
        min_size=config["freq_min_size"],
        max_size=config["freq_max_size"],
    )


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
        self.patterns = mine_patterns(transactions, **asdict(mining_settings(self.config)))

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
