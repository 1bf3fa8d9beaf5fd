"""Bundle-generation metrics, in pure Python (no RecBole, no torch).

Definitions follow ``shared/notes/bundle-metrics.md`` literally:

* the **reference family** (AICL, SIGIR 2024): precision, recall and coverage over hits, where
  a predicted bundle ``p`` hits when it is a subset of some ground-truth bundle ``g`` (``g*(p)``
  is the *first* such ``g`` in list order). Two conventions for failed sessions: *AICL* (failed
  sessions are left out of the means) and *strict* (they count as 0);
* **ours**, which many small bundles cannot game (strict convention): distinct recall,
  exact-match precision / recall / F1 and mean best Jaccard;
* **answer shape**, which shows collapse (e.g. every answer being the whole session): the share
  of sessions answered with one bundle holding all their items, and the mean numbers of predicted
  (per answered session) and ground-truth (per session) bundles.

Rules applied to the predictions of each session before scoring: identical predicted bundles
count once, bundles with fewer than 2 distinct items are dropped, and a session is *failed*
when its output could not be parsed (``None``) or no bundle of >= 2 items remains. The ground
truth is taken as given (the data pipeline already deduplicated it); a session with no ground
truth bundle is an error.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

Bundle = frozenset  # of hashable item ids

#: The metric keys, in table order: reference family, failure rate, answer shape, then ours.
METRIC_KEYS: tuple[str, ...] = (
    "bundle_precision",
    "bundle_recall",
    "bundle_precision_strict",
    "bundle_recall_strict",
    "bundle_coverage",
    "failure_rate",
    "whole_session_share",
    "predicted_bundles",
    "true_bundles",
    "distinct_recall",
    "exact_precision",
    "exact_recall",
    "exact_f1",
    "best_jaccard",
)

#: Short column headers for :func:`format_table`.
SHORT_NAMES: dict[str, str] = {
    "bundle_precision": "P",
    "bundle_recall": "R",
    "bundle_precision_strict": "P strict",
    "bundle_recall_strict": "R strict",
    "bundle_coverage": "Cov",
    "failure_rate": "failed",
    "whole_session_share": "whole",
    "predicted_bundles": "#pred",
    "true_bundles": "#true",
    "distinct_recall": "distinct R",
    "exact_precision": "exact P",
    "exact_recall": "exact R",
    "exact_f1": "exact F1",
    "best_jaccard": "best Jacc",
    "n_sessions": "n",
    "n_failed": "n failed",
}


def _as_bundle(items: Iterable[Hashable]) -> Bundle:
    # A bare string would silently become a set of characters: refuse it.
    if isinstance(items, (str, bytes)):
        raise TypeError(f"a bundle must be an iterable of item ids, not {type(items).__name__}")
    return frozenset(items)


def normalize_predictions(bundles: Iterable[Iterable[Hashable]] | None) -> list[Bundle] | None:
    """Apply the prediction rules of the note to one session.

    Returns the predicted bundles as frozensets, identical ones kept once (first occurrence
    order), those with fewer than 2 items dropped; ``None`` when the session is failed.
    """
    if bundles is None:
        return None
    kept: dict[Bundle, None] = {}  # an ordered set
    for raw in bundles:
        bundle = _as_bundle(raw)
        if len(bundle) >= 2:
            kept.setdefault(bundle, None)
    return list(kept) or None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class SessionScore:
    """One session scored (:func:`score_session`); :func:`aggregate` averages them.

    A failed session has ``failed`` set and every per-session value 0 (its ``best_jaccards``
    one 0 per ground-truth bundle, ``hit_coverages`` empty).
    """

    failed: bool
    true_bundles: int
    predicted_bundles: int  # after the prediction rules; 0 when failed
    whole: bool | None  # one bundle of every item of the session; None without the session's items
    precision: float  # reference family: hits / predicted bundles
    recall: float  # hits / true bundles (may exceed 1: two predictions inside one g both count)
    distinct_recall: float  # distinct true bundles hit / true bundles
    exact_precision: float
    exact_recall: float
    exact_f1: float
    hit_coverages: tuple[float, ...]  # |p| / |g*(p)| for each hit, in prediction order
    best_jaccards: tuple[float, ...]  # per true bundle: its best Jaccard with a prediction


def _reference_hits(pred: Sequence[Bundle], truth: Sequence[Bundle]) -> tuple[int, set[int], list[float]]:
    """Reference family: hit(p) = p is a subset of some g; g*(p) = the first such g. Returns the
    hits, the indexes of the true bundles hit, and each hit's coverage |p| / |g*(p)|."""
    hits, matched, coverages = 0, set(), []
    for p in pred:
        for g_index, g in enumerate(truth):
            if p <= g:
                hits += 1
                coverages.append(len(p) / len(g))
                matched.add(g_index)
                break
    return hits, matched, coverages


