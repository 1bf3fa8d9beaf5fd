"""The plugin host: entry points, isolation of broken plugins, strict mode, disabling, settings,
the third-party example plugin, lifecycle hooks, and the hook documentation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from recbole_bundlellm import hookspecs
from recbole_bundlellm.hookspecs import hookimpl
from recbole_bundlellm.plugins import (
    ENTRY_POINT_GROUP,
    PluginError,
    PluginHost,
    PluginWarning,
    format_statuses,
)
from recbole_bundlellm.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]
BUILTIN = {"models", "metrics", "patterns", "rules", "thoughts", "samplers", "adaptation"}
BUNDLELLM = [sys.executable, "-m", "recbole_bundlellm.cli"]


@pytest.fixture(autouse=True)
def _no_env_toggles(monkeypatch):
    """Each test sees the installed plugins only, with no env toggles (CI sets strict mode; tests
    here choose it explicitly)."""
    monkeypatch.delenv("BUNDLELLM_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("BUNDLELLM_STRICT_PLUGINS", raising=False)


def make_distribution(root: Path, name: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """A minimal installed distribution (dist-info + modules) under ``root``, as pip would leave it."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return root


BROKEN_MODULES = {
    "bp_import": "raise ImportError('needs a package that is not installed')\n",
    "bp_raises": """
        from recbole_bundlellm.hookspecs import hookimpl

        @hookimpl
        def register_samplers(register):
            raise RuntimeError('boom while registering')
    """,
    "bp_typo": """
        from recbole_bundlellm.hookspecs import hookimpl

        @hookimpl
        def register_sampler(register):  # not a hook of the spec
            pass
    """,
    "bp_wrongtype": """
        from recbole_bundlellm.hookspecs import hookimpl

        @hookimpl
        def register_knowledge_extractors(register):
            register(object)
    """,
    "bp_clash": """
        from dataclasses import dataclass
        from recbole_bundlellm.hookspecs import hookimpl
        from recbole_bundlellm.sampling.sampler import Sampler

        class Patterns(Sampler):
            name = "patterns"   # taken by the built-in extractor: one YAML key, one component

            def select(self, context, size):
                return [s.session_id for s in context.sessions][:size]

        @hookimpl
        def register_samplers(register):
            register(Patterns)
    """,
}
BROKEN_REASONS = {
    "bad_import": "import failed: ImportError: needs a package",
    "bad_register": "registration failed: RuntimeError: boom while registering",
    "bad_hook": "invalid plugin: unknown hook 'register_sampler'",
    "bad_type": "must register subclasses of KnowledgeExtractor",
    "bad_clash": "component name 'patterns' is already taken (by plugin 'patterns')",
}


@pytest.fixture
def broken_dist(tmp_path) -> Path:
    return make_distribution(tmp_path / "site", "broken-plugins", BROKEN_MODULES, {
        "bad_import": "bp_import", "bad_register": "bp_raises", "bad_hook": "bp_typo",
        "bad_type": "bp_wrongtype", "bad_clash": "bp_clash"})


def test_builtin_plugins_load_through_the_entry_point_group():
    host = PluginHost()
    by_name = {s.name: s for s in host.statuses}
    assert BUILTIN <= set(by_name)
    for name in BUILTIN:
        status = by_name[name]
        assert status.status == "loaded", status
        assert status.distribution == "recbole-bundlellm" and status.version
        assert status.hooks and status.components
    assert {"Freq", "BundleLLM", "Floor"} <= set(host.models.names())
    assert {"ExactF1", "BestJaccard"} <= set(host.metrics)
    assert {"patterns", "rules", "thoughts"} <= set(host.names("extractor"))
    assert host.names("sampler") == ["difficulty", "diversity", "length", "random"]


