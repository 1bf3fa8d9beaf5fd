"""Every registered bundle model runs end to end on the tiny dataset (as RecBole's own model tests
do), so a new model cannot land without training, generating and scoring through the runner."""

from __future__ import annotations

import contextlib
import json

import pytest

from recbole_bundlellm.config import keys_read_by
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.commands.runner import run
from recbole_bundlellm.testing import FakeTeacherServer

#: Per-model settings for a fast run on the tiny dataset; a model not listed runs on its defaults.
FAST_SETTINGS: dict[str, dict] = {
    "BundleLLM": {"max_new_tokens": 8, "prompt_mode": "one_shot"},
    "BundleSFT": {"max_new_tokens": 6, "epochs": 1, "train_batch_size": 4},
    "PairSFT": {"epochs": 1, "train_batch_size": 4, "pair_layer": -1, "lora_layers": None},
    "POG": {"epochs": 2},
    "BBPR": {"epochs": 2},
    "RecBoleBundler": {"bundler_epochs": 1,
                       "bundler_model_args": {"n_layers": 1, "n_heads": 1, "hidden_size": 8, "inner_size": 16}},
    "BGN": {"epochs": 2},
    "RouteDK": {"max_new_tokens": 6, "epochs": 1, "train_batch_size": 4, "label_bias_grid": [],
                "input_aware": {"hidden_size": 4}},
    "PairRouteDK": {"epochs": 1, "train_batch_size": 4, "pair_layer": -1, "routing_layer": -1,
                    "input_aware": {"hidden_size": 4}},
}


def _trained_expert(tiny_data, tiny_llm_path, tmp_path) -> dict:
    """A model mixing LoRA experts (RouteDK) gets one, trained a step by BundleSFT on the tiny data."""
    out = tmp_path / "expert"
    run("BundleSFT", "clothing", output_dir=str(out), config_dict={
        "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST_SETTINGS["BundleSFT"],
        "eval_step": 0, "label_bias_grid": []})
    return {"experts": {"base": str(out)}}


def _trained_pair_expert(tiny_data, tiny_llm_path, tmp_path) -> dict:
    """A model mixing PairSFT experts (PairRouteDK) gets one, trained a step by PairSFT on the tiny data."""
    out = tmp_path / "pair_expert"
    run("PairSFT", "clothing", output_dir=str(out), config_dict={
        "data_path": str(tiny_data), "llm_model": str(tiny_llm_path), **FAST_SETTINGS["PairSFT"],
        "eval_step": 0, "pair_probe_steps": 10})
    return {"experts": {"base": str(out)}}


#: Models that need something built first (what a user would have run before them).
PREPARE = {"RouteDK": _trained_expert, "PairRouteDK": _trained_pair_expert}


#: What a model that asks a teacher (``needs_teacher = True`` on its class) is answered with: a
#: FakeTeacherServer on 127.0.0.1 (the real client over HTTP), every answer one bundle.
TEACHER_ANSWER = "{'bundle1': ['product1', 'product2']}"


def _bundle_models() -> list[str]:
    return [spec.name for spec in PluginHost().models.specs() if spec.is_bundle_model]


def _needs_teacher(model: str) -> bool:
    return bool(getattr(PluginHost().models.resolve(model).model_class, "needs_teacher", False))


def test_the_builtin_models_are_all_covered():
    assert {"Freq", "BundleLLM", "BundleSFT", "PairSFT", "RouteDK", "PairRouteDK", "Floor", "Pairwise", "TeacherLLM", "RecBoleBundler", "BBPR", "POG", "BGN"} <= set(_bundle_models())
    assert _needs_teacher("TeacherLLM") and not _needs_teacher("BundleLLM")


@pytest.mark.parametrize("model", _bundle_models())
def test_every_registered_bundle_model_runs_end_to_end(model, tiny_data, tiny_llm_path, tmp_path):
    host = PluginHost()
    overrides = {"data_path": str(tiny_data), **FAST_SETTINGS.get(model, {})}
    if "llm_model" in keys_read_by(host.models.resolve(model), host):  # a key the model ignores is refused
        overrides["llm_model"] = str(tiny_llm_path)
    if model in PREPARE:
        overrides.update(PREPARE[model](tiny_data, tiny_llm_path, tmp_path))
    with contextlib.ExitStack() as stack:
        if _needs_teacher(model):
            server = stack.enter_context(FakeTeacherServer([], default=TEACHER_ANSWER))
            overrides.update(teacher=server.config(), knowledge_dir=str(tmp_path / "knowledge"))
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
