"""How hard each training session is, for the ``difficulty`` sampler.

Difficulty is ``1 - exact F1`` of a first attempt at the session's bundles (1 = hardest):

* the teacher's first answer, where the ``rules`` extractor ran (its records carry
  ``content["difficulty"]``, failed records included: a useless first answer is a hard session);
* otherwise the Freq baseline: category patterns mined from the training bundles' leaf
  categories with Freq's defaults (:data:`~recbole_bundlellm.frequent_patterns.FREQ_DEFAULTS`),
  applied to the session.

Exact F1 is the one of :mod:`recbole_bundlellm.evaluation.bundle_metrics` for a single session.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict

from recbole_bundlellm.data.sessions import Session
from recbole_bundlellm.evaluation.bundle_metrics import session_exact_f1
from recbole_bundlellm.frequent_patterns import (
    FREQ_DEFAULTS,
    bundle_transactions,
    mine_patterns,
    predict_bundles,
)
from recbole_bundlellm.knowledge.records import KnowledgeRecord

RULES_KIND = "rules"

exact_f1 = session_exact_f1  # one session's exact F1, as the metrics compute it


def _teacher_value(record: KnowledgeRecord) -> float | None:
    value = record.content.get("difficulty") if isinstance(record.content, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))


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


def session_difficulty(sessions: Sequence[Session],
                       rules_records: Iterable[KnowledgeRecord] | None = None) -> tuple[dict[str, float], str]:
    """Difficulty in [0, 1] per session id, and where it came from.

    ``rules_records`` should be the records of one rules configuration (one fingerprint), of any
    status; records of another kind, of other sessions or without a numeric
    ``content["difficulty"]`` are ignored, and the first usable record of a session wins.
    Sessions they leave uncovered fall back to the Freq baseline, mined on all ``sessions``.

    The source is ``"teacher"``, ``"freq"``, ``"teacher+freq"`` (both used), or ``"none"`` when
    no session got a value.
    """
    ids = {s.session_id for s in sessions}
    difficulty: dict[str, float] = {}
    for record in rules_records or ():
        if record.kind != RULES_KIND or record.session_id not in ids or record.session_id in difficulty:
            continue
        value = _teacher_value(record)
        if value is not None:
            difficulty[record.session_id] = value
    n_teacher = len(difficulty)
    uncovered = [s for s in sessions if s.session_id not in difficulty]
    n_freq = 0
    if uncovered:
        from_freq = freq_difficulty(sessions, uncovered)
        difficulty.update(from_freq)
        n_freq = len(from_freq)
    if n_teacher and n_freq:
        source = "teacher+freq"
    elif n_teacher:
        source = "teacher"
    elif n_freq:
        source = "freq"
    else:
        source = "none"
    return difficulty, source