def test_third_party_example_plugin_is_installed_listed_and_separate():
    """The example package under plugins/ is installed by the test setup with pip (scripts/setup.sh
    --test), as its own distribution: the host finds it only through its entry point."""
    host = PluginHost()
    status = next((s for s in host.statuses if s.name == "keywords"), None)
    assert status is not None, "plugins/example_keywords is not installed (run scripts/setup.sh --test)"
    assert (status.distribution, status.version, status.status) == ("bundlellm-keywords", "0.1.0", "loaded")
    assert status.hooks == ["register_knowledge_extractors"] and status.components == ["extractor:keywords"]
    import bundlellm_keywords

    assert REPO / "plugins" not in Path(bundlellm_keywords.__file__).resolve().parents  # installed, not in-tree
    out = subprocess.run([*BUNDLELLM, "plugins"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("keywords"))
    assert "0.1.0" in line and "bundlellm-keywords" in line and "loaded" in line
    assert "register_knowledge_extractors" in line


def test_third_party_extractor_is_used_by_distill(tiny_data, tmp_path):
    from recbole_bundlellm.distill import distill
    from recbole_bundlellm.knowledge.store import KnowledgeStore

    summary = distill([], {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_dir": str(tmp_path / "kn"),
                           "knowledge_types": ["keywords"], "keywords": {"min_sessions": 1},
                           "sampling": {"sampler": "random", "ratio": 0.7, "seed": 1}})
    ks = summary.kinds["keywords"]
    assert ks.records == 9 and ks.new == 9 and ks.ok + ks.failed == 9 and ks.ok > 0
    records = KnowledgeStore(tmp_path / "kn").records("keywords", "clothing")
    assert len(records) == 9 and all(r.provenance["plugin"] == "keywords" for r in records)
    assert summary.knowledge_set_counts.get("keywords", 0) > 0


def test_broken_plugins_are_skipped_with_a_message(broken_dist, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_dist))  # now installed, as far as entry points go
    with pytest.warns(PluginWarning) as caught:
        host = PluginHost(strict=False)
    by_name = {s.name: s for s in host.statuses}
    for name, reason in BROKEN_REASONS.items():
        assert by_name[name].status == "failed" and reason in by_name[name].error, by_name[name]
        assert any(name in str(w.message) for w in caught)
    # Nothing a failed plugin registered is kept, and the others work.
    assert host.names("sampler") == ["difficulty", "diversity", "length", "random"]
    assert host.get("extractor", "patterns").__module__ == "bundlellm_builtin.knowledge.patterns"
    assert all(by_name[n].status == "loaded" for n in BUILTIN)
    listing = format_statuses(host)
    assert "failed: import failed: ImportError" in listing


def test_broken_plugin_is_an_error_in_strict_mode(broken_dist, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_dist))
    with pytest.raises(PluginError, match="plugin 'bad_clash'.*strict plugin mode"):
        PluginHost(strict=True)


