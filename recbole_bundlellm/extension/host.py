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
import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from recbole_bundlellm.extension import hookspecs
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.extension.hookspecs import PROJECT
from recbole_bundlellm.lookup import did_you_mean, import_object
from recbole_bundlellm.extension.registry import ModelRegistry, ModelSpec, RegistryError
from recbole_bundlellm.settings import SettingsError, load_settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT
STRICT_ENV = "BUNDLELLM_STRICT_PLUGINS"
DISABLE_ENV = "BUNDLELLM_DISABLE_PLUGINS"
#: Set to 1 (or pass ``bundlellm --debug``) for the full traceback of a plugin that fails.
DEBUG_ENV = "BUNDLELLM_DEBUG"

#: kind of component → (registration hook, import path of its base class)
COMPONENT_KINDS: dict[str, tuple[str, str]] = {
    "extractor": ("register_knowledge_extractors", "recbole_bundlellm.knowledge.extractor:KnowledgeExtractor"),
    "sampler": ("register_samplers", "recbole_bundlellm.sampling.sampler:Sampler"),
    "strategy": ("register_adaptation_strategies", "recbole_bundlellm.adaptation:AdaptationStrategy"),
    "router": ("register_fusion_routers", "recbole_bundlellm.fusion:FusionRouter"),
    "backend": ("register_generation_backends", "recbole_bundlellm.generation.backend:GenerationBackend"),
}
REGISTRATION_HOOKS = ("register_models", "register_metrics", *(h for h, _ in COMPONENT_KINDS.values()))


class PluginError(BundleLLMError, RuntimeError):
    """A plugin that failed to load or register (raised in strict mode), or an unknown component."""


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed (non-strict mode)."""


@dataclass
class PluginStatus:
    """One plugin as ``bundlellm plugins`` lists it.

    ``error`` is one line (with the file and line where the plugin failed, when known);
    ``traceback`` the full one (shown with ``bundlellm --debug`` / ``$BUNDLELLM_DEBUG``).
    """

    name: str
    distribution: str | None
    version: str | None
    status: Literal["loaded", "disabled", "failed"]
    hooks: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None


#: One ``register(obj)`` call of a registration hook: ``(kind, obj, file:line of the call)``.
Staged = tuple[str, Any, str]


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


def debug_enabled() -> bool:
    """Whether plugin failures show their full traceback (``$BUNDLELLM_DEBUG``, ``bundlellm --debug``)."""
    return env_flag(DEBUG_ENV)


def installed_entry_points(*, builtins: bool = True, others: bool = True) -> list[importlib.metadata.EntryPoint]:
    """The installed entry points of the ``recbole_bundlellm`` group: the built-in plugins (of the
    ``recbole-bundlellm`` distribution) when ``builtins``, every other distribution's when ``others``."""
    return [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if (builtins if _dist_name(ep) == BUILTIN_DISTRIBUTION else others)]


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# -- where a plugin failed ------------------------------------------------------------------------
_IMPORTLIB_DIR = os.path.dirname(importlib.__file__)
_PLUGGY_DIR = os.path.dirname(pluggy.__file__)


def _failure_site(exc: BaseException) -> str | None:
    """``file:line`` where ``exc`` was raised, leaving out the import machinery and this host
    (for an import error: the plugin's own line, e.g. the ``import`` of a missing package)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    sites = [f for f in traceback.extract_tb(exc.__traceback__)
             if not f.filename.startswith("<") and f.filename != __file__
             and not f.filename.startswith((_IMPORTLIB_DIR, _PLUGGY_DIR))]
    return f"{sites[-1].filename}:{sites[-1].lineno}" if sites else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _function_site(fn: Any) -> str:
    fn = inspect.unwrap(getattr(fn, "__func__", fn))
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else repr(fn)


def _impl_argnames(fn: Any) -> list[str]:
    """The arguments pluggy passes to a hook implementation (those without a default)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in positional and p.default is inspect.Parameter.empty]


def _spec_argnames() -> dict[str, list[str]]:
    return {name: list(inspect.signature(getattr(hookspecs, name)).parameters)
            for name in hookspecs.hook_names()}


