"""Retrieval for adaptation: the solved sessions most like a session, and the knowledge that fits it.

:class:`SessionRetriever` finds the ``k`` most similar labelled sessions of a pool (TF-IDF cosine
over the concatenated titles, or cosine over the student's own embeddings). The functions below
pick knowledge items of a :class:`~recbole_bundlellm.sampling.knowledge_set.KnowledgeSet` for one
session, as :class:`~recbole_bundlellm.adaptation.strategy.Retrieved` items whose ``score`` is
normalised to 0..1 *within their kind*; strategies weigh kinds against each other.

Items are picked by their scope (:data:`~recbole_bundlellm.knowledge.records.Scope`, set by the
extractor), never by their kind:

- ``"categories"`` (patterns): shown when every category of the item is in the session;
- ``"session"`` (thoughts): one session's own, shown with that session when it is an example (or
  used as the training target of that very session);
- ``"domain"`` (rules, a plugin's general lines): the same for every session of a domain, ranked
  by ``support``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recbole_bundlellm.adaptation.strategy import EXAMPLE, Embedder, Retrieved
from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.knowledge.records import KnowledgeItem

#: Query sessions scored at once (a dense block of ``_CHUNK x pool`` similarities).
_CHUNK = 512


def session_text(session: Session) -> str:
    """What retrieval compares: the session's titles, in order."""
    return " | ".join(session.titles)


@dataclass(frozen=True)
class Neighbour:
    """A retrieved pool session and its cosine similarity to the query session."""

    session: Session
    score: float


