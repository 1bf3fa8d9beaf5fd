"""Knowledge records from extractions, for unit tests of an extractor's ``aggregate``."""

from __future__ import annotations

from typing import Any

from recbole_bundlellm.knowledge.extractor import Extraction
from recbole_bundlellm.knowledge.records import KnowledgeRecord
from recbole_bundlellm.testing.data import TINY_DOMAIN


def as_record(kind: str, session: Any, extraction: Extraction, *, domain: str = TINY_DOMAIN,
              fingerprint: str = "test") -> KnowledgeRecord:
    """The record the distiller would store for ``extraction`` of ``session`` (``kind``: the
    extractor's name)."""
    return KnowledgeRecord(kind, domain, session.session_id, fingerprint, extraction.status, extraction.content,
                           extraction.text if extraction.status == "ok" else "", extraction.reason,
                           session.session_id)


__all__ = ["as_record"]
