"""A benchmark file, read: :func:`load_benchmark` builds a :class:`BenchmarkSpec` (its methods,
datasets, seeds), and the types the grid passes around (:class:`Cell`, :class:`BenchmarkResult`).

A benchmark file::

    name: baselines                    # default: the file's stem
    datasets: [electronic, clothing]   # default: each method's own `dataset:`
    seeds: [0, 1, 2]                   # the default
    reference: "floor: whole session"  # the row the others are tested against (default: the
                                       # whole-session floor when the grid has it)
    overrides: {eval_max_sessions: ~}  # every cell (a method's own keys win over these)
    resources: {cpus: 4, timeout_min: 60}  # each cell's job under --executor submitit (see .resources)
    output_dir: outputs/benchmarks/baselines   # the default: outputs/benchmarks/<name>
    methods:
      - {name: Freq, model: Freq}                        # inline: a display name and config keys
      - {name: SFT, model: BundleSFT, resources: {gpus: 1}}   # its jobs' resources, over the grid's
      - {name: Pairwise, config: configs/{dataset}/pairwise.yaml}   # file(s), {dataset} filled in
      - configs/electronic/studies/format/*.yaml         # a file or a glob: one method per file

Relative paths are read from the current directory, as ``bundlellm run -c`` reads them.
Precedence in a cell, lowest first: the method's files, the grid's ``overrides``, the method's
inline keys, the command line's ``--key=value``, then the grid's own axes (``dataset`` and the
seed keys).

**Seeds.** A cell sets RecBole's ``seed`` and every ``*_seed`` key of the model's own YAML
(``floor_seed``, ``pairwise_seed``) to the cell's seed; ``seed_keys:`` names other keys instead.
The prepared split is fixed, so a seed changes only the method's own randomness: a deterministic
method gives the same predictions for every seed, which the table marks ("same") rather than
reporting its ± 0 as robustness. A method's own ``seeds:`` replaces the grid's; ``--seeds`` replaces both.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recbole_bundlellm.commands.benchmark.resources import RESOURCES_KEY, Resources, merged
from recbole_bundlellm.config import load_yaml_files
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.evaluation.bundle_metrics import METRIC_KEYS
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.settings import SettingsError, load_settings

#: The benchmark `bundlellm benchmark` runs without -c.
DEFAULT_BENCHMARK = Path("configs/benchmarks/baselines.yaml")
DEFAULT_SEEDS = (0, 1, 2)
#: Keys of a method entry that are not config keys.
_METHOD_KEYS = ("name", "config", "seeds", RESOURCES_KEY)
_TOP_KEYS = ("name", "description", "methods", "datasets", "seeds", "reference", "overrides", "output_dir",
             "seed_keys", "plot_metrics", RESOURCES_KEY)
DATASET_PLACEHOLDER = "{dataset}"


class BenchmarkError(BundleLLMError, ValueError):
    """A benchmark file that cannot be used as written, or cells that failed."""


@dataclass(frozen=True)
class Method:
    """One row of the table: a display name, config file templates and inline keys."""

    name: str
    config: tuple[str, ...] = ()
    inline: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    #: Files per dataset, for a glob with ``{dataset}``: the method has cells only there.
    per_dataset: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: What each of its cells' jobs asks a cluster for (``--executor submitit`` only).
    resources: Resources = field(default_factory=Resources)

    def files_for(self, dataset: str | None) -> tuple[str, ...] | None:
        """The method's config files on ``dataset``; ``None`` when it has no cell there."""
        if self.per_dataset:
            return self.per_dataset.get(str(dataset))
        if dataset is None:
            return self.config
        return tuple(path.replace(DATASET_PLACEHOLDER, dataset) for path in self.config)


@dataclass
class BenchmarkSpec:
    """A parsed benchmark file (see the module docstring); :func:`load_benchmark` builds it."""

    name: str
    methods: list[Method]
    datasets: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    overrides: dict[str, Any] = field(default_factory=dict)
    cli_overrides: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    output_dir: Path = Path("outputs/benchmarks")
    seed_keys: tuple[str, ...] | None = None
    plot_metrics: tuple[str, ...] = ("exact_f1", "best_jaccard", "bundle_precision", "bundle_recall")
    path: Path | None = None
    description: str = ""

    @property
    def cells_dir(self) -> Path:
        return self.output_dir / "cells"