def _exact_match(pred: Sequence[Bundle], truth: Sequence[Bundle]) -> tuple[float, float, float]:
    """Exact-match precision, recall and F1: each g matched at most once. Predictions are already
    deduplicated, so counting the distinct truth sets that appear among them is that matching."""
    pred_set = set(pred)
    matches = len({g for g in truth if g in pred_set})
    exact_p = matches / len(pred)
    exact_r = matches / len(truth)
    # Per-session F1, then averaged: this reproduces the note's floor table (0.174 and 0.189);
    # the harmonic mean of the averaged P and R gives 0.178 and 0.195 instead.
    return exact_p, exact_r, (2 * exact_p * exact_r / (exact_p + exact_r) if matches else 0.0)


def _is_whole(pred: Sequence[Bundle], items: Iterable[Hashable]) -> bool:
    # A superset still lumps the whole session together (extra items are off-session noise); an
    # empty session has nothing to lump, so it is never whole.
    session_items = _as_bundle(items)
    return len(pred) == 1 and bool(session_items) and pred[0] >= session_items


def score_session(predicted: Iterable[Iterable[Hashable]] | None, truth: Sequence[Iterable[Hashable]],
                  items: Iterable[Hashable] | None = None, *, index: int = 0) -> SessionScore:
    """Score one session: ``predicted`` bundles (``None``: the answer could not be parsed) against
    its ``truth`` (deduplicated, non-empty; ``ValueError`` naming session ``index`` otherwise);
    ``items``: the session's item ids, for ``whole``."""
    true = [_as_bundle(g) for g in truth]
    if not true:
        raise ValueError(f"session {index} has no ground-truth bundle")
    pred = normalize_predictions(predicted)
    if pred is None:
        return SessionScore(failed=True, true_bundles=len(true), predicted_bundles=0,
                            whole=None if items is None else False, precision=0.0, recall=0.0,
                            distinct_recall=0.0, exact_precision=0.0, exact_recall=0.0, exact_f1=0.0,
                            hit_coverages=(), best_jaccards=tuple(0.0 for _ in true))
    hits, matched, coverages = _reference_hits(pred, true)
    exact_p, exact_r, exact_f1 = _exact_match(pred, true)
    return SessionScore(
        failed=False, true_bundles=len(true), predicted_bundles=len(pred),
        whole=None if items is None else _is_whole(pred, items),
        precision=hits / len(pred), recall=hits / len(true), distinct_recall=len(matched) / len(true),
        exact_precision=exact_p, exact_recall=exact_r, exact_f1=exact_f1, hit_coverages=tuple(coverages),
        best_jaccards=tuple(max(len(p & g) / len(p | g) for p in pred) for g in true),
    )


