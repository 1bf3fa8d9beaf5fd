"""Plugin ``metrics``: the bundle metrics (both families, the failure rate and the answer shape) as
RecBole metrics."""

from __future__ import annotations

from collections.abc import Callable

from recbole_bundlellm.extension.hookspecs import hookimpl


@hookimpl
def register_metrics(register: Callable[[type], None]) -> None:
    from recbole_bundlellm.evaluation.recbole_metrics import BUNDLE_METRIC_CLASSES

    for cls in BUNDLE_METRIC_CLASSES:
        register(cls)
