"""A benchmark's finished cells read back, one :class:`Row` per method and dataset over its seeds:
means, standard deviations, costs and the paired test against the reference row.

**Significance.** Per dataset, each row's per-session exact F1 (from its ``predictions.jsonl``,
averaged over its seeds, so a session counts once) is paired with the reference row's on the
sessions both scored, and tested with a two-sided sign-flip permutation test
(:func:`~recbole_bundlellm.evaluation.significance.paired_permutation_test`); the p-values of the
whole table are Holm-adjusted, and the marks use the adjusted ones.

**Costs.** Training time is a fine-tuned model's ``info.training`` ``train_seconds`` +
``valid_seconds`` (every epoch, a resumed or reused training's too), else the trainer's
``fit_seconds`` + ``tune_seconds``, else the run's total less its evaluation; seconds per test
session is the evaluation's; both are means over seeds. Peak memory is the largest peak RSS of a
cell's process (the imports included: what running the method needs) over its seeds. Trainable
parameters come from ``info.parameters.trainable`` of a run's metrics.json, teacher calls and
tokens from ``info.teacher`` (``calls``; ``tokens``, or ``total_tokens``, or ``prompt_tokens`` +
``completion_tokens``), when a model records them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recbole_bundlellm.evaluation.bundle_metrics import METRIC_KEYS, normalize_predictions, session_exact_f1
from recbole_bundlellm.evaluation.significance import PairedTest, holm_adjust, paired_permutation_test

if TYPE_CHECKING:
    from recbole_bundlellm.commands.benchmark.spec import BenchmarkSpec, Cell

#: The cost columns of results.csv, with how each aggregates over seeds.
COST_KEYS: tuple[tuple[str, str], ...] = (
    ("train_seconds", "mean"), ("seconds_per_session", "mean"), ("total_seconds", "mean"),
    ("cell_wall_seconds", "mean"), ("cpu_seconds", "mean"), ("peak_rss_mb", "max"), ("gpu_peak_mb", "max"),
    ("trainable_parameters", "max"), ("teacher_calls", "mean"), ("teacher_tokens", "mean"),
)
SIGNIFICANCE_LEVELS = ((0.01, "**"), (0.05, "*"))


@dataclass
class CellRecord:
    """What one finished cell's folder holds, read back."""

    cell: Cell
    metrics: dict[str, float]
    costs: dict[str, float | None]
    n_sessions: int | None
    session_f1: dict[str, float] | None  # per test session; None without predictions.jsonl
    predictions_digest: str | None


@dataclass
class Row:
    """One method on one dataset, over its seeds."""

    dataset: str
    method: str
    facts: dict[str, Any]
    planned_seeds: list[int]
    records: list[CellRecord]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float | None] = field(default_factory=dict)
    test: PairedTest | None = None
    p_holm: float = math.nan
    is_reference: bool = False

    @property
    def seeds(self) -> list[int]:
        return [r.cell.seed for r in self.records]

    @property
    def same_predictions(self) -> bool | None:
        """Whether every seed gave the same predictions (``None``: fewer than 2 seeds, or none written)."""
        digests = [r.predictions_digest for r in self.records]
        if len(digests) < 2 or any(d is None for d in digests):
            return None
        return len(set(digests)) == 1

    @property
    def n_sessions(self) -> int | None:
        counts = {r.n_sessions for r in self.records if r.n_sessions is not None}
        return counts.pop() if len(counts) == 1 else None


# -- reading

def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _teacher_usage(info: Mapping[str, Any]) -> tuple[float | None, float | None]:
    teacher = info.get("teacher")
    if not isinstance(teacher, Mapping):
        return None, None
    usage = teacher.get("usage") if isinstance(teacher.get("usage"), Mapping) else teacher
    calls = _float(teacher.get("calls"))
    tokens = _float(usage.get("tokens")) or _float(usage.get("total_tokens"))
    if tokens is None and (_float(usage.get("prompt_tokens")) is not None
                           or _float(usage.get("completion_tokens")) is not None):
        tokens = (_float(usage.get("prompt_tokens")) or 0.0) + (_float(usage.get("completion_tokens")) or 0.0)
    return calls, tokens


def _costs(timing: Mapping[str, Any], info: Mapping[str, Any], cell_file: Mapping[str, Any]) -> dict[str, float | None]:
    fit, tune = _float(timing.get("fit_seconds")), _float(timing.get("tune_seconds"))
    total, evaluation = _float(timing.get("total_seconds")), _float(timing.get("eval_seconds"))
    training = info.get("training") if isinstance(info.get("training"), Mapping) else {}
    if _float(training.get("train_seconds")) is not None:
        # A fine-tuned student's own record: every epoch, also those of a run it resumed, or of
        # the run whose adapter it reused (its fit_seconds would count only the reloading).
        train = _float(training["train_seconds"]) + (_float(training.get("valid_seconds")) or 0.0)
    elif fit is not None:
        train = fit + (tune or 0.0)
    else:  # RecBole's own trainers time nothing: the run less its evaluation
        train = total - evaluation if total is not None and evaluation is not None else None
    parameters = info.get("parameters")
    trainable = _float(parameters.get("trainable")) if isinstance(parameters, Mapping) else None
    if trainable is None:  # the baselines' trainer records it with the training
        trainable = _float(training.get("trainable_parameters"))
    calls, tokens = _teacher_usage(info)
    return {
        "train_seconds": train, "seconds_per_session": _float(timing.get("seconds_per_session")),
        "total_seconds": total, "cell_wall_seconds": _float(cell_file.get("wall_seconds")),
        "cpu_seconds": _float(cell_file.get("cpu_seconds")), "peak_rss_mb": _float(cell_file.get("peak_rss_mb")),
        "gpu_peak_mb": _float(cell_file.get("gpu_peak_mb")), "trainable_parameters": trainable,
        "teacher_calls": calls, "teacher_tokens": tokens,
    }


