"""``bundlellm benchmark -c configs/benchmarks/<name>.yaml``: methods x datasets x seeds, one run of
the common runner per cell, then tables and plots. One module per job:

- :mod:`.spec`: the benchmark file, read (:func:`load_benchmark`), and the grid's types;
- :mod:`.cells`: the plan: each cell's configuration resolved and its key (:func:`plan`, :func:`cell_key`);
- :mod:`.resources`: what each cell's job asks a cluster for (``resources:``);
- :mod:`.cell_process`: one cell in its own process (:func:`run_cell`), whatever runs it;
- :mod:`.executor`: running the grid's cells, here or as jobs (:func:`run_benchmark`);
- :mod:`.cluster`: the cells as ``submitit`` jobs (SLURM), recorded so a rerun waits for them;
- :mod:`.rows`: finished cells read back into rows: means, std, costs, paired tests;
- :mod:`.tables`: ``results.csv``, ``cells.csv``, ``results.md``, the README's block;
- :mod:`.plots`: the plots; :mod:`.report`: all of them written (:func:`write_report`).
"""

from recbole_bundlellm.commands.benchmark.cells import cell_key, plan
from recbole_bundlellm.commands.benchmark.cell_process import cell_main, run_cell
from recbole_bundlellm.commands.benchmark.executor import EXECUTORS, run_benchmark
from recbole_bundlellm.commands.benchmark.report import write_report
from recbole_bundlellm.commands.benchmark.spec import (
    DEFAULT_BENCHMARK,
    BenchmarkError,
    BenchmarkResult,
    BenchmarkSpec,
    Cell,
    Method,
    load_benchmark,
)

__all__ = ["DEFAULT_BENCHMARK", "EXECUTORS",
           "BenchmarkError", "BenchmarkResult", "BenchmarkSpec", "Cell", "Method", "cell_key",
           "cell_main", "load_benchmark", "plan", "run_benchmark", "run_cell", "write_report"]
