"""Adaptation: how the student takes in distilled knowledge (in-context, fine-tuning, or both).

This module holds the contract that adaptation plugins implement; strategies register through
the ``register_adaptation_strategies`` hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet
from recbole_bundlellm.settings import Component


class AdaptationStrategy(Component, ABC):
    """Base class of adaptation strategies: ``name`` (also its YAML settings key),
    ``description`` and ``Settings`` (a dataclass with defaults)."""

    @abstractmethod
    def adapt(self, student: Any, knowledge: KnowledgeSet, train_sessions: Sequence[Session]) -> Any:
        """Make ``student`` use ``knowledge`` (e.g. build retrieval indexes, train LoRA adapters);
        returns the adapted student."""


__all__ = ["AdaptationStrategy"]
