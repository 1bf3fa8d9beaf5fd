"""The bundle metrics as RecBole metric classes, registered from outside the library.

RecBole 1.2.1 collects metrics only from the classes of ``recbole.evaluator.metrics``, into four
module-level objects of ``recbole.evaluator.register``: ``metrics_dict``, ``metric_information``,
``metric_types`` (dicts) and ``smaller_metrics`` (a list), all keyed by the lower-cased class
name. ``recbole.config.configurator`` imported ``metric_types`` and ``smaller_metrics`` by name,
and ``recbole.evaluator.evaluator`` imported ``metrics_dict``: they are the same objects, so adding
entries in place is seen everywhere. Importing this module registers the bundle metrics, after
which YAML ``metrics: [BundlePrecision, ExactF1]`` and ``valid_metric: ExactF1`` work.

A bundle model's evaluation puts three Python lists in the ``DataStruct`` with ``DataStruct.set``:
``bundle.pred`` (per session, the predicted bundles or ``None`` for a failed answer),
``bundle.truth`` (per session, the ground-truth bundles) and ``bundle.items`` (per session, the
frozenset of its item ids; only :class:`WholeSessionShare` needs it), as for
:func:`~recbole_bundlellm.evaluation.bundle_metrics.compute_bundle_metrics`.
"""

from __future__ import annotations

import weakref
from typing import Any

import recbole_bundlellm  # noqa: F401  (applies the numpy-2 compat patches before recbole)

from recbole.evaluator import register as _register
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType

from recbole_bundlellm.evaluation.bundle_metrics import compute_bundle_metrics

__all__ = [
    "BUNDLE_METRICS",
    "BUNDLE_METRIC_CLASSES",
    "BestJaccard",
    "BundleCoverage",
    "BundleMetric",
    "BundlePrecision",
    "BundlePrecisionStrict",
    "BundleRecall",
    "BundleRecallStrict",
    "DistinctRecall",
    "ExactF1",
    "ExactPrecision",
    "ExactRecall",
    "FailureRate",
    "PredictedBundles",
    "TrueBundles",
    "WholeSessionShare",
    "register_bundle_metrics",
    "register_metric",
    "unregister_metric",
]

_CACHE_ATTR = "_bundlellm_metric_cache"


def bundle_summary(dataobject) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """All bundle metrics of a DataStruct, computed once and cached on the DataStruct.

    ``bundle.items`` is optional: without it the summary lacks ``whole_session_share``. The
    cache remembers which ``bundle.pred`` / ``bundle.truth`` / ``bundle.items`` objects it was
    computed from (by identity and length), so a ``set`` of new lists invalidates it. Mutating
    the stored lists in place without changing their length is not detected.
    """
    pred = dataobject.get("bundle.pred")
    truth = dataobject.get("bundle.truth")
    items = dataobject.get("bundle.items") if "bundle.items" in dataobject else None
    lens = (len(pred), len(truth), None if items is None else len(items))
    cached = getattr(dataobject, _CACHE_ATTR, None)
    if cached is not None:
        c_pred, c_truth, c_items, c_lens, summary = cached
        if c_pred is pred and c_truth is truth and c_items is items and c_lens == lens:
            return summary
    summary = compute_bundle_metrics(pred, truth, items)
    try:
        setattr(dataobject, _CACHE_ATTR, (pred, truth, items, lens, summary))
    except AttributeError:  # an object without a __dict__: just do not cache
        pass
    return summary


