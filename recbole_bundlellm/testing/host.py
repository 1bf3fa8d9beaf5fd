"""Plugin hosts for tests: the plugins you name, with or without the built-in ones."""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Iterable
from typing import Any

from recbole_bundlellm.extension.host import ENTRY_POINT_GROUP, PluginHost, installed_entry_points

#: A plugin as :func:`plugin_host` takes it: a module (named like its installed entry point, else
#: like the module) or a ``(name, module_or_object)`` pair.
PluginArg = Any


def plugin_name(plugin: PluginArg) -> tuple[str, Any]:
    """``(name, plugin)`` of a plugin argument: a pair as given; a module by the name of the
    installed entry point that loads it, else its module name's last part."""
    if isinstance(plugin, tuple):
        name, obj = plugin
        return str(name), obj
    if not inspect.ismodule(plugin):
        raise TypeError(f"a plugin is a module or a (name, module_or_object) pair, got {plugin!r}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.strip() == plugin.__name__:
            return ep.name, plugin
    return plugin.__name__.rsplit(".", 1)[-1], plugin


def plugin_host(*plugins: PluginArg, builtins: bool = True, installed: bool = False,
                disabled: Iterable[str] = (), strict: bool = True) -> PluginHost:
    """A plugin host of ``plugins`` (modules or ``(name, object)`` pairs), the built-in plugins
    when ``builtins`` and every other installed plugin when ``installed``.

    Strict by default: a plugin that fails to load fails the test with its reason. A plugin
    passed here takes the place of an installed entry point of the same name or module, so the
    tests of an installed plugin may pass its module. Close the host (``host.close()`` or a
    ``with`` block) to release its metrics in RecBole.
    """
    return PluginHost(disabled=disabled, strict=strict,
                      entry_points=installed_entry_points(builtins=builtins, others=installed),
                      plugins=[plugin_name(p) for p in plugins])


__all__ = ["plugin_host", "plugin_name"]
