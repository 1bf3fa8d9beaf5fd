"""Typed settings for one YAML key: a dataclass with defaults, filled from a mapping and checked.

Every plugin component (extractor, sampler, ...) and the teacher read their settings from one YAML
key of their own, e.g.::

    patterns:
      min_support: 0.02
      max_size: 4

:func:`load_settings` turns that mapping into the component's ``Settings`` dataclass. An unknown
key is an error that names the YAML key and suggests the closest field; a value of the wrong type
is an error that names the field and the expected type. Nothing is silently dropped.

A field's allowed values are a rule of :mod:`recbole_bundlellm.rules` (the language of
``properties/ranges.yaml``), given with :func:`ranged`; :func:`check_fields` checks them with the
same code and message as a ranges row (``key must be <allowed>; got <value>``). A dataclass's
``validate()`` is left for what one rule cannot say (several fields together, a URL's form).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar, Union

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.lookup import did_you_mean
from recbole_bundlellm.rules import RANGES, check_rule_spec, rule_error

T = TypeVar("T")


class SettingsError(BundleLLMError, ValueError):
    """A YAML settings block that does not match its dataclass."""


def check_value(key: str, value: Any, rule: Mapping[str, Any], values: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`SettingsError` (key, allowed values, value) unless ``rule`` allows ``value``."""
    error = rule_error(key, value, rule, values)
    if error is not None:
        raise SettingsError(error)


def check_row(key: str, value: Any, values: Mapping[str, Any] | None = None) -> None:
    """:func:`check_value` with the row of ``key`` in ``properties/ranges.yaml``.

    ``values``: the other settings, for a bound that names another key (``freq_max_size``).
    """
    check_value(key, value, RANGES[key], values)


def check_rows(values: Mapping[str, Any], prefix: str = "") -> None:
    """Every row of ``properties/ranges.yaml`` whose key starts with ``prefix`` and that ``values``
    holds, in the table's order (``values``: a dict or RecBole's Config)."""
    for key in RANGES:
        if key.startswith(prefix) and key in values:
            check_row(key, values[key], values)


def ranged(default: Any = dataclasses.MISSING, *, row: str | None = None, **rule: Any) -> Any:
    """A dataclass field whose allowed values are a rule: ``ranged(0.3, min=0.1, max=0.7)``.

    ``rule``: the fields of a ranges.yaml row, ``type`` left out (it comes from the annotation);
    or ``row``: the name of a ranges.yaml row, when the field is that config key under another
    name (then errors name the key). A mutable default is not supported (use a tuple).
    """
    if row is not None:
        if rule or row not in RANGES:
            raise ValueError(f"ranged(row={row!r}): give a known row or a rule, not both")
    else:
        check_rule_spec("ranged field", {"type": "float", **rule})  # a typo fails at import time
    return dataclasses.field(default=default, metadata={"rule": dict(rule), "row": row})


def _rule_type(tp: Any) -> str:
    """The rule type of an annotation: ``int | None`` -> ``int``; ``Literal['a']`` / str -> ``str``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is int:
        return "int"
    return "float" if tp is float else "str"


def check_fields(obj: Any, key: str = "", given: Mapping[str, Any] | None = None) -> None:
    """Check every :func:`ranged` field of the dataclass instance ``obj``; errors name
    ``key.field`` (or the field's ranges.yaml row). ``given``: the values as the user wrote them
    (before ints became floats), so that an error shows ``got 0``, not ``got 0.0``."""
    fields = dataclasses.fields(obj)
    values = {f.name: getattr(obj, f.name) for f in fields}
    values.update(given or {})
    hints: dict[str, Any] | None = None
    for f in fields:
        if "rule" not in f.metadata:
            continue
        if f.metadata["row"] is not None:
            check_row(f.metadata["row"], values[f.name], values)
            continue
        hints = hints if hints is not None else typing.get_type_hints(type(obj))
        rule = {"type": _rule_type(hints[f.name]), **f.metadata["rule"]}
        check_value(f"{key}.{f.name}" if key else f.name, values[f.name], rule, values)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints are accepted where floats are)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except SettingsError as exc:
                errors.append(str(exc))
        raise SettingsError(f"{where} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise SettingsError(f"{where} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, got {value!r}")
        return value
    return value


def load_settings(cls: type[T], data: Mapping[str, Any] | None, key: str) -> T:
    """An instance of the dataclass ``cls`` from the YAML mapping under ``key``.

    Missing fields take their defaults; unknown fields and ill-typed values raise
    :class:`SettingsError` naming ``key``. Then the rules of its :func:`ranged` fields are
    checked; last, ``validate(self)`` if the dataclass has one, for checks across fields (it
    should raise ``ValueError`` with a clear message).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"YAML key '{key}' must be a mapping of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for name in data:
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise SettingsError(f"unknown setting '{key}.{name}'{did_you_mean(name, fields)} (known: {known})")
    values = {name: _coerce(value, hints.get(name, Any), f"'{key}.{name}'") for name, value in data.items()}
    try:
        obj = cls(**values)
    except TypeError as exc:  # a field without default that was not given
        raise SettingsError(f"settings '{key}': {exc}") from exc
    check_fields(obj, key, data)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise SettingsError(f"settings '{key}': {exc}") from exc
    return obj


def settings_dict(obj: Any) -> dict[str, Any]:
    """A settings dataclass as a plain, JSON-friendly dict (for fingerprints and provenance)."""
    if obj is None:
        return {}
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a component that has none (its YAML key must be empty if given)."""


class Component:
    """Base of every plugin component (extractor, sampler, strategy, router, generation backend).

    ``name`` is how configs refer to it and also the YAML key of its settings; ``Settings`` is a
    dataclass with defaults that the plugin host fills with :func:`load_settings`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()
