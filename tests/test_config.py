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
