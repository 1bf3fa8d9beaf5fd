"""The plan of a grid: every cell's configuration resolved, its data checked and its key (the
folder it runs in) computed; nothing runs here.

**Cells.** Each cell's folder is ``<output_dir>/cells/<key>``, where the key hashes the resolved
configuration (less where its outputs go: ``output_dir``, ``checkpoint_dir``, ``run_name``,
``show_progress``, ``state``, and ``data_path``, replaced by a hash of the dataset's prepared
files; less the keys only other models define), the package version, the model's source file and
the contents of what the model reads (:func:`read_inputs`: the LLM's weights, an adapter, the
experts, the knowledge store of a model that uses one; a cheap content fingerprint, not mtimes).
The device is part of the configuration: a cell run on a CPU is not reused on a GPU machine. A cell is finished when its folder holds
``metrics.json``: the runner builds a run in ``<folder>.partial-<pid>`` and renames it into place
whole, so a killed grid never leaves a folder that looks finished but is not, and the next grid
runs exactly the cells without one (an extended grid: only the new cells). The key does not cover
code outside the model's own module: after changing that, remove the cells folder (or give
another ``output_dir``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recbole_bundlellm import __version__
from recbole_bundlellm.commands.benchmark.spec import DATASET_PLACEHOLDER, BenchmarkError, BenchmarkSpec, Cell, Method, _check_file
from recbole_bundlellm.commands.runner import resolve_config
from recbole_bundlellm.config import BundleConfig, check_shared_keys, host_for_runs, keys_for, load_yaml_files
from recbole_bundlellm.data.prepared import check_prepared
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.extension.registry import ModelSpec
from recbole_bundlellm.fileio import content_fingerprint, jsonable, sha256_file

#: Settings that say where or how loudly a run writes, not what it computes: not in a cell's key.
NOT_IN_KEY = frozenset({"output_dir", "checkpoint_dir", "run_name", "show_progress", "state", "data_path"})
#: Opt-in settings at the value that reproduces the behaviour from before they existed: left out of
#: a cell's key while they hold it, so adding such a setting does not make every finished cell new
#: (gradient checkpointing computes the same gradients; a set attention kernel or a 4-bit base is in
#: the key).
NEUTRAL_VALUES: dict[str, Any] = {"gradient_checkpointing": False, "attn_implementation": None, "load_in_4bit": False,
                                  "generation_backend": "transformers"}
#: Bump when what a key covers changes, so old cells are not taken for new ones.
CELL_FORMAT = "1"
#: Settings of a cell that the report reads (reference row, sampling plot, labels).
FACT_KEYS = ("model", "floor_rule", "sampling", "adaptation", "knowledge_use")


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
    settings = {k: jsonable(v) for k, v in final.items()
                if k not in skip and not (k in NEUTRAL_VALUES and v == NEUTRAL_VALUES[k])}
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
    inputs = read_inputs(config, skip)
    if inputs:  # absent for models that read nothing but their settings and data: their keys stay as they were
        payload["inputs"] = inputs
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def read_inputs(config: BundleConfig, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """Content fingerprints (:func:`~recbole_bundlellm.fileio.content_fingerprint`) of what a cell
    reads besides its settings and dataset: the LLM's weights (``llm_model``: a folder or a GGUF,
    the embedded one by its packaged file), a given ``adapter_path``, each of ``experts``, and the
    knowledge store of a model that uses knowledge or asks a teacher. So a model, an adapter or a
    store changed in place makes a new cell instead of reusing the old one. Keys in ``skip``
    (other models' own keys) are not this model's inputs."""
    final = {k: v for k, v in config.final_config_dict.items() if k not in skip}
    paths: dict[str, Path] = {}
    llm = final.get("llm_model")
    if llm:
        from recbole_bundlellm.embedded import embedded_gguf_path

        try:
            paths["llm_model"] = embedded_gguf_path() if str(llm) == "embedded" else Path(str(llm)).expanduser()
        except FileNotFoundError:  # the embedded model is not installed: the cell itself will say so
            pass
    if final.get("adapter_path"):
        paths["adapter_path"] = Path(str(final["adapter_path"]))
    for kind, location in sorted((final.get("experts") or {}).items()):
        paths[f"experts.{kind}"] = Path(str(location))
    if final.get("knowledge_dir") and (final.get("knowledge_use") or getattr(config.spec.model_class, "needs_teacher", False)):
        paths["knowledge_dir"] = Path(str(final["knowledge_dir"]))
    return {key: content_fingerprint(path) for key, path in paths.items() if path.exists()}


def _seed_keys(spec: BenchmarkSpec, files: Sequence[str], overrides: Mapping[str, Any], host: PluginHost) -> list[str]:
    if spec.seed_keys is not None:
        return list(spec.seed_keys)
    model = overrides.get("model") or load_yaml_files(files).get("model")
    keys = ["seed"]
    if model:
        model_spec = host.models.resolve(str(model))
        keys += sorted(k for k in load_yaml_files(model_spec.config_files) if k.endswith("_seed"))
    return keys


def _model_of(spec: BenchmarkSpec, method: Method, files: Sequence[str], host: PluginHost) -> ModelSpec | None:
    """The model a method's cells run (``None`` when none is named: the cell's plan says so)."""
    named = {**spec.overrides, **method.inline, **spec.cli_overrides}.get("model")
    if not named:
        named = load_yaml_files([f for f in files if Path(f).is_file()]).get("model")
    return host.models.resolve(str(named)) if named else None


def check_grid_keys(spec: BenchmarkSpec, host: PluginHost) -> None:
    """The grid's shared keys (``overrides:``, the command line's, ``seed_keys:``) must each be read
    by one of its methods' models; each cell then gets only those its model reads."""
    models: list[ModelSpec] = []
    for dataset in spec.datasets or (None,):
        for method in spec.methods:
            files = method.files_for(dataset)
            try:
                model = _model_of(spec, method, files, host) if files is not None else None
            except BundleLLMError:  # an unknown model or unreadable file: the cell's plan names the method
                continue
            if model is not None and model not in models:
                models.append(model)
    try:
        check_shared_keys(spec.overrides, models, host, "the benchmark's `overrides:`")
        check_shared_keys(spec.cli_overrides, models, host, "the command line's overrides")
        check_shared_keys(spec.seed_keys or (), models, host, "`seed_keys:`")
    except BundleLLMError as exc:
        raise BenchmarkError(exc.args[0]) from None


