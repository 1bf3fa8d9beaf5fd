"""RecBole's Config with this project's YAML overlaid, and unknown keys reported.

Order of precedence (lowest first): RecBole's defaults, our ``properties/overall.yaml`` (for
bundle models) or ``properties/next_item.yaml`` (for RecBole models on a ``*_next`` dataset),
the model's own YAML from the registry, then the user's files and dict. The command line is
not read here: the CLI passes ``--key=value`` pairs in as a dict, so tests and library users
never have their ``sys.argv`` parsed behind their back.
"""

from __future__ import annotations

import functools
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole.config import Config

from recbole_bundlellm.adaptation.knowledge_source import knowledge_use
from recbole_bundlellm.training.distributed import init_distributed, torchrun_settings
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.extension.host import PluginHost, disabled_from_config
from recbole_bundlellm.extension.registry import ModelSpec
from recbole_bundlellm.sampling.settings import SamplingSettings
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.settings import TeacherSettings, redact_url

PROPERTIES = Path(__file__).resolve().parents[1] / "properties"
BUNDLE_OVERALL = PROPERTIES / "overall.yaml"
NEXT_ITEM_OVERALL = PROPERTIES / "next_item.yaml"
#: The allowed values of our numeric settings (see the file's header).
RANGES_FILE = PROPERTIES / "ranges.yaml"
NEXT_ITEM_SUFFIX = "_next"

# Keys RecBole reads but that appear in none of its YAML files and no ``config["..."]`` call.
_RECBOLE_IMPLICIT_KEYS = {"model", "dataset", "config_files", "local_rank", "nproc", "world_size",
                          "ip", "port", "offset", "single_spec", "MODEL_TYPE", "MODEL_INPUT_TYPE",
                          "eval_type", "device", "valid_metric_bigger", "benchmark_filename",
                          "valid_neg_sample_args", "test_neg_sample_args"}
_ALIAS_KEY = re.compile(r"^alias_of_\w+$")
#: Our own settings blocks besides the plugin components' (which the plugin host names).
SETTINGS_BLOCKS = frozenset({"teacher", "sampling"})


#: Names of settings that hold secrets: never written to config.yaml or the recorded command line.
#: ``max_tokens`` or ``api_key_env`` (a variable's *name*) are not secrets.
SECRET_KEY = re.compile(r"(?:^|_)(?:token|secret|password|passwd|credentials?|(?:api|secret|private|access)_?key)$",
                        re.IGNORECASE)
REDACTED = "<redacted>"


class ConfigKeyError(BundleLLMError, KeyError):
    """An unknown key in a user's configuration."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class ConfigError(BundleLLMError, ValueError):
    """A configuration that cannot be used as given (no dataset, an override that is not YAML...)."""


class ConfigFileError(ConfigError):
    """A config file that cannot be read: missing, a folder, not YAML, or not a mapping of keys."""


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


def known_config_keys(host: PluginHost) -> set[str]:
    """Every key a run accepts: RecBole's, this project's YAML files', and ``host``'s models' and
    plugins' settings keys."""
    keys = set(recbole_known_keys()) | _yaml_keys(BUNDLE_OVERALL) | _yaml_keys(NEXT_ITEM_OVERALL)
    keys |= host.settings_keys()
    for spec in host.models.specs():
        for path in spec.config_files:
            keys |= _yaml_keys(path)
    return keys


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    """``at line L, column C: problem`` of a YAML error (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"at line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _load_yaml_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a YAML file; :class:`ConfigFileError` naming the file for anything else."""
    path = Path(path)
    if path.is_dir():
        raise ConfigFileError(f"config file {path} is a folder, not a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} not found") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"config file {path} is not UTF-8 text (not a YAML file?)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"config file {path}: invalid YAML {_yaml_error_text(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path} must be a mapping of keys (key: value), "
                              f"got a {type(data).__name__}")
    return data


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


def host_for_runs(config_groups: Sequence[Sequence[str | os.PathLike]], config_dict: dict[str, Any] | None = None,
                  *, strict: bool = False) -> PluginHost:
    """One plugin host for several runs (``config_groups``: each run's config files, all with
    ``config_dict``). They must agree on ``disable_plugins``: one host serves them all."""
    wanted = {tuple(sorted(disabled_plugins(files, config_dict))) for files in config_groups} or {()}
    if len(wanted) > 1:
        raise SettingsError("the configs of one command disable different plugins "
                            f"({' vs '.join(', '.join(w) or 'none' for w in sorted(wanted))}); run them separately")
    return PluginHost.from_environment(next(iter(wanted)), strict=strict)


