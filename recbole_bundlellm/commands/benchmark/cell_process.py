"""One cell in its own process (:func:`run_cell`): the function every executor runs for a cell,
on this machine (``--executor local``) or inside a submitit job (``--executor submitit``), so a
cell is built the same way wherever it runs.

**One process per cell.** The runner runs in-process, and a process's peak memory
(``ru_maxrss``) only ever grows, so in one process a cell's peak could not be told from an
earlier cell's. A child process per cell gives each cell its own peak (and CPU time), starts each
from the same clean state (seeds, torch threads, logging handlers, CUDA caches), and a cell that
crashes ends itself, not the grid. It costs the imports (2-3 s) per cell. The child dies with the
process that started it (``PR_SET_PDEATHSIG`` on Linux), so a killed grid (or job) leaves no
orphan finishing a cell. The runner builds the cell in ``<folder>.partial-<pid>`` and renames it
into place whole: a killed cell leaves no folder that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from recbole_bundlellm.commands.benchmark.spec import Cell
from recbole_bundlellm.config import host_for_runs
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import atomic_write_text

#: Written beside the runner's files once a cell's process is done: its costs.
CELL_FILE = "benchmark_cell.json"


def _child_env() -> dict[str, str]:
    # The cell imports exactly what this process imports (a worktree, plugins on sys.path).
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _cell_argv(cell: Cell) -> list[str]:
    """The one-run command equivalent to the cell, recorded in its metrics.json."""
    argv = ["bundlellm", "run"]
    for path in cell.config_files:
        argv += ["-c", path]
    argv += ["--output-dir", str(cell.folder)]
    for key, value in cell.overrides.items():
        argv.append(f"--{key}={yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}")
    return argv


def _stdout_for_child() -> Any:
    # The cell's own output goes to stderr, beside its progress bars: stdout carries the table.
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return sys.stderr.fileno()
    return None


def run_cell(cell: Cell, *, strict: bool = False) -> str | None:
    """Run one cell in a child process; ``None`` on success, else its error line. On success the
    cell's costs go to ``<folder>/benchmark_cell.json``."""
    with tempfile.TemporaryDirectory(prefix="bundlellm-cell-") as tmp:
        job = Path(tmp) / "cell.yaml"
        status_file = Path(tmp) / "status.json"
        job.write_text(yaml.safe_dump({
            "config_files": list(cell.config_files), "overrides": cell.overrides, "output_dir": str(cell.folder),
            "status": str(status_file), "parent": os.getpid(), "strict": strict, "argv": _cell_argv(cell),
        }), encoding="utf-8")
        start = time.perf_counter()
        code = ("import sys; from recbole_bundlellm.commands.benchmark.cell_process import cell_main; "
                "sys.exit(cell_main(sys.argv[1]))")
        proc = subprocess.Popen([sys.executable, "-c", code, str(job)], env=_child_env(),
                                stdout=_stdout_for_child(), stdin=subprocess.DEVNULL)
        try:
            returncode = proc.wait()
        except BaseException:
            # Ctrl-C reached the child too (one process group): let its runner clean its stage.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            proc.kill()
            raise
        wall = time.perf_counter() - start
        try:
            status = json.loads(status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = {}
    if returncode == 0 and cell.finished:
        atomic_write_text(cell.folder / CELL_FILE, json.dumps({
            "key": cell.key, "method": cell.method, "dataset": cell.dataset, "seed": cell.seed,
            "wall_seconds": round(wall, 3), **{k: status.get(k) for k in ("peak_rss_mb", "cpu_seconds", "gpu_peak_mb")},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, indent=2))
        return None
    if status.get("error"):
        return str(status["error"])
    if returncode < 0:
        return f"the cell's process was killed by signal {-returncode}"
    return f"the cell's process exited with {returncode} and left no finished folder"


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when the grid's process dies (Linux), so a killed grid
    leaves no orphan finishing a cell; elsewhere, only the check below."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the grid died before the line above
        os._exit(1)


def _own_usage() -> dict[str, float | None]:
    """This process's peak memory (RSS, MiB), CPU seconds and peak GPU memory (MiB, if used)."""
    usage: dict[str, float | None] = {"peak_rss_mb": None, "cpu_seconds": None, "gpu_peak_mb": None}
    with contextlib.suppress(ImportError):
        import resource

        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        usage["peak_rss_mb"] = round(max(own.ru_maxrss, children.ru_maxrss) * unit / 2**20, 1)
        usage["cpu_seconds"] = round(sum((own.ru_utime, own.ru_stime, children.ru_utime, children.ru_stime)), 2)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
        usage["gpu_peak_mb"] = round(peak / 2**20, 1)
    return usage


def cell_main(job_path: str) -> int:
    """Entry point of a cell's process (see :func:`run_cell`): one run, then its status file."""
    job = yaml.safe_load(Path(job_path).read_text(encoding="utf-8"))
    _die_with_parent(int(job["parent"]))
    sys.argv = list(job["argv"])
    status: dict[str, Any] = {"ok": False}
    code = 1
    try:
        from recbole_bundlellm.commands.runner import run_config

        files = list(job["config_files"])
        host = host_for_runs([files], job["overrides"], strict=bool(job["strict"]))
        run_config(files, job["overrides"], output_dir=job["output_dir"], host=host)
        status["ok"], code = True, 0
    except BundleLLMError as exc:
        status["error"] = str(exc if not isinstance(exc, KeyError) else exc.args[0])
        code = 2
    except BaseException as exc:  # a bug: its traceback goes to stderr, one line to the grid
        traceback.print_exc()
        status["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        status.update(_own_usage())
        atomic_write_text(job["status"], json.dumps(status))
    return code