def _as_matrix(value: object, rows: int) -> np.ndarray:
    """An embedder's answer as a float matrix of ``rows`` rows, each scaled to unit length."""
    if hasattr(value, "detach"):  # a torch tensor, possibly on the GPU, without importing torch
        value = value.detach().float().cpu().numpy()  # type: ignore[attr-defined]
    matrix = np.asarray(value, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ValueError(f"the embedder returned shape {matrix.shape} for {rows} texts (expected ({rows}, dim))")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class SessionRetriever:
    """The ``k`` most similar labelled sessions of ``pool`` for each query session.

    Similarity is the cosine between TF-IDF vectors of the sessions' titles (unigrams and
    bigrams, sublinear tf), or, with ``embed`` (texts → one embedding per row), between those
    embeddings. A query never retrieves a pool session with its own ``session_id``, so a training
    session is never its own example. Sessions without ground-truth bundles are left out of the
    pool: an example must show its answer.
    """

    def __init__(self, pool: Sequence[Session], *, embed: Embedder | None = None) -> None:
        self.pool = [s for s in pool if s.bundles]
        if not self.pool:
            raise ValueError("no labelled training session to draw examples from")
        self.embed = embed
        texts = [session_text(s) for s in self.pool]
        if embed is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
            self.matrix = self.vectorizer.fit_transform(texts)
        else:
            self.matrix = _as_matrix(embed(texts), len(texts))

    def similarities(self, sessions: Sequence[Session]) -> np.ndarray:
        """Cosine similarities, one row per session and one column per pool session."""
        texts = [session_text(s) for s in sessions]
        if self.embed is None:
            return (self.vectorizer.transform(texts) @ self.matrix.T).toarray()
        return _as_matrix(self.embed(texts), len(texts)) @ self.matrix.T

    def retrieve(self, sessions: Sequence[Session], k: int = 1) -> list[list[Neighbour]]:
        """The ``k`` most similar pool sessions of each session, most similar first (ties: pool
        order), never the session itself."""
        out: list[list[Neighbour]] = []
        for start in range(0, len(sessions), _CHUNK):
            chunk = sessions[start:start + _CHUNK]
            for session, row in zip(chunk, self.similarities(chunk)):
                picked: list[Neighbour] = []
                for j in np.argsort(-row, kind="stable"):
                    if len(picked) >= k:
                        break
                    if self.pool[j].session_id != session.session_id:
                        picked.append(Neighbour(self.pool[j], float(row[j])))
                out.append(picked)
        return out

    def nearest(self, sessions: Sequence[Session], k: int = 1) -> list[list[Session]]:
        """The ``k`` most similar pool sessions for each session (never the session itself)."""
        return [[n.session for n in row] for row in self.retrieve(sessions, k)]


# -- knowledge for one session ----------------------------------------------------------------
def _best_support(items: Iterable[KnowledgeItem]) -> dict[str, float]:
    """The highest ``support`` per domain (what normalises a kind's scores to 0..1)."""
    best: dict[str, float] = {}
    for item in items:
        best[item.domain] = max(best.get(item.domain, 0.0), float(item.support or 0.0))
    return best


def _relative(item: KnowledgeItem, best: Mapping[str, float]) -> float:
    top = best.get(item.domain, 0.0)
    return float(item.support or 0.0) / top if top > 0 else 0.0


def _retrieved(item: KnowledgeItem, score: float, session: Session | None = None, text: str | None = None) -> Retrieved:
    return Retrieved(item.kind, item.text if text is None else text, score, session, item.domain, item.heading)


def by_scope(items: Iterable[KnowledgeItem], scope: str) -> list[KnowledgeItem]:
    """The items of ``scope`` (``"domain"``, ``"categories"`` or ``"session"``), in order."""
    return [item for item in items if item.scope == scope]


def matching_categories(session: Session, items: Sequence[KnowledgeItem], max_items: int) -> list[Retrieved]:
    """The items (patterns) whose categories (``data["categories"]``) are all among the session's
    categories, best supported first, at most ``max_items``. Score: the item's support relative
    to the best item of its domain (0..1). An item without categories never matches; a session
    without categories matches none."""
    if max_items <= 0 or not session.categories:
        return []
    present = set(session.categories)
    best = _best_support(items)
    fitting = [p for p in items if p.data.get("categories") and set(p.data["categories"]) <= present]
    fitting.sort(key=lambda p: -_relative(p, best))  # stable: the extractor's order on ties
    return [_retrieved(p, _relative(p, best)) for p in fitting[:max_items]]


def top_general(items: Sequence[KnowledgeItem], top: int) -> list[Retrieved]:
    """The ``top`` best supported items of each domain and kind (for rules: stated by the most
    sessions), each keeping its domain. Score: support relative to the best item of the same
    domain and kind (0..1). Domains and kinds come in the order they first appear in ``items``."""
    if top <= 0:
        return []
    groups: dict[tuple[str, str], list[KnowledgeItem]] = {}
    for item in items:
        groups.setdefault((item.domain, item.kind), []).append(item)
    out: list[Retrieved] = []
    for group in groups.values():
        best = _best_support(group)
        ranked = sorted(group, key=lambda i: -_relative(i, best))
        out.extend(_retrieved(i, _relative(i, best)) for i in ranked[:top])
    return out


def by_session(items: Iterable[KnowledgeItem], domain: str | None) -> dict[str, KnowledgeItem]:
    """Items (thoughts) by session id, of ``domain`` only (session ids repeat across domains);
    ``domain=None`` takes every domain (for a one-domain set)."""
    out: dict[str, KnowledgeItem] = {}
    for item in items:
        if item.session_id is not None and (domain is None or item.domain == domain):
            out.setdefault(item.session_id, item)
    return out


def reasoning_text(item: KnowledgeItem) -> str:
    """The reasoning of a session's item (``data["reasoning"]``; its text when that is absent)."""
    reasoning = item.data.get("reasoning")
    return reasoning if isinstance(reasoning, str) and reasoning.strip() else item.text


def examples_own(examples: Sequence[Neighbour], own: Mapping[str, KnowledgeItem]) -> list[Retrieved]:
    """The item of each example that has one in ``own`` (:func:`by_session`; ``session`` set to the
    example; text: its reasoning, the answer comes from the example). Score: the example's similarity."""
    return [_retrieved(own[n.session.session_id], n.score, n.session, reasoning_text(own[n.session.session_id]))
            for n in examples if n.session.session_id in own]


def example_items(examples: Sequence[Neighbour]) -> list[Retrieved]:
    """The examples as :data:`~recbole_bundlellm.adaptation.strategy.EXAMPLE` items (text: their
    titles; score: their similarity)."""
    return [Retrieved(EXAMPLE, session_text(n.session), n.score, n.session) for n in examples]


__all__ = ["Neighbour", "SessionRetriever", "by_scope", "by_session", "example_items", "examples_own",
           "matching_categories", "reasoning_text", "session_text", "top_general"]
