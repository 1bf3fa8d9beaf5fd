"""RecBole's Config with this project's YAML overlaid, and unknown keys reported.

Order of precedence (lowest first): RecBole's defaults, our ``properties/overall.yaml`` (for
bundle models) or ``properties/next_item.yaml`` (for RecBole models on a ``*_next`` dataset),
the model's own YAML from the registry, then the user's files and dict. The command line is
not read here: the CLI passes ``--key=value`` pairs in as a dict, so tests and library users
never have their ``sys.argv`` parsed behind their back.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.config import Config

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.plugins import PluginHost, disabled_from_config
from recbole_bundlellm.registry import ModelSpec
from recbole_bundlellm.settings import SettingsError

PROPERTIES = Path(__file__).resolve().parent / "properties"
BUNDLE_OVERALL = PROPERTIES / "overall.yaml"
NEXT_ITEM_OVERALL = PROPERTIES / "next_item.yaml"
NEXT_ITEM_SUFFIX = "_next"

# Keys RecBole reads but that appear in none of its YAML files and no ``config["..."]`` call.
_RECBOLE_IMPLICIT_KEYS = {"model", "dataset", "config_files", "local_rank", "nproc", "world_size",
                          "ip", "port", "offset", "single_spec", "MODEL_TYPE", "MODEL_INPUT_TYPE",
                          "eval_type", "device", "valid_metric_bigger", "benchmark_filename",
                          "valid_neg_sample_args", "test_neg_sample_args"}
_ALIAS_KEY = re.compile(r"^alias_of_\w+$")
#: Our own settings blocks besides the plugin components' (which the plugin host names).
SETTINGS_BLOCKS = frozenset({"teacher", "sampling"})


class ConfigKeyError(BundleLLMError, KeyError):
    """An unknown key in a user's configuration."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


def _yaml_keys(path: str | os.PathLike) -> set[str]:
    return set(_load_yaml_dict(path))


@functools.lru_cache(maxsize=1)
def recbole_known_keys() -> frozenset[str]:
    """Every key RecBole defines in a YAML file or reads as ``config["key"]`` in its source.

    Read from the installed RecBole, so a newer release brings its own keys along.
    """
    import recbole

    root = Path(recbole.__file__).resolve().parent
    keys: set[str] = set(_RECBOLE_IMPLICIT_KEYS)
    for path in (root / "properties").rglob("*.yaml"):
        keys |= _yaml_keys(path)
    pattern = re.compile(r"""config(?:\[\s*|\.get\(\s*)["']([A-Za-z_][A-Za-z_0-9]*)["']""")
    for path in root.rglob("*.py"):
        keys.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(keys)


def _project_known_keys(host: PluginHost) -> set[str]:
    keys = _yaml_keys(BUNDLE_OVERALL) | _yaml_keys(NEXT_ITEM_OVERALL) | host.settings_keys()
    for spec in host.models.specs():
        for path in spec.config_files:
            keys |= _yaml_keys(path)
    return keys


