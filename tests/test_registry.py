"""Model registry: ours first, RecBole's after, clashes refused."""

from __future__ import annotations

import pytest

from recbole_bundlellm.models.base import BundleGenerator
from recbole_bundlellm.extension.host import PluginHost
from recbole_bundlellm.extension.registry import ModelRegistry, ModelSpec, RegistryError

BUNDLE_TRAINER = "recbole_bundlellm.training.trainer:BundleTrainer"


@pytest.fixture(scope="module")
def models() -> ModelRegistry:
    """The model registry of a freshly loaded plugin host (the built-in plugins register into it)."""
    return PluginHost().models


class Outside(BundleGenerator):
    """A bundle model defined outside the project."""

    def generate_bundles(self, sessions):
        return []


def test_builtin_models_resolve_to_their_classes(models):
    spec = models.resolve("Freq")
    assert spec.model_class.__name__ == "Freq"
    assert spec.is_bundle_model and spec.origin == "models"  # the built-in `models` plugin
    assert spec.config_files[0].name == "Freq.yaml" and spec.config_files[0].is_file()
    assert models.resolve("bundlellm").name == "BundleLLM"  # case-insensitive for ours


def test_recbole_models_resolve_after_ours(models):
    spec = models.resolve("SASRec")
    assert spec.origin == "recbole" and not spec.is_bundle_model
    assert spec.model_class.__module__ == "recbole.model.sequential_recommender.sasrec"
    assert spec.trainer_class.__name__ == "Trainer"
    assert models.resolve("BPR").model_class.__name__ == "BPR"


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
    models = PluginHost().models  # its own host: the module's registry stays as the plugins left it
    spec = models.register(ModelSpec("OutsideModel", Outside, trainer=BUNDLE_TRAINER, origin="test-suite"))
    assert models.resolve("OutsideModel") is spec
    assert spec.trainer_class.__name__ == "BundleTrainer"
    assert "OutsideModel" not in PluginHost().models.names()  # registries are per host


def test_unknown_model_suggests_the_closest_name(models):
    with pytest.raises(RegistryError, match="did you mean 'Freq'"):
        models.resolve("Freqq")
