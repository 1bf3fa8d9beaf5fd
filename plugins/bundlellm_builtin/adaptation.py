"""Plugin ``adaptation``: the built-in adaptation strategies ``icl``, ``sft`` and ``icl_sft``.

- ``icl`` (no training): each session is shown ``examples`` solved training sessions retrieved by
  similarity, the thoughts of those examples, the patterns that fit its categories and its
  domain's top rules;
- ``sft`` (LoRA fine-tuning): no examples; the session's own knowledge lines (patterns that fit,
  top rules), and when the set holds thoughts, the session's own thought as the training target's
  reasoning (training only; a session whose thought was not sampled trains on the raw target);
- ``icl_sft`` (LoRA fine-tuning): the ``icl`` view at training and at inference.

Only kinds of the knowledge set appear (``knowledge_use: []`` gives ``icl`` plain retrieved
examples and ``sft`` the raw session). Every view is trimmed to the prompt budget by dropping the
lowest-scored items first (:func:`~recbole_bundlellm.adaptation.strategy.fit_budget`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from recbole_bundlellm.adaptation.retrieval import (
    Neighbour,
    SessionRetriever,
    by_scope,
    by_session,
    example_items,
    examples_own,
    matching_categories,
    reasoning_text,
    top_general,
)
from recbole_bundlellm.adaptation.strategy import (
    EXAMPLE,
    AdaptationContext,
    AdaptationStrategy,
    Retrieved,
    StudentView,
)
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.knowledge.records import KnowledgeItem
from recbole_bundlellm.settings import SettingsError, ranged

#: How much each kind's 0..1 relevance counts when the prompt budget forces items out (the
#: lowest weighted score goes first). Examples weigh most: a solved similar session shows the
#: answer format and a close case, which a small student needs most; the best example scores
#: 1.0 and is the last thing dropped. Patterns come next: they name categories present in this
#: very session and cost one line each. Rules are general (the same lines for every session of
#: the domain), so they give way before specific evidence; a plugin's general kind counts as a
#: rule. Thoughts go first: they are the longest items and explain an example that still works
#: without them; a thought scores half its example, so it always leaves before its example.
KIND_WEIGHTS: dict[str, float] = {EXAMPLE: 1.0, "patterns": 0.9, "rules": 0.6, "thoughts": 0.5}
GENERAL_WEIGHT = 0.6


def _weighted(items: Sequence[Retrieved], weight: float | None = None) -> list[Retrieved]:
    return [replace(r, score=r.score * (weight if weight is not None else KIND_WEIGHTS.get(r.kind, GENERAL_WEIGHT)))
            for r in items]


@dataclass(frozen=True)
class SftSettings:
    """Settings of the ``sft`` YAML key."""

    max_patterns: int = ranged(5, min=0)  # (int) most fitting patterns shown per session
    top_rules: int = ranged(5, min=0)  # (int) most supported rules (and plugin lines) shown, per domain and kind


@dataclass(frozen=True)
class IclSettings:
    """Settings of the ``icl`` and ``icl_sft`` YAML keys."""

    examples: int = ranged(3, min=0)  # (int) solved training sessions retrieved per session (0: knowledge lines only)
    retrieval: Literal["tfidf", "embedding"] = "tfidf"  # (str) TF-IDF of titles, or the student's embeddings
    max_patterns: int = ranged(5, min=0)  # (int) most fitting patterns shown per session
    top_rules: int = ranged(5, min=0)  # (int) most supported rules (and plugin lines) shown, per domain and kind


class _KnowledgeLines(AdaptationStrategy):
    """What ``sft`` and ``icl`` share: the knowledge set arranged once for per-session look-ups."""

    def prepare(self, context: AdaptationContext) -> None:
        super().prepare(context)
        kset = context.knowledge
        self.kinds = set(kset.kinds) if kset is not None else set()
        items = [i for i in kset.items if i.kind in self.kinds] if kset is not None else []
        # By the items' scope (set by their extractors): patterns, general lines, thoughts.
        self.patterns = by_scope(items, "categories")
        # Session-independent: ranked once.
        self.general = _weighted(top_general(by_scope(items, "domain"), self.settings.top_rules))
        self.thoughts: dict[str, KnowledgeItem] = {}
        own = by_scope(items, "session")
        if own:
            self.thoughts = by_session(own, self._thought_domain(context))

    @staticmethod
    def _thought_domain(context: AdaptationContext) -> str | None:
        kset = context.knowledge
        if context.domain is not None:
            return context.domain
        if kset is not None and len(kset.domains) > 1:
            raise ValueError("AdaptationContext.domain is needed to match the thoughts of a multi-domain "
                             f"knowledge set ({', '.join(kset.domains)}) to the training sessions")
        return None

    def lines(self, session: Session) -> list[Retrieved]:
        """The session's knowledge lines: its fitting patterns, then the general lines (rules)."""
        return _weighted(matching_categories(session, self.patterns, self.settings.max_patterns)) + self.general


