"""A benchmark's tables and plots, from its finished cells' folders (see :mod:`recbole_bundlellm.commands.benchmark`).

Written to the benchmark's ``output_dir``:

* ``results.csv``: one row per method and dataset: each metric's mean and standard deviation
  over seeds (sample std, ddof 1), the paired test against the reference row, the costs;
* ``cells.csv``: one row per cell (method, dataset, seed): its metrics, timing, costs, folder;
* ``results.md``: the quality table (mean ± std) and the cost table, with how they were made;
* ``plots/``: ``bars_<metric>.png`` (per method and dataset, error bars = std over seeds),
  ``sampling_<metric>.png`` (metric vs sampling ratio per sampler, when cells set
  ``sampling: {sampler, ratio}``) and ``quality_vs_cost.png`` (exact F1 against seconds per test
  session, log x).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recbole_bundlellm.commands.benchmark.plots import write_plots
from recbole_bundlellm.commands.benchmark.rows import CellRecord, Row, build_rows, default_reference, read_cell, read_predictions
from recbole_bundlellm.commands.benchmark.tables import cells_csv, markdown, readme_block, results_csv, summary_table
from recbole_bundlellm.fileio import atomic_write_text

if TYPE_CHECKING:
    from recbole_bundlellm.commands.benchmark.spec import BenchmarkResult

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


__all__ = ["CellRecord", "Row", "build_rows", "cells_csv", "default_reference", "markdown", "read_cell",
           "read_predictions", "readme_block", "results_csv", "summary_table", "write_plots", "write_report"]
