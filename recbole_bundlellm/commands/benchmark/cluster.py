"""``--executor submitit``: each cell not yet finished becomes one ``submitit`` job, then the
command waits for them.

``submitit.AutoExecutor(folder=<output_dir>/submitit)`` submits to SLURM where ``sbatch`` is
found, else runs the jobs on this machine with submitit's local executor (every job at once);
``submitit-debug`` runs them in this process, one after the other. A job runs
:func:`~.cell_process.run_cell`, the function ``--executor local`` runs, into the same
content-keyed cell folder: cells finished on a cluster and here are one result set. Each job
asks for its method's :class:`~.resources.Resources`.

**Resuming.** The job id of every submitted cell is written to ``<output_dir>/submitit/jobs.json``
as soon as it is submitted. Run again, the command reuses finished cells (as always), and for a
cell whose recorded job is still queued or running (SLURM: its state; local: its controller
process is alive) it waits for that job instead of submitting the cell again. A cell whose job
ended without finishing it (failed, timed out, cancelled) is submitted again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recbole_bundlellm.commands.benchmark.cell_process import run_cell
from recbole_bundlellm.commands.benchmark.resources import submitit_parameters
from recbole_bundlellm.commands.benchmark.spec import BenchmarkError, BenchmarkSpec, Cell
from recbole_bundlellm.fileio import atomic_write_text

#: The job ids of a grid's submitted cells (cell key -> id, cluster, label), beside submitit's files.
JOBS_FILE = "jobs.json"
#: SLURM states of a job that may still finish its cell.
_ACTIVE_SLURM = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
                           "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED"})
INSTALL_HINT = "pip install 'recbole-bundlellm[cluster]' (or: pip install submitit==1.5.4)"


def jobs_folder(spec: BenchmarkSpec) -> Path:
    """Where submitit keeps the grid's jobs (pickles, logs) and :data:`JOBS_FILE`."""
    return (spec.output_dir / "submitit").resolve()


