"""A benchmark's plots (matplotlib, Agg): bars per metric, metric vs sampling ratio, quality vs cost.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recbole_bundlellm.commands.benchmark.rows import Row, _float
from recbole_bundlellm.evaluation.bundle_metrics import SHORT_NAMES
from recbole_bundlellm.fileio import atomic_write_bytes

def _figure(width: float, height: float) -> Any:
    # A bare Figure renders with Agg and touches no pyplot state or GUI backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


def _std(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def plot_bars(rows: Sequence[Row], metric: str, path: Path) -> bool:
    """Grouped bars: datasets on x, one bar per method, error bars = std over seeds."""
    rows = [r for r in rows if metric in r.mean]
    if not rows:
        return False
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    fig = _figure(max(6.0, 1.2 + 0.35 * len(methods) * len(datasets)), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    by_key = {(r.dataset, r.method): r for r in rows}
    for j, method in enumerate(methods):
        xs, heights, errors = [], [], []
        for i, dataset in enumerate(datasets):
            row = by_key.get((dataset, method))
            if row is not None:
                xs.append(i - 0.4 + width * (j + 0.5))
                heights.append(row.mean[metric])
                errors.append(_std(row.std.get(metric)))
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=method)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel(SHORT_NAMES.get(metric, metric))
    ax.set_title(f"{SHORT_NAMES.get(metric, metric)} (mean ± std over seeds)")
    ax.legend(fontsize="small", ncols=2 if len(methods) > 6 else 1, loc="best")
    _save(fig, path)
    return True


def _sampling(row: Row) -> tuple[str, float] | None:
    sampling = row.facts.get("sampling")
    if isinstance(sampling, Mapping) and sampling.get("sampler") and _float(sampling.get("ratio")) is not None:
        return str(sampling["sampler"]), float(sampling["ratio"])
    return None


def plot_sampling(rows: Sequence[Row], metric: str, path: Path) -> bool:
    """Metric vs sampling ratio, one line per sampler (and use), one panel per dataset."""
    points = [(r, s) for r in rows if metric in r.mean and (s := _sampling(r)) is not None]
    if not points:
        return False
    datasets = list(dict.fromkeys(r.dataset for r, _ in points))
    fig = _figure(5.0 * len(datasets), 4.0)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        lines: dict[str, list[tuple[float, float, float]]] = {}
        for row, (sampler, ratio) in points:
            if row.dataset == dataset:
                use = row.facts.get("adaptation") or row.facts.get("model")
                lines.setdefault(f"{sampler} · {use}", []).append((ratio, row.mean[metric], _std(row.std.get(metric))))
        for label, values in sorted(lines.items()):
            values.sort()
            ax.errorbar([v[0] for v in values], [v[1] for v in values], yerr=[v[2] for v in values],
                        marker="o", capsize=2, label=label)
        ax.set_title(dataset)
        ax.set_xlabel("sampling ratio")
        ax.set_ylabel(SHORT_NAMES.get(metric, metric))
        ax.legend(fontsize="small")
    _save(fig, path)
    return True


def plot_quality_vs_cost(rows: Sequence[Row], path: Path) -> bool:
    """Exact F1 against seconds per test session (log x), a marker per dataset, labelled points."""
    points = [r for r in rows if "exact_f1" in r.mean and (r.costs.get("seconds_per_session") or 0) > 0]
    if not points:
        return False
    fig = _figure(7.0, 4.8)
    ax = fig.add_subplot()
    markers = "osD^v<>ph*"
    for i, dataset in enumerate(dict.fromkeys(r.dataset for r in points)):
        mine = [r for r in points if r.dataset == dataset]
        ax.errorbar([r.costs["seconds_per_session"] for r in mine], [r.mean["exact_f1"] for r in mine],
                    yerr=[_std(r.std.get("exact_f1")) for r in mine], fmt=markers[i % len(markers)],
                    capsize=2, label=dataset)
        for r in mine:
            ax.annotate(r.method, (r.costs["seconds_per_session"], r.mean["exact_f1"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel("seconds per test session (log)")
    ax.set_ylabel("exact F1")
    ax.set_title("quality vs cost")
    ax.legend(fontsize="small")
    _save(fig, path)
    return True


def write_plots(rows: Sequence[Row], metrics: Sequence[str], folder: Path) -> dict[str, Path]:
    """Every plot the rows allow; returns name -> path of those written."""
    written: dict[str, Path] = {}
    for metric in metrics:
        if plot_bars(rows, metric, folder / f"bars_{metric}.png"):
            written[f"bars_{metric}"] = folder / f"bars_{metric}.png"
        if plot_sampling(rows, metric, folder / f"sampling_{metric}.png"):
            written[f"sampling_{metric}"] = folder / f"sampling_{metric}.png"
    if plot_quality_vs_cost(rows, folder / "quality_vs_cost.png"):
        written["quality_vs_cost"] = folder / "quality_vs_cost.png"
    return written
