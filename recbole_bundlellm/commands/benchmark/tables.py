"""A benchmark's tables: ``results.csv``, ``cells.csv``, ``results.md`` and the README's block.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recbole_bundlellm.commands.benchmark.rows import COST_KEYS, Row, significance_mark
from recbole_bundlellm.evaluation.bundle_metrics import METRIC_KEYS, SHORT_NAMES

if TYPE_CHECKING:
    from recbole_bundlellm.commands.benchmark.spec import BenchmarkResult

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
