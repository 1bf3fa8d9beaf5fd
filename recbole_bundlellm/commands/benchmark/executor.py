"""Running a grid: each cell that has no finished folder yet, then the report.

**Executors.** ``local`` (the default) runs the cells one after the other on this machine, each
in its own process (:func:`~.cell_process.run_cell`). ``submitit`` makes each cell one job of
``submitit`` (:mod:`.cluster`): SLURM where there is one, else submitit's local executor;
``submitit-debug`` runs the jobs in this process, one after the other (for tests). Every executor
runs the same cell function into the same content-keyed folder, so cells finished anywhere form
one result set, and the tables are built the same way.
"""

from __future__ import annotations

import time
from pathlib import Path

from recbole_bundlellm.commands.benchmark.cell_process import CELL_FILE, run_cell
from recbole_bundlellm.commands.benchmark.cells import _host, plan
from recbole_bundlellm.commands.benchmark.spec import BenchmarkError, BenchmarkResult, BenchmarkSpec, Cell
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.progress import progress_bar

#: The values of ``--executor``.
EXECUTORS = ("local", "submitit", "submitit-debug")

#: What a benchmark writes in its output folder, besides its cells (see report.write_report).
REPORT_FILES = ("results.csv", "results.md", "cells.csv", "plots")


def check_report_folder(out: Path) -> None:
    """Refuse an output folder whose tables a benchmark would overwrite but did not write: a
    benchmark's folder always holds its ``cells/`` (made before any table is written)."""
    if out.exists() and not out.is_dir():
        raise BenchmarkError(f"benchmark output {out} is a file, not a folder; give --out a folder")
    if (out / "cells").is_dir():
        return
    found = [name for name in REPORT_FILES if (out / name).exists()]
    if found:
        raise BenchmarkError(f"{out} holds {', '.join(found)} that `bundlellm benchmark` did not write (no cells/ "
                             "folder beside them); they would be overwritten: give --out a folder of its own")


def run_benchmark(spec: BenchmarkSpec, *, strict: bool = False, progress: bool | None = None,
                  report: bool = True, command: str | None = None, executor: str = "local") -> BenchmarkResult:
    """Run every cell that has no finished folder yet (each in its own process, or its own job
    under ``executor="submitit"``), then write the tables and plots (``command``: the command
    line they name). Cells that fail are reported after the tables are written
    (:class:`BenchmarkError`); the others are kept."""
    start = time.perf_counter()
    if executor not in EXECUTORS:
        raise BenchmarkError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})"
                             f"{did_you_mean(executor, EXECUTORS)}")
    check_report_folder(spec.output_dir)
    host = _host(spec, strict)
    cells = plan(spec, host)
    todo: dict[str, Cell] = {}
    for cell in cells:
        if not cell.finished:
            todo.setdefault(cell.key, cell)  # two methods of one configuration run once
    reused = [c for c in cells if c.key not in todo]
    spec.cells_dir.mkdir(parents=True, exist_ok=True)
    if executor == "local":
        failed = _run_here(spec, list(todo.values()), strict=strict, progress=progress)
    else:
        from recbole_bundlellm.commands.benchmark.cluster import run_jobs

        failed = run_jobs(spec, list(todo.values()), strict=strict, debug=executor == "submitit-debug")
    result = BenchmarkResult(spec, cells, list(todo.values()), reused, failed, time.perf_counter() - start)
    if report:
        from recbole_bundlellm.commands.benchmark.report import write_report

        result.files = write_report(result, command)
    if failed:
        first = next(iter(failed.items()))
        raise BenchmarkError(f"{len(failed)} of {len(todo)} cells failed (the tables hold the others; run the "
                             f"same command again to retry them); first: {first[0]}: {first[1]}")
    return result


def _run_here(spec: BenchmarkSpec, todo: list[Cell], *, strict: bool, progress: bool | None) -> dict[str, str]:
    """The cells one after the other on this machine; cell label -> error line of those that failed."""
    failed: dict[str, str] = {}
    bar = progress_bar(total=len(todo), desc=f"benchmark {spec.name}", unit="cell", enabled=progress)
    with bar:
        for cell in todo:
            bar.set_postfix_str(cell.label, refresh=True)
            error = run_cell(cell, strict=strict)
            if error is not None:
                failed[cell.label] = error
            bar.update()
    return failed


__all__ = ["CELL_FILE", "EXECUTORS", "REPORT_FILES", "check_report_folder", "run_benchmark"]