def read_predictions(path: str | os.PathLike) -> tuple[dict[str, float], str]:
    """Per-session exact F1 of a ``predictions.jsonl`` (by session id), and a digest of its
    predictions (equal digests: the same bundles for every session)."""
    scores: dict[str, float] = {}
    digest = hashlib.sha256()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            session = str(record["session_id"])
            predicted = record.get("predicted_bundles")
            scores[session] = session_exact_f1(predicted, record["ground_truth"])
            kept = normalize_predictions(predicted)
            shown = None if kept is None else sorted(sorted(map(str, b)) for b in kept)
            digest.update(json.dumps([session, shown]).encode())
    return scores, digest.hexdigest()


def read_cell(cell: Cell) -> CellRecord | None:
    """A finished cell's record; ``None`` when the cell has no finished folder."""
    from recbole_bundlellm.evaluation.recbole_metrics import summary_keys

    if not cell.finished:
        return None
    metrics = json.loads((cell.folder / "metrics.json").read_text(encoding="utf-8"))
    try:
        cell_file = json.loads((cell.folder / "benchmark_cell.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # killed between the run and this file: costs unknown, results kept
        cell_file = {}
    timing, info = metrics.get("timing") or {}, metrics.get("info") or {}
    values = {k: float(v) for k, v in summary_keys(metrics.get("test") or {}).items() if _float(v) is not None}
    predictions = cell.folder / "predictions.jsonl"
    session_f1, digest = read_predictions(predictions) if predictions.is_file() else (None, None)
    sessions = _float(timing.get("eval_sessions"))
    return CellRecord(cell, values, _costs(timing, info, cell_file), None if sessions is None else int(sessions),
                      session_f1, digest)


# -- aggregating

def _aggregate(values: Sequence[float], how: str) -> float | None:
    if not values:
        return None
    return max(values) if how == "max" else statistics.fmean(values)


def default_reference(spec: BenchmarkSpec, cells: Sequence[Cell]) -> str | None:
    """``reference:`` of the file, else the first method that is the whole-session floor."""
    if spec.reference:
        return spec.reference
    for cell in cells:
        if cell.facts.get("model") == "Floor" and cell.facts.get("floor_rule") == "whole_session":
            return cell.method
    return None


def build_rows(spec: BenchmarkSpec, cells: Sequence[Cell], reference: str | None = None) -> list[Row]:
    """One :class:`Row` per method and dataset (in the grid's order), significance included."""
    rows: dict[tuple[str, str], Row] = {}
    for cell in cells:
        row = rows.setdefault((cell.dataset, cell.method), Row(cell.dataset, cell.method, cell.facts, [], []))
        row.planned_seeds.append(cell.seed)
        record = read_cell(cell)
        if record is not None:
            row.records.append(record)
    for row in rows.values():
        for key in METRIC_KEYS:
            values = [r.metrics[key] for r in row.records if key in r.metrics]
            if values:
                row.mean[key] = statistics.fmean(values)
                row.std[key] = statistics.stdev(values) if len(values) > 1 else math.nan
        for key, how in COST_KEYS:
            row.costs[key] = _aggregate([v for r in row.records if (v := r.costs.get(key)) is not None], how)
        for key, how in (("train_seconds", "std"), ("seconds_per_session", "std")):
            values = [v for r in row.records if (v := r.costs.get(key)) is not None]
            row.costs[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
    _significance(list(rows.values()), reference)
    return list(rows.values())


def _mean_session_f1(row: Row) -> dict[str, float]:
    """Per session, the mean of its exact F1 over the row's seeds that scored it."""
    by_session: dict[str, list[float]] = {}
    for record in row.records:
        for session, value in (record.session_f1 or {}).items():
            by_session.setdefault(session, []).append(value)
    return {s: statistics.fmean(v) for s, v in by_session.items()}


def _significance(rows: list[Row], reference: str | None) -> None:
    if reference is None:
        return
    tested: list[Row] = []
    for dataset in dict.fromkeys(r.dataset for r in rows):
        ref = next((r for r in rows if r.dataset == dataset and r.method == reference), None)
        if ref is None:
            continue
        ref.is_reference = True
        ref_f1 = _mean_session_f1(ref)
        for row in rows:
            if row.dataset != dataset or row is ref:
                continue
            f1 = _mean_session_f1(row)
            shared = sorted(set(f1) & set(ref_f1))
            if shared:
                row.test = paired_permutation_test([f1[s] for s in shared], [ref_f1[s] for s in shared])
                tested.append(row)
    for row, adjusted in zip(tested, holm_adjust([r.test.p_value for r in tested])):
        row.p_holm = adjusted


def significance_mark(p: float) -> str:
    """``**`` (p < 0.01), ``*`` (p < 0.05) or ``""``."""
    for level, mark in SIGNIFICANCE_LEVELS:
        if not math.isnan(p) and p < level:
            return mark
    return ""
