"""The allowed values of our numeric settings (``properties/ranges.yaml``) and their checks."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from recbole_bundlellm.config.files import RANGES_FILE, _load_yaml_dict
from recbole_bundlellm.settings import SettingsError

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
    if rule.get("list"):
        text = f"{text} (or a list of them)"
    return f"{text}, or ~ for {rule['none_means']}" if "none_means" in rule else text


def _is_allowed(rule: Mapping[str, Any], value: Any, values: Mapping[str, Any]) -> bool:
    if rule.get("list") and isinstance(value, (list, tuple)):  # each element (RecBole's topk: [5, 10])
        return bool(value) and all(_is_allowed({**rule, "list": False}, v, values) for v in value)
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