def check_host(host: PluginHost, config_files: Sequence[str | os.PathLike],
               config_dict: dict[str, Any] | None) -> None:
    """Refuse a given host that has loaded a plugin the configuration disables."""
    loaded = {s.name for s in host.statuses if s.status == "loaded"}
    clash = [name for name in disabled_plugins(config_files, config_dict) if name in loaded]
    if clash:
        raise SettingsError(f"the configuration disables plugin(s) {', '.join(clash)}, but the plugin host "
                            "it was given has them loaded; build the host with them disabled "
                            f"(PluginHost.from_environment(disabled={clash!r}) or host_for(config files))")


NUMERIC_RANGES: Mapping[str, Mapping[str, Any]] = MappingProxyType(_load_yaml_dict(RANGES_FILE))
_BOUNDS: tuple[tuple[str, str, Callable[[Any, Any], bool]], ...] = (
    ("min", ">=", operator.ge), ("above", ">", operator.gt), ("max", "<=", operator.le), ("below", "<", operator.lt))


def _bound(rule: Mapping[str, Any], name: str, values: Mapping[str, Any]) -> Any:
    """A bound of ``rule``: a number, or the value of the key it names (None when unusable)."""
    bound = rule.get(name)
    if isinstance(bound, str):
        bound = values.get(bound)
    return bound if isinstance(bound, (int, float)) and not isinstance(bound, bool) else None


