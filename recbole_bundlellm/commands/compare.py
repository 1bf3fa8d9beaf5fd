"""Comparisons: several runs on one dataset, the label-free floors beside them, one table.

``bundlellm compare a.yaml b.yaml --floors`` calls :func:`compare`, then :func:`format_results`
and :func:`write_results`. Every row must score the same sessions: :func:`incomparable_counts`
names the runs when they do not. Rows are keyed by run name, so two runs of one name (or one
output folder) are refused before anything runs (:func:`check_distinct_runs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recbole_bundlellm.config import BundleConfig, check_shared_keys, host_for_runs, keys_for, load_yaml_files
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.extension.registry import ModelSpec
from recbole_bundlellm.evaluation.results import RunResult
from recbole_bundlellm.fileio import atomic_write_text
from recbole_bundlellm.commands.runner import (RunError, output_folder, resolve_config, run_config, run_name_of,
                                      run_with_config)

FLOOR_PREFIX = "floor:"


def compare(config_files: Sequence[str | os.PathLike], overrides: dict[str, Any] | None = None, *,
            floors: bool = False, host: PluginHost | None = None) -> list[RunResult]:
    """One run per config file (each with ``overrides``), then the floors on the first run's dataset.

    ``overrides`` are shared: each run gets those its model reads, and each must be read by one
    of the runs (the floors' included). Every configuration is resolved and checked before the
    first run starts.
    """
    from recbole_bundlellm.models.floors.floor import FLOOR_RULES

    overrides = dict(overrides or {})
    # One host for every row; each config would otherwise build its own, one per run and floor.
    host = host or host_for_runs([[path] for path in config_files], overrides)
    models = [_model_of(path, overrides, host) for path in config_files]
    floor_model = host.models.resolve("Floor") if floors else None
    check_shared_keys(overrides, [m for m in [*models, floor_model] if m is not None], host, "the overrides")
    configs = [resolve_config([path], keys_for(overrides, model, host) if model else overrides, host=host)
               for path, model in zip(config_files, models)]
    check_distinct_runs(config_files, configs, floors=floors)
    results = [run_with_config(config) for config in configs]
    if floors and results:
        first = results[0]
        for rule in FLOOR_RULES:
            floor = {"data_path": str(first.data_path), "eval_max_sessions": None,
                     **keys_for(overrides, host.models.resolve("Floor"), host),
                     "floor_rule": rule, "run_name": f"{FLOOR_PREFIX}{rule}"}
            results.append(run_config([], floor, model="Floor", dataset=first.dataset, host=host))
    return results


def _model_of(path: str | os.PathLike, overrides: dict[str, Any], host: PluginHost) -> ModelSpec | None:
    """The model a config file runs (``None`` when it names none: resolving it says so)."""
    name = overrides.get("model") or load_yaml_files([path]).get("model")
    return host.models.resolve(str(name)) if name else None


def check_distinct_runs(config_files: Sequence[str | os.PathLike], configs: Sequence[BundleConfig], *,
                        floors: bool = False) -> None:
    """Refuse runs that would share a table row (run name) or an output folder, and, with
    ``floors``, a run named like a floor: one would silently overwrite the other."""
    from recbole_bundlellm.models.floors.floor import FLOOR_RULES

    by_name: dict[str, list[str]] = {}
    by_folder: dict[Path, list[str]] = {}
    for path, config in zip(config_files, configs):
        by_name.setdefault(run_name_of(config), []).append(str(path))
        by_folder.setdefault(output_folder(config), []).append(str(path))
    for name, paths in by_name.items():
        if len(paths) > 1:
            raise RunError(f"run_name '{name}' is shared by {' and '.join(paths)}: their table rows and "
                           "output folders would overwrite each other; give each config its own `run_name:`")
        if floors and name in {f"{FLOOR_PREFIX}{rule}" for rule in FLOOR_RULES}:
            raise RunError(f"{paths[0]} has run_name '{name}', which --floors gives to a floor; rename the run")
    for folder, paths in by_folder.items():
        if len(paths) > 1:
            raise RunError(f"{' and '.join(paths)} all write to {folder}; give each its own `output_dir:` "
                           "(or leave it out: outputs/<dataset>/<run_name>)")


def format_results(results: Sequence[RunResult]) -> str:
    """The bundle metrics table (with time per session), then one line per non-bundle run."""
    from recbole_bundlellm.evaluation.bundle_metrics import METRIC_KEYS, format_table
    from recbole_bundlellm.evaluation.recbole_metrics import summary_keys

    bundle_rows = {r.run_name: summary_keys(r.test_result) for r in results if "exactf1" in r.test_result}
    other = [r for r in results if "exactf1" not in r.test_result]
    # The columns of the metrics some run reports: the built-in ones in table order, then a
    # plugin's (in the order the runs report them), so `metrics: [ExactF1, Mine]` shows both.
    reported = list(dict.fromkeys(k for row in bundle_rows.values() for k in row))
    keys = [k for k in METRIC_KEYS if k in reported] + [k for k in reported if k not in METRIC_KEYS]
    text = ""
    if bundle_rows:
        text += format_table(bundle_rows, keys) + "\n"
        timing = [f"{r.run_name}: {r.timing.get('seconds_per_session', 0):.3f} s/session over "
                  f"{r.timing.get('eval_sessions', 0)} sessions" for r in results if r.run_name in bundle_rows]
        text += "\n".join(timing) + "\n"
    for r in other:
        text += f"{r.run_name} on {r.dataset}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.test_result.items()) + "\n"
    return text


def write_results(results: Sequence[RunResult], text: str, stem: str | os.PathLike) -> None:
    """``<stem>.md`` (the table) and ``<stem>.json`` (every run's metrics, timing, output folder)."""
    stem = Path(stem)
    atomic_write_text(stem.with_suffix(".md"), text)
    payload = [{"run_name": r.run_name, "model": r.model, "dataset": r.dataset, "test": r.test_result,
                "timing": r.timing, "output_dir": str(r.output_dir)} for r in results]
    atomic_write_text(stem.with_suffix(".json"), json.dumps(payload, indent=2))


def incomparable_counts(results: Sequence[RunResult]) -> dict[str, int] | None:
    """Sessions scored per run when the runs scored different numbers of sessions, else ``None``."""
    scored = {r.run_name: int(r.timing["eval_sessions"]) for r in results if "eval_sessions" in r.timing}
    return scored if len(set(scored.values())) > 1 else None
