"""The plugin host: loads the ``recbole_bundlellm`` entry points one by one and keeps registries.

Built-in plugins (``plugins/bundlellm_builtin``) and third-party ones load the same way: through
entry points of the group ``recbole_bundlellm``. Loading is isolated per plugin: one that fails
to import, declares an unknown hook, or raises while registering is reported (``bundlellm
plugins``) and skipped, and nothing it registered is kept. In strict mode (``--strict`` or
``BUNDLELLM_STRICT_PLUGINS=1``; CI uses it) the same failure is an error.

Plugins are disabled by entry-point name with ``BUNDLELLM_DISABLE_PLUGINS=a,b`` or the YAML key
``disable_plugins: [a, b]``. The rest of the code talks to plugins only through
:class:`PluginHost`, never through ``pm.hook`` directly.

There is no process-wide host: each command (and each library entry point: ``run``, ``distill``,
``BundleConfig``) creates one or is handed one, so two hosts with different plugin sets can live
in one process. RecBole's metric tables are process-wide; a metric registered by several hosts
stays there until the last of them is closed.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from recbole_bundlellm import hookspecs
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.hookspecs import PROJECT
from recbole_bundlellm.lookup import did_you_mean, import_object
from recbole_bundlellm.registry import ModelRegistry, ModelSpec, RegistryError
from recbole_bundlellm.settings import SettingsError, load_settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT
STRICT_ENV = "BUNDLELLM_STRICT_PLUGINS"
DISABLE_ENV = "BUNDLELLM_DISABLE_PLUGINS"

#: kind of component → (registration hook, import path of its base class)
COMPONENT_KINDS: dict[str, tuple[str, str]] = {
    "extractor": ("register_knowledge_extractors", "recbole_bundlellm.knowledge.extractor:KnowledgeExtractor"),
    "sampler": ("register_samplers", "recbole_bundlellm.sampling.sampler:Sampler"),
    "strategy": ("register_adaptation_strategies", "recbole_bundlellm.adaptation:AdaptationStrategy"),
    "router": ("register_fusion_routers", "recbole_bundlellm.fusion:FusionRouter"),
}
REGISTRATION_HOOKS = ("register_models", "register_metrics", *(h for h, _ in COMPONENT_KINDS.values()))


class PluginError(BundleLLMError, RuntimeError):
    """A plugin that failed to load or register (raised in strict mode), or an unknown component."""


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed (non-strict mode)."""


@dataclass
class PluginStatus:
    """One plugin as ``bundlellm plugins`` lists it."""

    name: str
    distribution: str | None
    version: str | None
    status: Literal["loaded", "disabled", "failed"]
    hooks: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Component:
    kind: str
    name: str
    obj: Any
    plugin: str


BUILTIN_DISTRIBUTION = "recbole-bundlellm"


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist else None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def env_disabled() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


