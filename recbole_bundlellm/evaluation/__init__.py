"""Evaluation of generated bundles: pure-Python metrics and their RecBole metric classes.

``bundle_metrics`` needs nothing but Python. The RecBole side (``recbole_metrics``) imports
recbole; the built-in ``metrics`` plugin registers its classes with RecBole; its public names are also reachable from here,
imported lazily so that using the plain metrics does not pull in recbole and torch.
"""

from __future__ import annotations

from typing import Any

from recbole_bundlellm.evaluation.bundle_metrics import (
    METRIC_KEYS,
    Bundle,
    compute_bundle_metrics,
    format_table,
    normalize_predictions,
)

_LAZY = ("BUNDLE_METRICS", "register_bundle_metrics", "register_metric")

__all__ = [
    "METRIC_KEYS",
    "Bundle",
    "compute_bundle_metrics",
    "format_table",
    "normalize_predictions",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from recbole_bundlellm.evaluation import recbole_metrics

        return getattr(recbole_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