class PluginHost:
    """Loads plugins and holds what they registered.

    ``entry_points`` defaults to the installed ones of the ``recbole_bundlellm`` group (see
    :func:`installed_entry_points` to keep only the built-in ones, or none: ``[]``). ``plugins``
    are extra ``(name, module_or_object)`` pairs registered as if they came from an entry point
    (a plugin in a notebook or a test). An extra plugin takes the place of an installed entry
    point of the same name or of the same module, so a test may pass an installed plugin's module.
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
        self._disabled_loaders: dict[str, Callable[[], Any]] = {}
        self._disabled_names: dict[str, dict[str, set[str]] | None] | None = None
        self._installed: list[importlib.metadata.EntryPoint] | None = None if entry_points is not None else \
            list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        eps = list(entry_points) if entry_points is not None else list(self._installed or [])
        replaced = [ep for ep in eps if any(_replaces(name, plugin, ep) for name, plugin in self.extra_plugins)]
        eps = [ep for ep in eps if all(ep is not r for r in replaced)]
        # Built-in plugins first, so a third party can never take a built-in component's name.
        for ep in sorted(eps, key=lambda e: (_dist_name(e) != BUILTIN_DISTRIBUTION, e.name)):
            self._load_entry_point(ep)
        for name, plugin in self.extra_plugins:
            # An installed module keeps its distribution and version in the listing.
            ep = next((e for e in self._all_installed()
                       if inspect.ismodule(plugin) and e.value.strip() == plugin.__name__), None)
            dist = getattr(ep, "dist", None)
            self._load(name, dist.name if dist else None, dist.version if dist else None,
                       lambda plugin=plugin: plugin)
        self._check_disabled_names(eps + replaced)
        self.notify("plugins_loaded", host=self)

    def _all_installed(self) -> list[importlib.metadata.EntryPoint]:
        """Every installed entry point of the group (read once), whichever this host loaded."""
        if self._installed is None:
            self._installed = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        return self._installed

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
            self._disabled_loaders[name] = loader  # imported only to name what it provides, on an error
            return None
        try:
            plugin = loader()
        except Exception as exc:  # noqa: BLE001 - any import error of a third party's code
            return self._fail(status, f"import failed: {type(exc).__name__}: {exc}", exc)
        if self.pm.is_registered(plugin):
            return self._fail(status, f"the same module or object is already loaded as plugin "
                                      f"'{self.pm.get_name(plugin)}'")
        problems = self._validation_problems(plugin)
        if problems:
            return self._fail(status, "invalid plugin: " + "; ".join(problems))
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors our own checks missed
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            return self._fail(status, f"invalid plugin: {exc}", exc)
        status.hooks = sorted(impl_name for impl_name in self._hooks_of(plugin))
        staged: list[Staged] = []
        mistakes: list[str] = []
        try:
            for hook_name in REGISTRATION_HOOKS:
                for impl in self._impls(hook_name, plugin):
                    before = len(staged)
                    returned = impl.function(**self._kwargs(impl, register=self._stager(hook_name, staged)))
                    mistakes.extend(_registration_mistakes(hook_name, impl.function, returned, len(staged) - before))
            if not (mistakes and self.strict):  # strict mode refuses the plugin below: nothing is added
                self._commit(staged, name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the host
            self.pm.unregister(plugin)
            return self._fail(status, f"registration failed: {type(exc).__name__}: {exc}", exc)
        status.components = [f"{kind}:{getattr(obj, 'name', getattr(obj, '__name__', obj))}"
                             for kind, obj, _ in staged]
        for mistake in mistakes:  # what was registered is kept, but strict mode refuses the plugin
            text = f"plugin '{name}': {mistake}"
            if self.strict:
                self.pm.unregister(plugin)
                raise PluginError(f"{text} (strict plugin mode)")
            warnings.warn(text, PluginWarning, stacklevel=4)
            log.warning(text)
        return None

    def _validation_problems(self, plugin: Any) -> list[str]:
        """What pluggy would refuse in ``plugin``, one short text each, with a suggestion: a hook
        that does not exist, an argument a hook does not have."""
        specs = _spec_argnames()
        problems: list[str] = []
        for attr in dir(plugin):
            try:
                opts = self.pm.parse_hookimpl_opts(plugin, attr)
            except Exception:  # noqa: BLE001 - an attribute that cannot be inspected is no hook
                continue
            if opts is None:
                continue
            hook = opts.get("specname") or attr
            fn = getattr(plugin, attr)
            site = _function_site(fn)
            if hook not in specs:
                if not opts.get("optionalhook"):
                    problems.append(f"unknown hook '{hook}' at {site}{did_you_mean(hook, specs)}")
                continue
            for arg in _impl_argnames(fn):
                if arg not in specs[hook]:
                    problems.append(f"hook '{hook}' has no argument '{arg}' (it passes: "
                                    f"{', '.join(specs[hook])}) at {site}{did_you_mean(arg, specs[hook])}")
        return problems

    def _fail(self, status: PluginStatus, message: str, exc: BaseException | None = None) -> None:
        # A component refused at registration: the plugin's own register(...) line, not ours.
        site = getattr(exc, "registered_at", None) or (_failure_site(exc) if exc is not None else None)
        status.status = "failed"
        status.error = _one_line(message) + (f" (at {site})" if site else "")
        if exc is not None:
            status.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        text = f"plugin '{status.name}'" + (f" ({status.distribution} {status.version})" if status.distribution else "")
        if self.strict:
            raise PluginError(f"{text} failed: {status.error} (strict plugin mode)") from exc
        detail = f"\n{status.traceback}" if status.traceback and debug_enabled() else ""
        hint = "" if detail or status.traceback is None else f" (full traceback: {DEBUG_ENV}=1 or bundlellm --debug)"
        warnings.warn(f"{text} skipped: {status.error}{hint}{detail}", PluginWarning, stacklevel=4)
        log.warning("%s skipped: %s%s", text, status.error, detail)

    def _check_disabled_names(self, eps: list[importlib.metadata.EntryPoint]) -> None:
        """Warn about (strict: refuse) a disabled name that matches no plugin: a typo, or a
        distribution's name where the entry point's is meant."""
        unknown = self.disabled - {s.name for s in self.statuses}
        if not unknown:
            return
        installed = self._all_installed() + eps
        names = {ep.name for ep in installed} | {s.name for s in self.statuses}
        for name in sorted(unknown - names):
            of_dist = sorted({ep.name for ep in installed if _normalized(_dist_name(ep) or "") == _normalized(name)})
            if of_dist:
                hint = (f": that is a distribution; disable its plugins by their entry-point names "
                        f"({', '.join(of_dist)})")
            else:
                hint = did_you_mean(name, names) + " (plugins are disabled by the names `bundlellm plugins` lists)"
            message = f"disable_plugins names '{name}', which is not an installed plugin{hint}"
            if self.strict:
                raise PluginError(f"{message} (strict plugin mode)")
            warnings.warn(message, PluginWarning, stacklevel=3)
            log.warning(message)

    def _hooks_of(self, plugin: Any) -> list[str]:
        return [hc.name for hc in self.pm.get_hookcallers(plugin) or []]

    def _impls(self, hook_name: str, plugin: Any) -> list[Any]:
        return [impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls() if impl.plugin is plugin]

    @staticmethod
    def _kwargs(impl: Any, **available: Any) -> dict[str, Any]:
        return {arg: available[arg] for arg in impl.argnames}

    @staticmethod
    def _stager(hook_name: str, staged: list[Staged]) -> Callable[[Any], None]:
        kind = {"register_models": "model", "register_metrics": "metric"}.get(hook_name)
        if kind is None:
            kind = next(k for k, (h, _) in COMPONENT_KINDS.items() if h == hook_name)

        def register(obj: Any) -> None:
            caller = sys._getframe(1)  # the plugin's register(...) line, for an error about obj
            staged.append((kind, obj, f"{caller.f_code.co_filename}:{caller.f_lineno}"))

        return register

    def _commit(self, staged: list[Staged], plugin: str) -> None:
        """Check every staged component, then add them all (or none). An error carries the
        plugin's ``register(...)`` line as ``registered_at``."""
        taken_keys = {name for comps in self.components.values() for name in comps}
        new_keys: set[str] = set()
        for kind, obj, site in staged:
            try:
                self._check_staged(kind, obj, taken_keys, new_keys, plugin)
            except Exception as exc:
                exc.registered_at = site  # type: ignore[attr-defined]
                raise
        for kind, obj, site in staged:
            try:
                self._add_staged(kind, obj, plugin)
            except Exception as exc:
                exc.registered_at = site  # type: ignore[attr-defined]
                raise

    def _check_staged(self, kind: str, obj: Any, taken_keys: set[str], new_keys: set[str], plugin: str) -> None:
        """Refuse one staged component of ``kind`` that is not one, or whose name is taken."""
        if kind == "model":
            if not isinstance(obj, ModelSpec):
                raise TypeError(f"register_models must register ModelSpec objects, got {obj!r}")
            if obj.name.lower() in {n.lower() for n in self.models.names()}:
                raise RegistryError(f"model name '{obj.name}' is already registered by another plugin")
        elif kind == "metric":
            # register_metric checks a metric's attributes; a component of another kind is named first.
            other = "" if hasattr(obj, "metric_need") else _other_kind(obj, "metric")
            if not isinstance(obj, type) or other:
                raise TypeError(f"register_metrics must register metric classes, got {obj!r}{other}")
        else:
            base = import_object(COMPONENT_KINDS[kind][1])
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise TypeError(f"{COMPONENT_KINDS[kind][0]} must register subclasses of {base.__name__}, "
                                f"got {obj!r}{_other_kind(obj, kind)}")
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

    def _add_staged(self, kind: str, obj: Any, plugin: str) -> None:
        """Add one checked component to its registry."""
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
        """Registered component names of one kind (extractor, sampler, strategy, router, backend)."""
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> type:
        """The registered class of component ``name``; a clear error (with a suggestion) if absent."""
        comps = self.components[kind]
        if name in comps:
            return comps[name].obj
        raise PluginError(self.unknown_name_message(kind, name, comps))

    def unknown_name_message(self, kind: str, name: str, registered: Iterable[str],
                             also: Iterable[str] = ()) -> str:
        """``unknown <kind> '<name>'`` with a suggestion (among ``registered`` and ``also``), what
        plugins registered, and the plugin that provides ``name`` when it is disabled (else the
        plugins that are not loaded)."""
        registered, also = sorted(registered), sorted(also)
        owner = self.disabled_owner(name, kind)
        if owner is not None:
            return (f"unknown {kind} '{name}': it is provided by plugin '{owner}', which is disabled "
                    f"(disable_plugins / ${DISABLE_ENV}); enable it to use '{name}'")
        not_loaded = [f"{s.name} ({s.status})" for s in self.statuses if s.status != "loaded"]
        extra = f" (plugins not loaded: {', '.join(not_loaded)})" if not_loaded else ""
        also_text = f"; RecBole's own: {', '.join(also)}" if also else ""
        return (f"unknown {kind} '{name}'{_suggest(name, registered + also)}; registered: "
                f"{', '.join(registered) or 'none'}{extra}{also_text}")

    def check_metric(self, name: str) -> None:
        """Raise :class:`PluginError` unless ``name`` (as in ``metrics:`` / ``valid_metric:``,
        ``@k`` allowed) is a RecBole metric or one this host's plugins registered."""
        from recbole.evaluator import register as recbole_register

        base = str(name).split("@")[0]
        if base.lower() in recbole_register.metric_types or base.lower() in {m.lower() for m in self.metrics}:
            return
        recbole_own = [cls.__name__ for cls in recbole_register.metrics_dict.values()
                       if cls.__module__.startswith("recbole.")]
        raise PluginError(self.unknown_name_message("metric", base, self.metrics, recbole_own))

    def disabled_owner(self, name: str, kind: str | None = None) -> str | None:
        """The disabled plugin that provides ``name`` as a ``kind`` (extractor, sampler, strategy,
        router, backend, metric or model; ``None``: any component, i.e. a settings key), or None.

        Asked only on the way to an error: it imports the disabled plugins then, in a throwaway
        plugin manager that keeps nothing. A disabled plugin that cannot be imported is taken to
        provide the component named like itself.
        """
        if not self._disabled_loaders:
            return None
        if self._disabled_names is None:
            self._disabled_names = {plugin: _names_registered_by(plugin, loader)
                                    for plugin, loader in self._disabled_loaders.items()}
        kinds = [kind] if kind is not None else list(COMPONENT_KINDS)
        for plugin, by_kind in self._disabled_names.items():
            if by_kind is None:
                if name == plugin and kind not in ("metric", "model"):
                    return plugin
                continue
            names = {n for k in kinds for n in by_kind.get(k, ())}
            if name in names or (kind in ("metric", "model") and name.lower() in {n.lower() for n in names}):
                return plugin
        return None

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
                site = _failure_site(exc)
                message = (f"plugin '{impl.plugin_name}' failed in {hook_name}: {type(exc).__name__}: {_one_line(exc)}"
                           + (f" (at {site})" if site else ""))
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