class SftStrategy(_KnowledgeLines):
    """Fine-tuning on each session with its own knowledge lines, and its thought as reasoning."""

    name: ClassVar[str] = "sft"
    description: ClassVar[str] = "LoRA fine-tuning on each session with its knowledge lines and own thought"
    Settings: ClassVar[type] = SftSettings
    fine_tunes: ClassVar[bool] = True

    def views(self, sessions: Sequence[Session], *, training: bool) -> list[StudentView]:
        out = []
        for session in sessions:
            thought = self.thoughts.get(session.session_id) if training else None
            view = StudentView(tuple(self.lines(session)), reasoning_text(thought) if thought is not None else None)
            out.append(self.finish(session, view, training=training))
        return out


class IclStrategy(_KnowledgeLines):
    """In-context learning: retrieved solved sessions, their thoughts, and fitting knowledge lines."""

    name: ClassVar[str] = "icl"
    description: ClassVar[str] = "in-context: retrieved solved sessions with their thoughts, patterns and rules"
    Settings: ClassVar[type] = IclSettings

    def prepare(self, context: AdaptationContext) -> None:
        super().prepare(context)
        s = self.settings
        self.retriever: SessionRetriever | None = None
        if s.examples > 0:
            if s.retrieval == "embedding" and context.embed is None:
                raise SettingsError(f"{self.name}.retrieval: embedding needs a student that gives embeddings; "
                                    "use retrieval: tfidf")
            self.retriever = SessionRetriever(context.train_sessions,
                                              embed=context.embed if s.retrieval == "embedding" else None)

    def views(self, sessions: Sequence[Session], *, training: bool) -> list[StudentView]:
        # The retriever never returns a session itself, so at training a session is not its own
        # example, nor is its own thought shown.
        shots = self.retriever.retrieve(sessions, self.settings.examples) if self.retriever else [[] for _ in sessions]
        return [self.finish(session, self._view(session, examples), training=training)
                for session, examples in zip(sessions, shots)]

    def _view(self, session: Session, neighbours: Sequence[Neighbour]) -> StudentView:
        # An example's score is its similarity relative to the best one retrieved (0..1), so the
        # closest example scores 1.0 whatever the similarity scale (TF-IDF or embeddings).
        best = max((n.score for n in neighbours), default=0.0)
        relative = [Neighbour(n.session, max(n.score, 0.0) / best if best > 0 else 0.0) for n in neighbours]
        thoughts = {t.session.session_id: t for t in _weighted(examples_own(relative, self.thoughts))
                    if t.session is not None}
        shown: list[Retrieved] = []
        for example in _weighted(example_items(relative)):
            shown.append(example)
            if example.session is not None and example.session.session_id in thoughts:
                shown.append(thoughts[example.session.session_id])
        return StudentView(tuple(self.lines(session) + shown))


class IclSftStrategy(IclStrategy):
    """Fine-tuning on the ``icl`` views: the student learns to use retrieved examples and knowledge."""

    name: ClassVar[str] = "icl_sft"
    description: ClassVar[str] = "LoRA fine-tuning on the icl views (retrieved examples and knowledge)"
    fine_tunes: ClassVar[bool] = True


@hookimpl
def register_adaptation_strategies(register: Callable[[type[AdaptationStrategy]], None]) -> None:
    register(IclStrategy)
    register(SftStrategy)
    register(IclSftStrategy)