class BundleMetric(AbstractMetric):
    """Base of the bundle metrics: reads the ``metric_need`` entries of the DataStruct
    (``bundle.pred`` / ``bundle.truth``, plus ``bundle.items`` where needed), reports one value.

    ``summary_key`` names the value in the dict of ``compute_bundle_metrics``; the reported key
    is the lower-cased class name, as for RecBole's own metrics.
    """

    metric_need = ["bundle.pred", "bundle.truth"]
    # Bundle models are evaluated on RecBole's full-sort (grouped-by-session) loaders.
    metric_type = EvaluatorType.RANKING
    smaller = False
    summary_key: str = ""

    def calculate_metric(self, dataobject) -> dict[str, float]:  # type: ignore[no-untyped-def]
        # RecBole's own error for a missing entry ("Can not load the data without registration")
        # does not say which one, nor who should have set it.
        missing = [need for need in self.metric_need if need not in dataobject]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {', '.join(missing)} in the DataStruct "
                             "(BundleTrainer.evaluate sets bundle.pred, bundle.truth and bundle.items)")
        value = bundle_summary(dataobject)[self.summary_key]
        return {type(self).__name__.lower(): round(value, self.decimal_place)}


class BundlePrecision(BundleMetric):
    """Reference (AICL) precision; failed sessions left out of the mean."""

    summary_key = "bundle_precision"


class BundleRecall(BundleMetric):
    """Reference (AICL) recall; failed sessions left out of the mean."""

    summary_key = "bundle_recall"


class BundlePrecisionStrict(BundleMetric):
    """Reference precision, failed sessions counted as 0."""

    summary_key = "bundle_precision_strict"


class BundleRecallStrict(BundleMetric):
    """Reference recall, failed sessions counted as 0."""

    summary_key = "bundle_recall_strict"


class BundleCoverage(BundleMetric):
    """Mean |p| / |g*(p)| over all hits, pooled across sessions."""

    summary_key = "bundle_coverage"


class FailureRate(BundleMetric):
    """Share of sessions whose answer was unparsable or left no bundle of >= 2 items."""

    summary_key = "failure_rate"
    smaller = True


class WholeSessionShare(BundleMetric):
    """Share of sessions answered with exactly one bundle holding all their items (failed
    answers count in the denominator); far above the share of one-bundle truths, the answers
    collapsed. ``smaller`` stays False: such a truth makes the whole-session answer right."""

    metric_need = ["bundle.pred", "bundle.truth", "bundle.items"]
    summary_key = "whole_session_share"


class PredictedBundles(BundleMetric):
    """Mean number of predicted bundles per answered (non-failed) session; read against
    :class:`TrueBundles`. Neither bigger nor smaller is better: ``smaller`` stays False."""

    summary_key = "predicted_bundles"


class TrueBundles(BundleMetric):
    """Mean number of ground-truth bundles per session (the reference for
    :class:`PredictedBundles`)."""

    summary_key = "true_bundles"


class DistinctRecall(BundleMetric):
    """Share of ground-truth bundles hit at least once (strict)."""

    summary_key = "distinct_recall"


class ExactPrecision(BundleMetric):
    """Exact-match precision (strict)."""

    summary_key = "exact_precision"


class ExactRecall(BundleMetric):
    """Exact-match recall (strict)."""

    summary_key = "exact_recall"


class ExactF1(BundleMetric):
    """Exact-match F1: per-session F1 averaged over sessions (strict)."""

    summary_key = "exact_f1"


class BestJaccard(BundleMetric):
    """Mean over ground-truth bundles of the best Jaccard with a prediction (strict)."""

    summary_key = "best_jaccard"


_CLASSES: tuple[type[BundleMetric], ...] = (
    BundlePrecision,
    BundleRecall,
    BundlePrecisionStrict,
    BundleRecallStrict,
    BundleCoverage,
    FailureRate,
    WholeSessionShare,
    PredictedBundles,
    TrueBundles,
    DistinctRecall,
    ExactPrecision,
    ExactRecall,
    ExactF1,
    BestJaccard,
)

#: The metric classes, in table order.
BUNDLE_METRIC_CLASSES: tuple[type, ...] = _CLASSES
#: The class names (= names for ``metrics:`` in YAML), in table order.
BUNDLE_METRICS: tuple[str, ...] = tuple(cls.__name__ for cls in _CLASSES)


