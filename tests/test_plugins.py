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

from recbole_bundlellm.extension import hookspecs
from recbole_bundlellm.extension.hookspecs import hookimpl
from recbole_bundlellm.extension.host import (
    ENTRY_POINT_GROUP,
    PluginError,
    PluginHost,
    PluginWarning,
    format_statuses,
)
from recbole_bundlellm.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]
BUILTIN = {"models", "metrics", "patterns", "rules", "thoughts", "samplers", "adaptation", "fusion", "generation"}
BUNDLELLM = [sys.executable, "-m", "recbole_bundlellm.commands.cli"]


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
        from recbole_bundlellm.extension.hookspecs import hookimpl

        @hookimpl
        def register_samplers(register):
            raise RuntimeError('boom while registering')
    """,
    "bp_typo": """
        from recbole_bundlellm.extension.hookspecs import hookimpl

        @hookimpl
        def register_sampler(register):  # not a hook of the spec
            pass
    """,
    "bp_wrongtype": """
        from recbole_bundlellm.extension.hookspecs import hookimpl

        @hookimpl
        def register_knowledge_extractors(register):
            register(object)
    """,
    "bp_clash": """
        from dataclasses import dataclass
        from recbole_bundlellm.extension.hookspecs import hookimpl
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
    from recbole_bundlellm.commands.distill import distill
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken_dist), str(REPO), str(REPO / "plugins")])}
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
    with pytest.raises(PluginError, match="unknown extractor 'thoughts': it is provided by plugin 'thoughts', "
                                          "which is disabled"):
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
    from recbole_bundlellm.commands.distill import distill

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
    from recbole_bundlellm.commands.distill import distill

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
    assert len(hooks) == 12
    for name in hooks:
        signature = hookspecs.hook_signature(name)
        assert f"`{signature}`" in docs, f"docs/plugins.md lacks the exact signature `{signature}`"
        assert f"### `{name}`" in docs, f"docs/plugins.md has no section for {name}"


# -- errors that name the fix ---------------------------------------------------------------------
TYPO_MODULES = {
    "tp_hook": """
        from recbole_bundlellm.extension.hookspecs import hookimpl

        @hookimpl
        def register_sampler(register):
            pass
    """,
    "tp_arg": """
        from recbole_bundlellm.extension.hookspecs import hookimpl

        @hookimpl
        def register_samplers(registr):
            pass
    """,
    "tp_import": """
        import os

        import not_a_module_anywhere
    """,
}


@pytest.fixture
def typo_dist(tmp_path, monkeypatch) -> Path:
    dist = make_distribution(tmp_path / "typos", "typo-plugins", TYPO_MODULES,
                             {"tp_hook": "tp_hook", "tp_arg": "tp_arg", "tp_import": "tp_import"})
    monkeypatch.syspath_prepend(str(dist))
    return dist


def test_validation_and_import_errors_are_one_line_with_the_site_and_a_suggestion(typo_dist):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        host = PluginHost()
    by_name = {s.name: s for s in host.statuses}
    hook, arg, imp = by_name["tp_hook"], by_name["tp_arg"], by_name["tp_import"]
    assert hook.error == (f"invalid plugin: unknown hook 'register_sampler' at {typo_dist / 'tp_hook.py'}:4; "
                          "did you mean 'register_samplers'?")
    assert arg.error == (f"invalid plugin: hook 'register_samplers' has no argument 'registr' (it passes: register) "
                         f"at {typo_dist / 'tp_arg.py'}:4; did you mean 'register'?")
    assert imp.error == ("import failed: ModuleNotFoundError: No module named 'not_a_module_anywhere' "
                         f"(at {typo_dist / 'tp_import.py'}:4)")
    assert "not_a_module_anywhere" in imp.traceback and "Traceback" in imp.traceback
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert any("tp_import" in m and "BUNDLELLM_DEBUG=1 or bundlellm --debug" in m for m in messages)
    # The table keeps one line per row: errors never break it.
    listing = format_statuses(host).splitlines()
    assert sum("failed: " in line for line in listing) == 3
    assert not any(line.startswith(("Plugin", "hookimpl", "Argument")) for line in listing)
    with pytest.raises(PluginError, match=r"plugin 'tp_arg' \(typo-plugins 0.1\) failed: invalid plugin: hook "
                                          r"'register_samplers' has no argument 'registr'"):
        PluginHost(strict=True)


