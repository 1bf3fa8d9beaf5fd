"""The project's own runner: Config → dataset → model → trainer → evaluation → output files.

It follows RecBole's documented driver (Config, init_seed, create_dataset, data_preparation,
model, trainer) without importing ``recbole.quick_start``, which pulls in ray.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_bundlellm.compat import trusted_torch_load
from recbole_bundlellm.config import BundleConfig, load_yaml_files, redact_command, redact_secrets
from recbole_bundlellm.data import check_prepared
from recbole_bundlellm.training.distributed import barrier
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.evaluation.results import RunResult
from recbole_bundlellm.fileio import REFUSED_WRITE, atomic_folder, jsonable, write_errors
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.training.sft_trainer import RunFolders, rank_and_world


class RunError(BundleLLMError, ValueError):
    """A run that cannot start as asked (e.g. no model named, an output folder that is a file)."""


#: Files only a run writes: a folder holding either was a run's, and a new run may replace it.
RUN_MARKERS = ("metrics.json", "run.log")
#: A run is built in ``<out>.partial-<pid>``; the folder it replaces waits as ``<out>.old-<pid>``.
PARTIAL, OLD = ".partial-", ".old-"


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """RecBole's Trainer writes ./log_tensorboard; keep it inside the run's folder."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class _RunLog(logging.FileHandler):
    """run.log: a write the disk refuses stops the run (one line, see :func:`run_with_config`)
    instead of logging's printed traceback per record and a run that goes on without its log."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and exc.errno in REFUSED_WRITE:
            raise exc
        super().handleError(record)


def _setup_logging(output_dir: Path, level: str) -> logging.Handler:
    handler = _RunLog(output_dir / "run.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    return handler


def run(
    model: str,
    dataset: str | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    config_dict: dict[str, Any] | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    host: PluginHost | None = None,
) -> RunResult:
    """Run one model on one dataset and write its outputs; returns the test metrics.

    ``host``: the plugin host to use (default: one built from the configuration and environment).
    Under ``torchrun`` every process runs this; only rank 0 writes (see :func:`run_with_config`).
    """
    with _process_group_of_this_run():
        config = BundleConfig(model, dataset, list(config_files), dict(config_dict or {}), host=host)
        return run_with_config(config, output_dir=output_dir)


@contextlib.contextmanager
def _process_group_of_this_run() -> Iterator[None]:
    """Destroy, when the block ends, the process group that a config built in it started (a
    distributed run's, see :mod:`recbole_bundlellm.training.distributed`); one started before is kept."""
    import torch

    dist = torch.distributed
    started_before = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        if not started_before and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def resolve_config(config_files: Sequence[str | os.PathLike], overrides: dict[str, Any] | None = None, *,
                   model: str | None = None, dataset: str | None = None,
                   host: PluginHost | None = None) -> BundleConfig:
    """The configuration :func:`run_config` runs: ``model`` / ``dataset`` win over ``overrides``,
    which win over the files."""
    overrides = dict(overrides or {})
    merged = load_yaml_files(config_files)
    model = model or overrides.get("model") or merged.get("model")
    if not model:
        raise RunError("no model given (set `model:` in the config or pass --model)")
    dataset = dataset or overrides.get("dataset") or merged.get("dataset")
    overrides = {k: v for k, v in overrides.items() if k not in ("model", "dataset")}
    return BundleConfig(model, dataset, list(config_files), overrides, host=host)


def run_config(config_files: Sequence[str | os.PathLike], overrides: dict[str, Any] | None = None, *,
               model: str | None = None, dataset: str | None = None,
               output_dir: str | os.PathLike | None = None, host: PluginHost | None = None) -> RunResult:
    """:func:`run` with the model and dataset taken from the files and overrides, as the CLI does
    (see :func:`resolve_config`)."""
    with _process_group_of_this_run():
        config = resolve_config(config_files, overrides, model=model, dataset=dataset, host=host)
        return run_with_config(config, output_dir=output_dir)


def run_name_of(config: BundleConfig) -> str:
    """The run's name in tables and output folders: ``run_name``, else the model's name.

    A name, never a path: ``outputs/<dataset>/<run_name>`` must stay inside ``outputs/<dataset>``
    (``--run_name=../electronic/PW`` replaced another model's run before); ``output_dir`` is the
    key that chooses a folder."""
    name = str(config["run_name"] or config.spec.name)
    if not name.strip() or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise RunError(f"run_name {name!r} is a name, not a path: it may not hold '/', '\\' or be '..'; "
                       "set output_dir (--output-dir) to choose the run's folder")
    return name


def output_folder(config: BundleConfig, output_dir: str | os.PathLike | None = None) -> Path:
    """Where the run's outputs go: ``output_dir`` (argument, then config), else outputs/<dataset>/<run_name>."""
    chosen = output_dir or config["output_dir"] or Path("outputs") / str(config["dataset"]) / run_name_of(config)
    return Path(chosen).resolve()


def run_with_config(config: BundleConfig, *, output_dir: str | os.PathLike | None = None) -> RunResult:
    """Run a resolved configuration; its folder ends up holding this run whole, or, if the run
    fails, exactly what it held before (see :func:`staged_folder`).

    In a distributed run (torchrun) every process fits and evaluates (training averages their
    gradients), but only rank 0 writes the folder: the others work in a temporary folder that is
    discarded, and only read the resumable training state beside ``out``.
    """
    run_name_of(config)  # a path as run_name is refused before anything is written
    out = output_folder(config, output_dir)
    check_output_folder(out)
    # The trainer works inside the run's folder (RecBole writes ./log_tensorboard): paths a model
    # reads while fitting are made absolute first.
    for key in ("data_path", "knowledge_dir", "adapter_path"):
        if config[key]:
            config[key] = str(Path(config[key]).resolve())
    check_prepared(config)
    rank, world = rank_and_world()
    if world > 1 and not config.spec.is_bundle_model:
        # RecBole's trainers save the best epoch on local rank 0 only and reload it on every rank.
        raise RunError(f"{config.spec.name} is RecBole's own model: run it in one process (torchrun is "
                       "for the bundle models, e.g. BundleSFT)")
    if rank != 0:
        return _run_as_helper(config, out, rank)
    # A full disk (or a read-only one, a file too large) anywhere in the stage is the user's to fix:
    # one line; staged_folder has put `out` back as it was by then.
    kept = "its previous contents are kept" if out.exists() else "nothing was written"
    with write_errors(lambda why: RunError(f"cannot write the run's output folder {out}: {why}; {kept}")), \
            staged_folder(out) as stage:
        result, trainer = _fit_and_evaluate(config, stage, out)
        barrier()  # the other processes are done reading <out>.training before it goes
        # The checkpoints are in `out` once the stage is moved there.
        config["checkpoint_dir"] = str(out / "checkpoints")
        write_outputs(result, config, trainer, folder=stage)
    # The run is whole in `out` (its adapter included): the resumable training state is done with.
    shutil.rmtree(RunFolders(out, out).training, ignore_errors=True)
    config.host.notify("run_finished", result=result)
    return result


def _run_as_helper(config: BundleConfig, out: Path, rank: int) -> RunResult:
    """A process other than rank 0: the same fit and evaluation, its files discarded.

    Its stage is a temporary folder away from ``out``, so it never takes part in what
    :func:`staged_folder` sweeps, renames or deletes there.
    """
    with tempfile.TemporaryDirectory(prefix=f"{out.name}.rank{rank}-") as tmp:
        result, _ = _fit_and_evaluate(config, Path(tmp), out)
        barrier()  # rank 0 removes <out>.training once every process is done with it
    return result


def _fit_and_evaluate(config: BundleConfig, stage: Path, out: Path) -> tuple[RunResult, Any]:
    """Dataset, model, trainer: fit, then evaluate on test, logging to ``stage``/run.log."""
    spec = config.spec
    config["checkpoint_dir"] = str(stage / "checkpoints")
    handler = _setup_logging(stage, config["state"])
    try:
        start = time.perf_counter()
        init_seed(config["seed"], config["reproducibility"])
        dataset_obj = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset_obj)
        init_seed(config["seed"], config["reproducibility"])
        model_obj = spec.model_class(config, train_data.dataset)
        if hasattr(model_obj, "run_folder"):  # a bundle model keeps its resumable state beside `out`
            model_obj.run_folder = out
        # An LLM student says where it lives (llm_device may differ from RecBole's device).
        model_obj = model_obj.to(getattr(model_obj, "device", None) or config["device"])
        # RecBole's trainers and ours that train weights reload the best epoch before testing.
        trains = not spec.is_bundle_model or getattr(spec.trainer_class, "trains", False)
        with working_directory(stage):
            trainer = spec.trainer_class(config, model_obj)
            if hasattr(trainer, "run_folders"):
                trainer.run_folders = RunFolders(stage, out)
            _, valid_result = trainer.fit(train_data, valid_data, saved=True,
                                          show_progress=config["show_progress"])
            with trusted_torch_load():  # RecBole reloads the checkpoint it just wrote
                test_result = trainer.evaluate(test_data, load_best_model=trains,
                                               show_progress=config["show_progress"])
        timing = dict(getattr(trainer, "timing", {}))
        timing["total_seconds"] = time.perf_counter() - start
        info = dict(getattr(model_obj, "run_info", {}))  # RecBole's own models have none
        result = RunResult(run_name_of(config), spec.name, config["dataset"], dict(test_result),
                           dict(valid_result) if valid_result else None, out,
                           Path(config["data_path"]).parent, timing, info)
        return result, trainer
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def check_output_folder(out: Path) -> None:
    """Refuse an output folder a run cannot replace whole: a file, a folder inside a file, the
    working directory, or a folder of other files (never a run's to delete)."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"is inside {existing}, which is a file"
        raise RunError(f"output folder {out} {where}; --output-dir (output_dir) must name a folder")
    if out == existing and Path.cwd().resolve().is_relative_to(out):
        raise RunError(f"output folder {out} holds the working directory; a run replaces its whole "
                       "folder, so give a folder of its own (--output-dir / output_dir)")
    if out == existing and not any((out / name).exists() for name in RUN_MARKERS):
        other = sorted(p.name for p in out.iterdir())
        if other:
            shown = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
            raise RunError(f"output folder {out} (--output-dir / output_dir) holds files that are not a run's "
                           f"({shown}); a run replaces its whole folder, so give a new or empty folder")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process. A zombie counts as dead: a killed run whose parent
    died is reaped by init only when init reaps (a container's PID 1 often never does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS) or it just went: trust kill(0)
        return True
    return state not in ("Z", "X")


def _sweep_stale(out: Path) -> None:
    """Remove the partial and old folders that killed runs (SIGKILL, power loss) left beside ``out``."""
    if not out.parent.is_dir():
        return
    for path in out.parent.iterdir():
        for mark in (PARTIAL, OLD):
            prefix = out.name + mark
            pid = path.name[len(prefix):]
            if path.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A fresh ``<out>.partial-<pid>`` to build a run in, moved onto ``out`` when the block ends.

    If the block raises (an error, Ctrl-C), the stage and any parent folder made for it are
    removed and ``out`` is left as it was: a folder never mixes two runs' files.
    """
    _sweep_stale(out)
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    # A previous run is renamed aside to <out>.old-<pid> before the stage takes its place: a crash
    # between the two renames leaves the previous run whole there, never a mix of both.
    try:
        with atomic_folder(out, stage=out.with_name(f"{out.name}{PARTIAL}{os.getpid()}"),
                           old=out.with_name(f"{out.name}{OLD}{os.getpid()}")) as stage:
            yield stage
    except BaseException:
        for parent in made:
            with contextlib.suppress(OSError):  # not empty: someone else wrote there meanwhile
                parent.rmdir()
        raise


