"""Config overlay and unknown-key reporting."""

from __future__ import annotations

import pytest

from recbole_bundlellm.config import BundleConfig, ConfigKeyError, parse_overrides, recbole_known_keys


def test_bundle_model_gets_recbole_defaults_then_ours_then_the_model_yaml():
    config = BundleConfig("Freq", "electronic")
    assert config["learning_rate"] == 0.001                # RecBole's overall.yaml
    assert config["USER_ID_FIELD"] == "session_id"          # our overall.yaml
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["freq_min_support"] == 0.001              # Freq.yaml next to the model
    assert config["valid_metric"] == "ExactF1" and config["valid_metric_bigger"] is True


def test_user_values_win_over_every_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("freq_min_support: 0.05\nseed: 7\n")
    config = BundleConfig("Freq", "electronic", [path], {"seed": 9})
    assert config["freq_min_support"] == 0.05
    assert config["seed"] == 9  # the dict wins over the file, as in RecBole


def test_recbole_model_on_next_item_view_gets_the_next_item_overlay():
    config = BundleConfig("SASRec", "electronic_next", config_dict={"train_neg_sample_args": None})
    assert config["TIME_FIELD"] == "timestamp"
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert "freq_min_support" not in config.final_config_dict


def test_unknown_key_in_a_file_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("lerning_rate: 0.1\n")
    with pytest.raises(ConfigKeyError, match=r"unknown config key 'lerning_rate' in config file .*typo.yaml; did you mean 'learning_rate'"):
        BundleConfig("Freq", "electronic", [path])


def test_unknown_key_in_overrides_is_named():
    with pytest.raises(ConfigKeyError, match="'prompt_mod' in the config overrides; did you mean 'prompt_mode'"):
        BundleConfig("BundleLLM", "electronic", config_dict={"prompt_mod": "one_shot"})


def test_keys_of_recbole_models_and_source_are_known():
    keys = recbole_known_keys()
    assert {"learning_rate", "n_layers", "MAX_ITEM_LIST_LENGTH", "benchmark_filename", "eval_args"} <= keys
    # a RecBole model's own key is accepted for it
    config = BundleConfig("SASRec", "electronic_next", config_dict={"n_layers": 1, "train_neg_sample_args": None})
    assert config["n_layers"] == 1


def test_bundle_metrics_are_accepted_by_recbole_config():
    config = BundleConfig("Freq", "electronic", config_dict={"metrics": ["FailureRate"], "valid_metric": "FailureRate"})
    assert config["valid_metric_bigger"] is False  # smaller failure rate is better


def test_parse_overrides_reads_yaml_values():
    assert parse_overrides(["--eval_max_sessions=5", "prompt_mode=one_shot", "--x=~"]) == {
        "eval_max_sessions": 5, "prompt_mode": "one_shot", "x": None}
    with pytest.raises(ConfigKeyError):
        parse_overrides(["novalue"])


