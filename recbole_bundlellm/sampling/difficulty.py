"""How hard each training session is, for the ``difficulty`` sampler.

Difficulty is a value in [0, 1] per session (1 = hardest):

* what the extractors that provide one say about their stored records
  (:meth:`~recbole_bundlellm.knowledge.extractor.KnowledgeExtractor.difficulty`; the built-in
  ``rules`` extractor gives ``1 - exact F1`` of the teacher's first answer);
* otherwise ``1 - exact F1`` of the Freq baseline: category patterns mined from the training
  bundles' leaf categories with Freq's defaults
  (:data:`~recbole_bundlellm.knowledge.frequent_patterns.FREQ_DEFAULTS`), applied to the session.

Exact F1 is the one of :mod:`recbole_bundlellm.evaluation.bundle_metrics` for a single session.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.evaluation.bundle_metrics import session_exact_f1
from recbole_bundlellm.knowledge.frequent_patterns import (
    FREQ_DEFAULTS,
    bundle_transactions,
    mine_patterns,
    predict_bundles,
)
from recbole_bundlellm.knowledge.extractor import (
    KnowledgeExtractor,
    provides_difficulty,
)
from recbole_bundlellm.knowledge.records import KnowledgeRecord

exact_f1 = session_exact_f1  # one session's exact F1, as the metrics compute it


def _usable(value: object) -> float | None:
    """An extractor's answer as a difficulty in [0, 1], or None when it is no finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))


def source_label(kind: str, extractor: KnowledgeExtractor) -> str:
    """How a knowledge set names difficulties that came from ``extractor``: ``"teacher"`` for a
    teacher-based extractor (whose value reflects the teacher's answers), else its kind."""
    return "teacher" if extractor.needs_teacher else kind


def freq_difficulty(sessions: Sequence[Session], targets: Sequence[Session] | None = None) -> dict[str, float]:
    """``1 - exact F1`` of the Freq baseline on ``targets`` (default: all ``sessions``), with
    patterns mined from the bundles of ``sessions``. Sessions without categories or without
    ground-truth bundles get no value (their F1 is undefined)."""
    targets = sessions if targets is None else targets
    transactions = [t for s in sessions if s.categories for t in bundle_transactions(s)]
    patterns = mine_patterns(transactions, **asdict(FREQ_DEFAULTS))
    out: dict[str, float] = {}
    for session in targets:
        if not session.categories or not session.bundles:
            continue
        predicted = predict_bundles(session, patterns)
        out[session.session_id] = 1.0 - exact_f1(predicted or None, session.bundles)
    return out


def session_difficulty(sessions: Sequence[Session], records: Iterable[KnowledgeRecord] | None = None,
                       extractors: Mapping[str, KnowledgeExtractor] | None = None) -> tuple[dict[str, float], str]:
    """Difficulty in [0, 1] per session id, and where it came from.

    Each record is read by the extractor of its kind in ``extractors`` (kind → extractor) that
    provides difficulty; pass the records of one configuration (one fingerprint per kind), of
    any status. Records of other sessions, of another kind or without a finite value are
    ignored, values are clamped to [0, 1], and the first usable record of a session wins.
    Sessions they leave uncovered fall back to the Freq baseline, mined on all ``sessions``.

    The source joins with ``+`` the :func:`source_label` of each extractor that gave a value
    (``"teacher"`` for the rules extractor), in ``extractors`` order, and ``"freq"`` when the
    fallback gave one: ``"teacher"``, ``"freq"``, ``"teacher+freq"``, or ``"none"`` when no
    session got a value.
    """
    readers = {kind: e for kind, e in (extractors or {}).items() if provides_difficulty(e)}
    ids = {s.session_id for s in sessions}
    difficulty: dict[str, float] = {}
    used: set[str] = set()
    for record in records or ():
        extractor = readers.get(record.kind)
        if extractor is None or record.session_id not in ids or record.session_id in difficulty:
            continue
        value = _usable(extractor.difficulty(record))
        if value is not None:
            difficulty[record.session_id] = value
            used.add(record.kind)
    # In the extractors' order, not the records': the label must not depend on the store's order.
    labels = list(dict.fromkeys(source_label(kind, e) for kind, e in readers.items() if kind in used))
    uncovered = [s for s in sessions if s.session_id not in difficulty]
    if uncovered:
        from_freq = freq_difficulty(sessions, uncovered)
        difficulty.update(from_freq)
        if from_freq:
            labels.append("freq")
    return difficulty, "+".join(labels) or "none"
