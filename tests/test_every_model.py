"""Every registered bundle model runs end to end on the tiny dataset (as RecBole's own model tests
do), so a new model cannot land without training, generating and scoring through the runner."""

from __future__ import annotations

import json

import pytest

from recbole_bundlellm.plugins import PluginHost
from recbole_bundlellm.runner import run

#: Per-model settings for a fast run on the tiny dataset; a model not listed runs on its defaults.
FAST_SETTINGS: dict[str, dict] = {
    "BundleLLM": {"max_new_tokens": 8, "prompt_mode": "one_shot"},
    "BundleSFT": {"max_new_tokens": 6, "epochs": 1, "train_batch_size": 4},
    "BGN": {"epochs": 2},
}


def _bundle_models() -> list[str]:
    return [spec.name for spec in PluginHost().models.specs() if spec.is_bundle_model]


def test_the_builtin_models_are_all_covered():
    assert {"Freq", "BundleLLM", "BundleSFT", "Floor", "Pairwise"} <= set(_bundle_models())


@pytest.mark.parametrize("model", _bundle_models())
def test_every_registered_bundle_model_runs_end_to_end(model, tiny_data, tiny_llm_path):
    overrides = {"data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST_SETTINGS.get(model, {})}
    result = run(model, "clothing", config_dict=overrides)
    test_ids = {line.split("\t")[0]
                for line in (tiny_data / "clothing" / "clothing.test.inter").read_text().splitlines()[1:]}
    records = [json.loads(line) for line in (result.output_dir / "predictions.jsonl").read_text().splitlines()]
    assert {r["session_id"] for r in records} == test_ids  # one prediction per test session
    assert 0.0 <= result.test_result["exactf1"] <= 1.0
    assert 0.0 <= result.test_result["failurerate"] <= 1.0
    assert 0.0 <= result.test_result["wholesessionshare"] <= 1.0  # the trainer set bundle.items
    assert result.timing["eval_sessions"] == len(test_ids)
    for r in records:  # predicted bundles are made of the session's own items
        for bundle in r["predicted_bundles"] or []:
            assert set(bundle) <= set(r["items"]), (model, r["session_id"])
