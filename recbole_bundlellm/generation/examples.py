"""Choosing worked examples for in-context prompts: the most similar training session.

The retrieval itself lives in :mod:`recbole_bundlellm.adaptation.retrieval` (adaptation
strategies use it too); the names here stay for the prompt modes that use them directly.
"""

from __future__ import annotations

from recbole_bundlellm.adaptation.retrieval import SessionRetriever, session_text

#: TF-IDF cosine similarity between sessions' concatenated titles (``nearest(sessions, k)``).
NearestSessions = SessionRetriever

__all__ = ["NearestSessions", "session_text"]