def aggregate(scores: Sequence[SessionScore], *, with_whole: bool = True) -> dict[str, float]:
    """The metrics of :data:`METRIC_KEYS` (less ``whole_session_share`` unless ``with_whole``) plus
    ``n_sessions`` and ``n_failed``, from the sessions' scores (see :func:`compute_bundle_metrics`)."""
    scored = [s for s in scores if not s.failed]  # the AICL convention leaves failed sessions out
    n_sessions, n_failed = len(scores), len(scores) - len(scored)
    result = {
        "bundle_precision": _mean([s.precision for s in scored]),
        "bundle_recall": _mean([s.recall for s in scored]),
        "bundle_precision_strict": _mean([s.precision for s in scores]),
        "bundle_recall_strict": _mean([s.recall for s in scores]),
        "bundle_coverage": _mean([c for s in scores for c in s.hit_coverages]),  # pooled over all hits
        "failure_rate": n_failed / n_sessions if n_sessions else 0.0,
        "whole_session_share": sum(1 for s in scores if s.whole) / n_sessions if n_sessions else 0.0,
        "predicted_bundles": _mean([float(s.predicted_bundles) for s in scored]),
        "true_bundles": _mean([float(s.true_bundles) for s in scores]),
        "distinct_recall": _mean([s.distinct_recall for s in scores]),
        "exact_precision": _mean([s.exact_precision for s in scores]),
        "exact_recall": _mean([s.exact_recall for s in scores]),
        "exact_f1": _mean([s.exact_f1 for s in scores]),
        "best_jaccard": _mean([j for s in scores for j in s.best_jaccards]),  # one per true bundle
        "n_sessions": float(n_sessions),
        "n_failed": float(n_failed),
    }
    if not with_whole:
        del result["whole_session_share"]  # not computable: absent rather than a wrong 0.0
    return result


def compute_bundle_metrics(
    predictions: Sequence[Sequence[Iterable[Hashable]] | None],
    truths: Sequence[Sequence[Iterable[Hashable]]],
    items: Sequence[Iterable[Hashable]] | None = None,
) -> dict[str, float]:
    """Score predicted bundles against the ground truth, one entry per session.

    Args:
        predictions: per session, the predicted bundles (iterables of item ids), or ``None``
            when the model's answer could not be parsed.
        truths: per session, the ground-truth bundles, already deduplicated; must be non-empty.
        items: per session, its item ids. Only ``whole_session_share`` needs them: without
            them that key is left out of the result (every other value is the same).

    Returns:
        The floats of :data:`METRIC_KEYS` plus ``n_sessions`` and ``n_failed``. Edge cases:
        when every session failed (or there are none) the AICL-convention precision and recall
        and the mean number of predicted bundles are 0.0; with no hit at all, coverage is 0.0;
        with no session at all every metric and the failure rate are 0.0.

        ``whole_session_share``: share of all sessions (failed ones included, never whole)
        whose predictions, after the rules above, are exactly one bundle containing every item
        of a non-empty session. ``predicted_bundles``: mean number of predicted bundles (after
        the rules) per non-failed session. ``true_bundles``: mean number of ground-truth
        bundles per session.

    Raises:
        ValueError: lengths differ, or a session has no ground-truth bundle.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} sessions")
    if items is not None and len(items) != len(truths):
        raise ValueError(f"{len(items)} item sets for {len(truths)} sessions")
    scores = [score_session(pred, truth, None if items is None else items[index], index=index)
              for index, (pred, truth) in enumerate(zip(predictions, truths))]
    return aggregate(scores, with_whole=items is not None)


def session_exact_f1(predicted: Iterable[Iterable[Hashable]] | None, truth: Sequence[Iterable[Hashable]]) -> float:
    """Exact-match F1 of one session, exactly as :func:`compute_bundle_metrics` scores it
    (0 when the prediction is ``None`` or holds no bundle of >= 2 items)."""
    preds = None if predicted is None else [tuple(b) for b in predicted]
    return score_session(preds, list(truth)).exact_f1


def format_table(
    rows: Mapping[str, Mapping[str, float]],
    keys: Sequence[str] = METRIC_KEYS,
    digits: int = 3,
) -> str:
    """Render a plain-text comparison table: one row per model/predictor, one column per key.

    Missing values show as ``-``; ``n_sessions``/``n_failed`` print as integers.
    """
    header = ["model", *(SHORT_NAMES.get(k, k) for k in keys)]
    body: list[list[str]] = []
    for name, metrics in rows.items():
        cells = [str(name)]
        for key in keys:
            value = metrics.get(key)
            if value is None:
                cells.append("-")
            elif key in ("n_sessions", "n_failed"):
                cells.append(str(int(value)))
            else:
                cells.append(f"{value:.{digits}f}")
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in body)])
