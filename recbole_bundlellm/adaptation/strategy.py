"""The adaptation contract: what the student sees for each session, and whether it is trained.

A strategy never trains anything itself: the trainer owns the loop. A strategy decides what the
student is shown besides the session: solved similar sessions (worked examples), knowledge lines
(patterns, rules), and, for training targets, the session's own reasoning (thoughts). The model
renders a :class:`StudentView` into a prompt (``generation/prompt.py``) and, when the strategy
``fine_tunes``, trains LoRA adapters on those prompts with the ground truth as target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.sampling.knowledge_set import KnowledgeSet
from recbole_bundlellm.settings import Component

#: ``Retrieved.kind`` of a solved training session shown as a worked example.
EXAMPLE = "example"


@dataclass(frozen=True)
class Retrieved:
    """One thing chosen for a session's prompt, with its relevance (higher is kept longer).

    ``kind`` is :data:`EXAMPLE` for a solved training session (``session`` holds it, labels
    included), else a knowledge type (an extractor's name). A knowledge item of scope
    ``"session"`` retrieved with a ``session`` is that example's own (e.g. its reasoning), shown
    with its answer. ``heading``: the knowledge item's (see
    :class:`~recbole_bundlellm.knowledge.records.KnowledgeItem`).
    """

    kind: str
    text: str
    score: float
    session: Session | None = None
    domain: str | None = None
    heading: str = ""


@dataclass(frozen=True)
class StudentView:
    """What the student sees for one session besides its products.

    ``items`` in the order the prompt shows them; ``reasoning`` is the training target's text
    before the answer (a thought about this very session), used only when training.
    """

    items: tuple[Retrieved, ...] = ()
    reasoning: str | None = None

    @property
    def examples(self) -> list[Session]:
        return [r.session for r in self.items if r.kind == EXAMPLE and r.session is not None]

    def knowledge(self, kind: str | None = None) -> list[Retrieved]:
        """The knowledge lines (not examples, not examples' thoughts), optionally of one kind."""
        return [r for r in self.items
                if r.kind != EXAMPLE and r.session is None and (kind is None or r.kind == kind)]

    def thought_of(self, example: Session) -> str | None:
        for r in self.items:
            if r.kind != EXAMPLE and r.session is not None and r.session.session_id == example.session_id:
                return r.text
        return None

    @property
    def is_raw(self) -> bool:
        """True when the view adds nothing (the raw session)."""
        return not self.items and not self.reasoning

    def without(self, drop: Retrieved) -> StudentView:
        """This view less one item (and, for an example, its thought)."""
        keep = tuple(r for r in self.items if r is not drop
                     and not (drop.kind == EXAMPLE and r.session is not None and drop.session is not None
                              and r.session.session_id == drop.session.session_id))
        return replace(self, items=keep)


#: Tokens of the whole prompt of ``session`` shown with ``view`` (the model's tokenizer and template).
PromptMeasure = Callable[[Session, StudentView], int]
#: Embeddings (one row per text) from the student itself, for retrieval by embeddings.
Embedder = Callable[[Sequence[str]], "object"]


@dataclass
class AdaptationContext:
    """What a strategy may use to prepare: the training sessions (labels included), the knowledge
    set (``None``: raw data only), and the student's own measures.

    ``domain`` is the run's dataset: session ids repeat across domains, so a multi-domain set's
    per-session knowledge (thoughts) is matched to the training sessions within it; ``None`` is
    enough for a one-domain set.
    """

    train_sessions: Sequence[Session]
    knowledge: KnowledgeSet | None = None
    measure: PromptMeasure | None = None
    max_prompt_tokens: int | None = None
    embed: Embedder | None = None
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    domain: str | None = None


class AdaptationStrategy(Component, ABC):
    """Base class of adaptation strategies: ``name`` (also its YAML settings key),
    ``description``, ``Settings`` (a dataclass with defaults) and ``fine_tunes``.

    Call order: :meth:`prepare` once with the training sessions and knowledge, then
    :meth:`views` for the training sessions (``training=True``: a session never retrieves
    itself) and for evaluation sessions (``training=False``: their labels are hidden).
    """

    #: True when the student is fine-tuned (LoRA) on the views of the training sessions.
    fine_tunes: ClassVar[bool] = False

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        #: Counts since :meth:`prepare`, per phase (``train_`` / ``eval_``): ``views``, ``raw``
        #: (views that add nothing: the raw session), ``trimmed_items`` (dropped to fit the
        #: prompt budget) and ``reasoning`` (training targets with reasoning), for the run's log.
        self.stats: dict[str, int] = {}

    def prepare(self, context: AdaptationContext) -> None:
        """Build what :meth:`views` needs (retrieval indexes, per-kind knowledge); default: keep the context."""
        self.context = context
        self.stats = {}

    @abstractmethod
    def views(self, sessions: Sequence[Session], *, training: bool) -> list[StudentView]:
        """One :class:`StudentView` per session, in order."""

    def finish(self, session: Session, view: StudentView, *, training: bool) -> StudentView:
        """``view`` trimmed to the context's prompt budget (:func:`fit_budget`), counted in :attr:`stats`."""
        context = getattr(self, "context", None)
        before = len(view.items)
        if context is not None:
            view, _ = fit_budget(session, view, context.measure, context.max_prompt_tokens)
        phase = "train" if training else "eval"
        counts = {"views": 1, "raw": int(view.is_raw), "trimmed_items": before - len(view.items),
                  "reasoning": int(view.reasoning is not None)}
        for key, value in counts.items():
            self.stats[f"{phase}_{key}"] = self.stats.get(f"{phase}_{key}", 0) + value
        return view


def fit_budget(session: Session, view: StudentView, measure: PromptMeasure | None,
               limit: int | None) -> tuple[StudentView, int]:
    """Drop the least relevant items (lowest score first) until the prompt fits in ``limit``
    tokens; returns the view and how many items were dropped. The session itself is never cut."""
    if measure is None or limit is None:
        return view, 0
    dropped = 0
    while view.items and measure(session, view) > limit:
        view = view.without(min(view.items, key=lambda r: r.score))
        dropped += 1
    return view, dropped


__all__ = ["EXAMPLE", "AdaptationContext", "AdaptationStrategy", "Embedder", "PromptMeasure", "Retrieved",
           "StudentView", "fit_budget"]