def test_cli_lists_broken_plugins_and_strict_fails(broken_dist):
    env = {**os.environ, "PYTHONPATH": str(broken_dist)}
    env.pop("BUNDLELLM_STRICT_PLUGINS", None)
    ok = subprocess.run([*BUNDLELLM, "plugins"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0
    assert "bad_import" in ok.stdout and "failed: import failed: ImportError" in ok.stdout
    assert "PluginWarning" in ok.stderr or "skipped" in ok.stderr
    strict = subprocess.run([*BUNDLELLM, "--strict", "plugins"], capture_output=True, text=True, env=env)
    assert strict.returncode == 2 and "strict plugin mode" in strict.stderr
    env_strict = subprocess.run([*BUNDLELLM, "plugins"], capture_output=True, text=True,
                                env={**env, "BUNDLELLM_STRICT_PLUGINS": "1"})
    assert env_strict.returncode == 2 and "error: plugin 'bad_" in env_strict.stderr


def test_plugins_are_disabled_by_env_and_by_yaml(monkeypatch, tmp_path):
    monkeypatch.setenv("BUNDLELLM_DISABLE_PLUGINS", "thoughts, keywords")
    host = PluginHost.from_environment()
    by_name = {s.name: s.status for s in host.statuses}
    assert by_name["thoughts"] == "disabled" and by_name["keywords"] == "disabled"
    with pytest.raises(PluginError, match="unknown extractor 'thoughts'.*not loaded: .*thoughts"):
        host.get("extractor", "thoughts")
    monkeypatch.delenv("BUNDLELLM_DISABLE_PLUGINS")

    from recbole_bundlellm.config import host_for

    cfg = tmp_path / "c.yaml"
    cfg.write_text("disable_plugins: [rules]\n", encoding="utf-8")
    yaml_host = host_for([cfg], None)
    assert {s.name: s.status for s in yaml_host.statuses}["rules"] == "disabled"
    assert "rules" not in yaml_host.names("extractor") and "thoughts" in yaml_host.names("extractor")
    with pytest.raises(SettingsError, match="disable_plugins must be a list"):
        host_for([], {"disable_plugins": 3})


def test_two_hosts_live_side_by_side(tiny_data):
    """No process-wide host: configs built with different hosts see their own plugins, and
    closing one host leaves the other's metrics registered in RecBole."""
    from recbole.evaluator import register as recbole_register

    from recbole_bundlellm.config import BundleConfig

    full = PluginHost()
    without_rules = PluginHost(disabled=["rules"])
    a = BundleConfig("Freq", "clothing", [], {"data_path": str(tiny_data)}, host=full)
    b = BundleConfig("Freq", "clothing", [], {"data_path": str(tiny_data)}, host=without_rules)
    assert a.host is full and b.host is without_rules
    assert "rules" in a.host.names("extractor") and "rules" not in b.host.names("extractor")
    from recbole_bundlellm.evaluation.recbole_metrics import _OWNERS

    assert full in _OWNERS["exactf1"] and without_rules in _OWNERS["exactf1"]
    without_rules.close()
    assert without_rules not in _OWNERS["exactf1"]  # its hold is released...
    assert "exactf1" in recbole_register.metrics_dict  # ...and the other host still holds the metric
    BundleConfig("Freq", "clothing", [], {"data_path": str(tiny_data), "valid_metric": "ExactF1"}, host=full)
    # A host that loaded a plugin the configuration disables is refused, not silently used.
    with pytest.raises(SettingsError, match="disables plugin.*rules"):
        BundleConfig("Freq", "clothing", [], {"data_path": str(tiny_data), "disable_plugins": ["rules"]}, host=full)


def test_each_component_reads_one_validated_yaml_key(tiny_data):
    host = PluginHost()
    sampler = host.create("sampler", "length", {"length": {"order": "shortest"}})
    assert sampler.settings.order == "shortest"
    with pytest.raises(SettingsError, match=r"unknown setting 'patterns.min_suport'; did you mean 'min_support'"):
        host.create("extractor", "patterns", {"patterns": {"min_suport": 0.1}})
    with pytest.raises(SettingsError, match="'patterns.max_size' must be an integer"):
        host.create("extractor", "patterns", {"patterns": {"max_size": "five"}})
    with pytest.raises(PluginError, match="unknown sampler 'lenght'; did you mean 'length'"):
        host.get("sampler", "lenght")
    # The component keys are known to the RecBole config; a misspelt one is caught with a hint.
    from recbole_bundlellm.config import BundleConfig, ConfigKeyError

    config = BundleConfig("Freq", "clothing", [], {"data_path": str(tiny_data), "patterns": {"max_size": 3}})
    assert config["patterns"] == {"max_size": 3}
    with pytest.raises(ConfigKeyError, match="unknown config key 'patern'.*did you mean 'patterns'"):
        BundleConfig("Freq", "clothing", [], {"data_path": str(tiny_data), "patern": {}})


class _Probe:
    """A plugin object implementing the lifecycle hooks (pluggy accepts any object)."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[str] = []
        self.fail = fail

    @hookimpl
    def plugins_loaded(self, host):
        self.events.append(f"loaded:{len(host.statuses)}")

    @hookimpl
    def distill_started(self, plan):
        self.events.append(f"started:{plan.domain}:{','.join(plan.kinds)}:{plan.pending}")

    @hookimpl
    def knowledge_record_stored(self, record):
        if self.fail:
            raise ValueError("probe failure")
        self.events.append(f"record:{record.unit}")

    @hookimpl
    def distill_finished(self, summary):
        self.events.append(f"finished:{summary.kinds['keywords'].new}")


def test_lifecycle_hooks_are_called(tiny_data, tmp_path, monkeypatch):
    from recbole_bundlellm.distill import distill

    probe = _Probe()
    host = PluginHost(plugins=[("probe", probe)])
    config = {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_dir": str(tmp_path / "kn"),
              "knowledge_types": ["keywords"]}
    distill([], config, host=host)
    assert probe.events[0].startswith("loaded:")
    assert probe.events[1] == "started:clothing:keywords:{'keywords': 9}"
    assert sum(e.startswith("record:") for e in probe.events) == 9
    assert probe.events[-1] == "finished:9"
    distill([], config, host=host)  # resumed: nothing new
    assert probe.events[-1] == "finished:0"


def test_a_failing_lifecycle_hook_warns_or_fails_in_strict(tiny_data, tmp_path, monkeypatch):
    from recbole_bundlellm.distill import distill

    config = {"dataset": "clothing", "data_path": str(tiny_data), "knowledge_types": ["keywords"]}
    host = PluginHost(plugins=[("probe", _Probe(fail=True))])
    with warnings.catch_warnings(record=True) as caught:  # not pytest.warns: it re-emits RecBole's own
        warnings.simplefilter("always", PluginWarning)
        summary = distill([], {**config, "knowledge_dir": str(tmp_path / "a")}, host=host)
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(messages) == 9 and "plugin 'probe' failed in knowledge_record_stored" in messages[0]
    assert summary.kinds["keywords"].new == 9  # the run went on
    strict_host = PluginHost(strict=True, plugins=[("probe", _Probe(fail=True))])
    with pytest.raises(PluginError, match="probe failure"):
        distill([], {**config, "knowledge_dir": str(tmp_path / "b")}, host=strict_host)


def test_every_hook_is_documented_with_its_exact_signature():
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    hooks = hookspecs.hook_names()
    assert len(hooks) == 11
    for name in hooks:
        signature = hookspecs.hook_signature(name)
        assert f"`{signature}`" in docs, f"docs/plugins.md lacks the exact signature `{signature}`"
        assert f"### `{name}`" in docs, f"docs/plugins.md has no section for {name}"
