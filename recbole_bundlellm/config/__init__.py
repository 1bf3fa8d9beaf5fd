"""Configuration: RecBole's Config with this project's YAML overlaid and every key checked.

- :mod:`.files`: reading the YAML files and the command line's overrides; the config errors;
- :mod:`.keys`: the keys a run accepts and those its model reads, the unknown- and unread-key errors;
- :mod:`.ranges`: the allowed values of settings (``properties/ranges.yaml``, :mod:`recbole_bundlellm.rules`);
- :mod:`.secrets`: redacting secrets from what is written;
- :mod:`.host`: the plugin host a configuration asks for, and the checks against it;
- :mod:`.bundle_config`: :class:`BundleConfig`, which puts them together.
"""

from recbole_bundlellm.config.bundle_config import BundleConfig
from recbole_bundlellm.config.files import (
    BUNDLE_OVERALL,
    NEXT_ITEM_OVERALL,
    NEXT_ITEM_SUFFIX,
    PROPERTIES,
    RANGES_FILE,
    ConfigError,
    ConfigFileError,
    ConfigKeyError,
    load_yaml_files,
    parse_overrides,
)
from recbole_bundlellm.config.host import (
    SETTINGS_BLOCKS,
    check_host,
    check_metrics,
    check_settings_blocks,
    disabled_plugins,
    host_for,
    host_for_runs,
)
from recbole_bundlellm.config.keys import (
    UnreadKeyError,
    check_keys,
    check_read_keys,
    check_shared_keys,
    keys_for,
    keys_read_by,
    known_config_keys,
    readers_of,
    recbole_general_keys,
    recbole_known_keys,
)
from recbole_bundlellm.config.ranges import NUMERIC_RANGES, check_numeric, check_numeric_settings
from recbole_bundlellm.config.secrets import REDACTED, SECRET_KEY, redact_command, redact_secrets

__all__ = ["BUNDLE_OVERALL", "NEXT_ITEM_OVERALL", "NEXT_ITEM_SUFFIX", "NUMERIC_RANGES", "PROPERTIES", "RANGES_FILE",
           "REDACTED", "SECRET_KEY", "SETTINGS_BLOCKS", "BundleConfig", "UnreadKeyError", "ConfigError", "ConfigFileError", "ConfigKeyError",
           "check_host", "check_keys", "check_read_keys", "check_shared_keys", "check_metrics", "check_numeric", "check_numeric_settings",
           "check_settings_blocks", "disabled_plugins", "host_for", "host_for_runs", "keys_for", "keys_read_by", "known_config_keys",
           "load_yaml_files", "parse_overrides", "readers_of", "recbole_general_keys", "recbole_known_keys", "redact_command", "redact_secrets"]