def _load_yaml_dict(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return data if isinstance(data, dict) else {}


def load_yaml_files(config_files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The top-level keys of several YAML config files, later files winning (as RecBole merges)."""
    merged: dict[str, Any] = {}
    for path in config_files:
        merged.update(_load_yaml_dict(path))
    return merged


def disabled_plugins(config_files: Sequence[str | os.PathLike], config_dict: dict[str, Any] | None) -> list[str]:
    """The ``disable_plugins`` that the given files and dict ask for, in order, checked."""
    disabled: list[str] = []
    for path in config_files:
        disabled += disabled_from_config(_load_yaml_dict(path))
    disabled += disabled_from_config(config_dict or {})
    return list(dict.fromkeys(disabled))


def host_for(config_files: Sequence[str | os.PathLike] = (), config_dict: dict[str, Any] | None = None,
             *, strict: bool = False) -> PluginHost:
    """A plugin host with the ``disable_plugins`` of these files and dict (plus the environment's).

    Plugins provide the models and metrics that a Config resolves, so the host exists first.
    """
    return PluginHost.from_environment(disabled_plugins(config_files, config_dict), strict=strict)


def check_host(host: PluginHost, config_files: Sequence[str | os.PathLike],
               config_dict: dict[str, Any] | None) -> None:
    """Refuse a given host that has loaded a plugin the configuration disables."""
    loaded = {s.name for s in host.statuses if s.status == "loaded"}
    clash = [name for name in disabled_plugins(config_files, config_dict) if name in loaded]
    if clash:
        raise SettingsError(f"the configuration disables plugin(s) {', '.join(clash)}, but the plugin host "
                            "it was given has them loaded; build the host with them disabled "
                            f"(PluginHost.from_environment(disabled={clash!r}) or host_for(config files))")


def check_keys(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigKeyError` for the first unknown key, suggesting the closest one."""
    known = set(known)
    for key in given:
        if key in known or _ALIAS_KEY.match(key):
            continue
        raise ConfigKeyError(f"unknown config key '{key}' in {where}{did_you_mean(key, known)}")


class BundleConfig(Config):
    """:class:`recbole.config.Config` that knows this project's models and YAML files.

    ``host`` is the plugin host whose models, metrics and settings keys the config resolves;
    without one, a host is built from the configuration's ``disable_plugins`` and the
    environment (:func:`host_for`). It is :attr:`host` afterwards.
    """

    def __init__(
        self,
        model: str | type,
        dataset: str | None = None,
        config_file_list: Sequence[str | os.PathLike] | None = None,
        config_dict: dict[str, Any] | None = None,
        *,
        host: PluginHost | None = None,
    ) -> None:
        files = [str(p) for p in config_file_list or []]
        if host is None:
            host = host_for(files, config_dict)
        else:
            check_host(host, files, config_dict)
        self.host: PluginHost | None = host
        self.spec: ModelSpec = host.models.resolve(model) if isinstance(model, str) else _spec_of(model, host)
        self._user_files = files
        super().__init__(self.spec.model_class, dataset, files or None, config_dict)

    def __getstate__(self) -> dict[str, Any]:
        # RecBole pickles the config into its checkpoints; the host (modules, hook callers) is
        # live process state, not configuration.
        state = dict(self.__dict__)
        state["host"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def with_dataset(self, dataset: str) -> BundleConfig:
        """The same files, overrides and host for another dataset (e.g. another domain)."""
        overrides = {k: v for k, v in self.variable_config_dict.items() if k != "dataset"}
        return BundleConfig(self.spec.name, dataset, self._user_files, overrides, host=self.host)

    def _load_cmd_line(self) -> dict[str, Any]:
        return {}

    def _load_internal_config_dict(self, model, model_class, dataset):  # type: ignore[no-untyped-def]
        super()._load_internal_config_dict(model, model_class, dataset)
        overlays: list[Path] = []
        if self.spec.is_bundle_model:
            overlays.append(BUNDLE_OVERALL)
        elif str(dataset).endswith(NEXT_ITEM_SUFFIX):
            overlays.append(NEXT_ITEM_OVERALL)
        overlays.extend(self.spec.config_files)
        for path in overlays:
            self._update_internal_config_dict(str(path))
        default_data = os.environ.get("BUNDLELLM_DATA")
        if default_data:
            self.internal_config_dict["data_path"] = default_data

    def _merge_external_config_dict(self) -> None:
        super()._merge_external_config_dict()
        # Settings blocks of our own (teacher, sampling, each plugin component) merge key by key,
        # so `--teacher='{base_url: ...}'` changes the URL and keeps the file's other settings.
        # RecBole's own dict keys keep RecBole's replace semantics.
        ours = SETTINGS_BLOCKS | self.host.settings_keys()
        for key, value in self.variable_config_dict.items():
            base = self.file_config_dict.get(key)
            if isinstance(value, dict) and isinstance(base, dict) and key in ours:
                self.external_config_dict[key] = {**base, **value}

    def _get_final_config_dict(self) -> dict[str, Any]:
        known = set(self.internal_config_dict) | recbole_known_keys() | _project_known_keys(self.host)
        for path in self._user_files:
            check_keys(_yaml_keys(Path(path)), known, f"config file {path}")
        check_keys(self.variable_config_dict, known, "the config overrides")
        return super()._get_final_config_dict()


def _spec_of(model_class: type, host: PluginHost) -> ModelSpec:
    for spec in host.models.specs():
        if spec.target is model_class or spec.model_class is model_class:
            return spec
    return ModelSpec(model_class.__name__, model_class, origin="recbole", is_bundle_model=False)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (values as YAML) → dict, the way RecBole reads its command line."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.removeprefix("--").partition("=")
        if not sep or not key:
            raise ConfigKeyError(f"override '{pair}' is not of the form key=value")
        out[key] = yaml.safe_load(value) if value else None
    return out