def write_outputs(result: RunResult, config: BundleConfig, trainer: Any, *, folder: Path) -> None:
    """config.yaml (resolved), metrics.json and, for bundle models, predictions.jsonl, written to
    ``folder`` (the run's stage, renamed to its output folder after). Secret-named settings are redacted."""
    out = folder
    resolved = redact_secrets({k: jsonable(v) for k, v in sorted(config.final_config_dict.items())})
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=True), encoding="utf-8")
    metrics = {
        "run_name": result.run_name,
        "model": result.model,
        "dataset": result.dataset,
        "test": result.test_result,
        "valid": result.valid_result,
        "timing": result.timing,
        "info": result.info,
        "command": redact_command(sys.argv),
    }
    (out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2), encoding="utf-8")
    artifacts = getattr(getattr(trainer, "model", None), "write_artifacts", None)
    if callable(artifacts):  # a model's own files (RouteDK: its routing plot)
        artifacts(out)
    predictions = getattr(trainer, "last_predictions", None)
    if predictions is None:
        return
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for session, pred in zip(trainer.last_sessions, predictions):
            record = {
                "session_id": pred.session_id,
                "items": list(session.item_ids),
                "predicted_bundles": None if pred.failed else [list(b) for b in pred.bundles],
                "ground_truth": [session.in_session_order(b) for b in session.bundles],
                "raw_text": pred.raw_text,
                "failure": pred.failure,
                **pred.details,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