def _allowed_text(rule: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """E.g. ``an integer >= 1, or ~ for all sessions``."""
    parts = [("an integer" if rule["type"] == "int" else "a number")]
    for name, sign, _ in _BOUNDS:
        if name in rule:
            named = f" ({values.get(rule[name])})" if isinstance(rule[name], str) else ""
            parts.append(f"{' and ' if len(parts) > 1 else ' '}{sign} {rule[name]}{named}")
    text = "".join(parts)
    return f"{text}, or ~ for {rule['none_means']}" if "none_means" in rule else text


def _is_allowed(rule: Mapping[str, Any], value: Any, values: Mapping[str, Any]) -> bool:
    if value is None:
        return "none_means" in rule
    # bool is an int in Python, but `true` is never a count or a seed.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if rule["type"] == "int" and not isinstance(value, int):
        return False
    for name, _, holds in _BOUNDS:
        bound = _bound(rule, name, values)
        if bound is not None and not holds(value, bound):
            return False
    return True


def check_numeric(key: str, value: Any, values: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`SettingsError` (key, value, allowed range) unless ``NUMERIC_RANGES`` allows it.

    ``values``: the other settings, for a bound that names another key (``freq_max_size``).
    """
    rule, values = NUMERIC_RANGES[key], values or {}
    if not _is_allowed(rule, value, values):
        raise SettingsError(f"{key} must be {_allowed_text(rule, values)}; got {value!r}")


def check_numeric_settings(values: Mapping[str, Any]) -> None:
    """Every key of ``NUMERIC_RANGES`` that ``values`` holds, in the table's order."""
    for key in NUMERIC_RANGES:
        if key in values:
            check_numeric(key, values[key], values)


def _refuse_secrets_in_teacher(block: Any) -> None:
    """The teacher's API key comes from the environment only: a key in a config would be copied to
    config.yaml, logs and shell history."""
    if not isinstance(block, Mapping):
        return  # load_settings reports a block that is not a mapping
    for name in block:
        if SECRET_KEY.search(str(name)):
            env = block.get("api_key_env") if isinstance(block.get("api_key_env"), str) else "OPENAI_API_KEY"
            raise SettingsError(f"teacher.{name}: secrets never go in a config; the teacher reads its API key "
                                f"from the environment variable ${env} (set teacher.api_key_env to name another)")


def check_settings_blocks(values: Mapping[str, Any], host: PluginHost) -> None:
    """``teacher:``, ``sampling:``, ``knowledge_use`` and each plugin component's block, checked as
    the commands that use them load them, so `run` refuses what `distill` would (a block left out
    is not checked)."""
    if values.get("teacher") is not None:
        _refuse_secrets_in_teacher(values["teacher"])
        load_settings(TeacherSettings, values["teacher"], "teacher")
    if values.get("sampling") is not None:
        load_settings(SamplingSettings, values["sampling"], "sampling")
    for kind in knowledge_use(values):
        host.get("extractor", kind)  # an unknown kind fails here, with a suggestion
    for components in host.components.values():
        for name, component in components.items():
            if values.get(name) is not None:
                load_settings(component.obj.Settings, values[name], name)


def redact_secrets(value: Any) -> Any:
    """``value`` with every secret-named key's value replaced by ``"<redacted>"`` and credentials
    cut from URLs (``http://user:pw@host`` -> ``http://***@host``), at any depth."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if v is not None and SECRET_KEY.search(str(k)) else redact_secrets(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return redact_url(value)
    return value


def _redact_argument(arg: str) -> str:
    key, sep, raw = arg.partition("=")
    if not arg.startswith("--") or not sep:
        return arg
    if SECRET_KEY.search(key[2:]):
        return f"{key}={REDACTED}"
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return arg
    redacted = redact_secrets(value)
    if redacted == value:
        return arg  # as typed
    return f"{key}={yaml.safe_dump(redacted, default_flow_style=True, width=10**6).strip()}"


def redact_command(argv: Sequence[str]) -> str:
    """The command line as one string, with secret ``--key=value`` settings redacted."""
    return " ".join(_redact_argument(str(arg)) for arg in argv)


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


def check_metrics(values: Mapping[str, Any], host: PluginHost) -> None:
    """Every name of ``metrics`` and ``valid_metric`` is a RecBole metric or one of ``host``'s
    plugins' (RecBole's own check ends in a bare ``NotImplementedError``)."""
    metrics = values.get("metrics") or []
    for name in [metrics] if isinstance(metrics, str) else metrics:
        host.check_metric(str(name))
    if values.get("valid_metric"):
        host.check_metric(str(values["valid_metric"]))


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
        # Both branches read each file (disable_plugins), so an unreadable one is one error naming it.
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

    def with_dataset(self, dataset: str) -> BundleConfig:
        """The same files, overrides and host for another dataset (e.g. another domain)."""
        overrides = {k: v for k, v in self.variable_config_dict.items() if k != "dataset"}
        return BundleConfig(self.spec.name, dataset, self._user_files, overrides, host=self.host)

    def _load_cmd_line(self) -> dict[str, Any]:
        return {}

    def _init_device(self) -> None:
        """RecBole's, but a distributed run (``local_rank`` set, or filled in from torchrun's
        environment) runs on the CPU with gloo where there is no GPU or ``use_gpu`` is False
        (RecBole's assumes NCCL and CUDA); see :func:`~recbole_bundlellm.training.distributed.init_distributed`."""
        final = self.final_config_dict
        from_torchrun = False
        if "local_rank" not in final:
            launched = torchrun_settings()
            if launched is None:
                super()._init_device()  # one process: RecBole's device choice as is
                return
            final.update(launched)
            from_torchrun = True
        gpu_id = final["gpu_id"]
        final["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
        # Under torchrun RecBole's default gpu_id '0' would hide every GPU but the first.
        init_distributed(final, gpu_id_given=not from_torchrun or "gpu_id" in self.external_config_dict)

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
        known = set(self.internal_config_dict) | known_config_keys(self.host)
        for path in self._user_files:
            check_keys(_yaml_keys(Path(path)), known, f"config file {path}", self.host)
        check_keys(self.variable_config_dict, known, "the config overrides", self.host)
        final = super()._get_final_config_dict()
        check_metrics(final, self.host)
        # RecBole's own models may read a key of ours with another meaning (CORE: `temperature`).
        if self.spec.is_bundle_model:
            check_numeric_settings(final)
        check_settings_blocks(final, self.host)
        return final

    def _get_model_and_dataset(self, model, dataset):  # type: ignore[no-untyped-def]
        if dataset is None and self.external_config_dict.get("dataset") is None:
            raise ConfigError("no dataset given (set `dataset:` in a config file or pass --dataset)")
        return super()._get_model_and_dataset(model, dataset)


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
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as exc:  # the value is not echoed: it may hold a secret
            raise ConfigError(f"override --{key}=...: the value is not valid YAML "
                              f"({_yaml_error_text(exc)})") from None
    return out
