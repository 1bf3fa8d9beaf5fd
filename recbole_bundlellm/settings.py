"""Typed settings for one YAML key: a dataclass with defaults, filled from a mapping and checked.

Every plugin component (extractor, sampler, ...) and the teacher read their settings from one YAML
key of their own, e.g.::

    patterns:
      min_support: 0.02
      max_size: 4

:func:`load_settings` turns that mapping into the component's ``Settings`` dataclass. An unknown
key is an error that names the YAML key and suggests the closest field; a value of the wrong type
is an error that names the field and the expected type. Nothing is silently dropped.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar, Union

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.lookup import did_you_mean

T = TypeVar("T")


class SettingsError(BundleLLMError, ValueError):
    """A YAML settings block that does not match its dataclass."""


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
    :class:`SettingsError` naming ``key``. A dataclass may define ``validate(self)`` for range
    checks; it runs last and should raise ``ValueError`` with a clear message.
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
    """Base of every plugin component (extractor, sampler, strategy, router).

    ``name`` is how configs refer to it and also the YAML key of its settings; ``Settings`` is a
    dataclass with defaults that the plugin host fills with :func:`load_settings`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()