def format_statuses(host: PluginHost, *, tracebacks: bool = False) -> str:
    """The ``bundlellm plugins`` table: name, version, distribution, status, hooks, then what
    each plugin provides and why it failed (one line; with ``tracebacks``, the traceback too).
    Columns are as wide as their longest cell."""
    rows = sorted(host.statuses, key=lambda s: s.name)
    cells = [(s.name, s.version or "-", s.distribution or "-", s.status) for s in rows]
    header = ("plugin", "version", "distribution", "status")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    indent = " " * (sum(widths) + len(widths))

    def line(values: Sequence[str], tail: str) -> str:
        return " ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " " + tail

    lines = [line(header, "hooks / components")]
    for s, values in zip(rows, cells, strict=True):
        lines.append(line(values, ", ".join(s.hooks) or "-"))
        if s.components:
            lines.append(f"{indent}provides {', '.join(s.components)}")
        if s.error:
            lines.append(f"{indent}{s.status}: {s.error}")
        if tracebacks and s.traceback:
            lines.extend(f"{indent}  {t}" for t in s.traceback.rstrip().splitlines())
    return "\n".join(lines)


def _registration_mistakes(hook_name: str, fn: Any, returned: Any, registered: int) -> list[str]:
    """What a registration hook did wrong that raises nothing: it returned its components
    instead of calling ``register``, or registered nothing at all."""
    call = f"register(...) once per {'model' if hook_name == 'register_models' else 'component'}"
    if returned is not None:
        shown = _one_line(repr(returned))
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        return [f"{hook_name} returned {shown} instead of calling {call}; a returned value is not "
                f"registered (at {_function_site(fn)})"]
    if registered == 0:
        return [f"{hook_name} registered nothing; call {call}, or drop the hook (at {_function_site(fn)})"]
    return []