class PluginHost:
    """Loads plugins and holds what they registered.

    ``entry_points`` defaults to the installed ones of the ``recbole_bundlellm`` group; tests pass
    their own. ``plugins`` are extra ``(name, module_or_object)`` pairs registered as if they came
    from an entry point (handy for a plugin defined in a notebook or a test).
    """

    def __init__(self, disabled: Iterable[str] = (), strict: bool = False,
                 entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
                 plugins: Iterable[tuple[str, Any]] = ()) -> None:
        self.disabled = frozenset(disabled)
        self.strict = strict
        self.extra_plugins = list(plugins)
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.models = ModelRegistry()
        self.metrics: dict[str, type] = {}
        self.components: dict[str, dict[str, _Component]] = {kind: {} for kind in COMPONENT_KINDS}
        self.statuses: list[PluginStatus] = []
        eps = entry_points if entry_points is not None else importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        # Built-in plugins first, so a third party can never take a built-in component's name.
        for ep in sorted(eps, key=lambda e: (_dist_name(e) != BUILTIN_DISTRIBUTION, e.name)):
            self._load_entry_point(ep)
        for name, plugin in plugins:
            self._load(name, None, None, lambda plugin=plugin: plugin)
        self.notify("plugins_loaded", host=self)

    @classmethod
    def from_environment(cls, disabled: Iterable[str] = (), strict: bool = False,
                         plugins: Iterable[tuple[str, Any]] = ()) -> PluginHost:
        """A host of the installed plugins, less ``disabled`` and ``$BUNDLELLM_DISABLE_PLUGINS``;
        strict when asked or when ``$BUNDLELLM_STRICT_PLUGINS`` is set."""
        return cls(frozenset(disabled) | env_disabled(), strict or env_flag(STRICT_ENV), plugins=plugins)

    # -- loading --------------------------------------------------------------------------------
    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        self._load(ep.name, _dist_name(ep), dist.version if dist else None, ep.load)

    def _load(self, name: str, dist: str | None, version: str | None, loader: Callable[[], Any]) -> None:
        status = PluginStatus(name, dist, version, "loaded")
        self.statuses.append(status)
        if any(s.name == name and s is not status for s in self.statuses):
            return self._fail(status, f"another plugin is already named '{name}'")
        if name in self.disabled:
            status.status = "disabled"
            return None
        try:
            plugin = loader()
        except Exception as exc:  # noqa: BLE001 - any import error of a third party's code
            return self._fail(status, f"import failed: {type(exc).__name__}: {exc}")
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            return self._fail(status, f"invalid plugin: {exc}")
        status.hooks = sorted(impl_name for impl_name in self._hooks_of(plugin))
        staged: list[tuple[str, Any]] = []
        try:
            for hook_name in REGISTRATION_HOOKS:
                for impl in self._impls(hook_name, plugin):
                    impl.function(**self._kwargs(impl, register=self._stager(hook_name, staged)))
            self._commit(staged, name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the host
            self.pm.unregister(plugin)
            return self._fail(status, f"registration failed: {type(exc).__name__}: {exc}")
        status.components = [f"{kind}:{getattr(obj, 'name', getattr(obj, '__name__', obj))}" for kind, obj in staged]
        return None

    def _fail(self, status: PluginStatus, message: str) -> None:
        status.status, status.error = "failed", message
        text = f"plugin '{status.name}'" + (f" ({status.distribution} {status.version})" if status.distribution else "")
        if self.strict:
            raise PluginError(f"{text} failed: {message} (strict plugin mode)")
        warnings.warn(f"{text} skipped: {message}", PluginWarning, stacklevel=4)
        log.warning("%s skipped: %s", text, message)

    def _hooks_of(self, plugin: Any) -> list[str]:
        return [hc.name for hc in self.pm.get_hookcallers(plugin) or []]

    def _impls(self, hook_name: str, plugin: Any) -> list[Any]:
        return [impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls() if impl.plugin is plugin]

    @staticmethod
    def _kwargs(impl: Any, **available: Any) -> dict[str, Any]:
        return {arg: available[arg] for arg in impl.argnames}

    @staticmethod
    def _stager(hook_name: str, staged: list[tuple[str, Any]]) -> Callable[[Any], None]:
        kind = {"register_models": "model", "register_metrics": "metric"}.get(hook_name)
        if kind is None:
            kind = next(k for k, (h, _) in COMPONENT_KINDS.items() if h == hook_name)

        def register(obj: Any) -> None:
            staged.append((kind, obj))

        return register

    def _commit(self, staged: list[tuple[str, Any]], plugin: str) -> None:
        """Check every staged component, then add them all (or none)."""
        taken_keys = {name for comps in self.components.values() for name in comps}
        new_keys: set[str] = set()
        for kind, obj in staged:
            if kind == "model":
                if not isinstance(obj, ModelSpec):
                    raise TypeError(f"register_models must register ModelSpec objects, got {obj!r}")
                if obj.name.lower() in {n.lower() for n in self.models.names()}:
                    raise RegistryError(f"model name '{obj.name}' is already registered by another plugin")
            elif kind == "metric":
                if not isinstance(obj, type):
                    raise TypeError(f"register_metrics must register metric classes, got {obj!r}")
            else:
                base = import_object(COMPONENT_KINDS[kind][1])
                if not (isinstance(obj, type) and issubclass(obj, base)):
                    raise TypeError(f"{COMPONENT_KINDS[kind][0]} must register subclasses of {base.__name__}, got {obj!r}")
                name = getattr(obj, "name", None)
                if not isinstance(name, str) or not name.isidentifier():
                    raise TypeError(f"{obj.__name__}.name must be an identifier string, got {name!r}")
                if not dataclasses.is_dataclass(obj.Settings):
                    raise TypeError(f"{obj.__name__}.Settings must be a dataclass")
                if name in taken_keys or name in new_keys:
                    owner = next((c.plugin for comps in self.components.values() for c in comps.values()
                                  if c.name == name), plugin)
                    raise PluginError(f"component name '{name}' is already taken (by plugin '{owner}'); "
                                      "names are YAML settings keys and must be unique")
                new_keys.add(name)
        for kind, obj in staged:
            if kind == "model":
                self.models.register(dataclasses.replace(obj, origin=plugin))
            elif kind == "metric":
                from recbole_bundlellm.evaluation.recbole_metrics import register_metric

                register_metric(obj, owner=self)
                self.metrics[obj.__name__] = obj
            else:
                self.components[kind][obj.name] = _Component(kind, obj.name, obj, plugin)

    # -- use ------------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        """Registered component names of one kind (extractor, sampler, strategy, router)."""
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> type:
        """The registered class of component ``name``; a clear error (with a suggestion) if absent."""
        comps = self.components[kind]
        if name in comps:
            return comps[name].obj
        hint = did_you_mean(name, comps)
        disabled = [s.name for s in self.statuses if s.status != "loaded"]
        extra = f" (plugins not loaded: {', '.join(disabled)})" if disabled else ""
        raise PluginError(f"unknown {kind} '{name}'{hint}; registered: {', '.join(sorted(comps)) or 'none'}{extra}")

    def create(self, kind: str, name: str, config: Mapping[str, Any] | Any) -> Any:
        """An instance of component ``name`` with its settings read from ``config[name]``."""
        cls = self.get(kind, name)
        raw = _config_get(config, name)
        return cls(load_settings(cls.Settings, raw, name))

    def settings_keys(self) -> set[str]:
        """The YAML keys plugin components read their settings from."""
        return {name for comps in self.components.values() for name in comps}

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook of every plugin; a plugin that raises is reported (strict: re-raised)."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(**self._kwargs(impl, **kwargs))
            except Exception as exc:  # noqa: BLE001
                message = f"plugin '{impl.plugin_name}' failed in {hook_name}: {type(exc).__name__}: {exc}"
                if self.strict:
                    raise PluginError(message) from exc
                warnings.warn(message, PluginWarning, stacklevel=2)
                log.warning(message)

    def close(self) -> None:
        """Release this host's metrics in RecBole (kept while another open host registered them)."""
        from recbole_bundlellm.evaluation.recbole_metrics import unregister_metric

        for name in self.metrics:
            unregister_metric(name, owner=self)
        self.metrics = {}

    def __enter__(self) -> PluginHost:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _config_get(config: Mapping[str, Any] | Any, key: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(key)
    try:  # RecBole's Config returns None for a missing key
        return config[key]
    except KeyError:
        return None


def disabled_from_config(config: Mapping[str, Any]) -> list[str]:
    """The ``disable_plugins`` list of a config mapping, checked."""
    value = config.get("disable_plugins") or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"disable_plugins must be a list of plugin names, got {value!r}")
    return value


def format_statuses(host: PluginHost) -> str:
    """The ``bundlellm plugins`` table: name, version, distribution, status, hooks, components."""
    lines = [f"{'plugin':12s} {'version':8s} {'distribution':22s} {'status':9s} hooks / components"]
    for s in sorted(host.statuses, key=lambda s: s.name):
        lines.append(f"{s.name:12s} {s.version or '-':8s} {s.distribution or '-':22s} {s.status:9s} "
                     f"{', '.join(s.hooks) or '-'}")
        if s.components:
            lines.append(f"{'':55s}provides {', '.join(s.components)}")
        if s.error:
            lines.append(f"{'':55s}{s.status}: {s.error}")
    return "\n".join(lines)
