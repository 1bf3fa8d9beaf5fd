"""Paired significance over sessions: does method A score differently from method B on the same
test sessions? Pure numpy (no RecBole, no torch).

The unit is the test session: both methods answered the same sessions, so the per-session scores
pair up, and the question is whether the mean of the differences is zero. The test is a
two-sided sign-flip permutation test: under "no difference" each session's difference is as
likely to have either sign, so the observed mean is compared with the means of every (or, for
many sessions, of many random) sign flips. It assumes no distribution and handles the many
sessions both methods score 0 (their difference is 0 and never moves the statistic), where the
Wilcoxon signed-rank test must pick a convention for zeros and ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Up to this many sessions every sign flip is enumerated (2**16 of them): the p-value is exact.
EXACT_MAX_SESSIONS = 16


@dataclass(frozen=True)
class PairedTest:
    """A paired test's outcome: ``mean_difference`` is mean(a - b) over ``n`` sessions."""

    n: int
    mean_difference: float
    p_value: float
    exact: bool


def paired_permutation_test(a: Sequence[float], b: Sequence[float], *, permutations: int = 10_000,
                            seed: int = 0) -> PairedTest:
    """Two-sided sign-flip permutation test of mean(a - b) = 0 over paired values.

    Exact (every sign vector) for at most :data:`EXACT_MAX_SESSIONS` pairs; otherwise
    ``permutations`` random sign vectors from a generator seeded with ``seed`` (so a table is
    reproducible) and p = (1 + #{|flipped mean| >= |observed mean|}) / (1 + permutations), which
    never reports 0. No pairs: p is NaN. All differences 0: p = 1.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} values paired with {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(diff)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, True)
    observed = abs(diff.mean())
    if not np.any(diff):
        return PairedTest(n, 0.0, 1.0, True)
    # Floating sums of the same terms in another order can differ in the last bits: a flip that
    # reproduces the observed statistic must count as "as extreme".
    tolerance = 1e-12 * max(1.0, float(np.abs(diff).sum()))
    if n <= EXACT_MAX_SESSIONS:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        flipped = np.abs(signs @ diff) / n
        p = float(np.mean(flipped >= observed - tolerance))
        return PairedTest(n, float(diff.mean()), p, True)
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, permutations, 2048):  # blocks keep the sign matrix small
        size = min(2048, permutations - start)
        signs = rng.choice((-1.0, 1.0), size=(size, n))
        extreme += int(np.sum(np.abs(signs @ diff) / n >= observed - tolerance))
    return PairedTest(n, float(diff.mean()), (1 + extreme) / (1 + permutations), False)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order; NaN stays NaN and is not counted).

    A table that tests many rows against one reference would otherwise flag about one row in
    twenty as "significant" by chance; Holm keeps the chance of any false flag below the level.
    """
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))  # adjusted values never decrease
        adjusted[i] = running
    return adjusted
