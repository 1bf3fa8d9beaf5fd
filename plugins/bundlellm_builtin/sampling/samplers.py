"""Plugin ``samplers``: the built-in samplers (random, length, diversity, difficulty).

Every sampler returns exactly ``size`` distinct session ids in a deterministic order. The only
source of randomness is ``context.rng`` (seeded by the caller), and candidates are first put in
a canonical order (numeric ids numerically, then the rest by string), so a selection depends on
the *set* of sessions and the seed, not on the order the sessions were handed over in.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from recbole_bundlellm.data.sessions import Session, session_id_order
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.sampling.sampler import Sampler, SamplingContext


def _candidates(context: SamplingContext, size: int) -> list[Session]:
    """The sessions in canonical id order, after checking ids are distinct and ``size`` fits."""
    sessions = sorted(context.sessions, key=lambda s: session_id_order(s.session_id))
    for a, b in pairwise(sessions):
        if a.session_id == b.session_id:
            raise ValueError(f"session id '{a.session_id}' occurs more than once among the sessions to sample")
    if not 0 <= size <= len(sessions):
        raise ValueError(f"cannot select {size} of {len(sessions)} sessions")
    return sessions


def _tiebreak_ranks(sessions: Sequence[Session], context: SamplingContext) -> dict[str, int]:
    """A seeded random permutation of the sessions, as a rank per id: the tie-breaker."""
    ids = [s.session_id for s in sessions]
    context.rng.shuffle(ids)
    return {sid: rank for rank, sid in enumerate(ids)}


class RandomSampler(Sampler):
    """Uniform sample without replacement."""

    name = "random"
    description = "uniform random sample of sessions"

    def select(self, context: SamplingContext, size: int) -> list[str]:
        sessions = _candidates(context, size)
        return context.rng.sample([s.session_id for s in sessions], size)


class LengthSampler(Sampler):
    """Sessions by number of items (longest or shortest first), ties in seeded random order."""

    @dataclass(frozen=True)
    class Settings:
        order: Literal["longest", "shortest"] = "longest"

    name = "length"
    description = "sessions by length (longest or shortest first)"

    def select(self, context: SamplingContext, size: int) -> list[str]:
        sessions = _candidates(context, size)
        rank = _tiebreak_ranks(sessions, context)
        sign = -1 if self.settings.order == "longest" else 1
        ordered = sorted(sessions, key=lambda s: (sign * len(s), rank[s.session_id]))
        return [s.session_id for s in ordered[:size]]


def _normalise_intent(intent: str) -> str:
    return " ".join(intent.lower().split())


def coverage_elements(session: Session, by: str) -> frozenset[tuple[str, str]]:
    """What a session covers for the diversity sampler.

    Categories are those of the items inside the session's ground-truth bundles (the items the
    knowledge is extracted from: patterns, rules and thoughts all describe bundles); a session
    without bundle labels falls back to the categories of all its items. Intents are lowercased
    with whitespace collapsed; empty ones are ignored. Elements are tagged ``("category", c)`` /
    ``("intent", i)`` so a category and an intent with the same text stay distinct.
    """
    out: set[tuple[str, str]] = set()
    if by in ("categories", "both") and session.categories:
        category_of = dict(zip(session.item_ids, session.categories))
        bundled = {i for bundle in session.bundles for i in bundle}
        cats = [category_of[i] for i in bundled if i in category_of] if bundled else list(session.categories)
        out.update(("category", c) for c in cats if c)
    if by in ("intents", "both"):
        out.update(("intent", n) for n in map(_normalise_intent, session.intents) if n)
    return frozenset(out)


class DiversitySampler(Sampler):
    """Greedy maximum coverage of bundle categories and/or intents.

    Repeatedly takes the session adding the most not-yet-covered elements (see
    :func:`coverage_elements`), ties in seeded random order; once nothing new can be covered the
    rest is filled in that same seeded random order.
    """

    @dataclass(frozen=True)
    class Settings:
        by: Literal["categories", "intents", "both"] = "both"

    name = "diversity"
    description = "greedy maximum coverage of bundle categories and intents"

    def select(self, context: SamplingContext, size: int) -> list[str]:
        sessions = _candidates(context, size)
        rank = _tiebreak_ranks(sessions, context)
        elements = {s.session_id: coverage_elements(s, self.settings.by) for s in sessions}
        # Lazy greedy: coverage gains only shrink as more is covered (submodularity), so a stale
        # gain is an upper bound; an entry whose recomputed gain equals its stored gain is the
        # maximum of (gain, -rank), exactly what the plain greedy would pick, in O(n log n)-ish.
        heap = [(-len(elements[sid]), rank[sid], sid) for sid in rank]
        heapq.heapify(heap)
        covered: set[Hashable] = set()
        chosen: list[str] = []
        while heap and len(chosen) < size:
            neg_gain, r, sid = heap[0]
            gain = len(elements[sid] - covered)
            if gain == -neg_gain:
                if gain == 0:
                    break  # the largest bound is 0: nothing new can be covered any more
                heapq.heappop(heap)
                chosen.append(sid)
                covered |= elements[sid]
            else:
                heapq.heapreplace(heap, (-gain, r, sid))
        if len(chosen) < size:
            taken = set(chosen)
            rest = sorted((sid for sid in rank if sid not in taken), key=rank.__getitem__)
            chosen.extend(rest[: size - len(chosen)])
        return chosen


class DifficultySampler(Sampler):
    """Sessions by difficulty (``context.difficulty``: 1 = hardest), ties in seeded random order.

    Sessions without a difficulty value come last (in seeded random order).
    """

    @dataclass(frozen=True)
    class Settings:
        order: Literal["hardest", "easiest"] = "hardest"

    name = "difficulty"
    description = "sessions by teacher (or Freq baseline) difficulty, hardest or easiest first"
    #: tells the composer to measure difficulty when none is given (see sampling.compose)
    needs_difficulty = True

    def select(self, context: SamplingContext, size: int) -> list[str]:
        if not context.difficulty:
            raise ValueError("the 'difficulty' sampler needs session difficulties, but none were given "
                             "(compute them with recbole_bundlellm.sampling.difficulty.session_difficulty)")
        sessions = _candidates(context, size)
        rank = _tiebreak_ranks(sessions, context)
        sign = -1.0 if self.settings.order == "hardest" else 1.0

        def key(s: Session) -> tuple[int, float, int]:
            value = context.difficulty.get(s.session_id)
            if value is None or not math.isfinite(float(value)):
                return (1, 0.0, rank[s.session_id])
            return (0, sign * float(value), rank[s.session_id])

        return [s.session_id for s in sorted(sessions, key=key)[:size]]


SAMPLERS: tuple[type[Sampler], ...] = (RandomSampler, LengthSampler, DiversitySampler, DifficultySampler)


@hookimpl
def register_samplers(register: Callable[[type[Sampler]], None]) -> None:
    for sampler in SAMPLERS:
        register(sampler)
