"""Reading configuration: this project's YAML files (``properties/``), a user's config files and
the command line's ``--key=value`` overrides; the errors for what cannot be read."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.rules import RANGES_FILE  # noqa: F401  (the settings rules; see the file's header)

PROPERTIES = Path(__file__).resolve().parents[1] / "properties"
BUNDLE_OVERALL = PROPERTIES / "overall.yaml"
NEXT_ITEM_OVERALL = PROPERTIES / "next_item.yaml"
NEXT_ITEM_SUFFIX = "_next"


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