@dataclass
class Cell:
    """One run of the grid: a method on a dataset with a seed."""

    method: str
    dataset: str
    seed: int
    key: str
    config_files: tuple[str, ...]
    overrides: dict[str, Any]
    facts: dict[str, Any]
    folder: Path
    resources: Resources = field(default_factory=Resources)

    @property
    def finished(self) -> bool:
        # The runner renames a run into place whole: metrics.json there means the run is complete.
        return (self.folder / "metrics.json").is_file()

    @property
    def label(self) -> str:
        return f"{self.method} · {self.dataset} · seed {self.seed}"


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` did: every planned cell, and how many ran, were reused, failed."""

    spec: BenchmarkSpec
    cells: list[Cell]
    ran: list[Cell]
    reused: list[Cell]
    failed: dict[str, str]  # cell label -> error line
    wall_seconds: float
    files: dict[str, Path] = field(default_factory=dict)


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(values, (list, tuple)) or not values
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values)):
        raise BenchmarkError(f"{where} must be a non-empty list of integers >= 0, got {value!r}")
    if len(set(values)) != len(values):
        raise BenchmarkError(f"{where} lists a seed twice: {value!r}")
    return tuple(values)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values or any(not isinstance(v, str) or not v for v in values):
        raise BenchmarkError(f"{where} must be a non-empty list of names, got {value!r}")
    if len(set(values)) != len(values):
        raise BenchmarkError(f"{where} lists a name twice: {value!r}")
    return tuple(values)


def _check_file(path: str, where: str) -> None:
    if DATASET_PLACEHOLDER not in path and not Path(path).is_file():
        raise BenchmarkError(f"{where}: config file {path} not found (paths are read from the current "
                             f"directory, {Path.cwd()})")


def _name_of_file(path: str) -> str:
    run_name = load_yaml_files([path]).get("run_name")
    return str(run_name) if run_name else Path(path).stem


def _resources(grid: Mapping[str, Any] | None, own: Any, where: str) -> Resources:
    """The method's resources over the grid's, checked (an unknown key names the closest one)."""
    if own is not None and not isinstance(own, Mapping):
        known = ", ".join(f.name for f in dataclasses.fields(Resources))
        raise BenchmarkError(f"`{where}` must be a mapping of {known}; got {own!r}")
    try:
        return load_settings(Resources, merged(grid, own), where)
    except SettingsError as exc:
        raise BenchmarkError(str(exc)) from None


def _methods_of_entry(entry: Any, index: int, datasets: tuple[str, ...] | None,
                      grid_resources: Mapping[str, Any] | None = None) -> list[Method]:
    where = f"methods[{index}]"
    if isinstance(entry, str):
        resources = _resources(grid_resources, None, RESOURCES_KEY)
        if glob.has_magic(entry):
            return [dataclasses.replace(m, resources=resources) for m in _glob_methods(entry, where, datasets)]
        _check_file(entry, where)
        return [Method(_name_of_file(entry) if DATASET_PLACEHOLDER not in entry else Path(entry).stem, (entry,),
                       resources=resources)]
    if not isinstance(entry, dict):
        raise BenchmarkError(f"{where} must be a config file path or a mapping (name, config, config keys), "
                             f"got {type(entry).__name__}")
    config = entry.get("config") or ()
    files = _str_list(config, f"{where}.config") if config else ()
    for path in files:
        _check_file(path, where)
    inline = {k: v for k, v in entry.items() if k not in _METHOD_KEYS}
    if not files and "model" not in inline:
        raise BenchmarkError(f"{where} names no model: give `model:` or `config:` (a file with `model:`)")
    name = entry.get("name") or inline.get("run_name")
    if not name and files and DATASET_PLACEHOLDER not in files[-1]:
        name = _name_of_file(files[-1])
    name = name or inline.get("model")
    if not name:
        raise BenchmarkError(f"{where} needs a `name:` (its files name their dataset with {DATASET_PLACEHOLDER})")
    seeds = _int_list(entry["seeds"], f"{where}.seeds") if entry.get("seeds") is not None else None
    resources = _resources(grid_resources, entry.get(RESOURCES_KEY), f"{where}.{RESOURCES_KEY}")
    return [Method(str(name), files, inline, seeds, resources=resources)]


def _glob_methods(pattern: str, where: str, datasets: tuple[str, ...] | None) -> list[Method]:
    """One method per matched file; with ``{dataset}``, matched per dataset and joined by name."""
    if DATASET_PLACEHOLDER not in pattern:
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise BenchmarkError(f"{where}: no config file matches {pattern} (from {Path.cwd()})")
        return [Method(_name_of_file(p), (p,)) for p in paths]
    if datasets is None:
        raise BenchmarkError(f"{where}: {pattern} names {DATASET_PLACEHOLDER}, so the benchmark needs `datasets:`")
    by_name: dict[str, dict[str, tuple[str, ...]]] = {}
    for dataset in datasets:
        for path in sorted(glob.glob(pattern.replace(DATASET_PLACEHOLDER, dataset))):
            by_name.setdefault(Path(path).stem, {})[dataset] = (path,)
    if not by_name:
        raise BenchmarkError(f"{where}: no config file matches {pattern} for {', '.join(datasets)}")
    return [Method(name, per_dataset=files) for name, files in by_name.items()]


def load_benchmark(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, *,
                   seeds: Sequence[int] | None = None, datasets: Sequence[str] | None = None,
                   output_dir: str | os.PathLike | None = None) -> BenchmarkSpec:
    """Read a benchmark file; ``overrides`` (the command line's ``--key=value``), ``seeds``,
    ``datasets`` and ``output_dir`` replace the file's."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark file {path} not found" + (
            " (run from the repository root, or pass -c FILE)" if path == DEFAULT_BENCHMARK else ""))
    data = load_yaml_files([path])
    for key in data:
        if key not in _TOP_KEYS:
            raise BenchmarkError(f"unknown key '{key}' in benchmark file {path}{did_you_mean(key, _TOP_KEYS)}")
    name = str(data.get("name") or path.stem)
    if not name.strip() or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise BenchmarkError(f"benchmark name {name!r} in {path} is a name, not a path: it may not hold '/', '\\' "
                             "or be '..'; set output_dir (or --out) to choose the folder")
    grid_datasets = _str_list(datasets or data["datasets"], "datasets") if (datasets or data.get("datasets")) else None
    entries = data.get("methods")
    if not isinstance(entries, list) or not entries:
        raise BenchmarkError(f"benchmark file {path} needs `methods:`, a list of config files or mappings")
    grid_resources = data.get(RESOURCES_KEY)
    _resources(None, grid_resources, RESOURCES_KEY)  # the grid's own mistakes are named as the grid's
    methods = [m for i, entry in enumerate(entries) for m in _methods_of_entry(entry, i, grid_datasets, grid_resources)]
    if seeds:  # the command line's seeds are every method's
        methods = [dataclasses.replace(m, seeds=None) for m in methods]
    names = [m.name for m in methods]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BenchmarkError(f"methods share a name ({', '.join(twice)}): each row needs its own `name:`")
    common = data.get("overrides") or {}
    if not isinstance(common, dict):
        raise BenchmarkError(f"`overrides:` in {path} must be a mapping of config keys")
    reference = data.get("reference")
    if reference is not None and str(reference) not in names:
        raise BenchmarkError(f"reference '{reference}' is not one of the methods{did_you_mean(str(reference), names)}")
    plot_metrics = data.get("plot_metrics")
    spec = BenchmarkSpec(
        name=name, methods=methods, datasets=grid_datasets,
        seeds=_int_list(list(seeds) if seeds else data.get("seeds", list(DEFAULT_SEEDS)), "seeds"),
        overrides=dict(common), cli_overrides=dict(overrides or {}),
        reference=None if reference is None else str(reference),
        output_dir=Path(output_dir or data.get("output_dir") or Path("outputs/benchmarks") / name),
        seed_keys=_str_list(data["seed_keys"], "seed_keys") if data.get("seed_keys") else None,
        path=path, description=str(data.get("description") or ""))
    if plot_metrics:
        from recbole_bundlellm.evaluation.bundle_metrics import METRIC_KEYS

        spec.plot_metrics = _str_list(plot_metrics, "plot_metrics")
        for key in spec.plot_metrics:
            if key not in METRIC_KEYS:
                raise BenchmarkError(f"plot_metrics: '{key}' is not a metric{did_you_mean(key, METRIC_KEYS)}")
    return spec