#: kind -> the article and name a message gives it ("a sampler", "an extractor").
_KIND_WORDS = {"extractor": "an extractor", "sampler": "a sampler", "strategy": "an adaptation strategy",
               "router": "a fusion router", "backend": "a generation backend", "metric": "a metric"}
_KIND_HOOKS = {**{kind: hook for kind, (hook, _) in COMPONENT_KINDS.items()}, "metric": "register_metrics"}


def _other_kind(obj: Any, kind: str) -> str:
    """``"; X is a sampler: register it from register_samplers"`` when ``obj`` is a component of
    another kind than ``kind``, else ``""``. It imports the base classes: call it on the way to an error."""
    if not isinstance(obj, type):
        return ""
    found = None
    for other, (_, base_path) in COMPONENT_KINDS.items():
        if other != kind and issubclass(obj, import_object(base_path)):
            found = other
    if found is None and kind != "metric" and callable(getattr(obj, "calculate_metric", None)) \
            and hasattr(obj, "metric_need"):
        found = "metric"
    if found is None:
        return ""
    return f"; {obj.__name__} is {_KIND_WORDS[found]}: register it from {_KIND_HOOKS[found]}"


def _suggest(name: str, choices: Sequence[str]) -> str:
    """:func:`did_you_mean`, also across letter case (metric names are case-insensitive)."""
    hint = did_you_mean(name, choices)
    if hint:
        return hint
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), sorted(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


def _replaces(name: str, plugin: Any, ep: importlib.metadata.EntryPoint) -> bool:
    """Whether the extra plugin ``(name, plugin)`` takes the place of entry point ``ep``: same
    name, or ``ep`` loads the very module ``plugin`` is."""
    return ep.name == name or (inspect.ismodule(plugin) and ep.value.strip() == plugin.__name__)


def _names_registered_by(name: str, loader: Callable[[], Any]) -> dict[str, set[str]] | None:
    """What the plugin ``loader`` gives registers, by kind (extractor, ..., metric, model), without
    keeping anything; None when it cannot be imported or registered."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    names: dict[str, set[str]] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm.register(loader(), name=name)
            for hook_name in REGISTRATION_HOOKS:
                staged: list[Staged] = []
                stage = PluginHost._stager(hook_name, staged)
                for impl in getattr(pm.hook, hook_name).get_hookimpls():
                    impl.function(**{a: stage for a in impl.argnames if a == "register"})
                for kind, obj, _ in staged:
                    names.setdefault(kind, set()).add(str(getattr(obj, "name", getattr(obj, "__name__", obj))))
    except Exception:  # noqa: BLE001 - a disabled plugin may well be broken
        log.debug("could not list what disabled plugin %s provides", name, exc_info=True)
        return None
    return names
