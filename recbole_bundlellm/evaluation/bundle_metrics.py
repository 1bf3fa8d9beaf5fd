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

    # Per-session values; "scored" ones are the non-failed sessions (AICL convention).
    prec_scored: list[float] = []
    rec_scored: list[float] = []
    prec_all: list[float] = []
    rec_all: list[float] = []
    distinct_all: list[float] = []
    exact_p_all: list[float] = []
    exact_r_all: list[float] = []
    exact_f1_all: list[float] = []
    hit_coverages: list[float] = []  # pooled over all hits of all sessions
    best_jaccards: list[float] = []  # one per ground-truth bundle
    predicted_counts: list[float] = []  # one per non-failed session
    truth_counts: list[float] = []  # one per session
    n_failed = 0
    n_whole = 0

    for index, (raw_pred, raw_truth) in enumerate(zip(predictions, truths)):
        truth = [_as_bundle(g) for g in raw_truth]
        if not truth:
            raise ValueError(f"session {index} has no ground-truth bundle")
        pred = normalize_predictions(raw_pred)
        truth_counts.append(float(len(truth)))

        if pred is None:
            n_failed += 1
            for values in (prec_all, rec_all, distinct_all, exact_p_all, exact_r_all, exact_f1_all):
                values.append(0.0)
            best_jaccards.extend(0.0 for _ in truth)
            continue

        predicted_counts.append(float(len(pred)))
        if items is not None:
            session_items = _as_bundle(items[index])
            # A superset still lumps the whole session together (extra items are off-session
            # noise); an empty session has nothing to lump, so it is never whole.
            if len(pred) == 1 and session_items and pred[0] >= session_items:
                n_whole += 1

        # Reference family: hit(p) = p is a subset of some g; g*(p) = the first such g.
        hits = 0
        matched_truth: set[int] = set()
        for p in pred:
            for g_index, g in enumerate(truth):
                if p <= g:
                    hits += 1
                    hit_coverages.append(len(p) / len(g))
                    matched_truth.add(g_index)
                    break
        precision = hits / len(pred)
        recall = hits / len(truth)  # may exceed 1: two predictions inside one g both count
        prec_scored.append(precision)
        rec_scored.append(recall)
        prec_all.append(precision)
        rec_all.append(recall)
        distinct_all.append(len(matched_truth) / len(truth))

        # Exact match: each g matched at most once. Predictions are already deduplicated, so
        # counting the distinct truth sets that appear among the predictions is that matching.
        pred_set = set(pred)
        matches = len({g for g in truth if g in pred_set})
        exact_p = matches / len(pred)
        exact_r = matches / len(truth)
        exact_p_all.append(exact_p)
        exact_r_all.append(exact_r)
        # Per-session F1, then averaged: this reproduces the note's floor table (0.174 and
        # 0.189); the harmonic mean of the averaged P and R gives 0.178 and 0.195 instead.
        exact_f1_all.append(2 * exact_p * exact_r / (exact_p + exact_r) if matches else 0.0)

        for g in truth:
            best_jaccards.append(max(len(p & g) / len(p | g) for p in pred))

    n_sessions = len(truths)
    result = {
        "bundle_precision": _mean(prec_scored),
        "bundle_recall": _mean(rec_scored),
        "bundle_precision_strict": _mean(prec_all),
        "bundle_recall_strict": _mean(rec_all),
        "bundle_coverage": _mean(hit_coverages),
        "failure_rate": n_failed / n_sessions if n_sessions else 0.0,
        "whole_session_share": n_whole / n_sessions if n_sessions else 0.0,
        "predicted_bundles": _mean(predicted_counts),
        "true_bundles": _mean(truth_counts),
        "distinct_recall": _mean(distinct_all),
        "exact_precision": _mean(exact_p_all),
        "exact_recall": _mean(exact_r_all),
        "exact_f1": _mean(exact_f1_all),
        "best_jaccard": _mean(best_jaccards),
        "n_sessions": float(n_sessions),
        "n_failed": float(n_failed),
    }
    if items is None:
        del result["whole_session_share"]  # not computable: absent rather than a wrong 0.0
    return result


def session_exact_f1(predicted: Iterable[Iterable[Hashable]] | None, truth: Sequence[Iterable[Hashable]]) -> float:
    """Exact-match F1 of one session, exactly as :func:`compute_bundle_metrics` scores it
    (0 when the prediction is ``None`` or holds no bundle of >= 2 items)."""
    preds = None if predicted is None else [tuple(b) for b in predicted]
    return compute_bundle_metrics([preds], [list(truth)])["exact_f1"]


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
