"""Floors: bundle predictors that use no label and no model.

No single floor is weakest everywhere: splitting a session into pairs wins the reference
metrics, the whole session wins exact F1 and best Jaccard. A method has learned something
about bundles only where it beats all of them (see the metric note in the README).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.models.base import BundleGenerator, BundlePrediction


def _pairs(order: Sequence[int]) -> list[tuple[int, ...]]:
    # An odd last item stays alone and is dropped by the metrics, like any 1-item bundle.
    return [tuple(sorted(order[i : i + 2])) for i in range(0, len(order) - 1, 2)]


def whole_session(n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    return [tuple(range(n))]


def first_two(n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    return [(0, 1)]


def adjacent_pairs(n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    return _pairs(list(range(n)))


def random_pairs(n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    return _pairs([int(i) for i in rng.permutation(n)])


FLOOR_RULES: dict[str, Callable[[int, np.random.Generator], list[tuple[int, ...]]]] = {
    "whole_session": whole_session,
    "first_two": first_two,
    "adjacent_pairs": adjacent_pairs,
    "random_pairs": random_pairs,
}


class Floor(BundleGenerator):
    """Applies one rule of :data:`FLOOR_RULES` to every session."""

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        rule = config["floor_rule"]
        if rule not in FLOOR_RULES:
            raise ValueError(f"floor_rule '{rule}' is not one of {sorted(FLOOR_RULES)}")
        self.rule = FLOOR_RULES[rule]

    def generate_bundles(self, sessions: Sequence[Session]) -> list[BundlePrediction]:
        rng = np.random.default_rng(self.config["floor_seed"])
        return [
            BundlePrediction(s.session_id, [tuple(s.item_ids[i] for i in b) for b in self.rule(len(s), rng)])
            for s in sessions
        ]
