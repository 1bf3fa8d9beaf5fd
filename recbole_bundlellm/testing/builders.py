"""Builders for a plugin's unit tests: knowledge items and sets, an adaptation context, a sampler call.

Each builds what the core would hand the plugin, with the defaults of the tiny dataset, so a
strategy's ``prepare`` / ``views`` or a sampler's ``select`` can be tested without a run or a
distillation. The core modules are imported when a builder is called (the kit stays cheap to import).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recbole_bundlellm.testing.data import TINY_DOMAIN

if TYPE_CHECKING:
    from recbole_bundlellm.adaptation.strategy import AdaptationContext, PromptMeasure, StudentView
    from recbole_bundlellm.data.sessions import Session
    from recbole_bundlellm.knowledge.records import KnowledgeItem
    from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet
    from recbole_bundlellm.sampling.sampler import Sampler, SamplingContext


def knowledge_item(kind: str, text: str, *, domain: str = TINY_DOMAIN, support: float | None = None,
                   **fields: Any) -> KnowledgeItem:
    """One :class:`~recbole_bundlellm.knowledge.records.KnowledgeItem` as an extractor's
    ``aggregate`` makes it (``fields``: ``session_id``, ``data``, ``scope``, ``heading``)."""
    from recbole_bundlellm.knowledge.records import KnowledgeItem

    return KnowledgeItem(kind, domain, text, support=support, **fields)


def knowledge_set(items: Iterable[KnowledgeItem], *, kinds: Sequence[str] | None = None,
                  domains: Sequence[str] | None = None) -> KnowledgeSet:
    """A :class:`~recbole_bundlellm.sampling.knowledge_set.KnowledgeSet` of ``items``; its kinds
    and domains default to the items' own, in order of first appearance."""
    from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet

    items = list(items)
    return KnowledgeSet(items, list(kinds) if kinds is not None else list(dict.fromkeys(i.kind for i in items)),
                        list(domains) if domains is not None else list(dict.fromkeys(i.domain for i in items)))


def word_measure(session: Session, view: StudentView) -> int:
    """A stand-in for the student's prompt measure: the words (not tokens) of the whole prompt of
    ``session`` seen through ``view``, in the default prompt format."""
    from recbole_bundlellm.generation.prompt import PromptStyle, view_messages

    return sum(len(m["content"].split()) for m in view_messages(session, view, PromptStyle()))


def adaptation_context(train_sessions: Sequence[Session], knowledge: KnowledgeSet | None = None, *,
                       measure: PromptMeasure | None = word_measure, max_prompt_tokens: int | None = None,
                       domain: str | None = TINY_DOMAIN, seed: int = 0, embed: Any = None) -> AdaptationContext:
    """The :class:`~recbole_bundlellm.adaptation.AdaptationContext` a strategy's ``prepare`` gets:
    training sessions (labels included), a knowledge set (``None``: raw data), the prompt
    measure (default :func:`word_measure`) and budget, the run's domain, seed and embedder."""
    from recbole_bundlellm.adaptation.strategy import AdaptationContext

    return AdaptationContext(list(train_sessions), knowledge, measure=measure, max_prompt_tokens=max_prompt_tokens,
                             embed=embed, seed=seed, domain=domain)


def sampling_context(sessions: Sequence[Session], *, seed: int | str = 0,
                     difficulty: Mapping[str, float] | None = None) -> SamplingContext:
    """The :class:`~recbole_bundlellm.sampling.sampler.SamplingContext` a sampler's ``select``
    gets (its ``rng`` seeded by ``seed``)."""
    from recbole_bundlellm.sampling.sampler import SamplingContext

    return SamplingContext(list(sessions), random.Random(seed), dict(difficulty or {}))


def sample(sampler: Sampler, sessions: Sequence[Session], *, ratio: float = 0.5, seed: int | str = 0,
           difficulty: Mapping[str, float] | None = None) -> list[str]:
    """The session ids ``sampler`` chooses from ``sessions`` at ``ratio``, called as distill calls
    it (the same seeded generator), with the same checks: string ids, distinct, of the given
    sessions, as many as asked (else a ``BundleLLMError`` naming the sampler)."""
    from recbole_bundlellm.sampling.compose import select_sessions

    return select_sessions(sampler, sessions, ratio, seed, difficulty)


__all__ = ["adaptation_context", "knowledge_item", "knowledge_set", "sample", "sampling_context", "word_measure"]
