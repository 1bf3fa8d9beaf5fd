"""Which config keys a run accepts (RecBole's, this project's, the models' and plugins'), the
unknown-key error with a suggestion, and which keys each model reads.

A key the user set (a ``-c`` file, an override) must be read by the run's model: its YAML files'
keys (a student's chain, e.g. BundleLLM.yaml → BundleSFT.yaml), the keys every run reads (RecBole's
data/training/evaluation keys, ``properties/overall.yaml``, the extractor and sampler blocks) and
the settings blocks of the components the model chooses (``adaptation`` → strategy blocks,
``fusion_router`` → router blocks, ``generation_backend`` → backend blocks). Otherwise the key is set and silently ignored: an error
naming the models that do read it (:func:`check_read_keys`). Overrides shared by several runs (a
benchmark's ``overrides:``, ``compare``'s) reach only the runs that read them
(:func:`keys_for`), and must be read by one of them (:func:`check_shared_keys`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recbole_bundlellm.config.files import BUNDLE_OVERALL, NEXT_ITEM_OVERALL, ConfigKeyError, _yaml_keys
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.extension.registry import ModelSpec
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.settings import SettingsError

# Keys RecBole reads but that appear in none of its YAML files and no ``config["..."]`` call.
_RECBOLE_IMPLICIT_KEYS = {"model", "dataset", "config_files", "local_rank", "nproc", "world_size",
                          "ip", "port", "offset", "single_spec", "MODEL_TYPE", "MODEL_INPUT_TYPE",
                          "eval_type", "device", "valid_metric_bigger", "benchmark_filename",
                          "valid_neg_sample_args", "test_neg_sample_args"}
_ALIAS_KEY = re.compile(r"^alias_of_\w+$")
_CONFIG_READ = re.compile(r"""config(?:\[\s*|\.get\(\s*)["']([A-Za-z_][A-Za-z_0-9]*)["']""")
#: Component kinds whose settings blocks only a model that chooses a component reads, with the key
#: that chooses it. The other kinds' blocks (extractor, sampler) are read by `distill` and by any
#: student's ``knowledge_use`` from the same files, so every run accepts them.
_CHOSEN_BY = {"strategy": "adaptation", "router": "fusion_router", "backend": "generation_backend"}


class UnreadKeyError(ConfigKeyError, SettingsError):
    """A key the user set that the run's model does not read (it would be silently ignored)."""


@functools.lru_cache(maxsize=1)
def recbole_known_keys() -> frozenset[str]:
    """Every key RecBole defines in a YAML file or reads as ``config["key"]`` in its source.

    Read from the installed RecBole, so a newer release brings its own keys along.
    """
    import recbole

    return _recbole_keys(models=True)


@functools.lru_cache(maxsize=1)
def recbole_general_keys() -> frozenset[str]:
    """RecBole's keys that every run reads (data, training, evaluation): :func:`recbole_known_keys`
    less those only its own models' YAML files and modules define (``n_layers``, ``temperature``)."""
    return _recbole_keys(models=False)


def _recbole_keys(*, models: bool) -> frozenset[str]:
    import recbole

    root = Path(recbole.__file__).resolve().parent
    keys: set[str] = set(_RECBOLE_IMPLICIT_KEYS)
    for path in (root / "properties").rglob("*.yaml"):
        if models or path.relative_to(root / "properties").parts[0] != "model":
            keys |= _yaml_keys(path)
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        # recbole/model/abstract_recommender.py reads keys every model reads (field names, device).
        if models or parts[0] != "model" or path.name.startswith("abstract"):
            keys.update(_CONFIG_READ.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(keys)


def known_config_keys(host: PluginHost) -> set[str]:
    """Every key a run accepts: RecBole's, this project's YAML files', and ``host``'s models' and
    plugins' settings keys."""
    keys = set(recbole_known_keys()) | _yaml_keys(BUNDLE_OVERALL) | _yaml_keys(NEXT_ITEM_OVERALL)
    keys |= host.settings_keys()
    for spec in host.models.specs():
        for path in spec.config_files:
            keys |= _yaml_keys(path)
    return keys


def check_keys(given: Iterable[str], known: Iterable[str], where: str, host: PluginHost | None = None) -> None:
    """Raise :class:`ConfigKeyError` for the first unknown key, suggesting the closest one, or,
    when it is the settings key of a plugin that ``host`` has disabled, saying so."""
    known = set(known)
    for key in given:
        if key in known or _ALIAS_KEY.match(key):
            continue
        owner = host.disabled_owner(key) if host is not None else None
        if owner is not None:
            raise ConfigKeyError(f"config key '{key}' in {where} is the settings key of plugin '{owner}', which "
                                 "is disabled (disable_plugins / $BUNDLELLM_DISABLE_PLUGINS); enable the plugin "
                                 "or remove the key")
        raise ConfigKeyError(f"unknown config key '{key}' in {where}{did_you_mean(key, known)}")


def model_keys(spec: ModelSpec) -> set[str]:
    """The keys of a model's own YAML files (a student's whole chain)."""
    return {key for path in spec.config_files for key in _yaml_keys(path)}


def keys_read_by(spec: ModelSpec, host: PluginHost) -> set[str]:
    """Every key a run of ``spec`` reads (see the module docstring). A RecBole model reads any of
    RecBole's keys, and this project's run keys; only our models' own keys are foreign to it."""
    shared = {name for kind, comps in host.components.items() if kind not in _CHOSEN_BY for name in comps}
    keys = _yaml_keys(BUNDLE_OVERALL) | shared
    if not spec.is_bundle_model:
        return keys | recbole_known_keys() | _yaml_keys(NEXT_ITEM_OVERALL) | host.settings_keys()
    own = model_keys(spec)
    keys |= recbole_general_keys() | own
    for kind, chooser in _CHOSEN_BY.items():
        if chooser in own:
            keys |= set(host.components.get(kind, {}))
    return keys


def readers_of(key: str, host: PluginHost) -> list[str]:
    """The names of ``host``'s models that read ``key``, in registration order."""
    return [spec.name for spec in host.models.specs() if spec.is_bundle_model and key in keys_read_by(spec, host)]


def _readers_text(key: str, host: PluginHost) -> str:
    readers = readers_of(key, host)
    if readers:
        return f"it is read by {', '.join(readers)}"
    return "it is a setting of RecBole's own models" if key in recbole_known_keys() else "no model reads it"


def check_read_keys(given: Iterable[str], spec: ModelSpec, host: PluginHost, where: str,
                    also_read: Iterable[str] = ()) -> None:
    """Raise :class:`UnreadKeyError` for the first key of ``given`` that a run of ``spec`` does not
    read, naming the models that do. ``also_read``: keys its defaults hold (RecBole's dataset
    YAML). Run :func:`check_keys` first: a key no model knows gets a suggestion there."""
    read = keys_read_by(spec, host) | set(also_read)
    for key in given:
        if key not in read and not _ALIAS_KEY.match(key):
            raise UnreadKeyError(f"{key} is not read by {spec.name} ({_readers_text(key, host)}); "
                                 f"remove it from {where}")


def check_shared_keys(given: Iterable[str], specs: Sequence[ModelSpec], host: PluginHost, where: str) -> None:
    """Keys shared by several runs (``specs``' models): each must be known (:func:`check_keys`)
    and read by at least one of them."""
    given = list(given)
    check_keys(given, known_config_keys(host), where, host)
    read = set().union(*(keys_read_by(spec, host) for spec in specs)) if specs else set()
    names = ", ".join(dict.fromkeys(spec.name for spec in specs))
    for key in given:
        if key not in read and not _ALIAS_KEY.match(key):
            raise UnreadKeyError(f"{key} in {where} is read by none of its models ({names}; "
                                 f"{_readers_text(key, host)})")


def keys_for(overrides: Mapping[str, Any], spec: ModelSpec, host: PluginHost) -> dict[str, Any]:
    """The shared ``overrides`` that a run of ``spec`` reads (the others would be refused there)."""
    read = keys_read_by(spec, host)
    return {key: value for key, value in overrides.items() if key in read or _ALIAS_KEY.match(key)}
