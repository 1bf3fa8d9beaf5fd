"""Which config keys a run accepts (RecBole's, this project's, the models' and plugins'), and the
unknown-key error with a suggestion."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

from recbole_bundlellm.config.files import BUNDLE_OVERALL, NEXT_ITEM_OVERALL, ConfigKeyError, _yaml_keys
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.lookup import did_you_mean

# Keys RecBole reads but that appear in none of its YAML files and no ``config["..."]`` call.
_RECBOLE_IMPLICIT_KEYS = {"model", "dataset", "config_files", "local_rank", "nproc", "world_size",
                          "ip", "port", "offset", "single_spec", "MODEL_TYPE", "MODEL_INPUT_TYPE",
                          "eval_type", "device", "valid_metric_bigger", "benchmark_filename",
                          "valid_neg_sample_args", "test_neg_sample_args"}
_ALIAS_KEY = re.compile(r"^alias_of_\w+$")


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