def test_debug_switch_shows_the_traceback(typo_dist, monkeypatch, capsys):
    from recbole_bundlellm.commands.cli import main

    monkeypatch.setenv("BUNDLELLM_DEBUG", "0")  # main sets it; the test restores it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["plugins"]) == 0
        plain = capsys.readouterr().out
        assert main(["--debug", "plugins"]) == 0
    debug = capsys.readouterr().out
    assert "Traceback" not in plain and "failed: import failed: ModuleNotFoundError" in plain
    assert "Traceback (most recent call last)" in debug and "import not_a_module_anywhere" in debug


def test_a_disabled_name_that_is_no_plugin_warns_and_fails_in_strict_mode():
    with pytest.warns(PluginWarning, match="'ruls', which is not an installed plugin; did you mean 'rules'"):
        PluginHost(disabled=["ruls"])
    with pytest.warns(PluginWarning, match=r"'bundlellm-keywords', which is not an installed plugin: that is a "
                                           r"distribution; disable its plugins by their entry-point names "
                                           r"\(keywords\)"):
        PluginHost(disabled=["bundlellm-keywords"])
    with pytest.raises(PluginError, match="'ruls', which is not an installed plugin.*strict plugin mode"):
        PluginHost(disabled=["ruls"], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        PluginHost(disabled=["rules", "keywords"])  # names of plugins: no warning


def test_the_cli_prints_a_plugin_warning_once_on_one_line():
    env = {**os.environ, "BUNDLELLM_DISABLE_PLUGINS": "ruls"}
    env.pop("BUNDLELLM_STRICT_PLUGINS", None)
    done = subprocess.run([sys.executable, "-m", "recbole_bundlellm.cli", "plugins"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0
    lines = [line for line in done.stderr.splitlines() if "ruls" in line]
    assert lines == ["warning: disable_plugins names 'ruls', which is not an installed plugin; did you mean 'rules'? "
                     "(plugins are disabled by the names `bundlellm plugins` lists)"]
    assert "host.py" not in done.stderr


EXTRA_MODULES = {
    "xp_shapes": """
        from dataclasses import dataclass

        from recbole.evaluator.base_metric import AbstractMetric
        from recbole.utils import EvaluatorType

        from recbole_bundlellm.extension.hookspecs import hookimpl
        from recbole_bundlellm.sampling.sampler import Sampler


        class SessionCount(AbstractMetric):
            metric_need = ["bundle.pred", "bundle.truth"]
            metric_type = EvaluatorType.RANKING
            smaller = False

            def calculate_metric(self, dataobject):
                return {"sessioncount": float(len(dataobject.get("bundle.truth")))}


        @dataclass
        class SizesSettings:
            largest: bool = True


        class Sizes(Sampler):
            name = "sizes"
            Settings = SizesSettings

            def select(self, context, size):
                return [s.session_id for s in context.sessions][:size]


        @hookimpl
        def register_metrics(register):
            register(SessionCount)


        @hookimpl
        def register_samplers(register):
            register(Sizes)
    """,
}


@pytest.fixture
def extra_dist(tmp_path, monkeypatch) -> Path:
    dist = make_distribution(tmp_path / "extra", "extra-plugins", EXTRA_MODULES, {"shapes": "xp_shapes"})
    monkeypatch.syspath_prepend(str(dist))
    return dist


def test_metrics_and_keys_of_a_disabled_plugin_say_so(extra_dist, tiny_data):
    from recbole_bundlellm.config import BundleConfig, ConfigKeyError

    base = {"data_path": str(tiny_data)}
    with PluginHost(strict=True) as host:  # loaded: its metric, sampler and settings key work
        config = BundleConfig("Freq", "clothing", [], {**base, "metrics": ["ExactF1", "SessionCount"], "sizes": {}},
                              host=host)
        assert config["metrics"] == ["ExactF1", "SessionCount"]
    with PluginHost(disabled=["shapes"]) as host:
        with pytest.raises(PluginError, match="unknown metric 'SessionCount': it is provided by plugin 'shapes', "
                                              "which is disabled"):
            BundleConfig("Freq", "clothing", [], {**base, "metrics": ["ExactF1", "SessionCount"]}, host=host)
        with pytest.raises(ConfigKeyError, match="config key 'sizes' in the config overrides is the settings key of "
                                                 "plugin 'shapes', which is disabled"):
            BundleConfig("Freq", "clothing", [], {**base, "sizes": {"largest": False}}, host=host)
        with pytest.raises(PluginError, match="unknown sampler 'sizes': it is provided by plugin 'shapes'"):
            host.get("sampler", "sizes")


def test_an_unknown_metric_is_an_error_with_a_suggestion(tiny_data, capsys):
    from recbole_bundlellm.commands.cli import main
    from recbole_bundlellm.config import BundleConfig

    base = {"data_path": str(tiny_data)}
    with PluginHost(disabled=["thoughts"]) as host:
        with pytest.raises(PluginError, match=r"unknown metric 'ExactF2'; did you mean 'ExactF1'\?; registered: .*"
                                              r"BestJaccard.*\(plugins not loaded: thoughts \(disabled\)\); "
                                              r"RecBole's own: .*NDCG"):
            BundleConfig("Freq", "clothing", [], {**base, "metrics": ["ExactF1", "ExactF2"]}, host=host)
        with pytest.raises(PluginError, match="unknown metric 'exactf2'; did you mean 'ExactF1'"):
            BundleConfig("Freq", "clothing", [], {**base, "valid_metric": "exactf2"}, host=host)
        BundleConfig("Freq", "clothing", [], {**base, "valid_metric": "exactf1"}, host=host)  # any letter case
    assert main(["run", "--model", "Freq", "--dataset", "clothing", f"--data_path={tiny_data}",
                 "--metrics=[ExactF1, ExactF2]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown metric 'ExactF2'; did you mean 'ExactF1'?")


def test_an_installed_plugin_can_be_passed_to_the_host_under_any_name():
    """The documented ``PluginHost(plugins=[(name, module)])`` works for an installed module too:
    it takes the place of its entry point (pluggy refuses one module under two names)."""
    import bundlellm_keywords

    with PluginHost(plugins=[("keywords", bundlellm_keywords)], strict=True) as host:
        (status,) = [s for s in host.statuses if s.name == "keywords"]
        assert (status.status, status.distribution, status.version) == ("loaded", "bundlellm-keywords", "0.1.0")
        assert BUILTIN <= {s.name for s in host.statuses}  # the built-ins stay
    with PluginHost(plugins=[("mine", bundlellm_keywords)], strict=True) as host:
        names = {s.name: s.status for s in host.statuses}
        assert "keywords" not in names and names["mine"] == "loaded" and "keywords" in host.names("extractor")
    with pytest.raises(PluginError, match=r"plugin 'b' \(bundlellm-keywords 0.1.0\) failed: the same module or "
                                          "object is already loaded as plugin 'a'"):
        PluginHost(entry_points=[], plugins=[("a", bundlellm_keywords), ("b", bundlellm_keywords)], strict=True)


def test_plugins_table_columns_hold_long_names(tmp_path, monkeypatch):
    source = {"a_plugin_with_quite_a_long_module_name": """
        from recbole_bundlellm.extension.hookspecs import hookimpl

        @hookimpl
        def plugins_loaded(host):
            pass
    """}
    dist = make_distribution(tmp_path / "long", "a-distribution-with-a-very-long-name", source,
                             {"a_plugin_with_a_rather_long_name": "a_plugin_with_quite_a_long_module_name"})
    monkeypatch.syspath_prepend(str(dist))
    lines = format_statuses(PluginHost(strict=True)).splitlines()
    header = lines[0]
    long_row = next(line for line in lines if line.startswith("a_plugin_with_a_rather_long_name "))
    assert "a-distribution-with-a-very-long-name loaded" in long_row
    # Every column starts where its header does, in every row.
    for column in ("version", "distribution", "status"):
        start = header.index(column)
        rows = [line for line in lines[1:] if not line.startswith(" ")]
        assert all(line[start - 1] == " " and line[start] != " " for line in rows), column


def test_plugin_metrics_are_columns_of_the_compare_table(tmp_path):
    from recbole_bundlellm.commands.compare import format_results
    from recbole_bundlellm.evaluation.results import RunResult

    def result(name: str, **extra: float) -> RunResult:
        return RunResult(name, "Freq", "clothing", {"exactf1": 0.5, "bestjaccard": 0.25, **extra}, None, tmp_path,
                         tmp_path, {"seconds_per_session": 0.1, "eval_sessions": 2})

    text = format_results([result("a", counterror=1.5), result("b", sessioncount=2.0)])
    header, _, row_a, row_b = text.splitlines()[:4]
    # The metrics the runs report, built-in ones first (the others are left out, not "-").
    assert header.split() == ["model", "exact", "F1", "best", "Jacc", "counterror", "sessioncount"]
    assert row_a.split()[1:] == ["0.500", "0.250", "1.500", "-"]
    assert row_b.split()[1:] == ["0.500", "0.250", "-", "2.000"]


def test_run_help_mentions_the_key_value_overrides(capsys):
    from recbole_bundlellm.commands.cli import build_parser

    for command in ("run", "distill", "compare"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        out = capsys.readouterr().out
        assert "--key=value" in out and "--eval_max_sessions=20" in out, command
