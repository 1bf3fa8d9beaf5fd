"""Choosing worked examples for in-context prompts: the most similar training session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from recbole_bundlellm.data.sessions import Session


def session_text(session: Session) -> str:
    return " | ".join(session.titles)


class NearestSessions:
    """TF-IDF cosine similarity between sessions' concatenated titles."""

    def __init__(self, pool: Sequence[Session]) -> None:
        self.pool = [s for s in pool if s.bundles]
        if not self.pool:
            raise ValueError("no labelled training session to draw examples from")
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
        self.matrix = self.vectorizer.fit_transform([session_text(s) for s in self.pool])

    def nearest(self, sessions: Sequence[Session], k: int = 1) -> list[list[Session]]:
        """The ``k`` most similar pool sessions for each session (never the session itself)."""
        if not sessions:
            return []
        scores = (self.vectorizer.transform([session_text(s) for s in sessions]) @ self.matrix.T).toarray()
        out = []
        for session, row in zip(sessions, scores):
            order = np.argsort(-row, kind="stable")
            picked = [self.pool[j] for j in order if self.pool[j].session_id != session.session_id]
            out.append(picked[:k])
        return out
