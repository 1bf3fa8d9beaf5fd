"""The contract of a sampler plugin: which training sessions' knowledge to keep, at a ratio.

Samplers choose *sessions*; the extractors' ``aggregate`` then turns the chosen sessions' stored
records into knowledge items. Choosing sessions (not items) keeps every knowledge type of a
selection consistent, and lets one selection be reused across types and formats.

Register a subclass through the ``register_samplers`` hook.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.settings import Component

MIN_RATIO, MAX_RATIO = 0.1, 0.7


class SamplerError(BundleLLMError, RuntimeError):
    """A sampler's ``select`` broke its contract (ids that are not strings, not of the given
    sessions, repeated, or too few): the plugin's to fix."""


@dataclass(frozen=True)
class SamplingContext:
    """What a sampler may look at.

    ``difficulty`` maps session ids to a difficulty in [0, 1] (1 = hardest), given by the
    extractors that provide one (the rules extractor: the teacher's first answer), else measured
    with the Freq baseline; see :func:`recbole_bundlellm.sampling.difficulty.session_difficulty`.
    ``rng`` is seeded by the caller so every sampler is deterministic under a seed.
    """

    sessions: Sequence[Session]
    rng: random.Random
    difficulty: Mapping[str, float] = field(default_factory=dict)


def sample_size(n_sessions: int, ratio: float) -> int:
    """How many of ``n_sessions`` a ratio keeps (at least one, rounded to nearest)."""
    if not MIN_RATIO <= ratio <= MAX_RATIO:
        raise ValueError(f"sampling ratio must be between {MIN_RATIO} and {MAX_RATIO}, got {ratio}")
    return max(1, min(n_sessions, round(ratio * n_sessions)))


class Sampler(Component, ABC):
    """Base class of samplers: ``name`` (also the YAML key of its settings), ``description``,
    ``Settings`` (a dataclass with defaults) and ``needs_difficulty``."""

    #: True when :meth:`select` reads ``context.difficulty`` (the caller then computes it).
    needs_difficulty: ClassVar[bool] = False

    @abstractmethod
    def select(self, context: SamplingContext, size: int) -> list[str]:
        """Exactly ``size`` distinct session ids from ``context.sessions``, deterministic given
        ``context.rng``'s seed."""
