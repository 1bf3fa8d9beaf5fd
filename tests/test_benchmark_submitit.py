"""`bundlellm benchmark --executor submitit`: cells as submitit jobs (here submitit's local
executor, the path SLURM takes less sbatch), mixed with local cells in one result set, a killed
waiting command resumed without resubmitting, `resources:` checked and handed to SLURM, --plan.
Freq and the whole-session floor only (deterministic: every seed gives the same predictions), on
the tiny data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

from recbole_bundlellm.commands.benchmark.cells import plan
from recbole_bundlellm.commands.benchmark.cluster import JOBS_FILE, read_jobs
from recbole_bundlellm.commands.benchmark.executor import run_benchmark
from recbole_bundlellm.commands.benchmark.resources import Resources, submitit_parameters
from recbole_bundlellm.commands.benchmark.spec import BenchmarkError, load_benchmark
from recbole_bundlellm.commands.cli import main


from test_benchmark import _csv, _finished  # noqa: E402  (the grid tests' readers)


def _grid(tmp_path: Path, tiny_data: Path, extra: str = "") -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(f"""
datasets: [clothing]
seeds: [0]
overrides: {{data_path: {tiny_data}}}
resources: {{cpus: 1, timeout_min: 10}}
methods:
  - {{name: Freq, model: Freq, resources: {{mem_gb: 2}}}}
  - {{name: "floor:whole_session", model: Floor, floor_rule: whole_session}}
{extra}""")
    return path


def _test_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())["test"]


def _submitted(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "submitit").glob("*_submitted.pkl"))


def test_local_and_submitit_cells_make_one_result_set_and_a_rerun_reuses_them(tiny_data, tmp_path, capsys):
    path = _grid(tmp_path, tiny_data)
    out = tmp_path / "out"
    local = run_benchmark(load_benchmark(path, output_dir=out), progress=False)  # seed 0, here
    assert len(local.ran) == 2

    # --plan: the seed-0 cells are reused, the seed-1 cells would be submitted, with their resources
    assert main(["benchmark", "-c", str(path), "--out", str(out), "--seeds=0,1", "--executor", "submitit",
                 "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = {(c.method, c.seed): c.key for c in plan(load_benchmark(path, output_dir=out, seeds=[0, 1]))}
    assert lines[:4] == [
        f"reuse   Freq · clothing · seed 0  {keys['Freq', 0]}  gpus=0 cpus=1 mem_gb=2 timeout_min=10",
        f"to run  Freq · clothing · seed 1  {keys['Freq', 1]}  gpus=0 cpus=1 mem_gb=2 timeout_min=10",
        f"reuse   floor:whole_session · clothing · seed 0  {keys['floor:whole_session', 0]}  gpus=0 cpus=1 timeout_min=10",
        f"to run  floor:whole_session · clothing · seed 1  {keys['floor:whole_session', 1]}  gpus=0 cpus=1 timeout_min=10",
    ]
    assert lines[4].startswith("4 cells, 2 to run, 2 reused; folders under ")
    assert lines[5].startswith("executor submitit: 2 jobs") and len(lines) == 6

    # the seed-1 cells as submitit jobs (no SLURM here: submitit's local executor)
    before = _finished(out / "cells")
    mixed = run_benchmark(load_benchmark(path, output_dir=out, seeds=[0, 1]), progress=False, executor="submitit")
    assert sorted((c.method, c.seed) for c in mixed.ran) == [("Freq", 1), ("floor:whole_session", 1)]
    assert {c.key for c in mixed.reused} == set(before)
    err = capsys.readouterr().err
    assert "2 cells submitted to local" in err and "[2/2]" in err
    jobs = read_jobs(out / "submitit")
    assert set(jobs) == {c.key for c in mixed.ran} and {j["cluster"] for j in jobs.values()} == {"local"}
    assert len(_submitted(out)) == 2
    after = _finished(out / "cells")
    assert set(after) == set(keys.values()) and {k: after[k] for k in before} == before  # same folders, kept
    for cell in mixed.ran:  # built by the same cell function: the runner's files and the grid's costs
        for part in ("config.yaml", "metrics.json", "predictions.jsonl", "run.log", "benchmark_cell.json"):
            assert (cell.folder / part).is_file(), part
        assert json.loads((cell.folder / "benchmark_cell.json").read_text())["peak_rss_mb"] > 50
        # both methods ignore the seed: the job's cell has the local cell's metrics
        assert _test_metrics(cell.folder) == _test_metrics(out / "cells" / keys[cell.method, 0])
    rows = {r["method"]: r for r in _csv(out / "results.csv")}
    assert rows["Freq"]["seeds"] == "0 1" and rows["floor:whole_session"]["same_predictions"] == "true"
    assert len(_csv(out / "cells.csv")) == 4

    # run again, either way: every cell reused, nothing submitted
    for executor in ("submitit", "local"):
        again = run_benchmark(load_benchmark(path, output_dir=out, seeds=[0, 1]), progress=False, executor=executor)
        assert not again.ran and len(again.reused) == 4
    assert len(_submitted(out)) == 2 and _finished(out / "cells") == after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a local job is found again by its /proc entry")
def test_a_killed_waiting_command_rerun_waits_for_its_job_instead_of_resubmitting(tiny_data, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(f"datasets: [clothing]\nseeds: [0]\noverrides: {{data_path: {tiny_data}}}\n"
                    "methods:\n  - {name: floor, model: Floor, floor_rule: whole_session}\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "BUNDLELLM_PROGRESS": "0"}
    command = subprocess.Popen([sys.executable, "-m", "recbole_bundlellm.commands.cli", "benchmark", "-c", str(path),
                                "--out", str(out), "--executor", "submitit"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not (out / "submitit" / JOBS_FILE).is_file() and command.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        command.send_signal(signal.SIGKILL)  # the waiting command dies; its job (its own process) goes on
        command.wait()
    jobs = read_jobs(out / "submitit")
    assert len(jobs) == 1, "the command ended before it recorded its job"
    (key, entry), = jobs.items()
    assert not (out / "cells" / key / "metrics.json").exists()  # the job had not finished yet

    rerun = run_benchmark(load_benchmark(path, output_dir=out), progress=False, executor="submitit")
    assert [c.key for c in rerun.ran] == [key] and (out / "cells" / key / "metrics.json").is_file()
    assert read_jobs(out / "submitit") == jobs  # waited for the recorded job ...
    assert _submitted(out) == [f"{entry['job_id']}_submitted.pkl"]  # ... and submitted nothing new


def test_resources_merge_key_by_key_and_reach_slurm(tiny_data, tmp_path, monkeypatch):
    path = _grid(tmp_path, tiny_data, extra="  - {name: big, model: Floor, floor_rule: first_two, resources: "
                                            "{gpus: 1, timeout_min: 240, partition: gpu, slurm: {qos: high}}}\n")
    spec = load_benchmark(path, output_dir=tmp_path / "out")
    resources = {m.name: m.resources for m in spec.methods}
    assert resources["Freq"] == Resources(cpus=1, mem_gb=2.0, timeout_min=10)
    assert resources["big"] == Resources(gpus=1, cpus=1, timeout_min=240, partition="gpu", slurm={"qos": "high"})
    assert {c.method: c.resources for c in plan(spec)}["big"] == resources["big"]

    # What SLURM would be asked for, written by submitit's own SLURM executor (it needs an srun to start).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm", cluster="slurm")
    executor.update_parameters(**submitit_parameters(resources["big"]))
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--gpus-per-node=1", "--cpus-per-task=1", "--time=240", "--partition=gpu", "--qos=high",
                 "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in sbatch, line
    executor.update_parameters(**submitit_parameters(resources["Freq"]))
    assert "#SBATCH --mem=2GB\n" in executor._executor._make_submission_file_text("python -m job", "uid")


@pytest.mark.parametrize(("resources", "error"), [
    ("resources: {gpu: 1}", "unknown setting 'resources.gpu'; did you mean 'gpus'?"),
    ("resources: {cpus: 0}", "resources.cpus must be"),
    ("resources: {slurm: {qoss: high}}", "slurm.qoss is not a SLURM setting of submitit; did you mean 'qos'?"),
    ("resources: {slurm: {time: 30}}", "slurm.time: give `timeout_min:` instead"),
    ("resources: [gpus]", "`resources` must be a mapping of gpus, cpus"),
    ("methods:\n  - {model: Floor, resources: {timeout: 5}}",
     "unknown setting 'methods[0].resources.timeout'; did you mean 'timeout_min'?"),
])
def test_bad_resources_are_one_line_errors(tiny_data, tmp_path, capsys, resources, error):
    path = tmp_path / "grid.yaml"
    methods = "" if resources.startswith("methods") else "methods:\n  - {model: Floor}\n"
    path.write_text(f"datasets: [clothing]\noverrides: {{data_path: {tiny_data}}}\n{resources}\n{methods}")
    assert main(["benchmark", "-c", str(path), "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and error in err and err.count("\n") == 1, err
    with pytest.raises(BenchmarkError):
        load_benchmark(path)