def test_settings_blocks_merge_key_by_key_with_overrides(tiny_data, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("teacher: {base_url: 'http://a/v1', max_tokens: 99}\nload_col: {inter: [session_id, item_id]}\n")
    config = BundleConfig("Freq", "clothing", [cfg], {"data_path": str(tiny_data),
                                                      "teacher": {"base_url": "http://b/v1"}})
    assert config["teacher"] == {"base_url": "http://b/v1", "max_tokens": 99}


# --------------------------------------------------------------------------- numeric ranges


def _numeric_defaults():
    """Every int/float default of our YAML files (overall.yaml and the models' own)."""
    from recbole_bundlellm.config.files import BUNDLE_OVERALL, _load_yaml_dict
    from recbole_bundlellm.extension.host import PluginHost

    paths = [BUNDLE_OVERALL] + [p for s in PluginHost().models.specs() for p in s.config_files]
    values = {}
    for path in paths:
        values.update(_load_yaml_dict(path))
    nullable = {"eval_max_sessions", "distill_max_sessions", "max_prompt_tokens", "max_title_words"}
    return {k: v for k, v in values.items()
            if k in nullable or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def test_every_numeric_setting_of_ours_has_a_range_and_its_default_fits():
    from recbole_bundlellm.config import NUMERIC_RANGES, check_numeric

    defaults = _numeric_defaults()
    assert set(defaults) <= set(NUMERIC_RANGES), set(defaults) - set(NUMERIC_RANGES)
    for key, value in defaults.items():
        check_numeric(key, value)  # the shipped defaults are valid


@pytest.mark.parametrize("key,value,message", [
    ("eval_max_sessions", -1, r"eval_max_sessions must be an integer >= 1, or ~ for all sessions; got -1"),
    ("eval_max_sessions", 0, r"got 0"),
    ("eval_max_sessions", "many", r"got 'many'"),
    ("eval_max_sessions", True, r"got True"),
    ("max_new_tokens", None, r"max_new_tokens must be an integer >= 1; got None"),
    ("top_p", 0, r"top_p must be a number > 0 and <= 1; got 0"),
    ("freq_min_confidence", -0.5, r"freq_min_confidence must be a number >= 0 and <= 1"),
    # RecBole's own keys: a typo is one line here, not a traceback (or a seed numpy refuses) later.
    ("seed", "abc", r"seed must be an integer >= 0; got 'abc'"),
    ("seed", -1, r"seed must be an integer >= 0; got -1"),
    ("topk", "abc", r"topk must be an integer >= 1 \(or a list of them\); got 'abc'"),
    ("topk", [5, 0], r"got \[5, 0\]"),
    ("learning_rate", 0, r"learning_rate must be a number > 0; got 0"),
])
def test_a_value_out_of_range_names_key_value_and_range(key, value, message):
    from recbole_bundlellm.config import check_numeric
    from recbole_bundlellm.settings import SettingsError

    with pytest.raises(SettingsError, match=message):
        check_numeric(key, value)


def test_recbole_defaults_fit_their_ranges():
    config = BundleConfig("Floor", "clothing", config_dict={"topk": [5, 10]})
    assert config["topk"] == [5, 10] and config["seed"] == 2020


def test_null_keeps_meaning_all_and_integers_pass_as_floats():
    config = BundleConfig("BundleLLM", "clothing", config_dict={
        "eval_max_sessions": None, "distill_max_sessions": None, "max_prompt_tokens": None,
        "max_title_words": None, "top_p": 1, "temperature": 0.5})
    assert config["eval_max_sessions"] is None and config["top_p"] == 1
    assert BundleConfig("Floor", "clothing", config_dict={"eval_max_sessions": 3})["eval_max_sessions"] == 3


def test_ranges_are_checked_only_for_bundle_models():
    # RecBole's own models may read a key of ours with another meaning (CORE reads `temperature`).
    config = BundleConfig("SASRec", "electronic_next", config_dict={"train_neg_sample_args": None,
                                                                   "temperature": -1.0})
    assert config["temperature"] == -1.0


def test_freq_max_size_below_min_size_is_refused():
    from recbole_bundlellm.settings import SettingsError

    with pytest.raises(SettingsError, match="freq_max_size .*>= freq_min_size"):
        BundleConfig("Freq", "electronic", config_dict={"freq_min_size": 3, "freq_max_size": 2})


# --------------------------------------------------------------------------- settings blocks


def test_teacher_and_sampling_blocks_are_checked_for_every_model(tmp_path):
    from recbole_bundlellm.settings import SettingsError

    with pytest.raises(SettingsError, match=r"sampling.ratio must be a number >= 0.1 and <= 0.7; got 0.95"):
        BundleConfig("Freq", "electronic", config_dict={"sampling": {"ratio": 0.95}})
    with pytest.raises(SettingsError, match="teacher.temprature'; did you mean 'temperature'"):
        BundleConfig("Floor", "electronic", config_dict={"teacher": {"temprature": 0.1}})
    with pytest.raises(SettingsError, match=r"teacher.api_key.*\$MY_KEY.*teacher.api_key_env"):
        BundleConfig("Freq", "electronic", config_dict={"teacher": {"api_key": "sk-1", "api_key_env": "MY_KEY"}})
    # Its value is sent to base_url: only a key's variable may be named (not $HOME, $DATABASE_URL).
    with pytest.raises(SettingsError, match="api_key_env must name a variable ending in _KEY or _TOKEN, got 'HOME'"):
        BundleConfig("Freq", "electronic", config_dict={"teacher": {"api_key_env": "HOME"}})
    assert BundleConfig("Freq", "electronic", config_dict={"teacher": {"api_key_env": "HF_TOKEN"}})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sampling: {sampler: random, ratio: 0.2}\nteacher: {base_url: 'http://x/v1'}\n")
    assert BundleConfig("Freq", "electronic", [cfg])["sampling"]["ratio"] == 0.2


def test_plugin_settings_blocks_are_checked_too():
    from recbole_bundlellm.settings import SettingsError

    with pytest.raises(SettingsError, match="unknown setting 'rules.nope'"):
        BundleConfig("Freq", "electronic", config_dict={"rules": {"nope": 1}})


def test_redact_secrets_by_key_name_and_url_credentials():
    from recbole_bundlellm.config import redact_command, redact_secrets

    data = {"teacher": {"base_url": "https://u:p@h/v1", "api_key_env": "OPENAI_API_KEY", "max_tokens": 5},
            "hf_token": "abc", "x": [{"client_secret": "s"}], "max_new_tokens": 9, "password": None}
    assert redact_secrets(data) == {
        "teacher": {"base_url": "https://***@h/v1", "api_key_env": "OPENAI_API_KEY", "max_tokens": 5},
        "hf_token": "<redacted>", "x": [{"client_secret": "<redacted>"}], "max_new_tokens": 9, "password": None}
    assert redact_command(["bundlellm", "run", "--api_key=sk", "--teacher={api_key: sk, model: m}",
                           "--max_new_tokens=4", "-c", "a.yaml"]) == (
        "bundlellm run --api_key=<redacted> --teacher={api_key: <redacted>, model: m} --max_new_tokens=4 -c a.yaml")


# --------------------------------------------------------------------------- config files


def test_yaml_errors_name_the_file_line_and_column(tmp_path):
    from recbole_bundlellm.config import ConfigFileError, load_yaml_files

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: Freq\nlist: [a, b\n")
    with pytest.raises(ConfigFileError, match=r"config file .*bad.yaml: invalid YAML at line \d+, column \d+"):
        BundleConfig("Freq", "electronic", [bad])
    with pytest.raises(ConfigFileError, match="not found"):
        load_yaml_files([tmp_path / "nope.yaml"])


def test_a_missing_dataset_is_named():
    from recbole_bundlellm.config import ConfigError

    with pytest.raises(ConfigError, match="no dataset given"):
        BundleConfig("Freq")
