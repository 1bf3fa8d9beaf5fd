"""A plugin author's mistakes: each is one line that names the plugin (or component), where it
went wrong and what to do, never a traceback from inside the project."""

from __future__ import annotations

import sys
import types
import warnings

import pytest

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.extension.host import PluginError, PluginWarning
from recbole_bundlellm.knowledge.extractor import KnowledgeExtractor
from recbole_bundlellm.sampling.compose import select_sessions
from recbole_bundlellm.sampling.sampler import Sampler
from recbole_bundlellm.testing import Workspace, plugin_host, tiny_sessions


@pytest.fixture(autouse=True)
def _no_env_toggles(monkeypatch):
    monkeypatch.delenv("BUNDLELLM_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("BUNDLELLM_STRICT_PLUGINS", raising=False)


def _plugin(name: str, **hooks) -> tuple[str, types.ModuleType]:
    module = types.ModuleType(f"{name}_plugin")
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return name, module


# -- an extractor that returns the wrong type --------------------------------------------------
class _ReturnsADict(KnowledgeExtractor):
    name = "dicty"
    needs_teacher = False

    def extract_session(self, session, teacher):
        return {"status": "ok", "text": "a dict, not an Extraction"}

    def aggregate(self, records, domain):
        return []


def _dicty():
    return _plugin("dicty", register_knowledge_extractors=lambda register: register(_ReturnsADict))


def test_an_extractor_returning_the_wrong_type_names_itself_and_what_it_must_return(tmp_path):
    with Workspace(tmp_path / "strict", _dicty(), strict=True) as ws:
        with pytest.raises(BundleLLMError, match=r"extractor dicty \(plugin dicty\) returned a dict on session \S+; "
                                                 r"extract_session must return an Extraction"):
            ws.distill(knowledge_types=["dicty"])
    with Workspace(tmp_path / "lenient", _dicty(), strict=False) as ws:
        summary = ws.distill(knowledge_types=["dicty"])
        assert summary.kinds["dicty"].errors == 9  # counted as a crash is, the run goes on


# -- a registration hook that returns classes, or registers nothing ---------------------------
class _Quiet(Sampler):
    name = "quiet"

    def select(self, context, size):
        return [s.session_id for s in context.sessions][:size]


def test_a_registration_hook_that_returns_classes_warns_or_fails_in_strict_mode():
    plugin = _plugin("returner", register_samplers=lambda register: [_Quiet])
    with pytest.warns(PluginWarning, match=r"plugin 'returner': register_samplers returned \[.*_Quiet.*\] "
                                           r"instead of calling register\(\.\.\.\)"):
        with plugin_host(plugin, builtins=False, strict=False) as host:
            assert host.names("sampler") == []
    with pytest.raises(PluginError, match=r"plugin 'returner'.*register_samplers returned"):
        plugin_host(plugin, builtins=False)


def test_a_registration_hook_that_registers_nothing_warns_or_fails_in_strict_mode():
    plugin = _plugin("idle", register_samplers=lambda register: None)
    with pytest.warns(PluginWarning, match=r"plugin 'idle': register_samplers registered nothing"):
        plugin_host(plugin, builtins=False, strict=False).close()
    with pytest.raises(PluginError, match=r"plugin 'idle'.*register_samplers registered nothing"):
        plugin_host(plugin, builtins=False)


def test_the_builtin_and_example_plugins_load_without_a_warning():
    import bundlellm_keywords

    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        plugin_host(bundlellm_keywords, strict=False).close()


# -- a component registered as the wrong kind -------------------------------------------------
@pytest.mark.parametrize("hook, component, says", [
    ("register_metrics", "_Quiet", ("_Quiet is a sampler", "register_samplers")),
    ("register_samplers", "_ReturnsADict", ("_ReturnsADict is an extractor", "register_knowledge_extractors")),
])
def test_a_wrong_kind_registration_names_the_plugins_own_line(hook, component, says):
    lines = []

    def register_wrong(register):
        lines.append(sys._getframe().f_lineno + 1)
        register(globals()[component])  # a component of another kind

    with pytest.raises(PluginError) as caught:
        plugin_host(_plugin("mixup", **{hook: register_wrong}), builtins=False)
    message = str(caught.value)
    assert f"(at {__file__}:{lines[0]})" in message, message
    assert all(part in message for part in says), message


# -- a sampler whose ids are not strings -----------------------------------------------------
class _IntIds(Sampler):
    name = "intids"

    def select(self, context, size):
        return [int(s.session_id) for s in context.sessions][:size]


def test_a_sampler_returning_non_string_ids_says_ids_are_strings(tmp_path):
    from recbole_bundlellm.testing import prepare_tiny_data

    sessions = tiny_sessions(prepare_tiny_data(tmp_path / "data"))
    with pytest.raises(BundleLLMError, match=r"sampler 'intids' returned session ids that are not strings "
                                             r"\(int 0, .*\); select must return"):
        select_sessions(_IntIds(), sessions, 0.5, 0)