#: metric name -> ids of the owners (plugin hosts) that registered it. RecBole's tables are
#: process-wide, so a metric stays registered while any host that registered it is open.
#: Weak references: a host dropped without close() leaves its set on its own (no id reuse).
_OWNERS: dict[str, weakref.WeakSet[Any]] = {}


def register_metric(cls: type, owner: object | None = None) -> None:
    """Register a RecBole metric class defined outside ``recbole.evaluator.metrics``.

    The registry name is ``cls.__name__.lower()``. Registering the same class again is a no-op;
    a class with the same module and qualified name (a reloaded module) replaces the old one.
    ``owner`` (a plugin host) is remembered so that :func:`unregister_metric` with the same owner
    removes the metric only once no other owner holds it.

    Raises:
        ValueError: ``cls`` is not a class, lacks ``metric_need`` / ``metric_type`` /
            ``smaller``, has an invalid ``metric_type``, or its name is taken by a different
            class.
    """
    if not isinstance(cls, type):
        raise ValueError(f"a metric must be a class, got {cls!r}")
    for attr in ("metric_need", "metric_type", "smaller"):
        if not hasattr(cls, attr):
            raise ValueError(f"metric class {cls.__name__} has no attribute {attr!r}")
    if not isinstance(cls.metric_type, EvaluatorType):
        raise ValueError(f"metric class {cls.__name__}: metric_type must be an EvaluatorType")
    if not callable(getattr(cls, "calculate_metric", None)):
        raise ValueError(f"metric class {cls.__name__} has no calculate_metric")
    name = cls.__name__.lower()
    existing = _register.metrics_dict.get(name)
    if existing is not None and existing is not cls:
        old_origin = f"{existing.__module__}.{existing.__qualname__}"
        if old_origin != f"{cls.__module__}.{cls.__qualname__}":
            raise ValueError(f"metric name {name!r} is already taken by {old_origin}")
    # Mutate in place: other RecBole modules hold references to these very objects.
    _register.metrics_dict[name] = cls
    _register.metric_information[name] = cls.metric_need
    _register.metric_types[name] = cls.metric_type
    if cls.smaller is True:
        if name not in _register.smaller_metrics:
            _register.smaller_metrics.append(name)
    elif name in _register.smaller_metrics:
        _register.smaller_metrics.remove(name)
    if owner is not None:
        _OWNERS.setdefault(name, weakref.WeakSet()).add(owner)


def unregister_metric(name: str, owner: object | None = None) -> None:
    """Remove a metric registered by :func:`register_metric`.

    With ``owner``, only that owner's hold is released; the metric leaves RecBole's tables when
    no owner holds it any more (two plugin hosts in one process do not pull metrics from under
    each other).
    """
    key = name.lower()
    if owner is not None:
        owners = _OWNERS.get(key, weakref.WeakSet())
        owners.discard(owner)
        if owners:
            return
        _OWNERS.pop(key, None)
    if _register.metrics_dict.get(key) is None or _register.metrics_dict[key].__module__.startswith("recbole."):
        return  # never remove RecBole's own metrics
    for table in (_register.metrics_dict, _register.metric_information, _register.metric_types):
        table.pop(key, None)
    if key in _register.smaller_metrics:
        _register.smaller_metrics.remove(key)


def register_bundle_metrics() -> None:
    """Register the 14 bundle metrics with RecBole (idempotent). The built-in ``metrics`` plugin
    registers them through the ``register_metrics`` hook; this is for use without the host."""
    for cls in _CLASSES:
        register_metric(cls)


def summary_keys(result: dict[str, float]) -> dict[str, float]:
    """RecBole's result keys (``bundleprecision``) → the summary keys (``bundle_precision``)."""
    names = {cls.__name__.lower(): cls.summary_key for cls in _CLASSES}
    return {names.get(k, k): v for k, v in result.items()}
