"""Model registry: ours first, RecBole's after, clashes refused."""

from __future__ import annotations

import pytest

from recbole_bundlellm.models.base import BundleGenerator
from recbole_bundlellm.registry import ModelRegistry, ModelSpec, RegistryError, register_model, resolve_model


class Outside(BundleGenerator):
    """A bundle model defined outside the project."""

    def generate_bundles(self, sessions):
        return []


def test_builtin_models_resolve_to_their_classes():
    spec = resolve_model("Freq")
    assert spec.model_class.__name__ == "Freq"
    assert spec.is_bundle_model and spec.origin == "models"  # the built-in `models` plugin
    assert spec.config_files[0].name == "Freq.yaml" and spec.config_files[0].is_file()
    assert resolve_model("bundlellm").name == "BundleLLM"  # case-insensitive for ours


def test_recbole_models_resolve_after_ours():
    spec = resolve_model("SASRec")
    assert spec.origin == "recbole" and not spec.is_bundle_model
    assert spec.model_class.__module__ == "recbole.model.sequential_recommender.sasrec"
    assert spec.trainer_class.__name__ == "Trainer"
    assert resolve_model("BPR").model_class.__name__ == "BPR"


def test_name_clash_with_recbole_is_an_error():
    registry = ModelRegistry()
    with pytest.raises(RegistryError, match="clashes with RecBole's model 'BPR'"):
        registry.register(ModelSpec("BPR", Outside, origin="some-plugin"))


def test_same_name_from_two_origins_is_an_error():
    registry = ModelRegistry()
    registry.register(ModelSpec("Mine", Outside, origin="plugin-a"))
    registry.register(ModelSpec("Mine", Outside, origin="plugin-a"))  # same registration again: fine
    with pytest.raises(RegistryError, match="registered twice"):
        registry.register(ModelSpec("mine", Outside, origin="plugin-b"))


def test_outside_model_registers_and_resolves():
    spec = register_model("OutsideModel", Outside, origin="test-suite")
    try:
        assert resolve_model("OutsideModel") is spec
        assert spec.trainer_class.__name__ == "BundleTrainer"
    finally:
        from recbole_bundlellm.registry import model_registry

        model_registry()._specs.pop("outsidemodel")


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(RegistryError, match="did you mean 'Freq'"):
        resolve_model("Freqq")
