"""``bundlellm benchmark``: methods x datasets x seeds, one run per cell, then tables and plots."""

from recbole_bundlellm.commands.benchmark.executor import (
    DEFAULT_BENCHMARK,
    BenchmarkError,
    BenchmarkResult,
    BenchmarkSpec,
    Cell,
    Method,
    cell_key,
    cell_main,
    load_benchmark,
    plan,
    run_benchmark,
    run_cell,
)

__all__ = ["DEFAULT_BENCHMARK", "BenchmarkError", "BenchmarkResult", "BenchmarkSpec", "Cell", "Method", "cell_key",
           "cell_main", "load_benchmark", "plan", "run_benchmark", "run_cell"]
