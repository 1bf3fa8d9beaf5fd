"""The plugin host a configuration asks for (its ``disable_plugins``), and the checks of a
configuration against the host: settings blocks, metrics."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from recbole_bundlellm.adaptation.knowledge_source import knowledge_use
from recbole_bundlellm.config.files import _load_yaml_dict
from recbole_bundlellm.config.secrets import _refuse_secrets_in_teacher
from recbole_bundlellm.extension.host import PluginHost, disabled_from_config
from recbole_bundlellm.sampling.settings import SamplingSettings
from recbole_bundlellm.settings import SettingsError, load_settings
from recbole_bundlellm.teacher.settings import TeacherSettings

#: Our own settings blocks besides the plugin components' (which the plugin host names).
SETTINGS_BLOCKS = frozenset({"teacher", "sampling"})


def disabled_plugins(config_files: Sequence[str | os.PathLike], config_dict: dict[str, Any] | None) -> list[str]:
    """The ``disable_plugins`` that the given files and dict ask for, in order, checked."""
    disabled: list[str] = []
    for path in config_files:
        disabled += disabled_from_config(_load_yaml_dict(path))
    disabled += disabled_from_config(config_dict or {})
    return list(dict.fromkeys(disabled))


def host_for(config_files: Sequence[str | os.PathLike] = (), config_dict: dict[str, Any] | None = None,
             *, strict: bool = False) -> PluginHost:
    """A plugin host with the ``disable_plugins`` of these files and dict (plus the environment's).

    Plugins provide the models and metrics that a Config resolves, so the host exists first.
    """
    return PluginHost.from_environment(disabled_plugins(config_files, config_dict), strict=strict)


def host_for_runs(config_groups: Sequence[Sequence[str | os.PathLike]], config_dict: dict[str, Any] | None = None,
                  *, strict: bool = False) -> PluginHost:
    """One plugin host for several runs (``config_groups``: each run's config files, all with
    ``config_dict``). They must agree on ``disable_plugins``: one host serves them all."""
    wanted = {tuple(sorted(disabled_plugins(files, config_dict))) for files in config_groups} or {()}
    if len(wanted) > 1:
        raise SettingsError("the configs of one command disable different plugins "
                            f"({' vs '.join(', '.join(w) or 'none' for w in sorted(wanted))}); run them separately")
    return PluginHost.from_environment(next(iter(wanted)), strict=strict)


def check_host(host: PluginHost, config_files: Sequence[str | os.PathLike],
               config_dict: dict[str, Any] | None) -> None:
    """Refuse a given host that has loaded a plugin the configuration disables."""
    loaded = {s.name for s in host.statuses if s.status == "loaded"}
    clash = [name for name in disabled_plugins(config_files, config_dict) if name in loaded]
    if clash:
        raise SettingsError(f"the configuration disables plugin(s) {', '.join(clash)}, but the plugin host "
                            "it was given has them loaded; build the host with them disabled "
                            f"(PluginHost.from_environment(disabled={clash!r}) or host_for(config files))")


def check_settings_blocks(values: Mapping[str, Any], host: PluginHost) -> None:
    """``teacher:``, ``sampling:``, ``knowledge_use`` and each plugin component's block, checked as
    the commands that use them load them, so `run` refuses what `distill` would (a block left out
    is not checked)."""
    if values.get("teacher") is not None:
        _refuse_secrets_in_teacher(values["teacher"])
        load_settings(TeacherSettings, values["teacher"], "teacher")
    if values.get("sampling") is not None:
        load_settings(SamplingSettings, values["sampling"], "sampling")
    for kind in knowledge_use(values):
        host.get("extractor", kind)  # an unknown kind fails here, with a suggestion
    for components in host.components.values():
        for name, component in components.items():
            if values.get(name) is not None:
                load_settings(component.obj.Settings, values[name], name)


def check_metrics(values: Mapping[str, Any], host: PluginHost) -> None:
    """Every name of ``metrics`` and ``valid_metric`` is a RecBole metric or one of ``host``'s
    plugins' (RecBole's own check ends in a bare ``NotImplementedError``)."""
    metrics = values.get("metrics") or []
    for name in [metrics] if isinstance(metrics, str) else metrics:
        host.check_metric(str(name))
    if values.get("valid_metric"):
        host.check_metric(str(values["valid_metric"]))
