"""Model registry: one place that turns a model name into a class, its default YAML and trainer.

A :class:`ModelRegistry` is plain data owned by a plugin host
(:attr:`recbole_bundlellm.extension.host.PluginHost.models`), filled through the ``register_models`` hook
(the built-in ``models`` plugin among them). Lookup order: those models first, then RecBole's own.
A name that would shadow a RecBole model is refused at registration, never silently taken.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recbole_bundlellm  # noqa: F401  (compat patches before recbole)
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.lookup import did_you_mean, import_object

_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


class RegistryError(BundleLLMError, ValueError):
    """A model name that cannot be registered or resolved."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runner needs to know about a model.

    ``target`` is the class or a lazy ``"module:Class"`` string (so listing models imports
    nothing heavy). ``config_files`` are overlaid on RecBole's defaults, in order.
    ``trainer`` is a trainer class or ``"module:Class"``; ``None`` means RecBole's own choice.
    """

    name: str
    target: type | str
    config_files: tuple[Path, ...] = ()
    trainer: type | str | None = None
    origin: str = "builtin"
    is_bundle_model: bool = True
    description: str = ""

    @functools.cached_property
    def model_class(self) -> type:
        return _load(self.target)

    @property
    def trainer_class(self) -> type:
        if self.trainer is not None:
            return _load(self.trainer)
        from recbole.utils import get_trainer

        cls = self.model_class
        return get_trainer(cls.type, cls.__name__)


def _load(target: type | str) -> Any:
    return import_object(target) if isinstance(target, str) else target


@functools.lru_cache(maxsize=1)
def _recbole_model_dir() -> Path:
    return Path(importlib.util.find_spec("recbole").submodule_search_locations[0]) / "model"


def recbole_model_exists(name: str) -> bool:
    """True when RecBole ships a model of this name.

    Looks for the module's file: ``find_spec`` of a submodule would import its package, and each
    of these packages imports all its models (seconds, on every plugin-host load).
    """
    root = _recbole_model_dir()
    return any((root / sub / f"{name.lower()}.py").is_file() for sub in _RECBOLE_SUBMODULES)


class ModelRegistry:
    """Name → :class:`ModelSpec`; ours first, then RecBole's."""

    def __init__(self) -> None:
        self._specs: dict[str, ModelSpec] = {}

    def register(self, spec: ModelSpec) -> ModelSpec:
        """Add a model; a clash with RecBole or with another origin is an error."""
        if recbole_model_exists(spec.name):
            raise RegistryError(
                f"model name '{spec.name}' ({spec.origin}) clashes with RecBole's model "
                f"'{spec.name}'; choose another name"
            )
        old = self._specs.get(spec.name.lower())
        if old is not None and (old.origin, old.target) != (spec.origin, spec.target):
            raise RegistryError(
                f"model name '{spec.name}' is registered twice: by {old.origin} and by {spec.origin}"
            )
        self._specs[spec.name.lower()] = spec
        return spec

    def names(self) -> list[str]:
        return sorted(spec.name for spec in self._specs.values())

    def specs(self) -> list[ModelSpec]:
        return [self._specs[k] for k in sorted(self._specs)]

    def resolve(self, name: str) -> ModelSpec:
        """The spec of ``name``: ours (case-insensitive) first, then a RecBole model."""
        spec = self._specs.get(name.lower())
        if spec is not None:
            return spec
        if recbole_model_exists(name):
            from recbole.utils import get_model

            try:
                cls = get_model(name)
            except (AttributeError, ValueError) as exc:
                raise RegistryError(
                    f"'{name}' is not a RecBole model class (RecBole names are case-sensitive)"
                ) from exc
            return ModelSpec(name=name, target=cls, origin="recbole", is_bundle_model=False)
        raise RegistryError(
            f"unknown model '{name}': not one of this project's models ({', '.join(self.names())}) "
            f"nor a RecBole model{did_you_mean(name, self.names())}"
        )