def read_jobs(folder: Path) -> dict[str, dict[str, Any]]:
    """The recorded jobs (cell key -> entry); none when the file is missing or unreadable."""
    try:
        data = json.loads((folder / JOBS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_jobs(folder: Path, jobs: dict[str, dict[str, Any]]) -> None:
    atomic_write_text(folder / JOBS_FILE, json.dumps(jobs, indent=2, sort_keys=True))


@contextlib.contextmanager
def _job_environment() -> Iterator[None]:
    """The jobs import exactly what this process imports (a worktree, plugins on sys.path):
    submitit's local executor and ``sbatch`` both hand the submitting process's environment on."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _local_controller_alive(job_id: str) -> bool:
    """Whether submitit's local controller of ``job_id`` (its pid) still runs: the id alone could
    name another process after the controller ended, so its command line must be submitit's."""
    if not job_id.isdigit():
        return False
    try:
        cmdline = Path(f"/proc/{job_id}/cmdline").read_bytes()
        state = Path(f"/proc/{job_id}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return b"submitit" in cmdline and state not in ("Z", "X")


@dataclass
class _Tracked:
    """A cell's job being waited for; ``reattached``: submitted by an earlier command."""

    cell: Cell
    job: Any
    reattached: bool = False

    def done(self) -> bool:
        if self.reattached and type(self.job).__name__ == "LocalJob":
            # A local job of an earlier command has no process handle here: its controller tells.
            return not _local_controller_alive(self.job.job_id)
        return bool(self.job.done())


def _reattach(submitit: Any, entry: dict[str, Any] | None, cluster: str, folder: Path) -> Any | None:
    """The recorded job of a cell if it is still queued or running on ``cluster``, else ``None``."""
    if not entry or entry.get("cluster") != cluster or not entry.get("job_id"):
        return None
    job_id = str(entry["job_id"])
    if cluster == "slurm":
        job = submitit.SlurmJob(folder=folder, job_id=job_id)
        state = str(job.watcher.get_state(job_id, mode="force")).split()[0].upper()
        return job if state in _ACTIVE_SLURM else None
    if cluster == "local" and _local_controller_alive(job_id):
        return submitit.LocalJob(folder=folder, job_id=job_id)
    return None


def _outcome(tracked: _Tracked) -> str | None:
    """``None`` when the job finished its cell, else the error line."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        error = tracked.job.result()
    except (FailedJobError, UncompletedJobError) as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        log = getattr(getattr(tracked.job, "paths", None), "stderr", None)
        return f"job {tracked.job.job_id} ended without a result: {lines[0] if lines else type(exc).__name__}" + (
            f" (log: {log})" if log else "")
    if error is None and not tracked.cell.finished:
        return f"job {tracked.job.job_id} ended but left no finished folder"
    return error


def _say(line: str) -> None:
    # stdout carries the table; these lines are the wait's progress.
    print(f"benchmark: {line}", file=sys.stderr, flush=True)


def run_jobs(spec: BenchmarkSpec, todo: list[Cell], *, strict: bool = False, debug: bool = False,
             poll_seconds: float = 2.0) -> dict[str, str]:
    """Submit each cell of ``todo`` as a submitit job (or wait for its still-running one) and wait
    for all of them; cell label -> error line of those that failed."""
    try:
        import submitit
    except ImportError:
        raise BenchmarkError(f"--executor submitit needs the submitit package: {INSTALL_HINT}") from None
    if not todo:
        return {}
    folder = jobs_folder(spec)
    executor = submitit.AutoExecutor(folder=folder, cluster="debug" if debug else None)
    cluster = executor.cluster
    jobs = read_jobs(folder)
    tracked: list[_Tracked] = []
    for cell in todo:
        job = None if debug else _reattach(submitit, jobs.get(cell.key), cluster, folder)
        if job is not None:
            tracked.append(_Tracked(cell, job, reattached=True))
            continue
        try:
            executor.update_parameters(name=f"bundlellm-{spec.name}", **submitit_parameters(cell.resources))
        except (NameError, ValueError) as exc:  # submitit refuses a parameter (its message names it)
            raise BenchmarkError(f"{cell.label}: submitit refuses the resources {cell.resources.describe()}: "
                                 f"{str(exc).splitlines()[0]}") from None
        with _job_environment():
            job = executor.submit(run_cell, cell, strict=strict)
        tracked.append(_Tracked(cell, job))
        if not debug:  # written after each job: a killed command still knows every job it submitted
            jobs[cell.key] = {"job_id": str(job.job_id), "cluster": cluster, "cell": cell.label,
                              "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            _write_jobs(folder, jobs)
    waiting = sum(t.reattached for t in tracked)
    _say(f"{len(tracked) - waiting} cells submitted to {cluster}" + (
        f", {waiting} still running from an earlier submission (not resubmitted)" if waiting else "")
        + f"; job logs under {folder}")
    try:
        return _wait(tracked, debug=debug, poll_seconds=poll_seconds)
    except KeyboardInterrupt:
        _say("stopped waiting; jobs not finished are left as they are (a SLURM job keeps running): the same "
             "command run again reuses finished cells and waits for running jobs instead of resubmitting them")
        raise


def _wait(tracked: list[_Tracked], *, debug: bool, poll_seconds: float) -> dict[str, str]:
    """Wait for every job, one progress line per job that ends; cell label -> error line."""
    failed: dict[str, str] = {}
    pending = list(tracked)
    ended = 0
    while pending:
        still: list[_Tracked] = []
        for item in pending:
            # A debug job runs when its result is asked for: it is never done before.
            if not debug and not item.done():
                still.append(item)
                continue
            error = _outcome(item)
            if error is not None:
                failed[item.cell.label] = error
            ended += 1
            _say(f"[{ended}/{len(tracked)}] {item.cell.label}: " + ("done" if error is None else f"failed: {error}")
                 + f" (job {item.job.job_id})")
        pending = still
        if pending:
            time.sleep(poll_seconds)
    return failed


__all__ = ["JOBS_FILE", "jobs_folder", "read_jobs", "run_jobs"]
