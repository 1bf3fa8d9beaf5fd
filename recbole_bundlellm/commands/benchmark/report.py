"""A benchmark's tables and plots, from its finished cells' folders (see :mod:`recbole_bundlellm.commands.benchmark.executor`).

Written to the benchmark's ``output_dir``:

* ``results.csv``: one row per method and dataset: each metric's mean and standard deviation
  over seeds (sample std, ddof 1), the paired test against the reference row, the costs;
* ``cells.csv``: one row per cell (method, dataset, seed): its metrics, timing, costs, folder;
* ``results.md``: the quality table (mean ± std) and the cost table, with how they were made;
* ``plots/``: ``bars_<metric>.png`` (per method and dataset, error bars = std over seeds),
  ``sampling_<metric>.png`` (metric vs sampling ratio per sampler, when cells set
  ``sampling: {sampler, ratio}``) and ``quality_vs_cost.png`` (exact F1 against seconds per test
  session, log x).

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

import csv
import hashlib
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recbole_bundlellm.evaluation.bundle_metrics import METRIC_KEYS, SHORT_NAMES, normalize_predictions, session_exact_f1
from recbole_bundlellm.evaluation.significance import PairedTest, holm_adjust, paired_permutation_test
from recbole_bundlellm.fileio import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from recbole_bundlellm.commands.benchmark.executor import BenchmarkResult, BenchmarkSpec, Cell

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


# ---------------------------------------------------------------------------------- reading


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


# ---------------------------------------------------------------------------------- aggregating


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


# ---------------------------------------------------------------------------------- tables


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def results_csv(rows: Sequence[Row], reference: str | None) -> str:
    """results.csv: one line per method and dataset."""
    header = ["dataset", "method", "model", "seeds", "seeds_planned", "same_predictions", "n_sessions"]
    header += [f"{k}_{stat}" for k in METRIC_KEYS for stat in ("mean", "std")]
    header += ["reference", "delta_exact_f1", "p_value", "p_holm", "n_paired"]
    header += [f"{k}_{how}" for k, how in COST_KEYS] + ["train_seconds_std", "seconds_per_session_std"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        same = row.same_predictions
        line = [row.dataset, row.method, row.facts.get("model"), " ".join(map(str, row.seeds)),
                " ".join(map(str, row.planned_seeds)), "" if same is None else str(same).lower(), row.n_sessions]
        line += [row.mean.get(k) if stat == "mean" else row.std.get(k) for k in METRIC_KEYS for stat in ("mean", "std")]
        line += [reference if (row.test or row.is_reference) else None,
                 row.test.mean_difference if row.test else None, row.test.p_value if row.test else None,
                 row.p_holm, row.test.n if row.test else None]
        line += [row.costs.get(k) for k, _ in COST_KEYS] + [row.costs.get("train_seconds_std"),
                                                           row.costs.get("seconds_per_session_std")]
        writer.writerow([_csv_value(v) for v in line])
    return out.getvalue()


def cells_csv(rows: Sequence[Row]) -> str:
    """cells.csv: one line per finished cell."""
    header = ["dataset", "method", "seed", "key", "n_sessions", *METRIC_KEYS, *(k for k, _ in COST_KEYS), "folder"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        for r in row.records:
            line = [row.dataset, row.method, r.cell.seed, r.cell.key, r.n_sessions,
                    *(r.metrics.get(k) for k in METRIC_KEYS), *(r.costs.get(k) for k, _ in COST_KEYS), r.cell.folder]
            writer.writerow([_csv_value(v) for v in line])
    return out.getvalue()


def _mean_std(row: Row, key: str, digits: int = 3) -> str:
    if key not in row.mean:
        return "-"
    std = row.std.get(key, math.nan)
    return f"{row.mean[key]:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _seeds_cell(row: Row) -> str:
    text = str(len(row.records)) if len(row.records) == len(row.planned_seeds) else \
        f"{len(row.records)}/{len(row.planned_seeds)}"
    return text + (" (same)" if row.same_predictions else "")


def _vs_reference(row: Row) -> str:
    if row.is_reference:
        return "ref"
    if row.test is None:
        return "-"
    return f"{row.test.mean_difference:+.3f}{significance_mark(row.p_holm)}"


def _md_table(header: Sequence[str], lines: Sequence[Sequence[str]], right_from: int = 2) -> str:
    align = ["---" if i < right_from else "--:" for i in range(len(header))]
    body = ["| " + " | ".join(cells) + " |" for cells in [header, align, *lines]]
    return "\n".join(body)


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e4 or value == int(value) and digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value < 0.1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def machine_line() -> str:
    """Cores, GPU (or none) and platform of this machine."""
    gpu = "no GPU"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpu = f"GPU {torch.cuda.get_device_name(0)}" + (f" x{torch.cuda.device_count()}" if torch.cuda.device_count() > 1 else "")
    return f"{os.cpu_count()} CPU cores, {gpu}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def _duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {sec} s" if hours else f"{minutes} min {sec} s" if minutes else f"{sec} s"


def markdown(result: BenchmarkResult, rows: Sequence[Row], reference: str | None, command: str) -> str:
    """results.md: how the benchmark was made, the quality table, the cost table, the notes."""
    spec = result.spec
    compute = sum(r.costs.get("cell_wall_seconds") or 0.0 for row in rows for r in row.records)
    finished = sum(len(row.records) for row in rows)
    lines = [
        f"# Benchmark: {spec.name}", "",
        *([spec.description, ""] if spec.description else []),
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine_line()}",
        f"- wall time of this command: {_duration(result.wall_seconds)} ({len(result.ran)} cells run, "
        f"{len(result.reused)} reused); all {finished} finished cells' own wall times add up to {_duration(compute)}",
        "",
        "## Quality (test split, mean ± std over seeds)", "",
    ]
    header = ["dataset", "method", "seeds", *(SHORT_NAMES[k] for k in METRIC_KEYS), "Δ exact F1 vs ref"]
    body = [[row.dataset, row.method, _seeds_cell(row), *(_mean_std(row, k) for k in METRIC_KEYS), _vs_reference(row)]
            for row in rows]
    lines += [_md_table(header, body), ""]
    lines += ["## Cost (means over seeds; peak memory: the largest)", ""]
    header = ["dataset", "method", "train s", "s / test session", "peak RSS MB", "peak GPU MB",
              "trainable params", "teacher calls", "teacher tokens"]
    body = [[row.dataset, row.method, _seconds(row.costs.get("train_seconds")),
             _seconds(row.costs.get("seconds_per_session")), _number(row.costs.get("peak_rss_mb"), 0),
             _number(row.costs.get("gpu_peak_mb"), 0), _number(row.costs.get("trainable_parameters"), 0),
             _number(row.costs.get("teacher_calls"), 0), _number(row.costs.get("teacher_tokens"), 0)] for row in rows]
    lines += [_md_table(header, body), ""]
    lines += ["## Notes", ""] + _notes(rows, reference)
    return "\n".join(lines) + "\n"


def summary_table(results_csv_text: str) -> str:
    """A compact Markdown table from a ``results.csv``: one line per method, one column per dataset
    with exact F1 and best Jaccard (mean ± std over seeds; ``*``/``**`` where the paired test
    against the reference row is significant after Holm's correction), then the training seconds
    and seconds per test session averaged over datasets. The README's table is this function's
    output on the committed CSV (a test keeps the two equal)."""
    rows = list(csv.DictReader(io.StringIO(results_csv_text)))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_key = {(r["dataset"], r["method"]): r for r in rows}

    def pair(row: Mapping[str, str] | None) -> str:
        if row is None:
            return "-"
        mark = "" if row["reference"] == row["method"] or not row["p_holm"] else significance_mark(float(row["p_holm"]))
        f1, jac = (f"{float(row[f'{k}_mean']):.3f} ± {float(row[f'{k}_std'] or 0):.3f}" for k in ("exact_f1", "best_jaccard"))
        return f"{f1}{mark} / {jac}"

    def mean_cost(method: str, key: str) -> str:
        values = [float(by_key[d, method][key]) for d in datasets if (d, method) in by_key and by_key[d, method][key]]
        return _seconds(sum(values) / len(values)) if values else "-"

    header = ["method", *(f"{d}: exact F1 / best Jaccard" for d in datasets), "train s", "s / test session"]
    body = [[m, *(pair(by_key.get((d, m))) for d in datasets), mean_cost(m, "train_seconds_mean"),
             mean_cost(m, "seconds_per_session_mean")] for m in methods]
    return _md_table(header, body, right_from=1)


def readme_block(results_csv_text: str, results_md_text: str) -> str:
    """What the README shows of a benchmark: its command, date, machine and wall time (the
    ``- `` lines heading its results.md) and :func:`summary_table` of its results.csv."""
    facts = [line for line in results_md_text.split("## ", 1)[0].splitlines() if line.startswith("- ")]
    return "\n".join([*facts, "", summary_table(results_csv_text)])


def _notes(rows: Sequence[Row], reference: str | None) -> list[str]:
    notes = [
        "- Metrics: P, R (reference family, AICL convention: failed sessions left out), P strict, R strict "
        "(failed sessions count 0), Cov, failed (failure rate); answer shape: whole (share answered with the whole "
        "session), #pred, #true (bundles per session); ours: distinct R, exact P/R/F1, best Jacc.",
        "- ± is the sample standard deviation over seeds. The prepared split is fixed, so a seed changes only a "
        "method's own randomness (RecBole's `seed` and the model's `*_seed` keys). **(same)**: every seed gave "
        "identical predictions: the method is deterministic here, and its ± 0 says nothing about robustness. "
        "`k/n` seeds: only k of the n planned cells finished.",
    ]
    if reference is not None and any(r.is_reference for r in rows):
        notes.append(
            f"- Δ exact F1 vs ref: mean per-session exact F1 difference against **{reference}** on the same test "
            "sessions (each session's F1 averaged over seeds first); two-sided paired sign-flip permutation test, "
            "p-values Holm-adjusted over the whole table: * p < 0.05, ** p < 0.01 (results.csv has p and adjusted p).")
    else:
        notes.append("- No significance test: the grid has no reference row (`reference:`, default: the "
                     "whole-session floor).")
    notes.append("- Costs: training time = fit + tuning on valid (a fine-tuned model: its epochs and their "
                 "validation, also when its adapter was reused); peak RSS of the cell's own process (imports "
                 "included); `-`: not recorded by the model.")
    return notes


# ---------------------------------------------------------------------------------- plots


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


def write_report(result: BenchmarkResult, command: str | None = None) -> dict[str, Path]:
    """results.csv, cells.csv, results.md and the plots, in the benchmark's output folder."""
    spec = result.spec
    reference = default_reference(spec, result.cells)
    rows = build_rows(spec, result.cells, reference)
    out = spec.output_dir
    command = command or " ".join(["bundlellm", *sys.argv[1:]])
    files = {"csv": out / "results.csv", "cells_csv": out / "cells.csv", "markdown": out / "results.md"}
    atomic_write_text(files["csv"], results_csv(rows, reference))
    atomic_write_text(files["cells_csv"], cells_csv(rows))
    atomic_write_text(files["markdown"], markdown(result, rows, reference, command))
    files.update(write_plots(rows, spec.plot_metrics, out / "plots"))
    return files
