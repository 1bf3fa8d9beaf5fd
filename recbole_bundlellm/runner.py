"""The project's own runner: Config → dataset → model → trainer → evaluation → output files.

It follows RecBole's documented driver (Config, init_seed, create_dataset, data_preparation,
model, trainer) without importing ``recbole.quick_start``, which pulls in ray.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_bundlellm.compat import trusted_torch_load
from recbole_bundlellm.config import BundleConfig, load_yaml_files
from recbole_bundlellm.data import check_prepared
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.evaluation.results import RunResult
from recbole_bundlellm.plugins import PluginHost


class RunError(BundleLLMError, ValueError):
    """A run that cannot start as asked (e.g. no model named)."""


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """RecBole's Trainer writes ./log_tensorboard; keep it inside the run's folder."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _setup_logging(output_dir: Path, level: str) -> logging.Handler:
    handler = logging.FileHandler(output_dir / "run.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    return handler


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


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
    """
    config = BundleConfig(model, dataset, list(config_files), dict(config_dict or {}), host=host)
    spec = config.spec
    run_name = config["run_name"] or spec.name
    out = Path(output_dir or config["output_dir"] or Path("outputs") / config["dataset"] / run_name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config["checkpoint_dir"] = str(out / "checkpoints")
    config["data_path"] = str(Path(config["data_path"]).resolve())
    check_prepared(config)

    handler = _setup_logging(out, config["state"])
    try:
        start = time.perf_counter()
        init_seed(config["seed"], config["reproducibility"])
        dataset_obj = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset_obj)
        init_seed(config["seed"], config["reproducibility"])
        model_obj = spec.model_class(config, train_data.dataset)
        if not spec.is_bundle_model:
            model_obj = model_obj.to(config["device"])
        with working_directory(out):
            trainer = spec.trainer_class(config, model_obj)
            _, valid_result = trainer.fit(train_data, valid_data, saved=True,
                                          show_progress=config["show_progress"])
            with trusted_torch_load():  # RecBole reloads the checkpoint it just wrote
                test_result = trainer.evaluate(test_data, load_best_model=not spec.is_bundle_model,
                                               show_progress=config["show_progress"])
        timing = dict(getattr(trainer, "timing", {}))
        timing["total_seconds"] = time.perf_counter() - start
        info = dict(getattr(model_obj, "llm_info", {}))
        result = RunResult(run_name, spec.name, config["dataset"], dict(test_result),
                           dict(valid_result) if valid_result else None, out,
                           Path(config["data_path"]).parent, timing, info)
        write_outputs(result, config, trainer)
        config.host.notify("run_finished", result=result)
        return result
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def run_config(config_files: Sequence[str | os.PathLike], overrides: dict[str, Any] | None = None, *,
               model: str | None = None, dataset: str | None = None,
               output_dir: str | os.PathLike | None = None, host: PluginHost | None = None) -> RunResult:
    """:func:`run` with the model and dataset taken from the files and overrides, as the CLI does.

    ``model`` / ``dataset`` win over ``overrides``, which win over the files.
    """
    overrides = dict(overrides or {})
    merged = load_yaml_files(config_files)
    model = model or overrides.get("model") or merged.get("model")
    if not model:
        raise RunError("no model given (set `model:` in the config or pass --model)")
    dataset = dataset or overrides.get("dataset") or merged.get("dataset")
    overrides = {k: v for k, v in overrides.items() if k not in ("model", "dataset")}
    return run(model, dataset, config_files, overrides, output_dir=output_dir, host=host)


def write_outputs(result: RunResult, config: BundleConfig, trainer: Any) -> None:
    """config.yaml (resolved), metrics.json and, for bundle models, predictions.jsonl."""
    out = result.output_dir
    resolved = {k: _jsonable(v) for k, v in sorted(config.final_config_dict.items())}
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=True), encoding="utf-8")
    metrics = {
        "run_name": result.run_name,
        "model": result.model,
        "dataset": result.dataset,
        "test": result.test_result,
        "valid": result.valid_result,
        "timing": result.timing,
        "info": result.info,
        "command": " ".join(sys.argv),
    }
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=2), encoding="utf-8")
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