def plan(spec: BenchmarkSpec, host: PluginHost | None = None) -> list[Cell]:
    """Every cell of the grid, each configuration resolved and its data checked (nothing runs)."""
    host = host or _host(spec)
    check_grid_keys(spec, host)
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
        # The grid's shared keys reach the models that read them (check_grid_keys); the method's own
        # keys are all its model's (BundleConfig refuses one it does not read).
        model = _model_of(spec, method, files, host)
        shared, cli = spec.overrides, spec.cli_overrides
        if model is not None:
            shared, cli = keys_for(shared, model, host), keys_for(cli, model, host)
        overrides = {**shared, **method.inline, **cli}
        if dataset is None and any(DATASET_PLACEHOLDER in path for path in files):
            raise BenchmarkError(f"its config names {DATASET_PLACEHOLDER}, so the benchmark needs `datasets:`")
        if dataset is not None:
            overrides["dataset"] = dataset
        elif not (overrides.get("dataset") or load_yaml_files(files).get("dataset")):
            raise BenchmarkError("no dataset: give the benchmark `datasets:` or the method a `dataset:`")
        for key in _seed_keys(spec, files, overrides, host):
            if model is None or key in keys_for({key: seed}, model, host):
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
    facts = {k: jsonable(config.final_config_dict.get(k)) for k in FACT_KEYS}
    return Cell(method.name, str(config["dataset"]), seed, key, files, overrides, facts,
                (spec.cells_dir / key).resolve(), method.resources)


def _host(spec: BenchmarkSpec, strict: bool = False) -> PluginHost:
    # Files that are missing here are reported by plan(), with the method that names them.
    groups = [[f for f in files if Path(f).is_file()] for m in spec.methods for d in (spec.datasets or (None,))
              if (files := m.files_for(d)) is not None]
    return host_for_runs(groups, {**spec.overrides, **spec.cli_overrides}, strict=strict)


def describe_plan(spec: BenchmarkSpec, cells: Sequence[Cell], executor: str = "local") -> list[str]:
    """``--plan``'s lines: one per cell (to run or reused, method, dataset, seed, key, resources),
    then the totals. A cell to run whose job an earlier ``--executor submitit`` recorded says so."""
    from recbole_bundlellm.commands.benchmark.cluster import jobs_folder, read_jobs

    jobs = read_jobs(jobs_folder(spec))
    lines = []
    for cell in cells:
        line = f"{'reuse  ' if cell.finished else 'to run '} {cell.label}  {cell.key}  {cell.resources.describe()}"
        entry = jobs.get(cell.key)
        if entry and not cell.finished:
            line += f"  (job {entry.get('job_id')} on {entry.get('cluster')} submitted {entry.get('submitted_at')})"
        lines.append(line)
    todo = len({c.key for c in cells if not c.finished})
    lines.append(f"{len(cells)} cells, {todo} to run, {sum(c.finished for c in cells)} reused; "
                 f"folders under {spec.cells_dir}")
    if executor == "local":
        lines.append("executor local: the cells run one after the other on this machine (resources apply to "
                     "--executor submitit only)")
    else:
        lines.append(f"executor {executor}: {todo} jobs, one per cell to run (a recorded job still running is "
                     f"waited for, not resubmitted); job logs under {jobs_folder(spec)}")
    return lines
