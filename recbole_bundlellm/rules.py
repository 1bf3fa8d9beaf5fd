"""The rule language of settings, and the project's table of rules (``properties/ranges.yaml``).

One rule says which values one setting allows; the same rules (and this one checker) serve the
flat keys of the models' YAML files (rows of ``ranges.yaml``, checked by BundleConfig and again
by a model built from a plain mapping) and the fields of typed settings dataclasses
(:func:`recbole_bundlellm.settings.ranged`). A rule is a mapping of:

- ``type``: ``int``, ``float`` or ``str`` (an integer passes where a float is expected;
  ``true``/``false`` never pass: ``True`` is an int in Python, but never a count or a seed);
- ``min`` / ``max``: inclusive bounds; ``above`` / ``below``: exclusive bounds; a bound that is a
  string names another setting (``freq_max_size: {min: freq_min_size}``);
- ``choices``: the allowed values (``pog_fallback: {type: str, choices: [whole, none]}``);
- ``none_means``: what ``~`` (null) means; without it, ``~`` is refused;
- ``list``: ``true`` when a non-empty list of such values is allowed too (RecBole's ``topk``);
  ``only`` when the value must be a list (a tuning grid), each element checked;
- ``empty_means``: for ``list: only``, what ``[]`` (or ``~``) means; without it, a list must not
  be empty.

This module imports nothing of the package (it is below every layer); it answers with the text
of an error, and :mod:`recbole_bundlellm.settings` raises it.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

RULE_FIELDS = frozenset({"type", "min", "above", "max", "below", "choices", "none_means", "list", "empty_means"})
TYPES = ("int", "float", "str")
_BOUNDS: tuple[tuple[str, str, Callable[[Any, Any], bool]], ...] = (
    ("min", ">=", operator.ge), ("above", ">", operator.gt), ("max", "<=", operator.le), ("below", "<", operator.lt))
_NAMES = {"int": "an integer", "float": "a number", "str": "a string"}

#: The rows of the project's settings (see the file's header).
RANGES_FILE = Path(__file__).resolve().parent / "properties" / "ranges.yaml"


def check_rule_spec(key: str, rule: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``rule`` is a well-formed rule (a mistake in code or ranges.yaml)."""
    unknown = set(rule) - RULE_FIELDS
    if unknown:
        raise ValueError(f"rule of {key}: unknown field(s) {sorted(unknown)} (known: {sorted(RULE_FIELDS)})")
    if rule.get("type") not in TYPES:
        raise ValueError(f"rule of {key}: type must be one of {TYPES}, got {rule.get('type')!r}")
    if rule.get("list", False) not in (True, False, "only"):
        raise ValueError(f"rule of {key}: list must be true, false or only, got {rule['list']!r}")
    if "empty_means" in rule and rule.get("list") != "only":
        raise ValueError(f"rule of {key}: empty_means needs list: only")
    choices = rule.get("choices")
    if choices is not None and (not isinstance(choices, (list, tuple)) or not choices):
        raise ValueError(f"rule of {key}: choices must be a non-empty list, got {choices!r}")
    for name, _, _ in _BOUNDS:
        bound = rule.get(name)
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float, str))):
            raise ValueError(f"rule of {key}: {name} must be a number or a setting's name, got {bound!r}")


def _bound(rule: Mapping[str, Any], name: str, values: Mapping[str, Any]) -> Any:
    """A bound of ``rule``: a number, or the value of the key it names (None when unusable)."""
    bound = rule.get(name)
    if isinstance(bound, str):
        bound = values.get(bound)
    return bound if isinstance(bound, (int, float)) and not isinstance(bound, bool) else None


def _one_allowed(rule: Mapping[str, Any], value: Any, values: Mapping[str, Any]) -> bool:
    """Whether one (non-list) value passes ``rule``."""
    if value is None:
        return "none_means" in rule
    if rule["type"] == "str":
        if not isinstance(value, str):
            return False
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    elif rule["type"] == "int" and not isinstance(value, int):
        return False
    if "choices" in rule and value not in rule["choices"]:
        return False
    for name, _, holds in _BOUNDS:
        bound = _bound(rule, name, values)
        if bound is not None and not holds(value, bound):
            return False
    return True


def is_allowed(rule: Mapping[str, Any], value: Any, values: Mapping[str, Any] | None = None) -> bool:
    """Whether ``value`` passes ``rule``; ``values``: the other settings, for a bound naming one."""
    values = values or {}
    shape = rule.get("list", False)
    if shape and isinstance(value, (list, tuple)):
        if not value:
            return "empty_means" in rule
        return all(_one_allowed(rule, v, values) for v in value)
    if shape == "only":
        return value is None and "empty_means" in rule
    return _one_allowed(rule, value, values)


def _one_text(rule: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """E.g. ``an integer >= 1`` or ``one of 'whole', 'none'``."""
    if "choices" in rule:
        text = f"one of {', '.join(repr(c) for c in rule['choices'])}"
    else:
        text = _NAMES[rule["type"]]
    bounds = []
    for name, sign, _ in _BOUNDS:
        if name in rule:
            named = f" ({values.get(rule[name])})" if isinstance(rule[name], str) else ""
            bounds.append(f"{sign} {rule[name]}{named}")
    return f"{text} {' and '.join(bounds)}" if bounds else text


def allowed_text(rule: Mapping[str, Any], values: Mapping[str, Any] | None = None) -> str:
    """E.g. ``an integer >= 1, or ~ for all sessions``."""
    values = values or {}
    text = _one_text(rule, values)
    none = f", or ~ for {rule['none_means']}" if "none_means" in rule else ""
    if rule.get("list") == "only":
        if "empty_means" in rule:
            return f"a list, each {text}{none} ([] or ~ for {rule['empty_means']})"
        return f"a non-empty list, each {text}{none}"
    if rule.get("list"):
        text = f"{text} (or a list of them)"
    return text + none


def rule_error(key: str, value: Any, rule: Mapping[str, Any], values: Mapping[str, Any] | None = None) -> str | None:
    """The one-line error for ``value`` of ``key`` (key, allowed values, value), or None when allowed."""
    if is_allowed(rule, value, values):
        return None
    return f"{key} must be {allowed_text(rule, values)}; got {value!r}{_closest_choice(rule, value)}"


def _closest_choice(rule: Mapping[str, Any], value: Any) -> str:
    """``"; did you mean 'x'?"`` for a misspelt string choice (as unknown keys get), else ``""``.

    Written out here (not :func:`recbole_bundlellm.lookup.did_you_mean`): this module imports
    nothing of the package; the text is the same.
    """
    choices = [c for c in rule.get("choices") or () if isinstance(c, str)]
    if not isinstance(value, str) or not choices:
        return ""
    close = difflib.get_close_matches(value, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (plain YAML keeps the last one, silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    twice = sorted({str(k) for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)}: given more than once (line {node.start_mark.line + 1}); "
                         "one key, one rule")
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_rules(text: str) -> Mapping[str, Mapping[str, Any]]:
    """The rows of a rules table (YAML ``key: {rule}``), each checked; a key given twice is an error."""
    rows = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    for key, rule in rows.items():
        check_rule_spec(key, rule)
    return MappingProxyType({key: MappingProxyType(dict(rule)) for key, rule in rows.items()})


RANGES: Mapping[str, Mapping[str, Any]] = load_rules(RANGES_FILE.read_text(encoding="utf-8"))

__all__ = ["RANGES", "RANGES_FILE", "RULE_FIELDS", "TYPES", "allowed_text", "check_rule_spec", "is_allowed",
           "load_rules", "rule_error"]
