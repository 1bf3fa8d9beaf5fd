"""``bundlellm benchmark -c configs/benchmarks/<name>.yaml``: methods x datasets x seeds, one run of
the common runner per cell, then tables and plots (:mod:`recbole_bundlellm.commands.benchmark.report`).

A benchmark file::

    name: baselines                    # default: the file's stem
    datasets: [electronic, clothing]   # default: each method's own `dataset:`
    seeds: [0, 1, 2]                   # the default
    reference: "floor: whole session"  # the row the others are tested against (default: the
                                       # whole-session floor when the grid has it)
    overrides: {eval_max_sessions: ~}  # every cell (a method's own keys win over these)
    output_dir: outputs/benchmarks/baselines   # the default: outputs/benchmarks/<name>
    methods:
      - {name: Freq, model: Freq}                        # inline: a display name and config keys
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

**Cells.** Each cell's folder is ``<output_dir>/cells/<key>``, where the key hashes the resolved
configuration (less where its outputs go: ``output_dir``, ``checkpoint_dir``, ``run_name``,
``show_progress``, ``state``, and ``data_path``, replaced by a hash of the dataset's prepared
files; less the keys only other models define), the package version and the model's source file.
The device is part of the configuration: a cell run on a CPU is not reused on a GPU machine. A cell is finished when its folder holds
``metrics.json``: the runner builds a run in ``<folder>.partial-<pid>`` and renames it into place
whole, so a killed grid never leaves a folder that looks finished but is not, and the next grid
runs exactly the cells without one (an extended grid: only the new cells). The key does not cover
a knowledge store's contents nor code outside the model's own module: after changing those,
remove the cells folder (or give another ``output_dir``).

**One process per cell.** The runner runs in-process, and a process's peak memory
(``ru_maxrss``) only ever grows, so in one process a cell's peak could not be told from an
earlier cell's. A child process per cell gives each cell its own peak (and CPU time), starts each
from the same clean state (seeds, torch threads, logging handlers, CUDA caches), and a cell that
crashes ends itself, not the grid. It costs the imports (2-3 s) per cell. The child dies with the
grid (``PR_SET_PDEATHSIG`` on Linux), so a killed grid leaves no orphan finishing a cell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recbole_bundlellm import __version__
from recbole_bundlellm.config import BundleConfig, host_for_runs, load_yaml_files
from recbole_bundlellm.data.prepared import check_prepared
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import atomic_write_text, sha256_file
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.progress import progress_bar
from recbole_bundlellm.commands.runner import resolve_config

#: The benchmark `bundlellm benchmark` runs without -c.
DEFAULT_BENCHMARK = Path("configs/benchmarks/baselines.yaml")
DEFAULT_SEEDS = (0, 1, 2)
#: Settings that say where or how loudly a run writes, not what it computes: not in a cell's key.
NOT_IN_KEY = frozenset({"output_dir", "checkpoint_dir", "run_name", "show_progress", "state", "data_path"})
#: Bump when what a key covers changes, so old cells are not taken for new ones.
CELL_FORMAT = "1"
#: Written by the grid beside the runner's files once a cell's process is done: its costs.
CELL_FILE = "benchmark_cell.json"
#: Settings of a cell that the report reads (reference row, sampling plot, labels).
FACT_KEYS = ("model", "floor_rule", "sampling", "adaptation", "knowledge_use")
#: Keys of a method entry that are not config keys.
_METHOD_KEYS = ("name", "config", "seeds")
_TOP_KEYS = ("name", "description", "methods", "datasets", "seeds", "reference", "overrides", "output_dir",
             "seed_keys", "plot_metrics")
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


# ---------------------------------------------------------------------------------- the file


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


def _methods_of_entry(entry: Any, index: int, datasets: tuple[str, ...] | None) -> list[Method]:
    where = f"methods[{index}]"
    if isinstance(entry, str):
        if glob.has_magic(entry):
            return _glob_methods(entry, where, datasets)
        _check_file(entry, where)
        return [Method(_name_of_file(entry) if DATASET_PLACEHOLDER not in entry else Path(entry).stem, (entry,))]
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
    return [Method(str(name), files, inline, seeds)]


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
    grid_datasets = _str_list(datasets or data["datasets"], "datasets") if (datasets or data.get("datasets")) else None
    entries = data.get("methods")
    if not isinstance(entries, list) or not entries:
        raise BenchmarkError(f"benchmark file {path} needs `methods:`, a list of config files or mappings")
    methods = [m for i, entry in enumerate(entries) for m in _methods_of_entry(entry, i, grid_datasets)]
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


# ---------------------------------------------------------------------------------- the plan


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_DATASET_HASHES: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def dataset_fingerprint(folder: Path, dataset: str) -> str:
    """SHA-256 over the prepared files ``<folder>/<dataset>.*`` (cached by name, size and mtime)."""
    files = sorted(p for p in Path(folder).glob(f"{dataset}.*") if p.is_file())
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    cache_key = (str(Path(folder).resolve()), stamp)
    if cache_key not in _DATASET_HASHES:
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
        _DATASET_HASHES[cache_key] = digest.hexdigest()
    return _DATASET_HASHES[cache_key]


def _source_hash(cls: type) -> str | None:
    try:
        return sha256_file(inspect.getsourcefile(cls) or "")
    except (TypeError, OSError):
        return None


def _other_models_keys(config: BundleConfig) -> set[str]:
    """Keys that only other models' YAML files define: the resolved configuration carries every
    known key, but this model never reads them (a grid-wide ``freq_min_support`` must not make
    the floors' cells new)."""
    host = config.host
    if host is None:
        return set()
    own = set(load_yaml_files(config.spec.config_files))
    others: set[str] = set()
    for spec in host.models.specs():
        if spec.name != config.spec.name:
            others |= set(load_yaml_files(spec.config_files))
    return others - own


def cell_key(config: BundleConfig) -> str:
    """The hash that names a cell's folder: the resolved configuration (less :data:`NOT_IN_KEY`
    and other models' own keys), the dataset's prepared files, the package version and the
    model's source file."""
    final = config.final_config_dict
    skip = NOT_IN_KEY | _other_models_keys(config)
    settings = {k: _jsonable(v) for k, v in final.items() if k not in skip}
    for key in ("knowledge_dir", "adapter_path"):  # relative to where the grid runs
        if settings.get(key):
            settings[key] = str(Path(settings[key]).resolve())
    payload = {
        "format": CELL_FORMAT,
        "version": __version__,
        "settings": settings,
        "dataset_files": dataset_fingerprint(Path(final["data_path"]), str(final["dataset"])),
        "model_source": _source_hash(config.spec.model_class),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _seed_keys(spec: BenchmarkSpec, files: Sequence[str], overrides: Mapping[str, Any], host: PluginHost) -> list[str]:
    if spec.seed_keys is not None:
        return list(spec.seed_keys)
    model = overrides.get("model") or load_yaml_files(files).get("model")
    keys = ["seed"]
    if model:
        model_spec = host.models.resolve(str(model))
        keys += sorted(k for k in load_yaml_files(model_spec.config_files) if k.endswith("_seed"))
    return keys


def plan(spec: BenchmarkSpec, host: PluginHost | None = None) -> list[Cell]:
    """Every cell of the grid, each configuration resolved and its data checked (nothing runs)."""
    host = host or _host(spec)
    cells: list[Cell] = []
    datasets: Sequence[str | None] = spec.datasets or (None,)
    for dataset in datasets:
        for method in spec.methods:
            files = method.files_for(dataset)
            if files is None:
                continue
            for seed in method.seeds or spec.seeds:
                cells.append(_plan_cell(spec, method, dataset, files, seed, host))
    return cells


def _plan_cell(spec: BenchmarkSpec, method: Method, dataset: str | None, files: tuple[str, ...], seed: int,
               host: PluginHost) -> Cell:
    where = f"method '{method.name}'" + (f" on {dataset}" if dataset else "")
    try:
        overrides = {**spec.overrides, **method.inline, **spec.cli_overrides}
        if dataset is None and any(DATASET_PLACEHOLDER in path for path in files):
            raise BenchmarkError(f"its config names {DATASET_PLACEHOLDER}, so the benchmark needs `datasets:`")
        if dataset is not None:
            overrides["dataset"] = dataset
        elif not (overrides.get("dataset") or load_yaml_files(files).get("dataset")):
            raise BenchmarkError("no dataset: give the benchmark `datasets:` or the method a `dataset:`")
        for key in _seed_keys(spec, files, overrides, host):
            overrides[key] = seed
        if isinstance(overrides.get("data_path"), str):  # the cell's process may start elsewhere
            overrides["data_path"] = str(Path(overrides["data_path"]).resolve())
        for path in files:
            _check_file(path, where)
        config = resolve_config(list(files), overrides, host=host)
        check_prepared(config)
        key = cell_key(config)
    except BundleLLMError as exc:
        raise BenchmarkError(f"{where}: {exc if not isinstance(exc, KeyError) else exc.args[0]}") from None
    facts = {k: _jsonable(config.final_config_dict.get(k)) for k in FACT_KEYS}
    return Cell(method.name, str(config["dataset"]), seed, key, files, overrides, facts,
                (spec.cells_dir / key).resolve())


def _host(spec: BenchmarkSpec, strict: bool = False) -> PluginHost:
    # Files that are missing here are reported by plan(), with the method that names them.
    groups = [[f for f in files if Path(f).is_file()] for m in spec.methods for d in (spec.datasets or (None,))
              if (files := m.files_for(d)) is not None]
    return host_for_runs(groups, {**spec.overrides, **spec.cli_overrides}, strict=strict)


# ---------------------------------------------------------------------------------- running


def run_benchmark(spec: BenchmarkSpec, *, strict: bool = False, progress: bool | None = None,
                  report: bool = True, command: str | None = None) -> BenchmarkResult:
    """Run every cell that has no finished folder yet (each in its own process), then write the
    tables and plots (``command``: the command line they name). Cells that fail are reported
    after the tables are written (:class:`BenchmarkError`); the others are kept."""
    start = time.perf_counter()
    host = _host(spec, strict)
    cells = plan(spec, host)
    todo: dict[str, Cell] = {}
    for cell in cells:
        if not cell.finished:
            todo.setdefault(cell.key, cell)  # two methods of one configuration run once
    reused = [c for c in cells if c.key not in todo]
    failed: dict[str, str] = {}
    spec.cells_dir.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(total=len(todo), desc=f"benchmark {spec.name}", unit="cell", enabled=progress)
    with bar:
        for cell in todo.values():
            bar.set_postfix_str(cell.label, refresh=True)
            error = run_cell(cell, strict=strict)
            if error is not None:
                failed[cell.label] = error
            bar.update()
    result = BenchmarkResult(spec, cells, list(todo.values()), reused, failed, time.perf_counter() - start)
    if report:
        from recbole_bundlellm.commands.benchmark.report import write_report

        result.files = write_report(result, command)
    if failed:
        first = next(iter(failed.items()))
        raise BenchmarkError(f"{len(failed)} of {len(todo)} cells failed (the tables hold the others; run the "
                             f"same command again to retry them); first: {first[0]}: {first[1]}")
    return result


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
        code = ("import sys; from recbole_bundlellm.commands.benchmark.executor import cell_main; "
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
